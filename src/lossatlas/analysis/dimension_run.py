"""The dimension of one experiment's good draws, from its store, against its nulls.

:func:`dimension_rows` runs :func:`lossatlas.analysis.dimension.dimension_table` on the good
draws (streamed in the analysis coordinates); :func:`laplace_null` builds the Laplace
approximation around the census minima; :func:`network_pipeline_null` the report's pipeline on
uniform draws, once per network; :func:`by_quantile` TwoNN of the lowest quantiles of all
draws. Every function copes with few or no good draws: rows say ``skipped: n_good=...``.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pandas as pd

from lossatlas.analysis import dimension, draws, minima
from lossatlas.storage import streaming


def _subset_grams(theta, max_mb: float, subsets) -> list[np.ndarray]:
    """Gram matrices of the rows (flat chain-major) of ``theta (chain, draw, p)`` at each index
    array of ``subsets``, in one pass over column blocks of ``max_mb`` MiB: random rows
    of a chunked store cost a read of most of it each time, a column block reads each chunk
    once."""
    n_chains, n_draws, p = theta.shape
    width = draws.budget_rows(n_chains * n_draws, max_mb)
    grams = [np.zeros((len(s), len(s))) for s in subsets]
    for _, _, block in streaming.iter_param_blocks(theta, width):
        block = block.reshape(n_chains * n_draws, -1)
        for K, s in zip(grams, subsets, strict=True):
            rows = block[s]
            K += rows @ rows.T
    return grams


NULL_MEANING = {
    "uniform": "draws uniform in the box (mapped to the analysis coordinates)",
    "shuffled": "the chain's own draws with energies shuffled (random good set)",
    "gaussian": "independent draws with the good draws' mean and covariance",
}


def _say_skipped(rows, n_good, n_distinct, need, pipeline_draws, k_pca, nulls) -> list[dict]:
    """``rows`` with each statistic that could not be computed saying why, and the neighbour
    statistics' rows added when too few draws were good for dimension_table to make them."""
    for r in rows:
        if not np.isfinite(r["value"]) and not r["verdict"].startswith("not computed: about"):
            if r["statistic"].startswith("pipeline"):
                why = (
                    f"the pipeline needs >= {need['pipeline']} good draws among its "
                    f"{pipeline_draws} draws"
                )
            else:
                why = f"{n_distinct} distinct; needs >= {need['other']}"
            r["verdict"] = f"skipped: n_good={n_good} ({why})"
    if any(r["statistic"] in ("twonn", "mle") for r in rows):
        return rows
    # dimension_table leaves the neighbour statistics out entirely when too few are good
    nan = float("nan")
    for stat in ("twonn", "mle", "twonn_naive", "mle_naive", f"pca_ev{k_pca}"):
        for null in nulls:
            rows.append(
                {
                    "statistic": stat, "value": nan, "lo": nan, "hi": nan, "null": null,
                    "null_value": nan, "null_lo": nan, "null_hi": nan, "p_null": nan,
                    "verdict": f"skipped: n_good={n_good} ({n_distinct} distinct; needs >= "
                    f"{need['other']})",
                    "n_good": n_good,
                }
            )  # fmt: skip
    return rows


def dimension_rows(
    store,
    transform: streaming.Transform | None,
    *,
    coordinates: str,
    good_threshold: float,
    box: float,
    seed: int,
    kpca: dimension.Pipeline,
    draw_block: int,
    max_block_mb: float,
    max_points: int,
    n_boot: int,
    n_null: int,
    alpha: float,
    k_pca: int,
    twonn_discard: float,
    mle_k1: int,
    mle_k2: int,
    pipeline_max_draws: int,
    max_mb: float,
    laplace: dimension.LaplaceNull | str | None = None,
    pipeline_null: np.ndarray | None = None,
    uniform_null: dict | None = None,
) -> tuple[list[dict], dict]:
    """:func:`dimension.dimension_table` of the good draws (mean loss below ``good_threshold``)
    in the analysis coordinates ``transform`` (None: raw; named ``coordinates`` in the
    output), with the uniform null mapped into the same coordinates. ``kpca``: the report's
    pipeline, ``n_kpca``, ``n_pca`` and ``gamma``. Rows whose statistic could not be computed
    say why in ``verdict`` (``skipped: n_good=...``). ``laplace``: the Laplace null
    (:func:`laplace_null`), or why there is none. The other arguments are the
    ``landscape.dimension`` settings (config/README.md); ``pipeline_null`` and
    ``uniform_null``: the shared :func:`network_pipeline_null` and :func:`network_uniform_null`."""
    rows_view = streaming.RowView(
        store.theta, transform, draw_block=draw_block, max_block_mb=max_block_mb
    )
    ml, good = draws.good_mask(store, good_threshold)
    n_good = int(good.sum())
    budget = draws.row_budget(
        rows_view.shape[1],
        max_mb,
        max_points=max_points,
        pipeline_max_draws=pipeline_max_draws,
    )
    max_points = budget["max_points"]["used"]
    # RWM repeats a position on every rejection; the neighbour statistics count places
    distinct = np.flatnonzero(good)
    if len(distinct) > max_points:
        distinct = distinct[:max_points]  # only needed to say why a row is skipped
    n_distinct = len(np.unique(rows_view[distinct], axis=0)) if len(distinct) else 0
    kpca = dataclasses.replace(kpca, max_draws=budget["pipeline_max_draws"]["used"])
    # wide clouds of raw draws (large p): shuffled nulls from one streamed pass, see _subset_grams
    wide = transform is None and rows_view.shape[1] > max_points
    grams = partial(_subset_grams, store.theta, max_mb) if wide else None
    lag = draws.autocorrelation_window(store)
    n_chains, n_draws = store.theta.shape[:2]
    by_scale: dict = {}
    rows = dimension.dimension_table(
        rows_view,
        ml,
        good_threshold,
        box,
        seed=seed,
        n_boot=n_boot,
        n_null=n_null,
        alpha=alpha,
        k_pca=k_pca,
        discard=twonn_discard,
        k1=mle_k1,
        k2=mle_k2,
        kpca=kpca,
        max_points=max_points,
        null_transform=transform,
        subset_grams=grams,
        chains=np.repeat(np.arange(n_chains), n_draws),
        steps=np.tile(np.arange(n_draws), n_chains),
        window=lag["window"],
        by_scale=by_scale,
        laplace=laplace,
        pipeline_null=pipeline_null,
        uniform_null=uniform_null,
    )
    need = {"pipeline": kpca.n_pca + 1, "other": mle_k2 + 2}
    pipeline_draws = min(len(ml), kpca.max_draws)
    nulls = dimension.NULLS + (() if laplace is None else ("laplace",))
    rows = _say_skipped(rows, n_good, n_distinct, need, pipeline_draws, k_pca, nulls)
    meta = {
        "coordinates": coordinates,
        "n_draws": int(len(ml)),
        "n_good": n_good,
        "n_good_distinct": n_distinct,
        "threshold": good_threshold,
        "memory": budget,
        "nulls": {
            **NULL_MEANING,
            **({} if laplace is None else {"laplace": LAPLACE_MEANING}),
        },
        **({} if laplace is None else {"laplace": _laplace_meta(laplace)}),
        "neighbours": lag,
        "by_scale": by_scale or None,
        "by_quantile": by_quantile(
            rows_view,
            ml,
            lag["window"],
            n_draws,
            max_points=max_points,
            seed=seed,
            k_pca=k_pca,
            discard=twonn_discard,
            k1=mle_k1,
            k2=mle_k2,
            n_boot=n_boot,
        ),  # fmt: skip
    }
    return rows, meta


def network_pipeline_null(
    p: int,
    transform: streaming.Transform | None,
    n_draws: int,
    *,
    box: float,
    seed: int,
    kpca: dict,
    n_null: int,
    pipeline_max_draws: int,
    max_mb: float,
    **_,
) -> np.ndarray:
    """:func:`dimension.pipeline_uniform_null` as :func:`dimension_rows` computes it for
    ``n_draws`` draws of a ``p``-parameter network, so that the experiments with that network
    share one (the keywords are :func:`dimension_rows`'s; the others are ignored)."""
    used = draws.row_budget(p, max_mb, pipeline_max_draws=pipeline_max_draws)["pipeline_max_draws"]
    n_pipe = min(n_draws, used["used"])
    return dimension.pipeline_uniform_null(
        n_null, n_pipe, p, box, kpca["n_kpca"], kpca["gamma"], seed, transform
    )


def network_uniform_null(
    p: int,
    transform: streaming.Transform | None,
    *,
    box: float,
    seed: int,
    n_null: int,
    max_points: int,
    max_mb: float,
    k_pca: int,
    twonn_discard: float,
    mle_k1: int,
    mle_k2: int,
    **_,
) -> dict | None:
    """:func:`dimension.uniform_cloud_values` as :func:`dimension_rows` computes them for an
    experiment of a ``p``-parameter network with at least ``max_points`` good draws (the
    budget's count), so that those experiments share them: ``{"m": , "values": }``, or None
    where the clouds would be narrower than ``p`` (their statistics read the draws' lag)."""
    m = draws.row_budget(p, max_mb, max_points=max_points)["max_points"]["used"]
    if m < p:
        return None
    fit = {"discard": twonn_discard, "k1": mle_k1, "k2": mle_k2}
    values = dimension.uniform_cloud_values(n_null, m, p, box, seed, transform, True, k_pca, **fit)
    return {"m": m, "values": values}


LAPLACE_MEANING = (
    "the Laplace approximation around the good census minima and box KKT points: an "
    "equal-weight mixture of N(theta*, (beta H)^-1), truncated to the box and the good set; "
    "along eigenvectors where that Gaussian would be wider than the good draws (flat or "
    "negative curvature) it takes their variance: the good set if it were quadratic basins"
)


def _laplace_meta(laplace) -> dict:
    if isinstance(laplace, str):
        return {"computed": False, "why": laplace}
    rates = laplace.acceptance
    return {
        "computed": True,
        "n_centres": int(len(laplace.centres)),
        "flat_directions": None if laplace.n_flat is None else laplace.n_flat.tolist(),
        "acceptance": float(np.median(rates)) if rates else None,
    }


def laplace_null(
    store,
    target,
    census_table: pd.DataFrame,
    census_points: np.ndarray,
    transform: streaming.Transform | None,
    *,
    good_threshold: float,
    seed: int,
    max_points: int,
    dense_max: int,
    draw_block: int,
    max_block_mb: float,
    max_mb: float,
) -> dimension.LaplaceNull | str:
    """The Laplace null (:class:`dimension.LaplaceNull`) around the census's good index-0
    points (``census_table`` rows; ``census_points``: the raw coordinates of each ``id``), in
    the analysis coordinates ``transform``; or why there is none. Dense Hessians, so only up to
    ``dense_max`` parameters; the covariance of at most ``max_points`` good draws bounds the
    flat directions; at most ``max_mb`` MiB of Hessian factors and of candidate draws."""
    t = census_table
    pick = np.flatnonzero((minima.census_minima(t) & (t["mean_loss"] < good_threshold)).to_numpy())
    p = target.p
    if not len(pick):
        return "the census found no good minimum or box KKT point"
    if p > dense_max:
        return (
            f"it needs dense p x p Hessians and p = {p} > landscape.census.dense_max = {dense_max}"
        )
    _, good = draws.good_mask(store, good_threshold)
    idx = np.flatnonzero(good)
    if len(idx) < 2:
        return "fewer than 2 good draws"
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng([seed, 5]).choice(idx, max_points, replace=False))
    raw = streaming.RowView(store.theta, None, draw_block=draw_block, max_block_mb=max_block_mb)
    spread = np.cov(np.asarray(raw[idx], dtype=np.float64), rowvar=False)
    # the lowest points first, as many p x p factors as the budget holds
    ids = t["id"].to_numpy()[pick[: draws.budget_rows(p * p, max_mb)]]
    centres = np.asarray(census_points, dtype=np.float64)[ids]
    hessians = [minima.hessian(target.U_and_grad, x) for x in centres]

    def keep(x):
        return target.in_box(x) & (target.mean_loss(target.U(x)) < good_threshold)

    factors, n_flat = dimension.laplace_factors(hessians, target.beta, spread)
    return dimension.LaplaceNull(
        centres,
        factors,
        keep,
        transform=transform,
        block=min(1 << 15, draws.budget_rows(p, max_mb)),
        n_flat=n_flat,
    )


QUANTILES = (0.01, 0.05, 0.1, 0.25)


def by_quantile(
    rows_view,
    mean_loss,
    window: int,
    n_draws: int,
    *,
    max_points: int,
    seed: int,
    k_pca: int,
    discard: float,
    k1: int,
    k2: int,
    n_boot: int,
    quantiles=QUANTILES,
) -> list[dict]:
    """The dimension statistics of the good set defined by rank instead of a fixed threshold:
    for each q, the lowest q of all draws by mean loss (lag-window neighbours, whole-chain
    intervals), so a conclusion does not hang on one threshold."""
    ml = np.asarray(mean_loss, dtype=np.float64).ravel()
    order = np.argsort(ml, kind="stable")
    rng = np.random.default_rng([seed, 3])
    out = []
    for q in quantiles:
        idx = order[: max(1, int(round(q * len(ml))))]
        row = {"quantile": q, "threshold": float(ml[idx[-1]]), "n_good": int(len(idx))}
        if len(idx) > max_points:
            idx = rng.choice(idx, size=max_points, replace=False)
        idx = np.sort(idx)
        effective = len(idx) / max(1, window)
        if effective <= k2 + 1:
            out.append(
                {
                    **row,
                    "status": f"skipped: about {effective:.0f} effectively independent draws "
                    f"(lag window {window}); needs more than {k2 + 1}",
                }
            )
            continue
        lag = {"chains": idx // n_draws, "steps": idx % n_draws, "window": window}
        X = np.asarray(rows_view[idx], dtype=np.float64)
        try:
            t, m = dimension.twonn_and_mle(X, discard, k1, k2, n_boot, seed, **lag)
        except dimension.TooFewPoints as err:  # any other error is a bug: it fails the job
            out.append({**row, "status": f"skipped: {err}"})
            continue
        row.update(
            status="ok",
            twonn=t["value"], twonn_lo=t["lo"], twonn_hi=t["hi"],
            mle=m["value"], mle_lo=m["lo"], mle_hi=m["hi"],
        )  # fmt: skip
        row[f"pca_ev{k_pca}"] = dimension._top_k_ratio(X, k_pca)
        out.append(row)
    return out
