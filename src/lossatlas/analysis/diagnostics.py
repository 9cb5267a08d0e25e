"""Convergence diagnostics of the chains, streamed over parameter blocks.

The primary criteria are the rank-normalised split R-hat and the bulk and tail effective sample
sizes of Vehtari et al. (2021), computed by arviz-stats' ``array_stats`` (nothing here
reimplements them; :mod:`lossatlas.mcmc_stats` hands them the rank normalisation they share,
the same bits computed once). The report's own check, "the chain means look Gaussian", is kept as an
informative extra: see :func:`normality`.

Inputs are array-likes sliceable like numpy: ``theta`` (chain, draw, param), for example the
h5py dataset of ``store.SampleStore.theta``, and ``energy`` (chain, draw). ``theta`` is only
ever read as ``theta[:, :, j0:j1]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import time
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from lossatlas import model
from lossatlas.analysis import draws, minima
from lossatlas.mcmc_stats import (  # noqa: F401 (public here)
    TAIL_PROB,
    draws_needed,
    most_draws_needed,
    summary_row,
    summary_rows,
)
from lossatlas.storage import streaming
from lossatlas.storage.streaming import iter_param_blocks

RHAT_MAX = 1.01
ESS_MIN = 400.0
ALPHA = 0.05
ENERGY_NAME = "U"
PROGRESS_EVERY = 30.0  # seconds between progress lines of a long diagnose

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["name", "kind", "mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]
NORMALITY_COLUMNS = [
    "name",
    "kind",
    "chain_means_n",
    "chain_means_W",
    "chain_means_p",
    "chain_means_reject",
    "batch_means_n",
    "batch_means_W",
    "batch_means_p",
    "batch_means_reject",
    "verdict",
]


def _blocks(theta, energy, param_names, block):
    """Yield (names, kind, x) with x a float64 (chain, draw, k) array: U first (none when
    ``energy`` is None), then params."""
    n_chains, n_draws, p = theta.shape
    if energy is not None:
        energy = np.asarray(energy[...], dtype=np.float64)
        if energy.ndim != 2:
            raise ValueError(f"energy must be (chain, draw), got shape {energy.shape}")
        yield [ENERGY_NAME], "energy", energy[:, :, None]
        if (n_chains, n_draws) != energy.shape:
            raise ValueError(
                f"theta {theta.shape} and energy {energy.shape} disagree on chain/draw"
            )
    names = list(param_names) if param_names is not None else [f"theta[{j}]" for j in range(p)]
    if len(names) != p:
        raise ValueError(f"{len(names)} parameter names for {p} parameters")
    for j0, j1, x in iter_param_blocks(theta, block):
        yield names[j0:j1], "param", x


def summarize(theta, energy, param_names=None, block: int = 256, workers: int = 1) -> pd.DataFrame:
    """Per-quantity table for U (none when ``energy`` is None) and every parameter, streamed
    over parameter blocks.

    Columns: name, kind ("energy" or "param"), mean, sd (ddof=1, pooled draws), mcse_mean,
    ess_bulk, ess_tail (quantiles 0.05/0.95), r_hat (rank-normalised split R-hat). The first
    row is U (named "U"). Write it with ``table.to_csv(path, index=False)``. ``workers`` > 1
    spreads the blocks over that many processes (same numbers).
    """
    rows = []
    workers = _pool_size(workers, theta, block)
    blocks = _blocks(theta, energy, param_names, block)
    total = theta.shape[2] + 1
    for s_rows in _map_blocks(blocks, workers, summary_rows, (), total):
        rows.extend(s_rows)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def default_n_batches(n_draws: int) -> int:
    """floor(sqrt(n_draws)) batches of about sqrt(n_draws) draws: the usual batch-means choice."""
    return max(2, math.isqrt(max(int(n_draws), 1)))


def _shapiro(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapiro-Wilk along axis 0 of (n, k); NaN where n < 3 or the values are all equal."""
    n, k = values.shape
    W = np.full(k, np.nan)
    pv = np.full(k, np.nan)
    if n < 3:
        return W, pv
    ok = np.ptp(values, axis=0) > 0
    if ok.any():
        with warnings.catch_warnings():
            # scipy warns that p-values may be inaccurate for n > 5000; they are still usable.
            warnings.simplefilter("ignore", UserWarning)
            res = stats.shapiro(values[:, ok], axis=0)
        W[ok] = res.statistic
        pv[ok] = res.pvalue
    return W, pv


def _normality_rows(names, kind, x, n_batches, alpha) -> list[dict]:
    n_chains, n_draws, _ = x.shape
    chain_means = x.mean(axis=1)  # (chain, k)
    Wc, pc = _shapiro(chain_means)
    # Contiguous, non-overlapping batches of equal length b inside each chain; the first
    # n_draws - n_batches*b draws are dropped so that the batches end at the last draw.
    b = n_draws // n_batches if n_batches else 0
    if b >= 1:
        tail = x[:, n_draws - n_batches * b :, :]
        batch_means = tail.reshape(n_chains, n_batches, b, -1).mean(axis=2)
        batch_means = batch_means.reshape(n_chains * n_batches, -1)
        Wb, pb = _shapiro(batch_means)
        nb = n_chains * n_batches
    else:
        Wb = pb = np.full(x.shape[2], np.nan)
        nb = 0
    rows = []
    for i, n in enumerate(names):
        rc = bool(pc[i] < alpha) if np.isfinite(pc[i]) else None
        rb = bool(pb[i] < alpha) if np.isfinite(pb[i]) else None
        tested = [r for r in (rc, rb) if r is not None]
        verdict = "untestable" if not tested else ("non-gaussian" if any(tested) else "gaussian")
        rows.append(
            {
                "name": n,
                "kind": kind,
                "chain_means_n": n_chains,
                "chain_means_W": float(Wc[i]),
                "chain_means_p": float(pc[i]),
                "chain_means_reject": rc,
                "batch_means_n": nb,
                "batch_means_W": float(Wb[i]),
                "batch_means_p": float(pb[i]),
                "batch_means_reject": rb,
                "verdict": verdict,
            }
        )
    return rows


def normality(
    theta,
    energy,
    param_names=None,
    block: int = 256,
    alpha: float = ALPHA,
    n_batches: int | None = None,
) -> pd.DataFrame:
    """The report's check, "convergence by Gaussianity of chain means", made explicit.

    For U and each parameter, two Shapiro-Wilk tests of normality at level ``alpha``:

    - chain means: the ``n_chains`` per-chain means (needs >= 3 chains, otherwise NaN);
    - batch means: each chain cut into ``n_batches`` contiguous equal batches (default
      floor(sqrt(draws)); leading remainder dropped), the ``n_chains * n_batches`` batch means
      pooled. With few chains the chain-means test has almost no power (W from 4 values cannot
      reject much), so batch means supply more values: if the batches are longer than the
      autocorrelation time, the CLT makes them near-Gaussian with one common mean, whereas
      chains stuck in different modes give a multimodal pool.

    ``verdict`` is "non-gaussian" when any available test rejects, "gaussian" when none does,
    "untestable" when neither could run. This is weak evidence: Gaussian chain means are
    necessary-ish but far from sufficient (chains that all miss the same mode pass), the tests
    have little power with few chains, and with many quantities about ``alpha`` of them reject by
    chance. R-hat and ESS from :func:`summarize` are the primary convergence criteria.
    """
    n_draws = theta.shape[1]
    nb = default_n_batches(n_draws) if n_batches is None else int(n_batches)
    rows = []
    for names, kind, x in _blocks(theta, energy, param_names, block):
        rows.extend(_normality_rows(names, kind, x, nb, alpha))
    return pd.DataFrame(rows, columns=NORMALITY_COLUMNS)


def _block_rows(names, kind, x, n_batches, alpha) -> tuple[list[dict], list[dict]]:
    """Summary and normality rows of one block (runs in a worker process when parallel)."""
    return summary_rows(names, kind, x), _normality_rows(names, kind, x, n_batches, alpha)


def _pool_size(workers: int, theta, block: int) -> int:
    """``workers``, but no more than the parameter blocks :func:`_blocks` yields: a pool for
    one block (and U, a single quantity) is a fork and a copy of them for nothing. (Cutting
    the blocks smaller to fill the pool was measured on the until check of the default run:
    0.3 s less wall, 0.6 CPU-s more, the forks' cost.)"""
    return min(int(workers), -(-theta.shape[2] // block))


def _map_blocks(blocks, workers: int, fn=_block_rows, args=(), total: int | None = None):
    """``fn(names, kind, x, *args)`` of every block, in block order, on ``workers`` processes;
    a progress line every ``PROGRESS_EVERY`` s when ``total`` (quantities) is given.

    Blocks are independent (arviz-stats works per parameter), so splitting the work changes
    no number. This process reads the blocks and keeps at most ``2 * workers`` in flight, so
    memory stays a few blocks whatever p is; a process pool, not threads, because the
    per-parameter work in arviz-stats and scipy holds the GIL for most of its time.
    """
    done, t0 = 0, time.monotonic()
    last = t0

    def report(k):
        nonlocal done, last
        done += k
        now = time.monotonic()
        if total and now - last >= PROGRESS_EVERY and done < total:
            last, rate = now, done / (now - t0)
            logger.info(
                "%d/%d quantities diagnosed (%.0f%%), %.0f /s, ETA %.0f s",
                done,
                total,
                100 * done / total,
                rate,
                (total - done) / rate,
            )

    if workers <= 1:
        for names, kind, x in blocks:
            out = fn(names, kind, x, *args)
            report(len(names))
            yield out
        return
    # fork, not spawn: spawn re-runs the main module in each child, and in a Snakemake rule
    # that is the rule's script. The children only compute on the arrays they are sent.
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending = deque()
        for names, kind, x in blocks:
            pending.append((len(names), pool.submit(fn, names, kind, x, *args)))
            if len(pending) >= 2 * workers:
                k, fut = pending.popleft()
                out = fut.result()
                report(k)
                yield out
        while pending:
            k, fut = pending.popleft()
            out = fut.result()
            report(k)
            yield out


def diagnose(
    theta,
    energy,
    param_names=None,
    block: int = 256,
    rhat_max: float = RHAT_MAX,
    ess_min: float = ESS_MIN,
    alpha: float = ALPHA,
    n_batches: int | None = None,
    workers: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """One pass over ``theta``: (summary table, normality table, verdict dict).

    ``workers`` > 1 spreads the parameter blocks over that many processes; the tables are
    the same as with one.
    """
    n_draws = theta.shape[1]
    nb = default_n_batches(n_draws) if n_batches is None else int(n_batches)
    srows, nrows = [], []
    workers = _pool_size(workers, theta, block)
    blocks = _blocks(theta, energy, param_names, block)
    total = theta.shape[2] + 1
    for s_rows, n_rows in _map_blocks(blocks, workers, _block_rows, (nb, alpha), total):
        srows.extend(s_rows)
        nrows.extend(n_rows)
    table = pd.DataFrame(srows, columns=SUMMARY_COLUMNS)
    norm = pd.DataFrame(nrows, columns=NORMALITY_COLUMNS)
    info = {"n_chains": int(theta.shape[0]), "n_draws": int(n_draws), "n_batches": nb}
    return table, norm, verdict(table, norm, rhat_max, ess_min, alpha, info)


def _fails(t: pd.DataFrame, rhat_max: float, ess_min: float) -> np.ndarray:
    """Which rows of ``t`` (summarize rows) miss the targets."""
    r = t["r_hat"].to_numpy()
    eb = t["ess_bulk"].to_numpy()
    et = t["ess_tail"].to_numpy()
    # NaN (e.g. a parameter that never moved) counts as a failure: nothing shows it mixed.
    return ~(np.isfinite(r) & (r < rhat_max) & (eb > ess_min) & (et > ess_min))


def _group(t: pd.DataFrame, rhat_max: float, ess_min: float) -> dict:
    if len(t) == 0:
        return {"n": 0, "pass": True}
    r = t["r_hat"].to_numpy()
    eb = t["ess_bulk"].to_numpy()
    et = t["ess_tail"].to_numpy()
    bad = _fails(t, rhat_max, ess_min)
    i_r = int(np.nanargmax(r)) if np.isfinite(r).any() else 0
    return {
        "n": len(t),
        "max_r_hat": _num(np.nanmax(r) if np.isfinite(r).any() else np.nan),
        "max_r_hat_name": str(t["name"].iloc[i_r]),
        "min_ess_bulk": _num(np.nanmin(eb) if np.isfinite(eb).any() else np.nan),
        "min_ess_tail": _num(np.nanmin(et) if np.isfinite(et).any() else np.nan),
        "n_nonfinite": int((~np.isfinite(r) | ~np.isfinite(eb) | ~np.isfinite(et)).sum()),
        "n_fail": int(bad.sum()),
        "pass": bool(not bad.any()),
    }


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def verdict(
    table: pd.DataFrame,
    norm: pd.DataFrame | None = None,
    rhat_max: float = RHAT_MAX,
    ess_min: float = ESS_MIN,
    alpha: float = ALPHA,
    info: dict | None = None,
) -> dict:
    """JSON-able convergence summary; ``pass`` uses R-hat and ESS only.

    A quantity passes when R-hat < rhat_max and bulk and tail ESS > ess_min (defaults 1.01 and
    400, Vehtari et al. 2021). The Gaussianity block reports, per test, how many quantities were
    rejected at ``alpha`` (about alpha * n expected by chance) and a Bonferroni verdict
    (min p >= alpha / n); it does not enter ``pass``.
    """
    out = {
        "thresholds": {
            "r_hat_max": rhat_max,
            "ess_min": ess_min,
            "tail_ess_quantiles": list(TAIL_PROB),
            "normality_alpha": alpha,
            "source": "Vehtari et al. 2021, rank-normalised split R-hat and bulk/tail ESS",
        },
        **(info or {}),
        "energy": _group(table[table["kind"] == "energy"], rhat_max, ess_min),
        "params": _group(table[table["kind"] == "param"], rhat_max, ess_min),
    }
    out["pass"] = bool(out["energy"]["pass"] and out["params"]["pass"])
    out["primary_criteria"] = "r_hat and ess (bulk, tail); gaussianity is informative only"
    if norm is not None:
        g = {}
        for test in ("chain_means", "batch_means"):
            pv = norm[f"{test}_p"].to_numpy(dtype=float)
            fin = np.isfinite(pv)
            m = int(fin.sum())
            g[test] = {
                "n_tested": m,
                "n_rejected": int((pv[fin] < alpha).sum()),
                "expected_by_chance": alpha * m,
                "min_p": _num(pv[fin].min()) if m else None,
                "bonferroni_pass": bool(pv[fin].min() >= alpha / m) if m else None,
            }
        u = norm[norm["kind"] == "energy"]
        g["energy_verdict"] = str(u["verdict"].iloc[0]) if len(u) else None
        out["gaussianity"] = g
    return out


# What the data identify: the loss, the network's function on the data, and the parameters up
# to the network's symmetries. Raw parameters are not: a hidden-unit permutation or a sign flip
# gives another point with the same loss, so chains in different copies never "mix" in them.
IDENTIFIABLE = ("U", "outputs on the data", "canonical parameters")
# a network with no known symmetry group (a user's model) has no canonical parameters
NO_CANONICAL = (
    "not available: the network has no known symmetry group, so convergence is judged on U "
    "and the outputs on the data"
)


def _shortfall(name: str, g: dict, rhat_max: float, ess_min: float) -> str:
    def fmt(v) -> str:
        return "non-finite" if v is None else f"{v:.4g}"

    parts = []
    if g.get("max_r_hat") is None or g["max_r_hat"] >= rhat_max:
        parts.append(f"R-hat {fmt(g.get('max_r_hat'))} ({g.get('max_r_hat_name')})")
    for key in ("min_ess_bulk", "min_ess_tail"):
        if g.get(key) is None or g[key] <= ess_min:
            parts.append(f"{key.removeprefix('min_').replace('_', ' ')} {fmt(g.get(key))}")
    return f"{name}: {', '.join(parts) or 'non-finite values'}"


def _what_to_do(failing: list[dict], n_draws: int | None, rhat_max: float, ess_min: float) -> str:
    """The next step for a run that did not converge: how many draws per chain, at the
    measured rate, and the setting that gives them."""
    most = most_draws_needed(failing, n_draws, rhat_max, ess_min)
    if most is None:  # no draw count, or a value that is not finite
        return "run longer chains (sampler.draws, thin)"
    return (
        f"at the measured rate about {most} draws per chain (now {n_draws}) would meet the "
        f"target: raise sampler.draws to {most} or more (with sampler.until on it is the cap, "
        "and the chains stop as soon as the target holds), or thin more"
    )


def identifiable_shortfalls(invariant: dict) -> list[str]:
    """What keeps each of :data:`IDENTIFIABLE` from its thresholds (none: converged), from
    :func:`diagnostics.invariant_diagnostics`'s summary."""
    th = invariant["thresholds"]
    return [
        _shortfall(k, invariant[k], th["r_hat_max"], th["ess_min"])
        for k in IDENTIFIABLE
        if not invariant[k]["pass"]
    ]


def identifiable_verdict(summary: dict, invariant: dict) -> dict:
    """``summary`` (:func:`verdict` of U and the raw parameters) with the headline ``pass``
    about what the data identify (:data:`IDENTIFIABLE`, from :func:`landscape.
    invariant_diagnostics`'s summary), the raw parameters kept beside it as
    ``pass_raw_parameters``, and ``reading``: one sentence that says which, and why."""
    th = invariant["thresholds"]
    rhat_max, ess_min = th["r_hat_max"], th["ess_min"]
    spaces = {name: invariant[name] for name in IDENTIFIABLE}
    ok = all(g["pass"] for g in spaces.values())
    raw_ok = bool(summary["params"]["pass"])
    if ok and raw_ok:
        reading = "converged: U, the outputs on the data and the parameters all mix"
    elif ok:
        raw = _shortfall("raw", summary["params"], rhat_max, ess_min)
        reading = (
            "converged in what the data identify (U, the outputs on the data, canonical "
            f"parameters); raw parameters do not mix ({raw}) because chains sit in different "
            "symmetric copies of the network (hidden units permuted or sign-flipped), which "
            "have the same loss and outputs"
        )
    else:
        failing = identifiable_shortfalls(invariant)
        reading = f"not converged: {'; '.join(failing)}; " + _what_to_do(
            [g for g in spaces.values() if not g["pass"]], summary.get("n_draws"), rhat_max, ess_min
        )
    return {
        **summary,
        "pass": ok,
        "pass_raw_parameters": raw_ok,
        "identifiable": spaces,
        "reading": reading,
        "primary_criteria": (
            "r_hat and ess (bulk, tail) of U, the outputs on the data and the canonical "
            "parameters; raw parameters are reported beside them; gaussianity is informative only"
        ),
    }


def write(out_dir, table: pd.DataFrame, norm: pd.DataFrame, summary: dict) -> dict:
    """Write summary.csv, normality.csv and convergence.json into ``out_dir``; return paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": out / "summary.csv",
        "normality": out / "normality.csv",
        "convergence": out / "convergence.json",
    }
    table.to_csv(paths["summary"], index=False)
    norm.to_csv(paths["normality"], index=False)
    paths["convergence"].write_text(json.dumps(summary, indent=2) + "\n")
    return paths


# --- from the store ----------------------------------------------------------------------


# invariant_diagnostics's table labels its spaces shorter than its summary does
_SPACES = {"energy": "U", "canonical": "canonical parameters", "outputs": "outputs on the data"}


def _space_names(store, dataset, target: model.Target, output_points: int | None):
    """``[(space, names)]``: the canonical parameters of ``target``'s network (where it has a
    symmetry group) and its outputs on (at most ``output_points`` of) the data."""
    out_names = draws.output_names(dataset, draws.spread_points(dataset.n_points, output_points))
    if target.network.canonical_transform() is None:
        return [("outputs", out_names)]
    return [("canonical", list(store.param_names)), ("outputs", out_names)]


def _views(store, dataset, target: model.Target, blocks: dict, output_points: int | None):
    """``[(view, names, space)]`` of :func:`_space_names`, as views of ``store.theta``."""
    on = draws.spread_points(dataset.n_points, output_points)
    transforms = {
        "canonical": target.network.canonical_transform(),
        "outputs": minima.target_outputs(target, on),
    }
    return [
        (streaming.DrawView(store.theta, transforms[space], **blocks), names, space)
        for space, names in _space_names(store, dataset, target, output_points)
    ]


def invariant_table(
    store,
    dataset,
    target: model.Target,
    *,
    param_block: int,
    draw_block: int,
    max_block_mb: float,
    workers: int = 1,
    tmp_dir=None,
    output_points: int | None = None,
) -> pd.DataFrame:
    """Summarize rows of U (``space`` energy), the canonical parameters (canonical) and the
    outputs on the data (outputs) of ``target``'s network. ``tmp_dir``: where a derived view
    wider than one parameter block is written once (:func:`streaming.materialized`) instead
    of being recomputed per block; ``workers``: processes of the diagnostics;
    ``output_points``: the outputs on at most this many data points, evenly spaced (None:
    all)."""
    energy = store.potential()
    blocks = {"draw_block": draw_block, "max_block_mb": max_block_mb}
    tables = []
    # U once: with the first space (the canonical parameters, or the outputs where there
    # are none)
    for k, (view, names, space) in enumerate(_views(store, dataset, target, blocks, output_points)):
        u = energy if k == 0 else None
        # more than one column block: transform every draw once, not once per block
        with (
            streaming.materialized(view, tmp_dir, param_block)
            if tmp_dir is not None and view.shape[2] > param_block
            else contextlib.nullcontext(view)
        ) as x:
            t = summarize(x, u, names, param_block, workers)
        if u is None:
            t = t[t["kind"] != "energy"]
        t.insert(0, "space", np.where(t["kind"] == "energy", "energy", space))
        tables.append(t)
    return pd.concat(tables, ignore_index=True)


def invariant_summary(
    table: pd.DataFrame, raw_table: pd.DataFrame | None, rhat_max: float, ess_min: float
) -> dict:
    """Per space of :func:`invariant_table`'s ``table``, raw parameters included from
    ``raw_table`` (None: left out): the worst R-hat, smallest ESS and pass/fail against
    ``rhat_max`` and ``ess_min``."""
    spaces = [(_SPACES[k], table[table["space"] == k]) for k in ("energy", "canonical", "outputs")]
    if raw_table is not None:
        raw = raw_table.assign(space=np.where(raw_table["kind"] == "energy", "energy", "raw"))
        spaces.insert(1, ("raw parameters", raw[raw["space"] == "raw"]))
    summary = {"thresholds": {"r_hat_max": rhat_max, "ess_min": ess_min}}
    for space, t in spaces:
        summary[space] = space_verdict(t, rhat_max, ess_min)
    if not (table["space"] == "canonical").any():
        summary["canonical parameters"] = {"n": 0, "pass": True, "note": NO_CANONICAL}
    return summary


def invariant_diagnostics(
    store,
    dataset,
    target: model.Target,
    raw_table: pd.DataFrame | None,
    *,
    rhat_max: float,
    ess_min: float,
    **table_args,
):
    """(table, summary): :func:`invariant_table` and its :func:`invariant_summary`."""
    table = invariant_table(store, dataset, target, **table_args)
    return table, invariant_summary(table, raw_table, rhat_max, ess_min)


UNTIL_GROUP = draws.UNTIL_GROUP


def table_group(table: pd.DataFrame) -> dict:
    """:func:`invariant_table`'s ``table`` as a store group (variable -> (dims, array)),
    one column a variable."""
    return {c: (("quantity",), table[c].to_numpy()) for c in table.columns}


def kept_invariant_table(store, dataset, target: model.Target, output_points: int | None):
    """The :func:`invariant_table` that ``sampler.until``'s stopping check measured on the
    store's draws and kept in it (:data:`UNTIL_GROUP`), or None where the store holds none,
    or one of other quantities than ``target``'s on ``dataset`` (then compute it)."""
    kept = store.group(UNTIL_GROUP)
    if kept is None:
        return None
    table = pd.DataFrame({c: kept[c] for c in ("space", *SUMMARY_COLUMNS) if c in kept})
    expected = [("energy", ENERGY_NAME)] + [
        (space, n)
        for space, names in _space_names(store, dataset, target, output_points)
        for n in names
    ]
    if list(table.columns) != ["space", *SUMMARY_COLUMNS] or expected != list(
        zip(table["space"], table["name"], strict=True)
    ):
        return None
    return table


def failing_quantities(table: pd.DataFrame, rhat_max: float, ess_min: float) -> dict:
    """``{space: [name, ...]}`` of the canonical parameters and outputs on the data in
    ``table`` (:func:`invariant_diagnostics` or :func:`recheck`) that miss the targets."""
    bad = table[_fails(table, rhat_max, ess_min) & (table["space"] != "energy")]
    return {_SPACES[k]: list(t["name"]) for k, t in bad.groupby("space", sort=False)}


def recheck(
    store,
    dataset,
    target: model.Target,
    quantities: dict,
    *,
    param_block: int,
    rhat_max: float,
    ess_min: float,
    draw_block: int,
    max_block_mb: float,
    workers: int = 1,
    output_points: int | None = None,
):
    """(table, summary) of :func:`invariant_diagnostics` for only the ``quantities``
    (``{space: [name, ...]}``, :func:`failing_quantities` of an earlier check), without U:
    while one of them still misses the targets, the run has not converged, and measuring
    the others would not change that."""
    blocks = {"draw_block": draw_block, "max_block_mb": max_block_mb}
    tables, summary = [], {}
    for view, names, space in _views(store, dataset, target, blocks, output_points):
        wanted = quantities.get(_SPACES[space])
        if not wanted:
            continue
        cols = [names.index(n) for n in wanted]
        picked = streaming.DrawView(
            store.theta, lambda x, f=view.transform, c=cols: f(x)[:, c], **blocks
        )
        t = summarize(picked, None, wanted, param_block, workers)
        t.insert(0, "space", space)
        tables.append(t)
        summary[_SPACES[space]] = space_verdict(t, rhat_max, ess_min)
    return pd.concat(tables, ignore_index=True), summary


def space_verdict(table: pd.DataFrame, rhat_max: float, ess_min: float) -> dict:
    """The worst R-hat and smallest ESS of the quantities in ``table`` (summarize rows) and
    whether they all pass: one space of :func:`invariant_diagnostics`'s summary."""
    return verdict(table.assign(kind="param"), None, rhat_max, ess_min)["params"]
