"""What every store-side analysis shares: the good draws, memory budgets of point clouds, and
the autocorrelation window of a store's chains.

Memory: every point cloud held as float64 rows is capped by a ``max_mb`` budget of its
analysis, ``rows = max_mb * 2^20 / (8 p)`` (:func:`budget_rows`), below the ``max_points``-like
counts when p is large; :func:`row_budget` describes the cap for the output JSON.
"""

from __future__ import annotations

import numpy as np

from lossatlas.storage import streaming


def good_mask(store, good_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat mean loss ``(n,)`` and the good mask."""
    ml = np.asarray(store.stat("mean_loss"), dtype=np.float64).ravel()
    return ml, ml < float(good_threshold)


def budget_rows(p: int, max_mb: float) -> int:
    """Rows of ``p`` float64 numbers that fit in ``max_mb`` MiB (at least 1)."""
    return streaming.rows_in_budget(p, max_mb)


def row_budget(p: int, max_mb: float, **wanted: int) -> dict:
    """The rows each cloud gets (``wanted`` counts capped at :func:`budget_rows`) and why."""
    cap = budget_rows(p, max_mb)
    return {
        "max_mb": max_mb,
        "bytes_per_row": 8 * int(p),
        "rows_in_budget": cap,
        **{
            name: {
                "requested": int(n),
                "used": min(int(n), cap),
                "limited_by": "max_mb" if cap < n else name,
            }
            for name, n in wanted.items()
        },
    }


def output_names(dataset, points=None) -> list[str]:
    """``p[i,k]``: the network's probability of class k on data point i (``f[i,k]``: its
    output k, for regression), for the data points ``points`` (None: all)."""
    name = "f" if dataset.is_regression else "p"
    points = range(dataset.n_points) if points is None else points
    return [f"{name}[{i},{k}]" for i in points for k in range(dataset.n_outputs)]


def spread_points(n_points: int, most: int | None) -> np.ndarray | None:
    """At most ``most`` of ``n_points`` data points, evenly spaced and first and last included
    (None: all of them, as when there are no more than ``most``)."""
    if most is None or n_points <= most:
        return None
    return np.unique(np.linspace(0, n_points - 1, most).round().astype(np.int64))


# The group of samples.h5 that holds sampler.until's table at the draws the run stopped at
UNTIL_GROUP = "until_check"


def kept_energy_ess(store) -> float | None:
    """The bulk ESS of U that ``sampler.until``'s stopping check measured on the store's draws
    and kept in it (:data:`UNTIL_GROUP`), or None where the store keeps no such table."""
    kept = store.group(UNTIL_GROUP)
    if kept is None or not {"space", "ess_bulk"} <= kept.keys():
        return None
    energy = np.flatnonzero(np.asarray(kept["space"]) == "energy")
    return float(kept["ess_bulk"][energy[0]]) if len(energy) == 1 else None


def autocorrelation_window(store) -> dict:
    """The lag window within which draws of one chain are not each other's neighbours: the
    draws per effective draw, ``chains * draws / ESS_bulk(U)``, rounded up (at most a chain).

    The ESS is the one ``sampler.until`` kept where it stopped the run (the same bits as
    arviz-stats' bulk ESS of these draws, :mod:`lossatlas.mcmc_stats`), else computed."""
    n_chains, n_draws = store.theta.shape[:2]
    ess = kept_energy_ess(store)
    if ess is None:
        from arviz_stats.base import array_stats

        energy = np.asarray(store.potential(), dtype=np.float64)
        ess = float(array_stats.ess(energy, method="bulk", chain_axis=0, draw_axis=1))
    tau = n_chains * n_draws / ess if np.isfinite(ess) and ess > 0 else float(n_draws)
    return {
        "window": int(min(n_draws, np.ceil(tau))),
        "ess_bulk_U": ess,
        "meaning": "twonn and mle: draws of the same chain closer than `window` draws are not "
        "neighbours (window = chains x draws / bulk ESS of U); intervals bootstrap whole "
        "chains. twonn_naive and mle_naive: every draw a neighbour, draws bootstrapped",
    }


def good_rows(
    store,
    *,
    good_threshold: float,
    max_points: int,
    max_mb: float,
    seed: int,
    draw_block: int,
    max_block_mb: float,
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` good draws (random subset, fixed seed), raw coordinates, and the
    chain of each; fewer when ``max_mb`` (``landscape.compare.max_mb``) says so."""
    _, good = good_mask(store, good_threshold)
    idx = np.flatnonzero(good)
    max_points = min(max_points, budget_rows(store.theta.shape[2], max_mb))
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_points, replace=False))
    rows = streaming.RowView(store.theta, None, draw_block=draw_block, max_block_mb=max_block_mb)
    return rows[idx], idx // store.theta.shape[1]
