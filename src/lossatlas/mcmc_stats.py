"""R-hat, ESS and MCSE of chains (arviz-stats, the field's implementation): the statistics the
diagnose rule tabulates and ``sampler.until`` stops on, in one place below both sampling and
analysis.

The rank-normalised R-hat and the bulk ESS share one rank normalisation of the split chains,
computed here (:func:`normal_scores`) and handed to arviz-stats' R-hat and ESS: the same bits
as ``array_stats.rhat(method="rank")`` and ``array_stats.ess(method="bulk")``, at a third of
their cost, which is most of what ``sampler.until`` spends on a check.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from arviz_stats.base import array_stats
from scipy.special import ndtri

__all__ = [
    "TAIL_PROB",
    "draws_needed",
    "most_draws_needed",
    "normal_scores",
    "rank_rhat_and_bulk_ess",
    "summary_row",
    "summary_rows",
]

# Tail ESS is min(ESS of the 5% quantile, ESS of the 95% quantile), as in Vehtari et al. (2021).
TAIL_PROB = (0.05, 0.95)
BLOM = 3 / 8  # the fractional offset of arviz-stats' rank normalisation (Blom 1958)
_AXES = {"chain_axis": -2, "draw_axis": -1}
RANKED_VALUES = 1 << 22  # values rank-normalised at once (32 MiB per float64 temporary)


@functools.lru_cache(maxsize=4)
def _score_table(m: int) -> np.ndarray:
    """The normal scores of the average ranks 1, 1.5, ..., m of m values: the same inputs to
    ndtri as arviz-stats', (rank - c) / (size - 2c + 1). Kept, since one check ranks many
    quantities (or blocks of them) of one length."""
    table = ndtri((np.arange(2 * m - 1) / 2 + 1 - BLOM) / (m - 2 * BLOM + 1))
    table.flags.writeable = False
    return table


def normal_scores(rows: np.ndarray) -> np.ndarray:
    """Each row of ``rows (k, m)`` rank-normalised: ``ndtri((rank - 3/8) / (m + 1/4))`` of its
    average ranks, the transform of arviz-stats' ``_z_scale`` (bit for bit, finite values).

    Average ranks do not depend on the order within ties, so an unstable sort serves (SciPy's
    ``rankdata`` sorts stably, six times slower here); and every average rank is a half-integer
    of [1, m], so its normal score is looked up in a table of 2m - 1, not evaluated per value.
    """
    k, m = rows.shape
    order = np.argsort(rows, axis=-1)
    ordered = np.take_along_axis(rows, order, axis=-1)
    table = _score_table(m)
    starts_group = np.ones((k, m), dtype=bool)
    starts_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    if starts_group.all():
        scores = np.broadcast_to(table[::2], (k, m))
    else:
        starts = np.flatnonzero(starts_group)
        counts = np.diff(starts, append=k * m)
        # twice (average rank - 1) of a tie group = 2 * (its first rank - 1) + (its size - 1)
        scores = table[np.repeat(2 * (starts % m) + counts - 1, counts)].reshape(k, m)
    out = np.empty((k, m))
    np.put_along_axis(out, order, scores, axis=-1)
    return out


def rank_rhat_and_bulk_ess(xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat and bulk ESS of each quantity of ``xt (k, chain, draw)``:
    arviz-stats' R-hat and ESS of the split chains' normal scores (bulk) and of their folded
    normal scores (tail), as ``array_stats.rhat(method="rank")`` and ``ess(method="bulk")``
    compute them. Quantities with a non-finite value, and chains too short to split into
    halves of 4 draws, go to those functions as they are."""
    k, n_chains, n_draws = xt.shape
    rhat = np.full(k, np.nan)
    ess = np.full(k, np.nan)
    finite = (
        np.isfinite(xt).all(axis=(1, 2)) if n_chains >= 2 and n_draws >= 8 else np.zeros(k, bool)
    )
    if not finite.all():
        rest = xt[~finite]
        rhat[~finite] = np.atleast_1d(array_stats.rhat(rest, method="rank", **_AXES))
        ess[~finite] = np.atleast_1d(array_stats.ess(rest, method="bulk", **_AXES))
    rows = np.flatnonzero(finite)
    # quantities ranked together: enough values for the sort's loops to run long, few enough
    # that its half a dozen temporaries stay small next to the block of draws they come from
    together = max(1, RANKED_VALUES // (n_chains * n_draws))
    for at in range(0, len(rows), together):
        some = rows[at : at + together]
        rhat[some], ess[some] = _split_rank_rhat_and_bulk_ess(xt[some])
    return rhat, ess


def _split_rank_rhat_and_bulk_ess(xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank_rhat_and_bulk_ess` of finite quantities of at least 2 chains x 8 draws."""
    half = xt.shape[2] // 2
    split = np.concatenate((xt[:, :, :half], xt[:, :, -half:]), axis=1)
    flat = split.reshape(split.shape[0], -1)
    scores = normal_scores(flat).reshape(split.shape)
    folded = np.abs(flat - np.median(flat, axis=-1, keepdims=True))
    folded_scores = normal_scores(folded).reshape(split.shape)
    bulk = np.atleast_1d(array_stats.rhat(scores, method="identity", **_AXES))
    tail = np.atleast_1d(array_stats.rhat(folded_scores, method="identity", **_AXES))
    rhat = np.where(tail > bulk, tail, bulk)  # max(bulk, tail), as arviz-stats takes it
    return rhat, np.atleast_1d(array_stats.ess(scores, method="identity", **_AXES))


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
    rhat, ess_bulk = rank_rhat_and_bulk_ess(xt)
    ess_tail = np.atleast_1d(array_stats.ess(xt, method="tail", prob=TAIL_PROB, **_AXES))
    mcse = np.atleast_1d(array_stats.mcse(xt, method="mean", **_AXES))
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
