"""R-hat, ESS and MCSE of chains (arviz-stats, the field's implementation): the statistics the
diagnose rule tabulates and ``sampler.until`` stops on, in one place below both sampling and
analysis."""

from __future__ import annotations

import math

import numpy as np
from arviz_stats.base import array_stats

__all__ = ["TAIL_PROB", "draws_needed", "most_draws_needed", "summary_row", "summary_rows"]

# Tail ESS is min(ESS of the 5% quantile, ESS of the 95% quantile), as in Vehtari et al. (2021).
TAIL_PROB = (0.05, 0.95)


def summary_rows(names, kind, x) -> list[dict]:
    """Rows (name, kind, mean, sd, mcse_mean, ess_bulk, ess_tail, r_hat) of the quantities
    ``x (chain, draw, k)`` named ``names``."""
    # A quantity that never moved has zero within-chain variance; NaN is the honest answer.
    with np.errstate(invalid="ignore", divide="ignore"):
        return _summary_rows_inner(names, kind, x)


def _summary_rows_inner(names, kind, x) -> list[dict]:
    # (k, chain, draw), contiguous: arviz-stats sorts and transforms along the draws, which is
    # about 20% faster on contiguous rows than on the strided draw axis of (chain, draw, k),
    # with the same numbers.
    xt = np.ascontiguousarray(np.moveaxis(x, 2, 0))
    ax = {"chain_axis": -2, "draw_axis": -1}
    rhat = np.atleast_1d(array_stats.rhat(xt, method="rank", **ax))
    ess_bulk = np.atleast_1d(array_stats.ess(xt, method="bulk", **ax))
    ess_tail = np.atleast_1d(array_stats.ess(xt, method="tail", prob=TAIL_PROB, **ax))
    mcse = np.atleast_1d(array_stats.mcse(xt, method="mean", **ax))
    mean = x.mean(axis=(0, 1))
    sd = (
        x.reshape(-1, x.shape[2]).std(axis=0, ddof=1)
        if x.shape[0] * x.shape[1] > 1
        else mean * np.nan
    )
    return [
        {
            "name": n,
            "kind": kind,
            "mean": float(mean[i]),
            "sd": float(sd[i]),
            "mcse_mean": float(mcse[i]),
            "ess_bulk": float(ess_bulk[i]),
            "ess_tail": float(ess_tail[i]),
            "r_hat": float(rhat[i]),
        }
        for i, n in enumerate(names)
    ]


def summary_row(name: str, x: np.ndarray) -> dict:
    """The summary table's row (mean, sd, MCSE, bulk/tail ESS, R-hat) of one quantity
    ``x (chain, draw)``."""
    return summary_rows([name], "energy", np.asarray(x, dtype=np.float64)[:, :, None])[0]


def draws_needed(g: dict, n_draws: int, rhat_max: float, ess_min: float) -> int | None:
    """Draws per chain at which the group ``g`` (``max_r_hat``, ``min_ess_bulk``,
    ``min_ess_tail``) would meet the targets if it kept its measured rate: ESS grows in
    proportion to the draws, R-hat - 1 falls in inverse proportion (both hold once chains have
    mixed; a larger figure means the chains have not). None where a value is not finite."""
    ess = min(g.get("min_ess_bulk") or 0.0, g.get("min_ess_tail") or 0.0)
    rhat = g.get("max_r_hat")
    if not n_draws or rhat is None or ess <= 0 or not math.isfinite(rhat):
        return None
    factor = max(ess_min / ess, (rhat - 1.0) / (rhat_max - 1.0), 1.0)
    return math.ceil(n_draws * factor)


def most_draws_needed(groups, n_draws: int, rhat_max: float, ess_min: float) -> int | None:
    """The largest :func:`draws_needed` over ``groups``; None where one of them cannot say."""
    needed = [draws_needed(g, n_draws, rhat_max, ess_min) for g in groups]
    return None if not needed or None in needed else max(needed)
