"""Choromanska et al.'s band: where the critical values of a network lie as it grows.

Their claims, for large networks: the losses of local minima concentrate in a band above the
global minimum that narrows as the network grows, and the index of a critical point (its
number of descent directions) grows with its loss. :func:`critical_points` finds critical
points from random starts twice over, by L-BFGS-B (downhill, minima) and by least squares on
the gradient with the Hessian as its Jacobian (any index; L-BFGS-B almost never stops at a
saddle, so it alone would bias the index histogram); :func:`summary` measures the band, its
width and the rank correlation of index and loss for one network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from lossatlas import canvas
from lossatlas.analysis import minima

# a point is critical when ||grad U||_inf <= GRAD_TOL (1 + |U|)
GRAD_TOL = 1e-8
# the band holds the index-0 losses between these quantiles
BAND = (0.05, 0.95)


def init_starts(layout, n: int, box: float, rng) -> np.ndarray:
    """``n`` random initialisations ``(n, p)``: weights N(0, 1 / fan-in), biases 0 (the usual
    start of training), clipped to the box."""
    starts = np.zeros((n, layout.p))
    for layer in layout.layers:
        w = layer.weights
        starts[:, w] = rng.normal(scale=1 / np.sqrt(layer.n_in), size=(n, w.stop - w.start))
    return np.clip(starts, -box, box)


def with_prior(U_and_grad, sigma: float | None):
    """``U + |theta|^2 / (2 sigma^2)``: a Gaussian prior N(0, sigma^2) keeps the minima of a
    saturating network (tanh, sigmoid) off infinity and its flat directions curved, so that
    they are critical points a Newton step can reach. None: ``U`` itself."""
    if sigma is None:
        return U_and_grad
    scale = 1.0 / float(sigma) ** 2

    def prior_U_and_grad(theta):
        U, grad = U_and_grad(theta)
        theta = np.atleast_2d(theta)
        return U + 0.5 * scale * np.sum(theta**2, axis=1), grad + scale * theta

    return prior_U_and_grad


def critical_points(
    U_and_grad,
    starts: np.ndarray,
    box: float,
    *,
    saddle_search: bool = True,
    gtol: float = 1e-10,
    maxiter: int = 2000,
    polish_nfev: int = 50,
    eig_tol: float = 1e-8,
) -> dict[str, np.ndarray]:
    """The ends of L-BFGS-B and (``saddle_search``) :func:`minima.gradient_roots` from each
    start, one per start and method (repeats kept: the distribution over random starts), and
    which are critical points: inside the box with ``||grad U||_inf <=`` :data:`GRAD_TOL` ``(1 +
    |U|)`` (a ReLU network's ends often sit on a kink instead, where no gradient vanishes).
    ``gtol``, ``maxiter``: L-BFGS-B's stopping gradient and budget (no restarts); its ends
    are then polished by ``polish_nfev`` Newton steps of the same least squares (an end still
    not critical is not counted, whatever it would have become). Returns arrays ``points, U,
    grad_inf, critical, index`` (of the critical ends: Hessian eigenvalues below ``-eig_tol``
    times the largest magnitude; -1 for the others), ``method`` (``lbfgs`` or ``roots``) and
    ``start``."""
    ends, _, _ = minima.local_minimize(
        U_and_grad, starts, box, gtol=gtol, maxiter=maxiter, n_restarts=0
    )
    # L-BFGS-B converges slowly along the flat directions of a network's minima; Newton steps
    # (least squares on the gradient) from its ends finish the job
    found = [minima.gradient_roots(U_and_grad, ends, box, max_nfev=polish_nfev)]
    methods = ["lbfgs"]
    if saddle_search:
        found.append(minima.gradient_roots(U_and_grad, starts, box))
        methods.append("roots")
    points = np.vstack([f[0] for f in found])
    U = np.concatenate([np.asarray(f[1], dtype=np.float64) for f in found])
    grad_inf = np.zeros(len(points))
    if len(points):
        grad_inf = np.abs(np.asarray(U_and_grad(points)[1], dtype=np.float64)).max(axis=1)
    critical = (grad_inf <= GRAD_TOL * (1 + np.abs(U))) & (
        np.abs(points).max(axis=1, initial=0) < box * (1 - 1e-9)
    )
    index = np.full(len(points), -1, dtype=np.int64)
    for i in np.flatnonzero(critical):
        ev = np.linalg.eigvalsh(minima.hessian(U_and_grad, points[i]))
        index[i] = int((ev < -eig_tol * max(1.0, np.abs(ev).max())).sum())
    return {
        "points": points,
        "U": U,
        "grad_inf": grad_inf,
        "critical": critical,
        "index": index,
        "method": np.repeat(methods, len(starts)),
        "start": np.tile(np.arange(len(starts)), len(methods)),
    }


def _quantiles(values: np.ndarray) -> tuple[float, float]:
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, BAND)
    return float(lo), float(hi)


def summary(loss: np.ndarray, index: np.ndarray, p: int, heldout=None) -> dict:
    """One network's band: the 5-95 % range of the losses of its index-0 points, their mean
    and spread, the same range of their held-out losses, and Spearman's rank correlation of
    ``index / p`` and loss over every critical point."""
    loss, index = np.asarray(loss, dtype=np.float64), np.asarray(index)
    minimum = index == 0
    lo, hi = _quantiles(loss[minimum])
    out = {
        "p": int(p),
        "n_critical": int(len(loss)),
        "n_minima": int(minimum.sum()),
        "n_saddles": int((~minimum).sum()),
        "lowest": float(loss.min()) if len(loss) else float("nan"),
        "band_lo": lo,
        "band_hi": hi,
        "band_width": hi - lo,
        "minima_mean": float(loss[minimum].mean()) if minimum.any() else float("nan"),
        "minima_std": float(loss[minimum].std(ddof=1)) if minimum.sum() > 1 else float("nan"),
    }
    if heldout is not None:
        h_lo, h_hi = _quantiles(np.asarray(heldout, dtype=np.float64)[minimum])
        out.update(heldout_lo=h_lo, heldout_hi=h_hi, heldout_width=h_hi - h_lo)
    fraction = index / max(int(p), 1)
    if len(loss) > 2 and np.ptp(fraction) > 0 and np.ptp(loss) > 0:
        rho, pvalue = spearmanr(fraction, loss)
        out.update(rank_corr=float(rho), rank_corr_p=float(pvalue))
    else:
        out.update(rank_corr=float("nan"), rank_corr_p=float("nan"))
    return out


# --- figure ------------------------------------------------------------------------------


def plot_band(points: list, table, path, dpi: int = 120) -> Path:
    """Choromanska's figures: every critical point's loss against its index fraction, one
    colour per network; the band of the minima's losses (5-95 %) against the network's
    parameter count, with the held-out band when there is one (``steps.band``)."""
    fig = canvas.figure(8.0, 3.4)
    ax_pts, ax_band = fig.subplots(1, 2)
    for k, (pts, row) in enumerate(zip(points, table.to_dict("records"), strict=True)):
        colour = f"C{k % 10}"
        ax_pts.plot(pts["index_fraction"], pts["mean_loss"], "o", ms=3, mfc="none",
                    color=colour, label=f"{row['hidden']} (p = {row['p']})")  # fmt: skip
    ax_pts.set_xlabel("index / p")
    ax_pts.set_ylabel("mean loss")
    ax_pts.set_yscale("log")
    if points:
        ax_pts.legend(fontsize="x-small", title="hidden widths", title_fontsize="x-small")
    p = table["p"].to_numpy(dtype=float) if len(table) else np.zeros(0)
    for lo, hi, label, colour in (("band_lo", "band_hi", "training", "C0"),
                                  ("heldout_lo", "heldout_hi", "held-out", "C1")):  # fmt: skip
        if lo in table and table[lo].notna().any():
            ax_band.fill_between(p, table[lo], table[hi], alpha=0.3, color=colour, label=label)
            ax_band.plot(p, table[lo], "o-", color=colour, ms=3)
            ax_band.plot(p, table[hi], "o-", color=colour, ms=3)
    ax_band.set_xlabel("parameters p")
    ax_band.set_ylabel("minima's mean loss, 5-95 %")
    ax_band.set_yscale("log")
    ax_band.legend(fontsize="x-small")
    fig.suptitle("critical values against index, and the band of minima against width")
    return canvas.save(fig, path, dpi)
