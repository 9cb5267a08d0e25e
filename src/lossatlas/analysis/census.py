"""The census of critical points of one experiment, from its store: starts among all draws and
among the good draws (:func:`run_census`, around :func:`lossatlas.analysis.minima.census`), and
the good draws' PCA plane with the census points on it (:func:`good_plane`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from sklearn.decomposition import PCA

from lossatlas import canvas, model
from lossatlas.analysis import draws, minima
from lossatlas.storage import streaming


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
    max_points = min(max_points, draws.budget_rows(raw.shape[1], max_mb))
    _, good = draws.good_mask(store, good_threshold)
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


KEY_MEANING = {
    "logits": "ends merged when the network's centred logits on the data and on 64 "
    "probe inputs agree (they do not saturate, unlike the softmax)",
    "outputs": "ends merged when the network's softmax outputs on the data agree",
    "canonical": "ends merged when their canonical forms agree (symmetry.canonicalize)",
}
CLASSES = {
    minima.WALL: "a coordinate on the box wall with the loss falling outward: a KKT "
    "point of the box-constrained problem, not a critical point of U; its place and U "
    "follow the box size (box_dependence). For cross-entropy, once some parameters "
    "classify every point the loss has its infimum at infinity, so low points inside "
    "the box end on the wall; model.loss: squared has interior minima",
}
N_FLAT_MEANING = (
    "points with at most one eigenvalue above the resolution of central "
    "differences (1e-8): saturated networks whose loss is flat on the way to its infimum, "
    "not isolated minima"
)


def _merge_key(target, key: str, seed: int):
    """What two ends must share to be one critical point (``landscape.census.key``)."""
    return {
        "logits": lambda: minima.target_logits(target, seed=seed),
        "outputs": lambda: minima.target_outputs(target),
        "canonical": target.network.canonical_transform,
    }[key]()


def _box_dependence(c: minima.Census, target, **optimiser) -> list[dict]:
    """Every box KKT point re-optimised in smaller and larger boxes."""
    return [
        {
            "id": row["id"],
            **minima.box_dependence(target.U_and_grad, point, target.box, **optimiser),
        }
        for row, point in zip(c.table, c.points, strict=True)
        if row["classification"] == minima.WALL
    ]


def _saddle_reading(c, n_starts: int, search: bool, asked: bool, p: int, dense_max: int) -> str:
    if search:
        return (
            f"least squares on the gradient from the same {n_starts} starts: "
            f"{c.roots_found} ended at an interior critical point (n_roots per point)"
        )
    if not asked:
        return "off"
    return f"skipped: p = {p} > dense_max = {dense_max} (it needs a dense Hessian)"


def _spectrum_reading(p: int, dense_max: int, n_eig: int) -> str:
    if p <= dense_max:
        return f"dense Hessian, every eigenvalue: {p} <= dense_max"
    return (
        f"eigsh: the {n_eig} smallest and {n_eig} largest eigenvalues "
        f"(free coordinates > dense_max = {dense_max}); index and n_zero count only "
        "among them (index_exact, n_zero_exact say when they are lower bounds)"
    )


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
    merge_key = _merge_key(target, key, seed)
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
        accuracy=minima.target_accuracy(target) if target.network.loss != "mse" else None,
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
    _, good = draws.good_mask(store, good_threshold)
    walls = _box_dependence(c, target, gtol=gtol, maxiter=maxiter, n_restarts=n_restarts)
    meta = {
        "key": key,
        "key_meaning": KEY_MEANING[key],
        "classes": CLASSES,
        "box_dependence": walls,
        "box_reading": _box_reading(walls),
        "clustering_coordinates": coordinates_name,
        "n_starts": int(len(idx)),
        "starts_by_source": {s: int((src == s).sum()) for s in np.unique(src)},
        "n_good_draws": int(good.sum()),
        "counts": minima.summary(c),
        "saddle_search": _saddle_reading(c, len(idx), search, saddle_search, p, dense_max),
        "index_counts": minima.index_counts(c),
        "n_flat": sum(
            r["classification"] != "not converged" and r["n_free"] - r["n_zero"] <= 1
            for r in c.table
        ),
        "n_flat_meaning": N_FLAT_MEANING,
        "spectrum": _spectrum_reading(p, dense_max, n_eig),
        "memory": draws.row_budget(p, max_mb, max_points=max_points),
        "cooper": cooper,
    }
    return c, table, meta


def _cooper_columns(table: pd.DataFrame, points, target, dense_max: int) -> str:
    """Add ``rank_J`` (rank of the outputs' Jacobian on the data at each point) and
    ``cooper_dim`` (p - rank_J: the dimension of the zero-loss manifold through a point where
    a squared loss is 0, Cooper 2018; ``n_zero`` should equal it there, the Hessian being
    2 J'J); say what they mean for this network."""
    net, X = target.network, target.X
    p, rN = target.p, X.shape[0] * net.n_outputs
    if p > dense_max or not len(table):
        table["rank_J"] = table["cooper_dim"] = np.nan
        return f"not computed: p = {p} > dense_max = {dense_max}" if len(table) else "no points"

    def outputs(theta):
        return net.forward(theta, X).reshape(len(theta), -1)

    at = np.asarray(points)[table["id"].to_numpy()]
    ranks = [minima.jacobian_rank(outputs, x)[0] for x in at]
    table["rank_J"] = ranks
    table["cooper_dim"] = p - np.asarray(ranks)
    if net.loss == "cross_entropy":
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
    cap = draws.budget_rows(view.shape[1], max_mb)
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


# --- figure ------------------------------------------------------------------------------


def plot_census_loss_index(table, path, title: str | None = None, dpi: int = 120) -> Path:
    """Critical points of a census: mean loss against Hessian index, one marker per
    classification, marker area by basin share. ``table`` has columns mean_loss, index,
    classification, basin_share (a ``minima.census`` table)."""
    fig = canvas.figure(5.6, 3.8)
    ax = fig.subplots()
    kinds = list(dict.fromkeys(str(k) for k in table["classification"]))
    markers = dict(zip(kinds, "osD^vx*", strict=False))
    rng = np.random.default_rng(0)
    for i, kind in enumerate(kinds):
        sel = np.asarray(table["classification"]) == kind
        idx = np.asarray(table["index"], dtype=float)[sel]
        # jitter the integer index a little so equal points stay visible
        x = idx + rng.uniform(-0.12, 0.12, size=len(idx))
        share = np.asarray(table["basin_share"], dtype=float)[sel]
        ax.scatter(
            x,
            np.asarray(table["mean_loss"], dtype=float)[sel],
            s=20 + 400 * share,
            marker=markers.get(kind, "o"),
            color=f"C{i}",
            alpha=0.7,
            edgecolor="k",
            label=f"{kind} ({int(sel.sum())})",
        )
    index = np.asarray(table["index"], dtype=float)
    if len(index) and np.isfinite(index).any():
        lo, hi = int(np.nanmin(index)), int(np.nanmax(index))
        ax.set_xlim(lo - 0.5, hi + 0.5)
        if hi - lo <= 20:
            ax.set_xticks(range(lo, hi + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(
        "Hessian index (negative eigenvalues, free coordinates);\n"
        "points spread by up to ±0.12 around it so equal ones stay visible",
        fontsize="small",
    )
    ax.set_ylabel("mean per-point loss")
    head = f"{title}: " if title else ""
    ax.set_title(f"{head}census of {len(table)} critical points (area = basin share)")
    if kinds:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no critical points", ha="center", va="center", transform=ax.transAxes)
    return canvas.save(fig, path, dpi)


def plot_census_plane(plane, table, path, title: str | None = None, dpi: int = 120) -> Path:
    """Census points on the 2-D linear PCA plane of the good draws. ``plane`` is a dict
    with ``good (n, 2)``, ``points (m, 2)``, ``ratio``, ``colour (n,)`` or None (no plane: a
    message is drawn); ``table`` the census table in the same row order as ``points``."""
    fig = canvas.figure(6, 4.6)
    ax = fig.subplots()
    head = f"{title}: " if title else ""
    if plane is None or plane["good"].shape[1] < 2:
        ax.text(0.5, 0.5, "fewer than 2 good draws: no plane", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(f"{head}census minima on the good draws' plane")
        return canvas.save(fig, path, dpi)
    g, pts = plane["good"], plane["points"]
    sc = ax.scatter(g[:, 0], g[:, 1], s=4, c=plane.get("colour"), cmap="viridis", alpha=0.5)
    if plane.get("colour") is not None:
        fig.colorbar(sc, ax=ax, label="mean loss (draws)")
    good = np.asarray(table["good"], dtype=bool) if len(table) else np.zeros(0, bool)
    for sel, label, mk in ((good, "good critical point", "*"), (~good, "other", "x")):
        if sel.any():
            ax.scatter(pts[sel, 0], pts[sel, 1], s=90, marker=mk, color="C3", label=label)
    r = plane.get("ratio") or []
    ax.set_xlabel(f"PC1 ({r[0]:.1%} var.)" if r else "PC1")
    ax.set_ylabel(f"PC2 ({r[1]:.1%} var.)" if len(r) > 1 else "PC2")
    ax.set_title(f"{head}census points on the good draws' PCA plane")
    if len(g):
        # frame the good cloud and the critical points near it (within its own extent again);
        # farther ones would shrink the cloud to a dot, so they are counted instead
        lo, hi = g.min(axis=0), g.max(axis=0)
        span = hi - lo + 1e-9
        near = np.all((pts >= lo - span) & (pts <= hi + span), axis=1) if len(pts) else []
        if np.any(near):
            lo = np.minimum(lo, pts[near].min(axis=0))
            hi = np.maximum(hi, pts[near].max(axis=0))
        pad = 0.05 * (hi - lo) + 1e-9
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        far = int(len(pts) - np.sum(near))
        if far:
            ax.text(
                0.01, 0.01, f"{far} critical point{'s' * (far != 1)} beyond the frame",
                transform=ax.transAxes,
                fontsize="x-small", va="bottom",
            )  # fmt: skip
    ax.legend(fontsize="small")
    return canvas.save(fig, path, dpi)
