"""The posterior-predictive analysis: how the draws do on test points the chains never saw.

A draw ``theta`` predicts a test point ``x`` by the network's output ``f(x; theta)``: the
softmax probabilities under cross-entropy, the outputs themselves under squared losses. The
posterior-predictive prediction of a set of draws is the average of theirs (Bayesian model
averaging, the ensemble); each draw alone is also scored. Both are reported for the good
draws (training mean loss below ``target.good_threshold``) and for all, pooled over the chains
and chain by chain: a chain's own ensemble tells a basin's predictions apart.

Memory: draws are read in blocks (``draw_block``, ``max_block_mb``, and at most ``max_block_mb``
of outputs at once); what is kept is one prediction sum ``(n_test, k)`` per chain and set, and
three numbers per draw used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lossatlas import canvas
from lossatlas.analysis.draws import spread_points
from lossatlas.model.network import loss_and_dout, predictions
from lossatlas.storage import streaming

SETS = ("good", "all")
COLUMNS = [
    "chain", "draws", "n_draws", "ensemble_accuracy", "ensemble_loss", "ensemble_ece",
    "mean_accuracy", "mean_test_loss", "mean_train_loss",
]  # fmt: skip
ECE_BINS = 15  # the usual count (Guo et al. 2017)


@dataclass
class Predictions:
    """What :func:`posterior_predictive` measured: the table (one row per chain and per set of
    draws, then the pooled rows, ``chain`` -1), each draw's scores, and the summary."""

    table: pd.DataFrame
    train_loss: np.ndarray  # (chain, draws used): mean training loss of each draw
    test_loss: np.ndarray  # (chain, draws used): mean test loss of each draw
    accuracy: np.ndarray  # (chain, draws used): test accuracy of each draw (NaN: regression)
    summary: dict


def _ensemble_loss(loss: str, mean_prediction: np.ndarray, y: np.ndarray) -> float:
    """The test loss of averaged predictions ``(n, k)``: negative log of the mean probability
    of the true class (cross-entropy), or the squared error of the mean output."""
    if loss == "cross_entropy":
        true = mean_prediction[np.arange(len(y)), y]
        return float(-np.log(np.maximum(true, np.finfo(np.float64).tiny)).mean())
    return float(loss_and_dout(loss, mean_prediction[None], y, need_grad=False)[0].mean())


def calibration_error(prob: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of class probabilities ``(n, k)``: over ``bins`` equal-width
    bins of the top probability, the gap between accuracy and confidence, weighted by the share
    of the points in the bin."""
    confidence = prob.max(axis=1)
    correct = (prob.argmax(axis=1) == y).astype(np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    gaps = np.bincount(which, correct, bins) - np.bincount(which, confidence, bins)
    return float(np.abs(gaps).sum() / len(y))


def _accuracy(prediction: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fraction of test points whose largest prediction is their class, per leading row."""
    return (prediction.argmax(axis=-1) == y).mean(axis=-1)


def posterior_predictive(
    theta,
    train_mean_loss: np.ndarray,
    network,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    good_threshold: float,
    max_draws: int,
    draw_block: int = 4096,
    max_block_mb: float = 256,
) -> Predictions:
    """Score the draws of ``theta (chain, draw, p)`` on the test points ``X_test``, labels
    ``y_test`` (classes, or float targets ``(n, r)`` under ``mse``): at most ``max_draws`` of
    each chain, evenly spaced; good where ``train_mean_loss (chain, draw)`` is below
    ``good_threshold``. ``network``: ``forward(theta (m, p), X) -> (m, n, k)`` and ``loss``."""
    n_chains, n_draws, p = theta.shape
    picked = spread_points(n_draws, max_draws)
    picked = np.arange(n_draws) if picked is None else picked
    train = np.asarray(train_mean_loss, dtype=np.float64)[:, picked]
    good = train < good_threshold
    n, loss = len(X_test), network.loss
    classes = loss != "mse"
    k = int(network.n_outputs)
    sums = {name: np.zeros((n_chains, n, k)) for name in SETS}
    test_loss = np.empty((n_chains, len(picked)))
    accuracy = np.full((n_chains, len(picked)), np.nan)
    # a block's outputs take about 3 copies of (rows, n, k) float64: keep them in the budget
    out_rows = streaming.rows_in_budget(3 * n * k, max_block_mb)
    dpb = max(1, min(streaming.draws_per_block(theta.shape, draw_block, max_block_mb),
                     out_rows // n_chains))  # fmt: skip
    for b0 in range(0, len(picked), dpb):
        cols = picked[b0 : b0 + dpb]
        # consecutive draws as one slice: HDF5 reads a list of indices one by one
        run = cols[-1] - cols[0] + 1 == len(cols)
        x = np.asarray(theta[:, slice(cols[0], cols[-1] + 1) if run else cols, :], np.float64)
        x = x.reshape(-1, p)
        out = network.forward(x, X_test).reshape(n_chains, len(cols), n, k)
        point = loss_and_dout(loss, out.reshape(-1, n, k), y_test, need_grad=False)[0]
        test_loss[:, b0 : b0 + len(cols)] = point.mean(axis=1).reshape(n_chains, len(cols))
        pred = predictions(loss, out)
        if classes:
            accuracy[:, b0 : b0 + len(cols)] = _accuracy(pred, y_test)
        sums["all"] += pred.sum(axis=1)
        sums["good"] += np.einsum("cd,cdnk->cnk", good[:, b0 : b0 + len(cols)], pred)
    counts = {"good": good.sum(axis=1), "all": np.full(n_chains, len(picked))}
    masks = {"good": good, "all": np.ones_like(good)}
    rows = []
    for name in SETS:
        for chain in [*range(n_chains), -1]:
            sel = slice(None) if chain < 0 else slice(chain, chain + 1)
            m, count = masks[name][sel], int(counts[name][sel].sum())
            mean_pred = sums[name][sel].sum(axis=0) / count if count else None
            rows.append({
                "chain": chain, "draws": name, "n_draws": count,
                "ensemble_accuracy": float(_accuracy(mean_pred, y_test))
                if count and classes else np.nan,
                "ensemble_loss": _ensemble_loss(loss, mean_pred, y_test) if count else np.nan,
                "ensemble_ece": calibration_error(mean_pred, y_test)
                if count and loss == "cross_entropy" else np.nan,
                "mean_accuracy": float(accuracy[sel][m].mean()) if count and classes else np.nan,
                "mean_test_loss": float(test_loss[sel][m].mean()) if count else np.nan,
                "mean_train_loss": float(train[sel][m].mean()) if count else np.nan,
            })  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    summary = _summary(
        table, accuracy[good], y_test if classes else None, k,
        n_test=n, draws_per_chain=len(picked), draws_per_chain_stored=n_draws,
        good_threshold=float(good_threshold),
    )  # fmt: skip
    return Predictions(table, train, test_loss, accuracy, summary)


def _summary(table: pd.DataFrame, good_accuracy: np.ndarray, y_test, k: int, **about) -> dict:
    """The pooled rows, the spread of the good draws' accuracies and of the chains' ensembles,
    the chance level, ``about`` the run, and the one-line finding."""
    pooled = table[table["chain"] < 0].set_index("draws")
    chains = table[(table["chain"] >= 0) & (table["n_draws"] > 0)]
    out: dict = dict(about)
    for name in SETS:
        row = pooled.loc[name].drop("chain").to_dict()
        row["n_draws"] = int(row["n_draws"])
        by_chain = chains[chains["draws"] == name]["ensemble_accuracy"].dropna()
        row["chain_ensemble_accuracy_range"] = (
            [float(by_chain.min()), float(by_chain.max())] if len(by_chain) else None
        )
        # JSON has no NaN: a set without draws has no scores
        out[name] = {key: None if v != v else v for key, v in row.items()}
    n = len(y_test) if y_test is not None else None
    if y_test is None:
        out["finding"] = _regression_finding(out)
        return out
    # the ensemble's accuracy is a mean over the test points: its binomial standard error
    for name in SETS:
        a = out[name]["ensemble_accuracy"]
        out[name]["ensemble_accuracy_se"] = None if a is None else float(np.sqrt(a * (1 - a) / n))
    out["good"]["accuracy_q05_q95"] = (
        np.quantile(good_accuracy, [0.05, 0.95]).tolist() if len(good_accuracy) else None
    )
    out["chance_accuracy"] = float(np.bincount(y_test, minlength=k).max() / n)
    out["finding"] = _classification_finding(out, n)
    return out


def _classification_finding(s: dict, n: int) -> str:
    chance = f"chance {100 * s['chance_accuracy']:.1f} %"
    if not s["good"]["n_draws"]:
        a = s["all"]
        return (
            f"no good draw (training mean loss below {s['good_threshold']:g}); all "
            f"{a['n_draws']} draws' posterior predictive classifies "
            f"{100 * a['ensemble_accuracy']:.1f} % of {n:,} test points ({chance})"
        )
    g = s["good"]
    return (
        f"the good draws' posterior predictive classifies {100 * g['ensemble_accuracy']:.1f} % "
        f"of {n:,} test points (+- {100 * g['ensemble_accuracy_se']:.1f} %; {chance}); each "
        f"good draw alone {100 * g['mean_accuracy']:.1f} % on average; {g['n_draws']} good "
        f"draws, mean loss {g['mean_train_loss']:.3g} on the training points and "
        f"{g['mean_test_loss']:.3g} on the test points"
    )


def _regression_finding(s: dict) -> str:
    name = "good" if s["good"]["n_draws"] else "all"
    g = s[name]
    which = "the good draws'" if name == "good" else "no good draw; all draws'"
    return (
        f"{which} posterior-predictive mean has test loss {g['ensemble_loss']:.4g}, each draw "
        f"alone {g['mean_test_loss']:.4g} on average (training {g['mean_train_loss']:.4g}); "
        f"{g['n_draws']} draws"
    )


def plot(result: Predictions, path, *, title: str, dpi: int) -> None:
    """Each draw's test score against its training loss, the good cut and the good draws'
    posterior predictive."""
    fig = canvas.figure(6, 4.5)
    ax = fig.subplots()
    classes = not np.isnan(result.accuracy).all()
    score = result.accuracy if classes else result.test_loss
    ax.scatter(result.train_loss.ravel(), score.ravel(), s=4, alpha=0.4, lw=0)
    s = result.summary
    ax.axvline(s["good_threshold"], color="k", lw=0.8, ls="--", label="good cut")
    key = "ensemble_accuracy" if classes else "ensemble_loss"
    if s["good"]["n_draws"]:
        ax.axhline(s["good"][key], color="C3", lw=1, label="good draws' posterior predictive")
    if classes:
        ax.axhline(s["chance_accuracy"], color="0.5", lw=0.8, ls=":", label="chance")
    ylabel = "test accuracy" if classes else "mean loss on the test points"
    ax.set(xlabel="mean loss on the training points", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    canvas.save(fig, path, dpi)
