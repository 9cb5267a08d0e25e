"""A census of critical points: local optimisation from many starts, merged up to symmetry,
classified by the Hessian spectrum.

Definitions (tolerances are arguments):
- a coordinate is *pinned* when it sits on the box wall (within ``wall_atol * box``) and the
  gradient pushes outward; the Hessian is then projected on the free coordinates;
- an end point is *converged* when the largest free gradient component is at most
  ``grad_tol * (1 + |U|)``;
- *zero* eigenvalues are those below the lowest gap, of at least ``gap_decades`` decades, in
  the sorted ``log10 |lambda|`` that rises above ``zero_atol`` (what central differences
  resolve), none when there is no such gap, never one above ``zero_rtol * max|lambda|``, and
  always those below ``zero_atol``: a fixed relative tolerance miscounts spectra whose scales
  differ from point to point, and the widest gap miscounts a small but resolved eigenvalue
  (a near-saturated unit's) that sits below a wider gap. The index is the number of negative
  eigenvalues outside them;
- classification: ``box KKT point`` (some coordinate on the box wall with the loss falling
  outward: a KKT point of the box-constrained problem, not a critical point of U, whose place
  and U follow the box size L; index and zeros still reported on the free coordinates; see
  :func:`box_dependence`), else ``saddle`` (index > 0), ``degenerate minimum`` (index 0,
  zeros > 0) or ``strict minimum``; ends that did not converge are ``not converged``.

Why the wall class is large for cross-entropy: once some parameters classify every point,
scaling the output layer drives the loss to 0, so its infimum lies at infinity and every low
point reached inside the box sits on the wall.

Spectrum: with at most ``dense_max`` free coordinates the whole free Hessian is built (central
differences of the exact gradient) and every eigenvalue is known. Above that (a dense Hessian
is p^2 numbers: 81 GB at p = 100,810) ``scipy.sparse.linalg.eigsh`` finds only the ``n_eig``
smallest and ``n_eig`` largest eigenvalues of the free Hessian, from Hessian-vector products
(central differences of the gradient along the vector). The smallest eigenvalue, hence the
classification, is still exact (to eigsh's tolerance), but ``index`` and ``n_zero`` count only
among the computed eigenvalues: ``index_exact`` is False when all ``n_eig`` smallest are
negative (``index`` is then a lower bound), ``n_zero_exact`` when the zeros might continue
beyond the computed ends. ``n_eig`` in the result is how many eigenvalues were computed. If
eigsh stops at ``eig_maxiter`` before converging, only its converged eigenvalues count; a
converged, unpinned end with no negative one among them is ``unclassified``.

Cost is bounded by the arguments: at most ``(1 + n_restarts) * 2 * maxiter`` gradients per
start in L-BFGS-B, and at most ``eig_maxiter`` eigsh restarts per distinct point (each a few
dozen Hessian-vector products of 2 gradients each).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import minimize
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from lossatlas.model.network import predictions

if TYPE_CHECKING:
    import pandas as pd

# U_and_grad(theta (n, p)) -> (U (n,), dU (n, p)), as model.Target.U_and_grad
BatchedUGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

WALL = "box KKT point"
# box sizes, relative to the run's, at which box KKT points are re-optimised (box_dependence)
BOX_FACTORS = (0.5, 1.0, 2.0)


def zero_count(
    eig: np.ndarray,
    gap_decades: float = 3.0,
    zero_rtol: float = 1e-6,
    noise_rtol: float = 1e-9,
    zero_atol: float = 1e-8,
) -> tuple[np.ndarray, float]:
    """Which eigenvalues of ``eig`` are zero, as a mask, and the magnitude that separates them:
    those under the lowest gap (at least ``gap_decades``) of the sorted ``log10 |lambda|``
    that starts below ``zero_rtol * max|lambda|`` and ends above ``zero_atol`` (a gap within
    the noise separates nothing); without such a gap, those within the finite-difference
    noise, ``noise_rtol * max|lambda|``. Never fewer than those below ``zero_atol``: central
    differences of the gradient cannot resolve curvature below it."""
    eig = np.asarray(eig, dtype=np.float64)
    mags = np.abs(eig)
    if mags.size == 0 or mags.max() <= zero_atol:
        return np.ones(mags.size, dtype=bool), zero_atol
    top = mags.max()
    order = np.argsort(mags)
    logs = np.log10(np.maximum(mags[order], top * 1e-300))
    gaps = np.diff(logs)
    sorted_mags = mags[order]
    candidate = (
        (gaps >= gap_decades)
        & (sorted_mags[:-1] <= zero_rtol * top)
        & (sorted_mags[1:] > zero_atol)
    )
    if candidate.any():
        i = int(np.argmax(candidate))  # the lowest
        cut = float(10 ** ((logs[i] + logs[i + 1]) / 2))
    else:
        cut = noise_rtol * top
    cut = max(cut, zero_atol)
    return mags <= cut, cut


def jacobian_rank(outputs, x: np.ndarray, eps: float = 1e-6) -> tuple[int, np.ndarray]:
    """Rank of the Jacobian of ``outputs(theta (n, p)) -> (n, q)`` at ``x`` (central
    differences, one batched call), zero singular values counted as :func:`zero_count` counts
    zero eigenvalues; and the singular values, descending."""
    x = np.asarray(x, dtype=np.float64)
    E = np.eye(x.size) * eps
    f = np.asarray(outputs(np.vstack([x + E, x - E])), dtype=np.float64)
    J = (f[: x.size] - f[x.size :]).T / (2 * eps)  # (q, p)
    sv = np.linalg.svd(J, compute_uv=False)
    zero, _ = zero_count(sv)
    return int((~zero).sum()), sv


def select_starts(
    theta,
    n_clusters: int = 10,
    n_random: int = 10,
    seed: int = 0,
    key: Callable[[np.ndarray], np.ndarray] | None = None,
    max_points: int = 5000,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of starting draws: the draw nearest each KMeans centre (computed on ``key(theta)``,
    e.g. canonical coordinates) plus ``n_random`` draws at random. Returns ``(idx, source)``
    with ``source`` "cluster" or "random". At most ``max_points`` draws (random subset) are
    clustered."""
    # scikit-learn takes half a CPU-second to import: only the jobs that cluster pay for it
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances_argmin

    rng = np.random.default_rng(seed)
    n = theta.shape[0]
    pool = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    Z = np.asarray(theta[pool], dtype=np.float64)
    Z = key(Z) if key is not None else Z
    k = min(n_clusters, len(np.unique(Z, axis=0)))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(Z)
    cluster_idx = pool[pairwise_distances_argmin(km.cluster_centers_, Z)]
    random_idx = rng.choice(n, size=min(n_random, n), replace=False)
    idx = np.concatenate([cluster_idx, random_idx])
    source = np.array(["cluster"] * len(cluster_idx) + ["random"] * len(random_idx))
    return idx, source


def at_one_point(U_and_grad: BatchedUGrad) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``x (p,) -> (U, dU (p,))`` from the batched ``U_and_grad``, as scipy.optimize takes
    an objective with its gradient."""

    def fg(x):
        u, g = U_and_grad(np.asarray(x)[None])
        return float(u[0]), np.asarray(g[0], dtype=np.float64)

    return fg


def local_minimize(
    U_and_grad: BatchedUGrad,
    starts: np.ndarray,
    box: float,
    gtol: float = 1e-10,
    maxiter: int = 20_000,
    n_restarts: int = 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L-BFGS-B with the exact gradient from each row of ``starts (m, p)`` inside
    ``[-box, box]^p``, restarted (at most ``n_restarts`` times) while it stops early and the
    energy still falls. Returns ``(ends (m, p), U (m,), n_iter (m,))``."""
    fg = at_one_point(U_and_grad)
    starts = np.clip(np.asarray(starts, dtype=np.float64), -box, box)
    bounds = [(-box, box)] * starts.shape[1]
    opts = {"gtol": gtol, "ftol": 0.0, "maxiter": maxiter, "maxfun": 2 * maxiter}
    ends, us, its = [], [], []
    for x0 in starts:
        x, nit, last = x0, 0, np.inf
        # ftol 0: stop on the projected gradient, not on a stalled decrease. L-BFGS-B's line
        # search can still stall far from a critical point (flat cross-entropy near the walls);
        # a restart drops the curvature memory, and usually moves on.
        for _ in range(1 + n_restarts):
            r = minimize(fg, x, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
            x, nit = r.x, nit + r.nit
            if "PROJECTED GRADIENT" in str(r.message).upper() or not r.fun < last:
                break
            last = r.fun
        ends.append(x)
        us.append(r.fun)
        its.append(nit)
    return np.array(ends), np.array(us), np.array(its)


def gradient_roots(
    U_and_grad: BatchedUGrad, starts: np.ndarray, box: float, *, max_nfev: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Critical points of any index near each start: least squares on the gradient
    (``scipy.optimize.least_squares``, trust-region reflective inside the box) with the
    central-difference Hessian as its Jacobian. L-BFGS-B runs downhill and almost never stops
    at a saddle; this finds the zeros of the gradient whatever their index. Returns ``(ends,
    U)``; an end that is not a critical point (a local minimum of the gradient's norm) is
    judged by :func:`classify` as ``not converged``. Dense: for small p only."""
    from scipy.optimize import least_squares

    def grad(x):
        return np.asarray(U_and_grad(x[None])[1][0], dtype=np.float64)

    ends = []
    for x0 in np.clip(np.asarray(starts, dtype=np.float64), -box, box):
        r = least_squares(
            grad,
            x0,
            jac=lambda x: hessian(U_and_grad, x),
            bounds=(-box, box),
            method="trf",
            xtol=1e-15,
            ftol=1e-15,
            gtol=1e-15,
            max_nfev=max_nfev,
        )
        ends.append(r.x)
    ends = np.array(ends).reshape(len(ends), -1)
    U = U_and_grad(ends)[0] if len(ends) else np.zeros(0)
    return ends, np.asarray(U, dtype=np.float64)


def hessian(
    U_and_grad: BatchedUGrad, x: np.ndarray, eps: float = 1e-5, free: np.ndarray | None = None
) -> np.ndarray:
    """Hessian at ``x`` by central differences of the exact gradient, symmetrised; only the
    rows and columns of the ``free`` coordinates (bool mask, default all). Gradients are
    batched in calls of at most 2^24 numbers, so the network's activations stay small."""
    x = np.asarray(x, dtype=np.float64)
    p = x.size
    idx = np.arange(p) if free is None else np.flatnonzero(free)
    block = max(1, min(256, 2**24 // (2 * p)))
    H = np.empty((len(idx), len(idx)))
    for lo in range(0, len(idx), block):
        sel = idx[lo : lo + block]
        E = np.zeros((len(sel), p))
        E[np.arange(len(sel)), sel] = eps
        _, g = U_and_grad(np.vstack([x + E, x - E]))
        H[lo : lo + len(sel)] = ((g[: len(sel)] - g[len(sel) :]) / (2 * eps))[:, idx]
    return 0.5 * (H + H.T)


def hessian_operator(
    U_and_grad: BatchedUGrad, x: np.ndarray, free: np.ndarray, eps: float = 1e-5
) -> LinearOperator:
    """The Hessian at ``x`` restricted to the coordinates ``free`` (bool mask), as a
    LinearOperator: ``H v`` by central differences of the gradient along ``v`` with a step of
    length ``eps`` (the dense Hessian's step), both gradients in one batched call."""
    x = np.asarray(x, dtype=np.float64)
    n = int(free.sum())

    def matvec(v):
        v = np.asarray(v, dtype=np.float64).ravel()
        norm = np.linalg.norm(v)
        if norm == 0:
            return np.zeros(n)
        d = np.zeros_like(x)
        d[free] = v * (eps / norm)
        _, g = U_and_grad(np.vstack([x + d, x - d]))
        return (g[0, free] - g[1, free]) * (norm / (2 * eps))

    return LinearOperator((n, n), matvec=matvec, dtype=np.float64)


def free_spectrum(
    U_and_grad: BatchedUGrad,
    x: np.ndarray,
    free: np.ndarray,
    *,
    eps: float = 1e-5,
    dense_max: int = 2000,
    n_eig: int = 6,
    eig_tol: float = 1e-6,
    eig_maxiter: int = 1000,
    seed: int = 0,
) -> tuple[np.ndarray, str, bool]:
    """Eigenvalues (ascending) of the Hessian on the ``free`` coordinates: ``(eig, method,
    converged)``. All of them (``dense``) for at most ``dense_max`` free coordinates (or too
    few for eigsh), else the ``n_eig`` smallest and ``n_eig`` largest (``eigsh``, one Lanczos
    run for both ends, fixed start vector); ``converged`` False when eigsh hit
    ``eig_maxiter`` and only its converged eigenvalues are returned."""
    n = int(free.sum())
    if n == 0:
        return np.zeros(0), "dense", True
    if n <= max(dense_max, 2 * n_eig + 1):
        return np.linalg.eigvalsh(hessian(U_and_grad, x, eps, free)), "dense", True
    op = hessian_operator(U_and_grad, x, free, eps)
    v0 = np.random.default_rng(seed).standard_normal(n)
    # ARPACK's test is relative to each eigenvalue: at a degenerate minimum the zero ones would
    # have to converge to eig_tol x eps^(2/3), far below the central differences' rounding, and
    # eigsh runs to eig_maxiter for nothing. Shifted by the spectrum's scale (|H v0| / |v0|),
    # every eigenvalue converges to eig_tol of that scale; the Krylov space, and so the
    # iteration, is the same.
    shift = float(np.linalg.norm(op.matvec(v0)) / np.linalg.norm(v0))
    shifted = LinearOperator((n, n), matvec=lambda v: op.matvec(v) + shift * v, dtype=np.float64)
    try:
        eig = eigsh(
            shifted,
            k=2 * n_eig,
            which="BE",
            v0=v0,
            tol=eig_tol,
            maxiter=eig_maxiter,
            return_eigenvectors=False,
        )
        ok = True
    except ArpackNoConvergence as err:
        eig, ok = err.eigenvalues, False
    return np.sort(np.real(eig) - shift), "eigsh", ok


def on_the_wall(x: np.ndarray, g: np.ndarray, box: float, wall_atol: float = 1e-9) -> np.ndarray:
    """The coordinates of ``x`` pinned on the box wall: within ``wall_atol * box`` of it, with
    the gradient ``g`` pushing outward (bool mask)."""
    wall = wall_atol * box
    return ((x >= box - wall) & (g < 0)) | ((x <= -box + wall) & (g > 0))


def classify(
    U_and_grad: BatchedUGrad,
    x: np.ndarray,
    box: float,
    *,
    grad_tol: float = 1e-5,
    zero_rtol: float = 1e-6,
    zero_atol: float = 1e-8,
    gap_decades: float = 3.0,
    wall_atol: float = 1e-9,
    eps: float = 1e-5,
    **spectrum_kw,
) -> dict:
    """Classify the end point ``x``: ``{classification, index, n_zero, n_pinned, grad_norm,
    zero_tol, eigenvalues, n_free, n_eig, method, index_exact, n_zero_exact, eig_converged}``
    (eigenvalues of the Hessian on the free coordinates, ascending: all of them or both ends,
    see the module docstring; ``spectrum_kw`` go to :func:`free_spectrum`)."""
    x = np.asarray(x, dtype=np.float64)
    u, g = at_one_point(U_and_grad)(x)
    pinned = on_the_wall(x, g, box, wall_atol)
    free = ~pinned
    n_free = int(free.sum())
    grad_norm = float(np.abs(g[free]).max()) if free.any() else 0.0
    eig, method, ok = free_spectrum(U_and_grad, x, free, eps=eps, **spectrum_kw)
    zero, tol = zero_count(eig, gap_decades, zero_rtol, zero_atol=zero_atol)
    n_zero, index = int(zero.sum()), int(((eig < 0) & ~zero).sum())
    if eig.size == n_free:
        index_exact = n_zero_exact = True
    else:
        # unseen eigenvalues lie between the top of the smallest and the bottom of the largest
        # computed ones: counts are exact only if that gap excludes negatives (zeros)
        h = len(eig) // 2
        lo, hi = (eig[h - 1], eig[h]) if ok and h else (-np.inf, np.inf)
        index_exact = bool(lo >= -tol)
        n_zero_exact = bool(lo > tol or hi < -tol)
    if grad_norm > grad_tol * (1 + abs(u)):
        kind = "not converged"
    elif pinned.any():
        kind = WALL
    elif index > 0:
        kind = "saddle"
    elif not ok:
        kind = "unclassified"
    elif n_zero > 0:
        kind = "degenerate minimum"
    else:
        kind = "strict minimum"
    return {
        "classification": kind,
        "index": index,
        "n_zero": n_zero,
        "n_pinned": int(pinned.sum()),
        "grad_norm": grad_norm,
        "zero_tol": tol,
        "eigenvalues": eig,
        "n_free": n_free,
        "n_eig": int(eig.size),
        "method": method,
        "index_exact": index_exact,
        "n_zero_exact": n_zero_exact,
        "eig_converged": ok,
    }


def merge(keys: np.ndarray, tol: float) -> np.ndarray:
    """Group labels ``(m,)`` for points ``keys (m, q)``: complete-linkage clusters of diameter at
    most ``tol`` in the max-norm (scikit-learn AgglomerativeClustering). Labels are ordered by
    first appearance."""
    from sklearn.cluster import AgglomerativeClustering  # imported where used: see select_starts

    keys = np.asarray(keys, dtype=np.float64)
    if len(keys) < 2:
        return np.zeros(len(keys), dtype=np.int64)
    lab = AgglomerativeClustering(
        n_clusters=None, distance_threshold=tol, metric="chebyshev", linkage="complete"
    ).fit_predict(keys)
    _, first = np.unique(lab, return_index=True)
    order = {lab[i]: j for j, i in enumerate(np.sort(first))}
    return np.array([order[v] for v in lab], dtype=np.int64)


@dataclass
class Census:
    """``table``: one row per distinct critical point, lowest U first; ``points (m, p)`` their
    representatives (raw coordinates); ``assignment (n_starts,)`` the row each start ended in;
    ``ends``, ``end_U``: every start's end point and energy; ``eigenvalues`` per row."""

    table: list[dict]
    points: np.ndarray
    assignment: np.ndarray
    ends: np.ndarray
    end_U: np.ndarray
    eigenvalues: list[np.ndarray] = field(default_factory=list)
    roots_found: int = 0  # saddle-search ends at an interior critical point


def census(
    U_and_grad: BatchedUGrad,
    starts: np.ndarray,
    box: float,
    *,
    key: Callable[[np.ndarray], np.ndarray] | None = None,
    merge_tol: float = 1e-4,
    mean_loss: Callable[[np.ndarray], np.ndarray] | None = None,
    accuracy: Callable[[np.ndarray], np.ndarray] | None = None,
    gtol: float = 1e-10,
    maxiter: int = 20_000,
    n_restarts: int = 20,
    saddle_search: bool = False,
    **classify_kw,
) -> Census:
    """Optimise from every start, merge ends whose ``key`` (e.g. canonical form, default the raw
    point) agrees within ``merge_tol`` (max-norm), classify each distinct point.

    With ``saddle_search``, :func:`gradient_roots` runs from the same starts too and its ends
    that are interior critical points (gradient within ``grad_tol``) join the merge:
    ``n_roots`` counts them per row (``n_starts`` and ``basin_share`` count L-BFGS-B's ends
    only), ``roots_found`` in all.

    Table rows: ``id, U, mean_loss, classification, index, n_zero, n_pinned, n_starts,
    n_roots, basin_share (of all starts), accuracy, grad_norm, min_eig, max_eig, n_free, n_eig,
    spectrum, index_exact, n_zero_exact``: ``n_eig`` eigenvalues of the ``n_free`` were computed
    (``spectrum`` dense or eigsh; see the module docstring for when the counts are bounds).
    ``mean_loss`` maps U to the mean per-point loss and ``accuracy`` maps points ``(m, p)`` to
    accuracies; both optional (NaN without). ``classify_kw`` go to :func:`classify`.
    """
    ends, end_U, _ = local_minimize(
        U_and_grad, starts, box, gtol=gtol, maxiter=maxiter, n_restarts=n_restarts
    )
    n_min = len(ends)
    roots_found = 0
    if saddle_search:
        roots, root_U = gradient_roots(U_and_grad, starts, box)
        # only interior zeros of the gradient: the search is for critical points of U, and
        # the wall's KKT points are L-BFGS-B's to find
        g = np.asarray(U_and_grad(roots)[1]) if len(roots) else np.zeros_like(roots)
        tol = classify_kw.get("grad_tol", 1e-5) * (1 + np.abs(root_U))
        keep = (np.abs(roots).max(1) < box * (1 - 1e-9)) & (np.abs(g).max(1) <= tol)
        roots_found = int(keep.sum())
        ends = np.vstack([ends, roots[keep]])
        end_U = np.concatenate([end_U, root_U[keep]])
    keys = key(ends) if key is not None else ends
    labels = merge(keys, merge_tol)
    n_groups = labels.max() + 1 if len(labels) else 0
    reps = [np.flatnonzero(labels == g)[np.argmin(end_U[labels == g])] for g in range(n_groups)]
    points = ends[reps] if reps else np.zeros((0, ends.shape[1]))
    U = end_U[reps]
    ml = np.asarray(mean_loss(U)) if mean_loss is not None else np.full(len(U), np.nan)
    acc = np.asarray(accuracy(points)) if accuracy is not None else np.full(len(U), np.nan)
    rows, eigs = [], []
    for g, rep in enumerate(reps):
        c = classify(U_and_grad, ends[rep], box, **classify_kw)
        n_starts = int((labels[:n_min] == g).sum())
        ev = c["eigenvalues"]
        rows.append(
            {
                "id": g,
                "U": float(U[g]),
                "mean_loss": float(ml[g]),
                "classification": c["classification"],
                "index": c["index"],
                "n_zero": c["n_zero"],
                "n_pinned": c["n_pinned"],
                "n_starts": n_starts,
                "n_roots": int((labels[n_min:] == g).sum()),
                "basin_share": n_starts / n_min,
                "accuracy": float(acc[g]),
                "grad_norm": c["grad_norm"],
                "min_eig": float(ev[0]) if ev.size else float("nan"),
                "max_eig": float(ev[-1]) if ev.size else float("nan"),
                "n_free": c["n_free"],
                "n_eig": c["n_eig"],
                "spectrum": c["method"] if c["eig_converged"] else "eigsh (not converged)",
                "index_exact": c["index_exact"],
                "n_zero_exact": c["n_zero_exact"],
            }
        )
        eigs.append(ev)
    order = np.argsort([r["U"] for r in rows], kind="stable")
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    rows = [dict(rows[i], id=j) for j, i in enumerate(order)]
    return Census(
        table=rows,
        points=points[order],
        assignment=remap[labels[:n_min]] if n_min else labels[:0],
        ends=ends[:n_min],
        end_U=end_U[:n_min],
        eigenvalues=[eigs[i] for i in order],
        roots_found=roots_found,
    )


def summary(c: Census) -> dict[str, int]:
    """Counts of distinct points by classification."""
    out: dict[str, int] = {}
    for r in c.table:
        out[r["classification"]] = out.get(r["classification"], 0) + 1
    return out


def index_counts(c: Census) -> dict[str, dict[str, int]]:
    """Converged critical points (not box KKT points) by Hessian index, as each method found
    them: ``minimize`` (L-BFGS-B) and ``gradient root`` (saddle search)."""
    out: dict[str, dict[str, int]] = {"minimize": {}, "gradient root": {}}
    for r in c.table:
        if r["classification"] not in ("saddle", "strict minimum", "degenerate minimum"):
            continue
        for method, found in (("minimize", r["n_starts"]), ("gradient root", r.get("n_roots", 0))):
            if found:
                key = str(r["index"])
                out[method][key] = out[method].get(key, 0) + 1
    return out


def target_accuracy(target) -> Callable[[np.ndarray], np.ndarray]:
    """``points (m, p) -> accuracy (m,)`` on ``target``'s data (argmax of the outputs)."""

    def acc(points):
        out = target.network.forward(np.asarray(points, dtype=np.float64), target.X)
        return (out.argmax(axis=2) == target.y[None]).mean(axis=1)

    return acc


def box_dependence(
    U_and_grad: BatchedUGrad, point: np.ndarray, box: float, factors=BOX_FACTORS, **minimize_kw
) -> dict:
    """U of the point L-BFGS-B reaches from ``point`` inside boxes of ``box * factors``: at a
    box KKT point U keeps falling as the box grows when the infimum lies beyond it."""
    sizes = [float(box * f) for f in factors]
    us = []
    for size in sizes:
        _, u, _ = local_minimize(U_and_grad, np.asarray(point)[None], size, **minimize_kw)
        us.append(float(u[0]))
    return {"box": sizes, "U": us, "falls_with_box": bool(np.all(np.diff(us) < 0))}


def target_logits(target, n_probe: int = 64, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """``points (m, p) -> (m, (n + n_probe) * k)``: the network's outputs before the softmax,
    centred over the classes (the softmax ignores a shift), on the data and on ``n_probe``
    inputs uniform in the data's bounding box; raw outputs for squared loss. Unlike the
    softmax they do not saturate, so two networks that both classify the data with certainty
    but differ as functions keep different keys."""
    X = np.asarray(target.X, dtype=np.float64)
    probes = np.random.default_rng(seed).uniform(X.min(0), X.max(0), size=(n_probe, X.shape[1]))
    inputs = np.vstack([X, probes])

    def key(points):
        out = target.network.forward(np.asarray(points, dtype=np.float64), inputs)
        if target.network.loss == "cross_entropy":
            out = out - out.mean(axis=2, keepdims=True)
        return out.reshape(len(out), -1)

    return key


def target_outputs(target, data_points=None) -> Callable[[np.ndarray], np.ndarray]:
    """``points (m, p) -> (m, n * k)``: the network's function on the data (softmax
    probabilities for cross-entropy, raw outputs for squared loss), on the data points
    ``data_points`` (None: all). As a merge ``key`` it treats points computing the same
    function on the data as one, e.g. the far ends of one flat valley of cross-entropy near
    the walls."""
    X = target.X if data_points is None else target.X[data_points]

    def key(points):
        out = target.network.forward(np.asarray(points, dtype=np.float64), X)
        return predictions(target.network.loss, out).reshape(len(out), -1)

    return key


# index-0 points: the Laplace null's centres and the connectivity analysis's nodes
MINIMUM_KINDS = ("strict minimum", "degenerate minimum", WALL)


def census_minima(census_table: pd.DataFrame) -> pd.Series:
    """Which census rows are minima or box KKT points of index 0."""
    t = census_table
    return t["classification"].isin(MINIMUM_KINDS) & (t["index"] == 0)
