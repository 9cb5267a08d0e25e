"""The landscape analyses of one sampled experiment, from the store and plain arguments.

Glue between the store (read through :mod:`lossatlas.storage.streaming`) and the analysis modules:
- :func:`invariant_diagnostics`: R-hat/ESS of U, of the canonical parameters and of the
  network's softmax outputs on the data (all invariant under the symmetries, unlike raw
  parameters);
- :func:`dimension_rows`: :func:`lossatlas.analysis.dimension.dimension_table` on the good draws;
- :func:`run_census`: :func:`lossatlas.analysis.minima.census` from starts among all draws and
  among the good draws;
- :func:`run_connect`: :mod:`lossatlas.analysis.connect` between the census minima;
- :func:`run_cells`: :mod:`lossatlas.analysis.cells` on the cells the draws and the census
  minima lie in;
- :func:`good_plane`: the reduce rule's parameter-space PCA of the good draws, refitted, with
  census points projected on it;
- :func:`compare_rows`: :func:`lossatlas.analysis.compare.compare_clouds` of one experiment
  against the reference.
Every function copes with few or no good draws: rows say ``skipped: n_good=...``.

Memory: every point cloud held as float64 rows is capped by a ``max_mb`` budget of its
analysis, ``rows = max_mb * 2^20 / (8 p)`` (:func:`budget_rows`), below the ``max_points``-like
counts when p is large; :func:`row_budget` describes the cap for the output JSON.
"""

from __future__ import annotations

import contextlib
from functools import partial

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from lossatlas import data, model
from lossatlas.analysis import cells, compare, connect, diagnostics, dimension, minima
from lossatlas.model import symmetry
from lossatlas.storage import streaming


def _good(store, good_threshold: float) -> tuple[np.ndarray, np.ndarray]:
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


# --- diagnostics on invariant quantities -----------------------------------------------------


def output_names(dataset) -> list[str]:
    """``p[i,k]``: the network's probability of class k on data point i (``f[i,k]``: its
    output k, for regression)."""
    name = "f" if dataset.is_regression else "p"
    return [f"{name}[{i},{k}]" for i in range(dataset.n_points) for k in range(dataset.n_outputs)]


def invariant_diagnostics(
    store,
    dataset,
    target: model.Target,
    raw_table: pd.DataFrame,
    *,
    param_block: int,
    rhat_max: float,
    ess_min: float,
    draw_block: int,
    max_block_mb: float,
    workers: int = 1,
    tmp_dir=None,
):
    """(table, summary). Table: summarize rows of U (``space`` energy), the canonical
    parameters (canonical) and the outputs on the data (outputs) of ``target``'s network.
    Summary: per space, raw parameters included from ``raw_table``, the worst R-hat, smallest
    ESS and pass/fail against ``rhat_max`` and ``ess_min``. ``tmp_dir``: where
    a derived view wider than one parameter block is written once (:func:`streaming.materialized`)
    instead of being recomputed per block; ``workers``: processes of the diagnostics."""
    energy = store.potential()
    blocks = {"draw_block": draw_block, "max_block_mb": max_block_mb}
    mlp = target.mlp
    canonical = symmetry.canonical_transform(mlp.sizes, mlp.activation, mlp.loss, mlp.bias)
    canon = streaming.DrawView(store.theta, canonical, **blocks)
    outs = streaming.DrawView(store.theta, minima.target_outputs(target), **blocks)
    tables = []
    for view, names in ((canon, store.param_names), (outs, output_names(dataset))):
        # more than one column block: transform every draw once, not once per block
        with (
            streaming.materialized(view, tmp_dir, param_block)
            if tmp_dir is not None and view.shape[2] > param_block
            else contextlib.nullcontext(view)
        ) as x:
            tables.append(diagnostics.summarize(x, energy, names, param_block, workers))
    t_can, t_out = tables
    t_can.insert(0, "space", np.where(t_can["kind"] == "energy", "energy", "canonical"))
    t_out = t_out[t_out["kind"] != "energy"]
    t_out.insert(0, "space", "outputs")
    table = pd.concat([t_can, t_out], ignore_index=True)
    raw = raw_table.assign(space=np.where(raw_table["kind"] == "energy", "energy", "raw"))
    summary = {"thresholds": {"r_hat_max": rhat_max, "ess_min": ess_min}}
    for space, t in (
        ("U", table[table["space"] == "energy"]),
        ("raw parameters", raw[raw["space"] == "raw"]),
        ("canonical parameters", table[table["space"] == "canonical"]),
        ("outputs on the data", table[table["space"] == "outputs"]),
    ):
        v = diagnostics.verdict(t.assign(kind="param"), None, rhat_max, ess_min)
        summary[space] = v["params"]
    return table, summary


# --- dimension ---------------------------------------------------------------------------------


def _subset_grams(theta, max_mb: float, subsets) -> list[np.ndarray]:
    """Gram matrices of the rows (flat chain-major) of ``theta (chain, draw, p)`` at each index
    array of ``subsets``, in one pass over column blocks of ``max_mb`` MiB: random rows
    of a chunked store cost a read of most of it each time, a column block reads each chunk
    once."""
    n_chains, n_draws, p = theta.shape
    width = budget_rows(n_chains * n_draws, max_mb)
    grams = [np.zeros((len(s), len(s))) for s in subsets]
    for _, _, block in streaming.iter_param_blocks(theta, width):
        block = block.reshape(n_chains * n_draws, -1)
        for K, s in zip(grams, subsets, strict=True):
            rows = block[s]
            K += rows @ rows.T
    return grams


def dimension_rows(
    store,
    transform: streaming.Transform | None,
    *,
    coordinates: str,
    good_threshold: float,
    box: float,
    seed: int,
    kpca: dict,
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
) -> tuple[list[dict], dict]:
    """:func:`dimension.dimension_table` of the good draws (mean loss below ``good_threshold``)
    in the analysis coordinates ``transform`` (None: raw; named ``coordinates`` in the
    output), with the uniform null mapped into the same coordinates. ``kpca``: the report's
    pipeline, ``n_kpca``, ``n_pca`` and ``gamma``. Rows whose statistic could not be computed
    say why in ``verdict`` (``skipped: n_good=...``). ``laplace``: the Laplace null
    (:func:`laplace_null`), or why there is none. The other arguments are the
    ``landscape.dimension`` settings (config/README.md); ``pipeline_null``: the shared
    :func:`network_pipeline_null`."""
    rows_view = streaming.RowView(
        store.theta, transform, draw_block=draw_block, max_block_mb=max_block_mb
    )
    ml, good = _good(store, good_threshold)
    n_good = int(good.sum())
    budget = row_budget(
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
    kpca = {**kpca, "max_exact": budget["pipeline_max_draws"]["used"]}
    # wide clouds of raw draws (large p): shuffled nulls from one streamed pass, see _subset_grams
    wide = transform is None and rows_view.shape[1] > max_points
    grams = partial(_subset_grams, store.theta, max_mb) if wide else None
    lag = autocorrelation_window(store)
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
    )
    need = {"pipeline": kpca["n_pca"] + 1, "other": mle_k2 + 2}
    for r in rows:
        if not np.isfinite(r["value"]) and not r["verdict"].startswith("not computed: about"):
            if r["statistic"].startswith("pipeline"):
                why = (
                    f"the pipeline needs >= {need['pipeline']} good draws among its "
                    f"{min(len(ml), kpca['max_exact'])} draws"
                )
            else:
                why = f"{n_distinct} distinct; needs >= {need['other']}"
            r["verdict"] = f"skipped: n_good={n_good} ({why})"
    if not any(r["statistic"] in ("twonn", "mle") for r in rows):
        # dimension_table leaves the neighbour statistics out entirely when too few are good
        for stat in ("twonn", "mle", "twonn_naive", "mle_naive", f"pca_ev{k_pca}"):
            for null in dimension.NULLS + (() if laplace is None else ("laplace",)):
                rows.append(
                    {
                        "statistic": stat,
                        "value": float("nan"),
                        "lo": float("nan"),
                        "hi": float("nan"),
                        "null": null,
                        "null_value": float("nan"),
                        "null_lo": float("nan"),
                        "null_hi": float("nan"),
                        "p_null": float("nan"),
                        "verdict": f"skipped: n_good={n_good} ({n_distinct} distinct; needs >= "
                        f"{need['other']})",
                        "n_good": n_good,
                    }
                )
    meta = {
        "coordinates": coordinates,
        "n_draws": int(len(ml)),
        "n_good": n_good,
        "n_good_distinct": n_distinct,
        "threshold": good_threshold,
        "memory": budget,
        "nulls": {
            "uniform": "draws uniform in the box (mapped to the analysis coordinates)",
            "shuffled": "the chain's own draws with energies shuffled (random good set)",
            "gaussian": "independent draws with the good draws' mean and covariance",
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


# index-0 points: the Laplace null's centres and the connectivity analysis's nodes
MINIMUM_KINDS = ("strict minimum", "degenerate minimum", minima.WALL)


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
    used = row_budget(p, max_mb, pipeline_max_draws=pipeline_max_draws)["pipeline_max_draws"]
    n_pipe = min(n_draws, used["used"])
    return dimension.pipeline_uniform_null(
        n_null, n_pipe, p, box, kpca["n_kpca"], kpca["gamma"], seed, transform
    )


def _census_minima(census_table: pd.DataFrame) -> pd.Series:
    """Which census rows are minima or box KKT points of index 0."""
    t = census_table
    return t["classification"].isin(MINIMUM_KINDS) & (t["index"] == 0)


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
    pick = np.flatnonzero((_census_minima(t) & (t["mean_loss"] < good_threshold)).to_numpy())
    p = target.p
    if not len(pick):
        return "the census found no good minimum or box KKT point"
    if p > dense_max:
        return (
            f"it needs dense p x p Hessians and p = {p} > landscape.census.dense_max = {dense_max}"
        )
    _, good = _good(store, good_threshold)
    idx = np.flatnonzero(good)
    if len(idx) < 2:
        return "fewer than 2 good draws"
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng([seed, 5]).choice(idx, max_points, replace=False))
    raw = streaming.RowView(store.theta, None, draw_block=draw_block, max_block_mb=max_block_mb)
    spread = np.cov(np.asarray(raw[idx], dtype=np.float64), rowvar=False)
    # the lowest points first, as many p x p factors as the budget holds
    ids = t["id"].to_numpy()[pick[: budget_rows(p * p, max_mb)]]
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
        block=min(1 << 15, budget_rows(p, max_mb)),
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


def autocorrelation_window(store) -> dict:
    """The lag window within which draws of one chain are not each other's neighbours: the
    draws per effective draw, ``chains * draws / ESS_bulk(U)``, rounded up (at most a chain)."""
    from arviz_stats.base import array_stats

    energy = np.asarray(store.potential(), dtype=np.float64)
    n_chains, n_draws = energy.shape
    ess = float(array_stats.ess(energy, method="bulk", chain_axis=0, draw_axis=1))
    tau = n_chains * n_draws / ess if np.isfinite(ess) and ess > 0 else float(n_draws)
    return {
        "window": int(min(n_draws, np.ceil(tau))),
        "ess_bulk_U": ess,
        "meaning": "twonn and mle: draws of the same chain closer than `window` draws are not "
        "neighbours (window = chains x draws / bulk ESS of U); intervals bootstrap whole "
        "chains. twonn_naive and mle_naive: every draw a neighbour, draws bootstrapped",
    }


# --- census ------------------------------------------------------------------------------------


def select_census_starts(
    store,
    coordinates: streaming.Transform | None,
    *,
    good_threshold: float,
    seed: int,
    n_clusters: int,
    n_random: int,
    max_points: int,
    max_mb: float,
    draw_block: int,
    max_block_mb: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Flat draw indices and their source (``cluster-all``, ``random-all``, ``cluster-good``,
    ``random-good``), sorted by index. Clustering runs in the analysis ``coordinates`` (None:
    raw) on at most ``max_points`` draws per pool, fewer when ``max_mb`` says so."""
    raw = streaming.RowView(store.theta, None, draw_block=draw_block, max_block_mb=max_block_mb)
    max_points = min(max_points, budget_rows(raw.shape[1], max_mb))
    _, good = _good(store, good_threshold)
    kw = {"n_clusters": n_clusters, "n_random": n_random, "seed": seed}
    idx, src = minima.select_starts(raw, key=coordinates, max_points=max_points, **kw)
    parts = [(idx, np.char.add(src.astype(str), "-all"))]
    gidx = np.flatnonzero(good)
    if len(gidx):
        rng = np.random.default_rng([seed, 1])
        if len(gidx) > max_points:
            gidx = np.sort(rng.choice(gidx, size=max_points, replace=False))
        G = raw[gidx]
        i, s = minima.select_starts(G, key=coordinates, max_points=max_points, **kw)
        parts.append((gidx[i], np.char.add(s.astype(str), "-good")))
    idx = np.concatenate([p[0] for p in parts])
    src = np.concatenate([p[1] for p in parts])
    order = np.argsort(idx, kind="stable")
    return idx[order], src[order]


def run_census(
    store,
    target: model.Target,
    coordinates: streaming.Transform | None,
    *,
    coordinates_name: str,
    good_threshold: float,
    seed: int,
    draw_block: int,
    max_block_mb: float,
    n_clusters: int,
    n_random: int,
    max_points: int,
    max_mb: float,
    key: str,
    merge_tol: float,
    maxiter: int,
    n_restarts: int,
    gtol: float,
    dense_max: int,
    n_eig: int,
    eig_tol: float,
    eig_maxiter: int,
    saddle_search: bool = True,
) -> tuple[minima.Census, pd.DataFrame, dict]:
    """(census, table, meta) of ``target`` from starts among the draws in ``store``: the census
    table gains ``good`` (mean loss below ``good_threshold``), ``n_from_all`` and
    ``n_from_good`` (starts from each pool that ended there). ``coordinates``: the analysis
    coordinates the starts are clustered in (None: raw); ``key``: ends are merged when their
    outputs on the data (``outputs``) or canonical forms (``canonical``) agree. The other
    arguments are the ``landscape.census`` settings (config/README.md)."""
    blocks = {"draw_block": draw_block, "max_block_mb": max_block_mb}
    idx, src = select_census_starts(
        store,
        coordinates,
        good_threshold=good_threshold,
        seed=seed,
        n_clusters=n_clusters,
        n_random=n_random,
        max_points=max_points,
        max_mb=max_mb,
        **blocks,
    )
    starts = streaming.RowView(store.theta, None, **blocks)[idx]
    mlp = target.mlp
    merge_key = {
        "logits": lambda: minima.target_logits(target, seed=seed),
        "outputs": lambda: minima.target_outputs(target),
        "canonical": lambda: symmetry.canonical_transform(
            mlp.sizes, mlp.activation, mlp.loss, mlp.bias
        ),
    }[key]()
    p = int(store.theta.shape[2])
    # the gradient-root search needs a dense Hessian per iteration
    search = bool(saddle_search and p <= dense_max)
    c = minima.census(
        target.U_and_grad,
        starts,
        target.box,
        saddle_search=search,
        key=merge_key,
        merge_tol=merge_tol,
        mean_loss=target.mean_loss,
        accuracy=minima.target_accuracy(target) if target.mlp.loss != "mse" else None,
        gtol=gtol,
        maxiter=maxiter,
        n_restarts=n_restarts,
        seed=seed,
        dense_max=dense_max,
        n_eig=n_eig,
        eig_tol=eig_tol,
        eig_maxiter=eig_maxiter,
    )
    table = pd.DataFrame(c.table, columns=list(c.table[0]) if c.table else None)
    from_good = np.char.endswith(src.astype(str), "-good")
    m = len(table)
    table["n_from_all"] = np.bincount(c.assignment[~from_good], minlength=m)[:m]
    table["n_from_good"] = np.bincount(c.assignment[from_good], minlength=m)[:m]
    table["good"] = table["mean_loss"] < good_threshold
    cooper = _cooper_columns(table, c.points, target, dense_max)
    _, good = _good(store, good_threshold)
    walls = []
    for row, point in zip(c.table, c.points, strict=True):
        if row["classification"] == minima.WALL:
            dep = minima.box_dependence(
                target.U_and_grad, point, target.box, gtol=gtol, maxiter=maxiter,
                n_restarts=n_restarts,
            )  # fmt: skip
            walls.append({"id": row["id"], **dep})
    meta = {
        "key": key,
        "key_meaning": {
            "logits": "ends merged when the network's centred logits on the data and on 64 "
            "probe inputs agree (they do not saturate, unlike the softmax)",
            "outputs": "ends merged when the network's softmax outputs on the data agree",
            "canonical": "ends merged when their canonical forms agree (symmetry.canonicalize)",
        }[key],
        "classes": {
            minima.WALL: "a coordinate on the box wall with the loss falling outward: a KKT "
            "point of the box-constrained problem, not a critical point of U; its place and U "
            "follow the box size (box_dependence). For cross-entropy, once some parameters "
            "classify every point the loss has its infimum at infinity, so low points inside "
            "the box end on the wall; model.loss: squared has interior minima",
        },
        "box_dependence": walls,
        "box_reading": _box_reading(walls),
        "clustering_coordinates": coordinates_name,
        "n_starts": int(len(idx)),
        "starts_by_source": {s: int((src == s).sum()) for s in np.unique(src)},
        "n_good_draws": int(good.sum()),
        "counts": minima.summary(c),
        "saddle_search": (
            f"least squares on the gradient from the same {len(idx)} starts: "
            f"{c.roots_found} ended at an interior critical point (n_roots per point)"
            if search
            else "off"
            if not saddle_search
            else f"skipped: p = {p} > dense_max = {dense_max} (it needs a dense Hessian)"
        ),
        "index_counts": minima.index_counts(c),
        "n_flat": sum(
            r["classification"] != "not converged" and r["n_free"] - r["n_zero"] <= 1
            for r in c.table
        ),
        "n_flat_meaning": "points with at most one eigenvalue above the resolution of central "
        "differences (1e-8): saturated networks whose loss is flat on the way to its infimum, "
        "not isolated minima",
        "spectrum": (
            f"dense Hessian, every eigenvalue: {p} <= dense_max"
            if p <= dense_max
            else f"eigsh: the {n_eig} smallest and {n_eig} largest eigenvalues "
            f"(free coordinates > dense_max = {dense_max}); index and n_zero count only "
            "among them (index_exact, n_zero_exact say when they are lower bounds)"
        ),
        "memory": row_budget(p, max_mb, max_points=max_points),
        "cooper": cooper,
    }
    return c, table, meta


def _cooper_columns(table: pd.DataFrame, points, target, dense_max: int) -> str:
    """Add ``rank_J`` (rank of the outputs' Jacobian on the data at each point) and
    ``cooper_dim`` (p - rank_J: the dimension of the zero-loss manifold through a point where
    a squared loss is 0, Cooper 2018; ``n_zero`` should equal it there, the Hessian being
    2 J'J); say what they mean for this network."""
    mlp, X = target.mlp, target.X
    p, rN = target.p, X.shape[0] * mlp.sizes[-1]
    if p > dense_max or not len(table):
        table["rank_J"] = table["cooper_dim"] = np.nan
        return f"not computed: p = {p} > dense_max = {dense_max}" if len(table) else "no points"

    def outputs(theta):
        return mlp.forward(theta, X).reshape(len(theta), -1)

    at = np.asarray(points)[table["id"].to_numpy()]
    ranks = [minima.jacobian_rank(outputs, x)[0] for x in at]
    table["rank_J"] = ranks
    table["cooper_dim"] = p - np.asarray(ranks)
    if mlp.loss == "cross_entropy":
        return (
            f"cross-entropy is never 0 at finite parameters, so no point interpolates and no "
            f"zero-loss manifold exists (p = {p}, rN = {rN}); rank_J is the local rank of the "
            "network's logits on the data"
        )
    if p <= rN:
        return (
            f"p = {p} <= rN = {rN}: for generic data no interpolating manifold exists; "
            "cooper_dim = p - rank_J is the local dimension of the set of equal outputs"
        )
    return (
        f"p - rN = {p} - {rN} = {p - rN}: the dimension of the manifold of zero-loss points "
        "for generic data; at a point with U = 0, cooper_dim = p - rank_J is its local "
        "dimension and n_zero (the Hessian being 2 J'J) should equal it"
    )


def _box_reading(walls: list[dict]) -> str:
    if not walls:
        return "no box KKT points"
    falling = sum(w["falls_with_box"] for w in walls)
    return (
        f"U falls as the box grows (L x {', '.join(f'{f:g}' for f in minima.BOX_FACTORS)}) at "
        f"{falling} of {len(walls)} box KKT points: their U is set by the box, not by the loss"
        + ("" if falling == len(walls) else "; at the others a larger box finds no lower U")
    )


def good_plane(
    store,
    transform: streaming.Transform | None,
    reduction,
    points: np.ndarray,
    *,
    n_components: int,
    max_mb: float,
    draw_block: int,
    max_block_mb: float,
) -> dict | None:
    """The reduce rule's linear PCA of the good draws in parameter space (``pca_param``) and
    ``points (m, p)`` (raw) projected on it. ``matches_reduce`` says whether the plane
    reproduces the stored coordinates. None with fewer than 2 good draws. ``transform``: the
    analysis coordinates (None: raw); ``n_components``: ``reduce.pca.n_components``.

    While the good draws fit in ``max_mb`` (``census.max_mb``) the PCA is refitted on them
    (exact PCA is deterministic). Otherwise the good draws keep their stored coordinates
    ``C`` and the axes are recovered in one streamed pass: for exact PCA,
    ``X_c^T C = V diag(|C_k|^2)`` with
    ``X_c`` the centred draws; ``matches_reduce`` then checks the axes on the first block of
    draws (False when reduce used IncrementalPCA, whose axes are not exact eigenvectors)."""
    gi = np.asarray(reduction.good_index)
    if len(gi) < 2:
        return None
    flat = gi[:, 0] * store.n_draws + gi[:, 1]
    view = streaming.RowView(
        store.theta, transform, draw_block=draw_block, max_block_mb=max_block_mb
    )
    k = min(n_components, len(flat), view.shape[1])
    stored = np.asarray(reduction.pca_param)[:, :k]
    P = points if transform is None or len(points) == 0 else transform(points)
    cap = budget_rows(view.shape[1], max_mb)
    colour = np.asarray(reduction.mean_loss)[gi[:, 0], gi[:, 1]]
    if len(flat) <= cap:
        G = view[flat]
        pca = PCA(n_components=k, svd_solver="full").fit(G)
        good = pca.transform(G)
        same = bool(stored.shape == good.shape and np.allclose(stored, good, atol=1e-8))
        return {
            "good": good,
            "points": pca.transform(P) if len(P) else np.zeros((0, k)),
            "ratio": pca.explained_variance_ratio_.tolist(),
            "matches_reduce": same,
            "colour": colour,
        }
    total, cross, first = np.zeros(view.shape[1]), np.zeros((view.shape[1], k)), None
    for a in range(0, len(flat), cap):
        rows = view[flat[a : a + cap]]
        total += rows.sum(axis=0)
        cross += rows.T @ stored[a : a + cap]
        first = rows if first is None else first
    mean = total / len(flat)
    axes = (cross - np.outer(mean, stored.sum(axis=0))) / (stored**2).sum(axis=0)
    check = (first - mean) @ axes
    ratio = getattr(reduction, "summary", {}).get("pca_param", {}).get("explained_variance_ratio")
    return {
        "good": stored,
        "points": (P - mean) @ axes if len(P) else np.zeros((0, k)),
        "ratio": list(ratio or [])[:k],
        "matches_reduce": bool(np.allclose(check, stored[: len(first)], atol=1e-8)),
        "colour": colour,
    }


# --- rotation comparison ---------------------------------------------------------------------


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
    _, good = _good(store, good_threshold)
    idx = np.flatnonzero(good)
    max_points = min(max_points, budget_rows(store.theta.shape[2], max_mb))
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_points, replace=False))
    rows = streaming.RowView(store.theta, None, draw_block=draw_block, max_block_mb=max_block_mb)
    return rows[idx], idx // store.theta.shape[1]


def compare_rows(
    ref,
    other,
    sizes,
    key: streaming.Transform | None,
    ref_exp,
    exp,
    n_good,
    *,
    coordinates: str,
    box: float,
    seed: int,
    method: str,
    n_perm: int,
    max_points: int,
    max_mb: float,
    k: int,
    alpha: float = 0.05,
    n_boot: int = 100,
    n_splits: int = 20,
) -> tuple[list[dict], dict]:
    """Rows (one per stage, before/after mapping back) and the full result of comparing the
    good draws ``other`` of experiment ``exp`` with ``ref`` of the reference ``ref_exp``, for
    the network of layer widths ``sizes``, in the analysis coordinates ``key`` (None: raw).
    ``ref`` and ``other`` are ``(draws, chain of each)`` pairs (:func:`good_rows`); ``n_good``
    = (reference, other) good-draw counts before subsampling; ``memory`` in the result says how
    many rows ``max_mb`` allowed per experiment. The keyword arguments are ``target.box``,
    ``seed`` and the ``landscape.compare`` settings (config/README.md)."""
    sz = tuple(sizes)
    (ref, ref_chains), (other, other_chains) = ref, other
    base = {
        "experiment": exp.name,
        "reference": ref_exp.name,
        "coordinates": coordinates,
        "method": method,
        "n_good_ref": int(n_good[0]),
        "n_good_other": int(n_good[1]),
    }
    memory = row_budget(np.shape(ref)[1], max_mb, max_points=max_points)
    A, t, _ = data.experiment_affine(ref_exp.transforms, sz[0])
    if not (np.allclose(A, np.eye(len(A))) and np.allclose(t, 0)):
        # compare() maps the other experiment to the untransformed dataset: do the same here
        ref, _ = compare.map_back(ref, sz, ref_exp.transforms)
    need = k + 1
    if min(len(ref), len(other)) < need:
        msg = f"skipped: n_good={n_good[0]} (reference), {n_good[1]} (this); needs >= {need} each"
        rows = [dict(base, stage=s, status=msg) for s in ("before", "after")]
        return rows, dict(base, status=msg, memory=memory)
    res = compare.compare_clouds(
        ref,
        other,
        sz,
        exp.transforms,
        ref_transforms=ref_exp.transforms,
        chains_ref=ref_chains,
        chains_other=other_chains,
        box=box,
        key=key,
        k=k,
        method=method,
        n_perm=n_perm,
        seed=seed,
        max_points=max_points,
        alpha=alpha,
        n_boot=n_boot,
        n_splits=n_splits,
    )
    res["isometry"] = _is_isometry(ref_exp, sz) and _is_isometry(exp, sz)
    res["meaning"] = _meaning(res)
    box_info = res.get("common_box", {})
    rows = []
    for stage in ("before", "after"):
        r = res[stage]
        if r["status"] != "ok":
            rows.append(dict(base, stage=stage, status=r["status"]))
            continue
        row = dict(base, stage=stage, status="ok", statistic=r["statistic"], pvalue=r["pvalue"])
        row.update(
            smallest_pvalue=r["smallest_pvalue"],
            verdict=r["verdict"],
            chains_ref=r["chains_x"],
            chains_other=r["chains_y"],
        )
        row.update({f"angle_{i + 1}": a for i, a in enumerate(r["angles"])})
        split = r["split_half_max_angle"] or {}
        row.update(
            max_angle=r["max_angle"],
            max_angle_lo=r["max_angle_interval"][0],
            max_angle_hi=r["max_angle_interval"][1],
            split_half_max_angle=split.get("median", np.nan),
            split_half_max_angle_q95=split.get("q95", np.nan),
            angle_verdict=r["angle_verdict"],
            n_ref=r["n_x"],
            n_other=r["n_y"],
            exact=res["exact"],
            frac_outside_box=res["frac_outside_box"],
        )
        if stage == "after":
            row.update(
                ref_dropped_fraction=box_info.get("ref_dropped_fraction", 0.0),
                other_dropped_fraction=box_info.get("other_dropped_fraction", 0.0),
            )
        rows.append(row)
    return rows, dict(base, status="ok", memory=memory, **res)


def _is_isometry(exp, sizes) -> bool:
    A, _, exact = data.experiment_affine(exp.transforms, sizes[0])
    return exact and bool(np.allclose(A.T @ A, np.eye(len(A))))


def _meaning(res: dict) -> str:
    if not res["exact"]:
        return (
            "the labels were changed: no parameter map makes the two problems the same, so "
            "'after' compares related but different targets"
        )
    if res["isometry"]:
        return (
            "the transform is an isometry of parameter space and the report's kernel PCA and "
            "PCA are invariant under it: after mapping back, agreement holds by construction "
            "inside B ∩ M(B), so 'after' checks the sampler; 'before' shows what the transform "
            "moves, and the dropped fractions what the box cuts"
        )
    return (
        "the transform is not an isometry: mapped back, the other experiment's box is a "
        "different parallelepiped M(B), and only on B ∩ M(B) do both experiments sample the same "
        "density; 'after' compares there, and the dropped fractions say how much that leaves out"
    )


def compare_projection(ref, other, sizes, key: streaming.Transform | None, exp) -> dict | None:
    """Both clouds (``(draws, chains)`` pairs), before and after mapping back, on the
    reference's top-2 PCA plane (in the analysis coordinates ``key``, None: raw), for the
    figure."""
    (ref, _), (other, _) = ref, other
    if min(len(ref), len(other)) < 3:
        return None
    mapped, _ = compare.map_back(other, tuple(sizes), exp.transforms)
    key = key or (lambda x: x)
    pca = PCA(n_components=2).fit(key(ref))
    return {
        "reference": pca.transform(key(ref)),
        "before": pca.transform(key(other)),
        "after": pca.transform(key(mapped)),
    }


# --- connectivity -------------------------------------------------------------------------------


def _spanning_edges(M: np.ndarray) -> list[tuple[int, int]]:
    """Edges of a minimum spanning tree of the complete graph with weights ``M``."""
    from scipy.sparse.csgraph import minimum_spanning_tree

    # csgraph reads a zero weight as no edge: shift to >= 1 (the tree does not change)
    W = M - M[np.isfinite(M)].min() + 1.0
    np.fill_diagonal(W, 0.0)
    tree = minimum_spanning_tree(np.where(np.isfinite(W), W, 0.0)).tocoo()
    return sorted((int(min(i, j)), int(max(i, j))) for i, j in zip(tree.row, tree.col, strict=True))


def run_connect(
    target: model.Target,
    census_table: pd.DataFrame,
    census_points: np.ndarray,
    *,
    good_threshold: float,
    max_nodes: int,
    max_pairs: int,
    level: float | None,
    alpha: float,
    max_depth: int,
    max_beads: int,
    maxiter: int,
    n_images: int,
    n_iter: int,
    length_levels=(),
    length_pairs: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Are the census minima connected? Nodes: the ``max_nodes`` lowest census points of index
    0 (minima, box KKT points). The straight-line maximum of every pair, then, AutoNEB-style,
    pairs along the minimum spanning tree of the path maxima refined by Dynamic String
    Sampling at ``level`` (mean loss; None: the good threshold) and the string method, until
    the tree's edges are all refined or ``max_pairs`` are. Each refined pair is also tried
    modulo symmetry: from the first node to the copy of the second nearest to it
    (:func:`symmetry.nearest_copy`), the straight line and DSS (``sym_*`` columns). The
    first ``length_pairs`` refined pairs are rerun at ``length_levels`` times the level
    (beads and normalised length against the level). Returns the refined pairs' table and
    ``meta``: the nodes, the lowest known path maximum of every pair (``path_max``, mean
    loss), the number of components of the level sets among the nodes at a grid of levels
    (an upper bound: only known paths count), the refined pairs' profiles and the length
    scan."""
    pick = census_table[_census_minima(census_table)].sort_values("U").head(max_nodes)
    per_point = float(target.mean_loss(np.float64(1.0)))  # mean loss per unit of U
    level = good_threshold if level is None else level
    meta = {
        "level": level,
        "nodes": pick["id"].astype(int).tolist(),
        "meaning": "path_max: the highest mean loss on the lowest known path between two "
        "nodes (straight line, Dynamic String Sampling, string method); n_components: "
        "components of {mean loss <= lam} among the nodes joined by known paths, an upper "
        "bound on the true count; 'not connected within budget' is not 'disconnected'",
    }
    if len(pick) < 2:
        meta.update(path_max=[], levels=[], n_components=[], profiles=[])
        return pd.DataFrame(columns=CONNECT_COLUMNS), meta
    X = np.asarray(census_points, dtype=np.float64)[pick["id"].to_numpy()]
    node_U = np.asarray(target.U(X), dtype=np.float64)
    n = len(X)
    M = np.full((n, n), np.inf)
    np.fill_diagonal(M, node_U)
    for i in range(n):
        for j in range(i + 1, n):
            M[i, j] = M[j, i] = connect.line_max(target.U_and_grad, X[i], X[j])[0]
    straight = M.copy()
    rows, profiles, done, refined = [], [], set(), []
    level_U = level / per_point
    dss_budget = dict(alpha=alpha, max_depth=max_depth, max_beads=max_beads, maxiter=maxiter)
    mlp = target.mlp
    near_kw = dict(activation=mlp.activation, loss=mlp.loss, bias=mlp.bias)
    while len(done) < max_pairs:
        todo = [e for e in _spanning_edges(M) if e not in done]
        if not todo:
            break
        for i, j in todo[: max_pairs - len(done)]:
            done.add((i, j))
            refined.append((i, j))
            dss = connect.dynamic_string(
                target.U_and_grad, X[i], X[j], level_U, target.box, **dss_budget
            )
            string = connect.string_barrier(
                target.U_and_grad, dss["beads"], target.box, n_images=n_images, n_iter=n_iter
            )
            best = min(straight[i, j], string["path_max"])
            if dss["connected"]:
                best = min(best, dss["path_max"])
            M[i, j] = M[j, i] = best
            copy, sym_method = symmetry.nearest_copy(X[i], X[j], mlp.sizes, **near_kw)
            sym = connect.dynamic_string(
                target.U_and_grad, X[i], copy, level_U, target.box, **dss_budget
            )
            rows.append(
                {
                    "node_a": int(pick["id"].iloc[i]),
                    "node_b": int(pick["id"].iloc[j]),
                    "loss_a": node_U[i] * per_point,
                    "loss_b": node_U[j] * per_point,
                    "straight_max": straight[i, j] * per_point,
                    "level": level,
                    "connected": dss["connected"],
                    "dss_path_max": dss["path_max"] * per_point,
                    "n_beads": dss["n_beads"],
                    "normalised_length": dss["normalised_length"],
                    "string_path_max": string["path_max"] * per_point,
                    "barrier": (best - max(node_U[i], node_U[j])) * per_point,
                    "status": dss["status"],
                    "sym_distance_ratio": float(
                        np.linalg.norm(copy - X[i]) / max(np.linalg.norm(X[j] - X[i]), 1e-300)
                    ),
                    "sym_straight_max": connect.line_max(target.U_and_grad, X[i], copy)[0]
                    * per_point,
                    "sym_connected": sym["connected"],
                    "sym_dss_path_max": sym["path_max"] * per_point,
                    "sym_status": sym["status"],
                }
            )
            profiles.append(
                {
                    "pair": [rows[-1]["node_a"], rows[-1]["node_b"]],
                    "straight": _line_profile(target, X[i], X[j], per_point),
                    "dss": _path_profile(target, dss["beads"], per_point),
                    "string": _path_profile(target, string["images"], per_point),
                }
            )
    path_max = M * per_point
    # from the lowest node to a little above the level where the known paths join them all
    top = max(path_max[i, j] for i, j in _spanning_edges(M))
    levels = np.unique(np.r_[np.linspace(path_max.diagonal().min(), 1.1 * top, 25), level])
    counts = connect.components_by_level(node_U * per_point, path_max, levels)
    scan = [
        _length_scan(target, X[i], X[j], level_U, per_point, length_levels, dss_budget)
        | {"pair": [int(pick["id"].iloc[i]), int(pick["id"].iloc[j])]}
        for i, j in refined[:length_pairs]
    ]
    meta.update(
        path_max=path_max.tolist(),
        levels=levels.tolist(),
        n_components=counts.tolist(),
        components_at_level=int(counts[levels == level][0]),
        profiles=profiles,
        symmetry=sym_method if rows else None,
        length_by_level=scan,
    )
    return pd.DataFrame(rows, columns=CONNECT_COLUMNS), meta


def sample_components(
    target: model.Target,
    store,
    *,
    level: float,
    knn_points: int,
    knn_k: int,
    knn_merges: int,
    max_mb: float,
    seed: int,
    draw_block: int,
    max_block_mb: float,
    dss_budget: dict,
) -> dict:
    """How many components of {mean loss <= ``level``} do the sampled draws touch, at most?
    :func:`connect.sample_components` on up to ``knn_points`` draws below the level."""
    rows, _ = good_rows(
        store, good_threshold=level, max_points=knn_points, max_mb=max_mb, seed=seed,
        draw_block=draw_block, max_block_mb=max_block_mb,
    )  # fmt: skip
    per_point = float(target.mean_loss(np.float64(1.0)))
    found = connect.sample_components(
        target.U_and_grad, rows, level / per_point, target.box, k=knn_k, n_merges=knn_merges,
        **dss_budget,
    )  # fmt: skip
    return found | {
        "level": level,
        "meaning": "components of the k-nearest-neighbour graph of the draws below the level "
        "(edges: straight segments below it on a grid), after DSS joined the lowest draws of "
        "the largest components: an upper bound on the components of the level set that the "
        "draws touch",
    }


def _length_scan(target, a, b, level_U, per_point, multiples, budget) -> dict:
    """DSS between ``a`` and ``b`` at ``multiples`` of the level: beads, normalised length."""
    out = {"level": [], "connected": [], "n_beads": [], "normalised_length": []}
    for m in multiples:
        r = connect.dynamic_string(target.U_and_grad, a, b, m * level_U, target.box, **budget)
        out["level"].append(m * level_U * per_point)
        out["connected"].append(bool(r["connected"]))
        out["n_beads"].append(int(r["n_beads"]))
        out["normalised_length"].append(float(r["normalised_length"]))
    return out


CONNECT_COLUMNS = [
    "node_a",
    "node_b",
    "loss_a",
    "loss_b",
    "straight_max",
    "level",
    "connected",
    "dss_path_max",
    "n_beads",
    "normalised_length",
    "string_path_max",
    "barrier",
    "status",
    "sym_distance_ratio",
    "sym_straight_max",
    "sym_connected",
    "sym_dss_path_max",
    "sym_status",
]


def _path_profile(target, points, per_point, n_per_segment: int = 8) -> dict:
    """Mean loss along the polyline ``points`` against normalised arc length."""
    points = np.asarray(points)
    t = np.linspace(0.0, 1.0, n_per_segment, endpoint=False)
    dense = np.vstack(
        [a + t[:, None] * (b - a) for a, b in zip(points[:-1], points[1:], strict=True)]
        + [points[-1:]]
    )
    step = np.linalg.norm(np.diff(dense, axis=0), axis=1)
    s = np.r_[0.0, np.cumsum(step)]
    return {
        "s": (s / s[-1] if s[-1] > 0 else s).tolist(),
        "loss": (np.asarray(target.U(dense)) * per_point).tolist(),
    }


def _line_profile(target, a, b, per_point) -> dict:
    return _path_profile(target, np.vstack([a, b]), per_point, n_per_segment=64)


# --- Liu's convex cells ----------------------------------------------------------------------

CELLS_COLUMNS = [
    "cell", "visits", "good_visits", "chains", "mass", "lowest_loss", "census_ids",
    "active_fraction", "cell_loss", "unique", "genuine", "margin", "signs",
    "genuine_z_positive", "mean_unit_diameter", "open_units", "representative", "pattern",
]  # fmt: skip


def _group(keys: np.ndarray, *sums: np.ndarray, loss: np.ndarray, flat: np.ndarray):
    """Rows grouped by ``keys`` (void scalars): the sorted distinct keys, the per-key sums of
    ``sums``, and per key the lowest ``loss`` with its ``flat`` index."""
    uniq, inv = np.unique(keys, return_inverse=True)
    totals = [np.bincount(inv, weights=v, minlength=len(uniq)) for v in sums]
    order = np.lexsort((loss, inv))
    first = order[np.r_[0, np.flatnonzero(np.diff(inv[order])) + 1]]
    return uniq, totals, loss[first], flat[first]


def _void(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows)
    return rows.view(np.dtype((np.void, rows.shape[1]))).ravel()


def _cell_keys(theta, layout, X) -> np.ndarray:
    pattern = cells.draw_patterns(theta, layout, X)
    return _void(np.packbits(pattern.reshape(len(pattern), -1), axis=1))


def run_cells(
    target: model.Target,
    store,
    census_table: pd.DataFrame,
    census_points: np.ndarray,
    *,
    good_threshold: float,
    max_cells: int,
    directions_per_dim: int,
    seed: int,
    draw_block: int,
    max_block_mb: float,
) -> tuple[pd.DataFrame, dict]:
    """Liu's cells of a one-hidden-layer ReLU network with squared loss, from every draw and
    census minimum: visits, posterior mass and the chains that reached each activation
    pattern; for the ``max_cells`` most visited cells and every cell holding a census minimum,
    the cell's least-squares minimum, Liu's genuine-minimum LP (free signs and his z > 0
    variant) and his sampled unit-cell diameters; Cover's count of the cells and Good-Turing
    estimates of the mass never visited. Memory: one draw block plus the distinct cells."""
    layout = target.mlp.layout
    X, y = target.X, np.asarray(target.y, dtype=np.float64)[:, 0]
    n, d = X.shape
    K = layout.sizes[1]
    output_bias = layout.layers[1].has_bias
    n_chains, n_draws, _ = store.theta.shape
    mean_loss, good = _good(store, good_threshold)
    dpb = streaming.draws_per_block(store.theta.shape, draw_block, max_block_mb)
    seen, pairs = None, None  # (cell, chain) incidences
    for d0, d1, rows in streaming.iter_draw_blocks(store.theta, dpb):
        flat = streaming.block_flat(n_draws, d0, d1, n_chains)
        keys = _cell_keys(rows, layout, X)
        chain = (flat // n_draws).astype(np.int32)
        width = keys.dtype.itemsize
        tagged = _void(np.concatenate(
            [keys.view(np.uint8).reshape(-1, width), chain.view(np.uint8).reshape(-1, 4)], axis=1
        ))  # fmt: skip
        pairs = np.unique(tagged if pairs is None else np.concatenate([pairs, tagged]))
        block = _group(keys, np.ones(len(keys)), good[flat].astype(float),
                       loss=mean_loss[flat], flat=flat)  # fmt: skip
        if seen is not None:
            block = _group(
                np.concatenate([seen[0], block[0]]),
                *(np.concatenate([a, b]) for a, b in zip(seen[1], block[1], strict=True)),
                loss=np.concatenate([seen[2], block[2]]),
                flat=np.concatenate([seen[3], block[3]]),
            )
        seen = block
    keys, (visits, good_visits), lowest, lowest_flat = seen
    width = keys.dtype.itemsize
    pair_keys = _void(pairs.view(np.uint8).reshape(len(pairs), -1)[:, :width])
    chains = np.bincount(np.searchsorted(keys, pair_keys), minlength=len(keys))
    order = np.lexsort((keys, -visits))  # most visited first; ties by pattern
    keys, visits, good_visits, chains = (
        keys[order],
        visits[order],
        good_visits[order],
        chains[order],
    )
    lowest, lowest_flat = lowest[order], lowest_flat[order]

    minima_rows = census_table[_census_minima(census_table)]
    census_ids = minima_rows["id"].astype(int).to_numpy()
    census_theta = np.asarray(census_points, dtype=np.float64)[census_ids]
    census_keys = _cell_keys(census_theta, layout, X) if len(census_ids) else keys[:0]
    extra = np.setdiff1d(census_keys, keys)
    keys = np.concatenate([keys, extra])
    zeros = np.zeros(len(extra))
    visits, good_visits = np.r_[visits, zeros], np.r_[good_visits, zeros]
    chains, lowest = np.r_[chains, zeros.astype(int)], np.r_[lowest, np.full(len(extra), np.nan)]
    lowest_flat = np.r_[lowest_flat, np.full(len(extra), -1)]
    cell_of_census = {int(i): int(np.flatnonzero(keys == k)[0])
                      for i, k in zip(census_ids, census_keys, strict=True)}  # fmt: skip
    examined = sorted(set(range(min(max_cells, len(keys)))) | set(cell_of_census.values()))

    # a representative point per examined cell: its lowest draw, else a census minimum in it
    drawn = [c for c in examined if lowest_flat[c] >= 0]
    where = np.sort(lowest_flat[drawn])  # distinct: a draw lies in one cell
    found = streaming.gather(store.theta, [where], dpb)[0]
    reps = {c: found[np.searchsorted(where, lowest_flat[c])] for c in drawn}
    for i, c in cell_of_census.items():
        reps.setdefault(c, census_theta[np.flatnonzero(census_ids == i)[0]])
    directions = cells.random_directions(
        directions_per_dim * (d + 1), d + 1, np.random.default_rng(seed)
    )
    total = visits.sum()
    rows = []
    for c in examined:
        pattern = np.unpackbits(keys[c : c + 1].view(np.uint8))[: n * K].reshape(n, K).astype(bool)
        free, liu = cells.both_variants(X, y, pattern, target.box, output_bias=output_bias)
        Wa, _ = cells.unit_weights(reps[c], layout)
        diam = cells.unit_diameters(Wa[0], X, directions)
        closed = diam[np.isfinite(diam)]
        rows.append(
            {
                "cell": c,
                "visits": int(visits[c]),
                "good_visits": int(good_visits[c]),
                "chains": int(chains[c]),
                "mass": visits[c] / total if total else 0.0,
                "lowest_loss": lowest[c],
                "census_ids": " ".join(str(i) for i, cc in cell_of_census.items() if cc == c),
                "active_fraction": float(pattern.mean()),
                "cell_loss": free["loss"],
                "unique": free["unique"],
                "genuine": free["genuine"],
                "margin": free["t"],
                "signs": "".join("+" if s > 0 else "-" for s in free["signs"] or []),
                "genuine_z_positive": liu["genuine"],
                "mean_unit_diameter": float(closed.mean()) if closed.size else np.inf,
                "open_units": int((~np.isfinite(diam)).sum()),
                "representative": "draw" if lowest_flat[c] >= 0 else "census",
                "pattern": cells.pattern_text(pattern),
            }
        )
    table = pd.DataFrame(rows, columns=CELLS_COLUMNS)
    by_cell = table.set_index("cell")
    census_rows = minima_rows.set_index("id")
    consistency = []
    for i, c in cell_of_census.items():
        kind = census_rows.loc[i, "classification"]
        loss = float(census_rows.loc[i, "mean_loss"])
        cell_loss = float(by_cell.loc[c, "cell_loss"])
        in_genuine_cell = bool(by_cell.loc[c, "genuine"])
        consistency.append(
            {
                "id": i,
                "cell": c,
                "classification": kind,
                "mean_loss": loss,
                "cell_loss": cell_loss,
                "genuine": in_genuine_cell,
                # a box KKT point need not be a cell minimum: the wall stops it first
                "consistent": kind == minima.WALL
                or (in_genuine_cell and abs(cell_loss - loss) <= 1e-8 * max(1, loss)),
            }
        )
    meta = {
        "n_points": n,
        "n_features": d,
        "n_units": K,
        "output_bias": output_bias,
        "box": target.box,
        "cells_per_unit": cells.cover_count(n, d),
        "log10_cells_of_layer": cells.layer_cells_log10(n, d, K),
        "draws": int(total),
        "cells_visited": int((visits > 0).sum()),
        "cells_visited_by_good_draws": int((good_visits > 0).sum()),
        "examined": len(examined),
        "mass_examined": float(visits[examined].sum() / total) if total else 0.0,
        "unseen_mass_good_turing": cells.good_turing_unseen(visits[visits > 0]),
        "unseen_mass_by_chains": cells.incidence_unseen(chains[visits > 0], n_chains),
        "genuine": int(table["genuine"].sum()),
        "spurious": int((~table["genuine"].astype(bool)).sum()),
        "genuine_z_positive": int(table["genuine_z_positive"].sum()),
        "census": consistency,
        "census_consistent": all(r["consistent"] for r in consistency),
        "meaning": "a cell is an activation pattern of the hidden layer on the data; its "
        "minimum (least squares in R_j = z_j w_j) is genuine when some minimiser with some "
        "output signs realises the pattern (LP, HiGHS), spurious otherwise; "
        "genuine_z_positive is Liu's variant with every z_j > 0. Cells are counted as Cover "
        "does, for data in general position. unseen_mass_good_turing counts draws (low when "
        "consecutive draws repeat cells); unseen_mass_by_chains counts chains (Chao's "
        "incidence estimator). Diameters follow Liu Sec. VI: open unit cells are counted in "
        "open_units and left out of the mean",
    }
    return table, meta
