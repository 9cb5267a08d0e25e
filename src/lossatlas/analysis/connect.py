"""Are two low points connected below a level? Paths through the landscape inside the box.

- :func:`line_max`: the highest U on the straight segment between two points (a grid, refined
  by a bounded scalar search around its highest node);
- :func:`dynamic_string`: Dynamic String Sampling (Freeman & Bruna 2017, Algorithm 1): while
  some segment of the string rises above the level ``L0``, the point at its maximum is trained
  (L-BFGS-B with the exact gradient, inside the box) until ``U <= alpha * L0`` and inserted as
  a bead; success when every segment stays at or below ``L0``. A budget that runs out, or a bead
  that cannot go below ``alpha * L0``, means *not connected within budget*, never
  "disconnected": that needs a certificate (a proven lower bound on every path's maximum);
- :func:`string_barrier`: the simplified string method (E, Ren & Vanden-Eijnden 2007) started
  from a path: a gradient step on the interior images, then reparametrisation at equal arc
  length; the barrier is the path's maximum minus the higher end;
- :func:`components_by_level`: how many components the level set ``{U <= lam}`` has among a
  set of nodes, given each pair's lowest known path maximum (a merge tree, read at levels);
- :func:`sample_components`: the same question asked of the sampled draws below a level: a
  k-nearest-neighbour graph whose edges are straight segments that stay below it, then DSS
  between the lowest points of different components. Every edge and every DSS path is a
  real path below the level, so the count is an upper bound on the components the draws
  touch.

``U_and_grad(theta (n, p)) -> (U (n,), dU (n, p))`` is batched, as
:meth:`lossatlas.model.Target.U_and_grad`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from scipy.optimize import minimize, minimize_scalar
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from lossatlas import canvas, model
from lossatlas.analysis import draws, minima

BatchedUGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


DSS_BUDGET = ("alpha", "max_depth", "max_beads", "maxiter")


def dss_budget(settings) -> dict:
    """The keyword arguments of :func:`dynamic_string` in ``landscape.connect`` settings."""
    return {k: settings[k] for k in DSS_BUDGET}


def _energy(U_and_grad: BatchedUGrad, X: np.ndarray) -> np.ndarray:
    return np.asarray(U_and_grad(np.atleast_2d(X))[0], dtype=np.float64)


def line_max(U_and_grad: BatchedUGrad, a, b, n_grid: int = 33) -> tuple[float, float]:
    """``(U_max, t)``: the highest U on ``a + t (b - a)``, ``t`` in [0, 1]: the grid's highest
    node, refined by a bounded search between its neighbours."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    t = np.linspace(0.0, 1.0, n_grid)
    u = _energy(U_and_grad, a + t[:, None] * (b - a))
    i = int(np.argmax(u))
    lo, hi = t[max(i - 1, 0)], t[min(i + 1, n_grid - 1)]
    if 0 < i < n_grid - 1:
        res = minimize_scalar(
            lambda s: -float(_energy(U_and_grad, a + s * (b - a))[0]),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-6 * (hi - lo)},
        )
        if -res.fun > u[i]:
            return float(-res.fun), float(res.x)
    return float(u[i]), float(t[i])


def _train_bead(
    U_and_grad, x0, box, target, maxiter, *, rng=None, n_restarts=0, jitter=0.0
) -> tuple[np.ndarray, float]:
    """L-BFGS-B from ``x0`` inside the box, stopped as soon as ``U <= target``. A start that
    stalls above ``target`` is retried up to ``n_restarts`` times from ``x0`` plus Gaussian
    noise of scale ``jitter`` (drawn from ``rng``): the midpoint of two symmetric copies is
    often a saddle whose gradient keeps L-BFGS-B in the symmetric subspace."""

    def low_enough(intermediate_result):
        if intermediate_result.fun <= target:
            raise StopIteration

    best = None
    for attempt in range(1 + n_restarts):
        start = x0 if attempt == 0 else x0 + jitter * rng.standard_normal(x0.shape)
        res = minimize(
            minima.at_one_point(U_and_grad),
            np.clip(start, -box, box),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-box, box)] * len(x0),
            callback=low_enough,
            options={"maxiter": maxiter},
        )
        if best is None or res.fun < best[1]:
            best = (res.x, float(res.fun))
        if best[1] <= target:
            break
    return best


def dynamic_string(
    U_and_grad: BatchedUGrad,
    a,
    b,
    level: float,
    box: float,
    *,
    alpha: float = 0.9,
    max_depth: int = 12,
    max_beads: int = 64,
    maxiter: int = 2000,
    n_grid: int = 33,
    n_restarts: int = 3,
    seed: int = 0,
    floor: float = 0.0,
) -> dict:
    """Dynamic String Sampling between ``a`` and ``b`` at level ``level`` (module docstring).
    Beads are trained to ``floor + alpha * (level - floor)``: Freeman & Bruna's
    ``alpha * level`` for a loss whose minimum is 0; give the known minimum as ``floor`` when
    the level lies just above a positive one. A bead that stalls above that is retrained from
    up to ``n_restarts`` jittered starts (noise 1 % of its segment's length, seeded by
    ``seed``).

    Returns ``{connected, status, beads (k, p) including both ends, path_max, n_beads,
    normalised_length}``: ``path_max`` is the highest U found on the final string's segments
    (an upper bound on the lowest path's maximum when connected); ``normalised_length`` is
    the string's length over ``|b - a|`` (1 for a convex loss). ``status``: ``connected``, or
    why not (``not connected within budget: ...``)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ends = _energy(U_and_grad, np.vstack([a, b]))
    if ends.max() > level:
        return _result(
            [a, b], U_and_grad, n_grid, f"an end lies above the level ({ends.max():.4g})"
        )
    beads, status = [a, b], "connected"
    rng = np.random.default_rng(seed)
    bead_target = floor + alpha * (level - floor)
    # segments to check, as (index of the left bead, depth); beads are inserted in place
    todo = [(0, 0)]
    while todo:
        i, depth = todo.pop()
        u_max, t = line_max(U_and_grad, beads[i], beads[i + 1], n_grid)
        if u_max <= level:
            continue
        if depth >= max_depth or len(beads) - 2 >= max_beads:
            status = f"not connected within budget: depth {depth}, {len(beads) - 2} beads"
            break
        x0 = beads[i] + t * (beads[i + 1] - beads[i])
        jitter = 0.01 * float(np.linalg.norm(beads[i + 1] - beads[i])) / np.sqrt(x0.size)
        bead, u = _train_bead(
            U_and_grad, x0, box, bead_target, maxiter, rng=rng, n_restarts=n_restarts, jitter=jitter
        )
        if u > bead_target:
            status = (
                f"not connected within budget: a bead stopped at U = {u:.4g} > "
                f"the beads' target {bead_target:.4g}"
            )
            break
        beads.insert(i + 1, bead)
        # both halves, the right one first so that indices to its left stay valid
        todo = [(j + 1 if j > i else j, d) for j, d in todo]
        todo += [(i + 1, depth + 1), (i, depth + 1)]
    return _result(beads, U_and_grad, n_grid, status)


def _segment_maxima(U_and_grad, points, n_grid) -> list[float]:
    """The highest U on each straight segment of the polyline ``points``."""
    pairs = zip(points[:-1], points[1:], strict=True)
    return [line_max(U_and_grad, u, v, n_grid)[0] for u, v in pairs]


def _result(beads, U_and_grad, n_grid, status) -> dict:
    beads = np.asarray(beads)
    seg_max = _segment_maxima(U_and_grad, beads, n_grid)
    direct = float(np.linalg.norm(beads[-1] - beads[0]))
    length = float(np.linalg.norm(np.diff(beads, axis=0), axis=1).sum())
    return {
        "connected": status == "connected",
        "status": status,
        "beads": beads,
        "path_max": float(max(seg_max)),
        "n_beads": int(len(beads) - 2),
        "normalised_length": length / direct if direct > 0 else float("nan"),
    }


def _equal_arc(path: np.ndarray, n_images: int) -> np.ndarray:
    """``n_images`` points along the polyline ``path`` at equal arc length, ends kept."""
    step = np.linalg.norm(np.diff(path, axis=0), axis=1)
    s = np.r_[0.0, np.cumsum(step)]
    if s[-1] == 0:
        return np.repeat(path[:1], n_images, axis=0)
    want = np.linspace(0.0, s[-1], n_images)
    return np.column_stack([np.interp(want, s, path[:, j]) for j in range(path.shape[1])])


def string_barrier(
    U_and_grad: BatchedUGrad,
    path,
    box: float,
    *,
    n_images: int = 31,
    n_iter: int = 500,
    step: float | None = None,
    n_grid: int = 9,
) -> dict:
    """The simplified string method from the polyline ``path (k, p)`` (ends fixed): each
    iteration moves the interior images down the gradient by ``step`` (default: a tenth of
    the initial spacing over the largest initial gradient; no image moves more than that
    tenth), keeps them in the box and redistributes them at equal arc length; a string that
    ends higher than it started is given back as it started. Returns ``{images, U,
    path_max, barrier}``: ``path_max`` is the highest U along the final string (segment
    maxima on ``n_grid`` points each), ``barrier`` that minus the higher end."""
    start = _equal_arc(np.asarray(path, dtype=np.float64), n_images)
    images = start.copy()
    _, g = U_and_grad(images)
    # no image moves more than a tenth of the spacing per iteration: on flat, saturated
    # stretches the gradient is tiny and a step scaled by it would fling the images away
    reach = 0.1 * float(np.linalg.norm(images[1] - images[0]))
    if step is None:
        step = reach / max(float(np.abs(g[1:-1]).max(initial=0.0)), 1e-12)
    for _ in range(n_iter):
        _, g = U_and_grad(images[1:-1])
        move = step * g
        norm = np.linalg.norm(move, axis=1, keepdims=True)
        move *= np.minimum(1.0, reach / np.maximum(norm, 1e-300))
        images[1:-1] = np.clip(images[1:-1] - move, -box, box)
        images = _equal_arc(images, n_images)

    def highest(points):
        return float(max(_segment_maxima(U_and_grad, points, n_grid)))

    path_max = highest(images)
    if path_max > highest(start):  # the descent did not lower the path: keep the start
        images, path_max = start, highest(start)
    u = _energy(U_and_grad, images)
    path_max = max(path_max, float(u.max()))
    return {
        "images": images,
        "U": u,
        "path_max": path_max,
        "barrier": path_max - float(max(u[0], u[-1])),
    }


def components_by_level(node_U, path_max, levels) -> np.ndarray:
    """``N_lam`` for each level: components of ``{U <= lam}`` among the nodes (energies
    ``node_U (n,)``) whose pairs join at ``path_max (n, n)`` (the lowest known path maximum;
    ``inf`` where none is known), counting only nodes at or below ``lam``. Known paths only,
    so ``N_lam`` is an upper bound on the true count."""
    node_U = np.asarray(node_U, dtype=np.float64)
    M = np.asarray(path_max, dtype=np.float64)
    out = []
    for lam in np.asarray(levels, dtype=np.float64):
        alive = np.flatnonzero(node_U <= lam)
        if not len(alive):
            out.append(0)
            continue
        sub = M[np.ix_(alive, alive)] <= lam
        np.fill_diagonal(sub, False)
        out.append(int(connected_components(csr_matrix(sub), directed=False)[0]))
    return np.asarray(out)


def _segments_below(U_and_grad, a, b, level, n_grid, chunk) -> np.ndarray:
    """Whether each straight segment ``a[i] -> b[i]`` stays at or below ``level`` on an
    ``n_grid``-point grid (ends included), in batches of ``chunk`` evaluations."""
    t = np.linspace(0.0, 1.0, n_grid)
    ok = np.empty(len(a), dtype=bool)
    per = max(1, chunk // n_grid)
    for s in range(0, len(a), per):
        A, B = a[s : s + per], b[s : s + per]
        pts = A[:, None] + t[None, :, None] * (B - A)[:, None]
        u = _energy(U_and_grad, pts.reshape(-1, a.shape[1])).reshape(len(A), n_grid)
        ok[s : s + per] = u.max(axis=1) <= level
    return ok


def sample_components(
    U_and_grad: BatchedUGrad,
    points,
    level: float,
    box: float,
    *,
    k: int = 8,
    n_merges: int = 10,
    n_grid: int = 17,
    chunk: int = 8192,
    **dss_budget,
) -> dict:
    """Components of the draws ``points (n, p)`` (all at or below ``level``) joined by paths
    below ``level``: edges between k nearest neighbours whose straight segment stays below
    it (on an ``n_grid`` grid), then DSS from the lowest point of each of the ``n_merges``
    largest other components to that of the largest. Returns ``{n_points, k,
    n_components_knn, merged_by_dss, upper_bound, n_holding_1pct, sizes}`` (``sizes``: the
    components' sizes after merging, largest first; ``n_holding_1pct``: how many hold at
    least 1 % of the draws, the rest being mostly draws just below the level whose every
    segment to a neighbour rises above it)."""
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(points, dtype=np.float64)
    n = len(X)
    if n == 0:
        return {"n_points": 0, "k": k, "n_components_knn": 0, "merged_by_dss": 0,
                "upper_bound": 0, "n_holding_1pct": 0, "sizes": []}  # fmt: skip
    U = _energy(U_and_grad, X)
    n_nb = min(k + 1, n)
    idx = NearestNeighbors(n_neighbors=n_nb).fit(X).kneighbors(X, return_distance=False)
    pairs = np.column_stack([np.repeat(np.arange(n), n_nb - 1), idx[:, 1:].ravel()])
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    keep = _segments_below(U_and_grad, X[pairs[:, 0]], X[pairs[:, 1]], level, n_grid, chunk)
    edges = pairs[keep]
    graph = csr_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    n_knn, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    order = np.argsort(-sizes, kind="stable")
    lowest = {c: int(np.flatnonzero(labels == c)[np.argmin(U[labels == c])]) for c in order}
    merged = 0
    if n_knn > 1:
        hub = lowest[order[0]]
        for c in order[1 : 1 + n_merges]:
            path = dynamic_string(U_and_grad, X[hub], X[lowest[c]], level, box, **dss_budget)
            if path["connected"]:
                labels[labels == c] = order[0]
                merged += 1
    final = np.bincount(labels)
    final = np.sort(final[final > 0])[::-1]
    return {
        "n_points": int(n),
        "k": int(k),
        "n_components_knn": int(n_knn),
        "merged_by_dss": int(merged),
        "upper_bound": int(n_knn - merged),
        "n_holding_1pct": int((final >= 0.01 * n).sum()),
        "sizes": final.astype(int).tolist(),
    }


# --- from the store ----------------------------------------------------------------------


def _spanning_edges(M: np.ndarray) -> list[tuple[int, int]]:
    """Edges of a minimum spanning tree of the complete graph with weights ``M``."""
    from scipy.sparse.csgraph import minimum_spanning_tree

    # csgraph reads a zero weight as no edge: shift to >= 1 (the tree does not change)
    W = M - M[np.isfinite(M)].min() + 1.0
    np.fill_diagonal(W, 0.0)
    tree = minimum_spanning_tree(np.where(np.isfinite(W), W, 0.0)).tocoo()
    return sorted((int(min(i, j)), int(max(i, j))) for i, j in zip(tree.row, tree.col, strict=True))


def _straight_maxima(target, X: np.ndarray, node_U: np.ndarray) -> np.ndarray:
    """``(n, n)``: each node's U on the diagonal, the highest U on each pair's segment off it."""
    n = len(X)
    M = np.full((n, n), np.inf)
    np.fill_diagonal(M, node_U)
    for i in range(n):
        for j in range(i + 1, n):
            M[i, j] = M[j, i] = line_max(target.U_and_grad, X[i], X[j])[0]
    return M


def _refine_pair(target, a, b, straight: float, level_U: float, dss_budget: dict, **string_kw):
    """One pair beyond its segment: Dynamic String Sampling at ``level_U``, the string method
    from its beads, and DSS to the nearest symmetric copy of ``b``. Returns the lowest known
    path maximum (U), the table's path columns (mean loss), the profiles and the symmetry
    search's method."""
    U_and_grad, box = target.U_and_grad, target.box
    per_point = float(target.mean_loss(np.float64(1.0)))  # mean loss per unit of U
    dss = dynamic_string(U_and_grad, a, b, level_U, box, **dss_budget)
    string = string_barrier(U_and_grad, dss["beads"], box, **string_kw)
    best = min(straight, string["path_max"])
    if dss["connected"]:
        best = min(best, dss["path_max"])
    copy, sym_method = target.network.nearest_copy(a, b)
    sym = dynamic_string(U_and_grad, a, copy, level_U, box, **dss_budget)
    row = {
        "connected": dss["connected"],
        "dss_path_max": dss["path_max"] * per_point,
        "n_beads": dss["n_beads"],
        "normalised_length": dss["normalised_length"],
        "string_path_max": string["path_max"] * per_point,
        "status": dss["status"],
        "sym_distance_ratio": float(np.linalg.norm(copy - a) / max(np.linalg.norm(b - a), 1e-300)),
        "sym_straight_max": line_max(U_and_grad, a, copy)[0] * per_point,
        "sym_connected": sym["connected"],
        "sym_dss_path_max": sym["path_max"] * per_point,
        "sym_status": sym["status"],
    }
    profile = {
        "straight": _line_profile(target, a, b, per_point),
        "dss": _path_profile(target, dss["beads"], per_point),
        "string": _path_profile(target, string["images"], per_point),
    }
    return best, row, profile, sym_method


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
    pick = census_table[minima.census_minima(census_table)].sort_values("U").head(max_nodes)
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
    M = _straight_maxima(target, X, node_U)
    straight = M.copy()
    rows, profiles, done, refined = [], [], set(), []
    level_U = level / per_point
    dss_budget = dict(alpha=alpha, max_depth=max_depth, max_beads=max_beads, maxiter=maxiter)
    sym_method = None
    while len(done) < max_pairs:
        todo = [e for e in _spanning_edges(M) if e not in done]
        if not todo:
            break
        for i, j in todo[: max_pairs - len(done)]:
            done.add((i, j))
            refined.append((i, j))
            best, row, profile, sym_method = _refine_pair(
                target, X[i], X[j], straight[i, j], level_U, dss_budget,
                n_images=n_images, n_iter=n_iter,
            )  # fmt: skip
            M[i, j] = M[j, i] = best
            ids = {"node_a": int(pick["id"].iloc[i]), "node_b": int(pick["id"].iloc[j])}
            rows.append(
                {**ids, "loss_a": node_U[i] * per_point, "loss_b": node_U[j] * per_point,
                 "straight_max": straight[i, j] * per_point, "level": level, **row,
                 "barrier": (best - max(node_U[i], node_U[j])) * per_point}
            )  # fmt: skip
            profiles.append({"pair": [ids["node_a"], ids["node_b"]], **profile})
    path_max = M * per_point
    # from the lowest node to a little above the level where the known paths join them all
    top = max(path_max[i, j] for i, j in _spanning_edges(M))
    levels = np.unique(np.r_[np.linspace(path_max.diagonal().min(), 1.1 * top, 25), level])
    counts = components_by_level(node_U * per_point, path_max, levels)
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


def store_components(
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
    :func:`sample_components` on up to ``knn_points`` draws below the level."""
    rows, _ = draws.good_rows(
        store, good_threshold=level, max_points=knn_points, max_mb=max_mb, seed=seed,
        draw_block=draw_block, max_block_mb=max_block_mb,
    )  # fmt: skip
    per_point = float(target.mean_loss(np.float64(1.0)))
    found = sample_components(
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
        r = dynamic_string(target.U_and_grad, a, b, m * level_U, target.box, **budget)
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


# --- figure ------------------------------------------------------------------------------


def component_steps(levels, counts) -> tuple[np.ndarray, np.ndarray]:
    """The components-against-level curve to draw (``where="post"``): from a little below the
    lowest level, where no minimum lies and so no component, to the last level."""
    levels, counts = np.asarray(levels, dtype=float), np.asarray(counts)
    span = levels[-1] - levels[0] if len(levels) > 1 else 0.0
    below = levels[0] - 0.05 * (span if span > 0 else max(abs(levels[0]), 1.0))
    return np.r_[below, levels], np.r_[0, counts]


def plot_connect_tree(meta: Mapping, path, title: str | None = None, dpi: int = 120) -> Path:
    """Disconnectivity dendrogram of the connectivity analysis's nodes: single linkage of
    the lowest known path maxima (``meta`` of ``connect.run_connect``), heights in mean
    loss, with the components of the level sets against the level beside it."""
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    fig = canvas.figure(9.0, 3.8)
    ax_tree, ax_count = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    M = np.asarray(meta["path_max"], dtype=float)
    head = f"{title}: " if title else ""
    if len(M) < 2:
        ax_tree.text(0.5, 0.5, "fewer than 2 minima", ha="center", va="center")
        ax_tree.set_axis_off()
        ax_count.set_axis_off()
        return canvas.save(fig, path, dpi)
    D = M.copy()
    # pairs with no known path merge above every known one
    top = D[np.isfinite(D)].max()
    D[~np.isfinite(D)] = 2 * top if top > 0 else 1.0
    np.fill_diagonal(D, 0.0)
    dendrogram(
        linkage(squareform(D, checks=False), method="single"),
        ax=ax_tree,
        labels=[str(n) for n in meta["nodes"]],
        color_threshold=meta["level"],
    )
    ax_tree.axhline(meta["level"], color="k", ls="--", lw=0.8, label=f"level {meta['level']:g}")
    ax_tree.set_ylabel("highest mean loss on the lowest known path")
    ax_tree.set_xlabel("census point id")
    ax_tree.legend(fontsize="small")
    ax_tree.set_title(f"{head}merge tree of {len(M)} minima", fontsize="medium")
    ax_count.step(*component_steps(meta["levels"], meta["n_components"]), where="post")
    ax_count.axvline(meta["level"], color="k", ls="--", lw=0.8)
    ax_count.set_xlabel("level λ (mean loss)")
    ax_count.set_ylabel("components of {loss ≤ λ} (upper bound)")
    ax_count.yaxis.set_major_locator(MaxNLocator(integer=True))
    return canvas.save(fig, path, dpi)


def plot_connect_profiles(
    meta: Mapping, path, title: str | None = None, dpi: int = 120, max_pairs: int = 6
) -> Path:
    """Mean loss along arc length for the refined pairs: straight line, Dynamic String
    Sampling and the string method (``meta`` of ``connect.run_connect``)."""
    profiles = list(meta["profiles"])[:max_pairs]
    rows, cols = canvas.grid(max(1, len(profiles)))
    fig = canvas.figure(3.6 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, prof in zip(axes, profiles, strict=False):
        for key, style in (("straight", ":"), ("dss", "--"), ("string", "-")):
            ax.plot(prof[key]["s"], prof[key]["loss"], style, label=key)
        ax.axhline(meta["level"], color="k", lw=0.6)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(bottom=0.0)
        ax.set_title(f"{prof['pair'][0]} - {prof['pair'][1]}", fontsize="small")
        ax.set_xlabel("arc length (normalised)")
        ax.set_ylabel("mean loss")
    if profiles:
        axes[0].legend(fontsize="x-small")
    else:
        axes[0].text(0.5, 0.5, "no pair refined", ha="center", va="center")
    for ax in axes[len(profiles) :]:
        ax.set_axis_off()
    fig.suptitle(f"{title + ': ' if title else ''}loss along the paths between minima")
    return canvas.save(fig, path, dpi)


def plot_connect_length(meta: Mapping, path, title: str | None = None, dpi: int = 120) -> Path:
    """Freeman & Bruna's figure: Dynamic String Sampling's normalised length and bead count
    against the level, one line per scanned pair; hollow markers where it did not connect
    (``meta["length_by_level"]`` of ``connect.run_connect``)."""
    scans = list(meta.get("length_by_level") or [])
    fig = canvas.figure(8.0, 3.2)
    ax_len, ax_beads = fig.subplots(1, 2)
    for k, scan in enumerate(scans):
        colour = f"C{k % 10}"
        level = np.asarray(scan["level"])
        ok = np.asarray(scan["connected"], dtype=bool)
        label = f"{scan['pair'][0]} - {scan['pair'][1]}"
        for ax, key in ((ax_len, "normalised_length"), (ax_beads, "n_beads")):
            y = np.asarray(scan[key], dtype=float)
            ax.plot(level, y, "-", color=colour, lw=0.8, label=label if ax is ax_len else None)
            ax.plot(level[ok], y[ok], "o", color=colour)
            ax.plot(level[~ok], y[~ok], "o", mfc="none", color=colour)
    from matplotlib.ticker import NullFormatter

    for ax, name in ((ax_len, "normalised length"), (ax_beads, "beads")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("level (mean loss)")
        ax.set_ylabel(name)
        ax.axvline(meta["level"], color="k", lw=0.6)
    if scans:
        ax_len.legend(fontsize="x-small", title="pair (hollow: not connected)",
                      title_fontsize="x-small")  # fmt: skip
    else:
        ax_len.text(0.5, 0.5, "no pair scanned", ha="center", va="center")
    fig.suptitle(f"{title + ': ' if title else ''}path length and beads against the level")
    return canvas.save(fig, path, dpi)
