"""Liu's convex cells of a one-hidden-layer ReLU network with squared loss.

The data cut the weight space of each hidden unit into convex cells, one per activation
pattern ``I[i, j] = [w_j . x~_i > 0]`` with ``x~ = (x, 1)``. Inside a cell the network is
linear in the products ``R_j = z_j w_j`` (``z_j`` the unit's output weight), so the loss is a
convex quadratic with a closed-form minimum (:func:`cell_minimum`). That minimum is *genuine*
when some minimiser, with some output signs ``s_j = sign(z_j)``, realises the cell's own
pattern; else it is spurious (:func:`genuine`: a linear program per sign vector for up to
:data:`MAX_ENUMERATED` units, a mixed-integer program with binary signs above, both HiGHS).

:func:`cover_count` is Cover's count of the patterns one unit can realise on N points in
general position in R^d with a bias; :func:`count_patterns` counts them by LP, to check it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from lossatlas import canvas, model
from lossatlas.analysis import draws, minima
from lossatlas.storage import streaming

# the LP's margin below which a strict inequality counts as not met
MARGIN = 1e-9
# up to this many units the 2^K sign vectors are enumerated; above, one MILP chooses them
MAX_ENUMERATED = 10


def augment(X: np.ndarray) -> np.ndarray:
    """``x~ = (x, 1)`` for each row of ``X (n, d)``."""
    X = np.asarray(X, dtype=np.float64)
    return np.column_stack([X, np.ones(len(X))])


def patterns(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Activation pattern ``(n, K)`` of hidden weights ``W (K, d + 1)`` (bias last) on ``X``."""
    return augment(X) @ np.asarray(W, dtype=np.float64).T > 0


def pattern_text(pattern: np.ndarray) -> str:
    """A pattern ``(n, K)`` as text: one string of n digits per unit (1 where point i is
    active), units separated by spaces: the name of a cell in ``cells.csv``."""
    return " ".join("".join("1" if a else "0" for a in unit) for unit in np.asarray(pattern).T)


def pattern_from_text(text: str) -> np.ndarray:
    """The ``(n, K)`` boolean pattern that :func:`pattern_text` wrote as ``text``."""
    return np.array([[c == "1" for c in unit] for unit in text.split()], dtype=bool).T


def design(X: np.ndarray, pattern: np.ndarray, output_bias: bool = False) -> np.ndarray:
    """The cell's design matrix ``A (n, K (d + 1) [+ 1])``: row i holds ``I[i, j] x~_i`` for
    each unit j (then 1 for an output bias), so that the network's outputs are ``A R``."""
    Xa = augment(X)
    active = np.asarray(pattern, dtype=np.float64)
    A = (active[:, :, None] * Xa[:, None, :]).reshape(len(Xa), -1)
    return np.column_stack([A, np.ones(len(A))]) if output_bias else A


def cell_minimum(X, y, pattern, output_bias: bool = False) -> dict:
    """The cell's least-squares minimum: ``R (K (d + 1) [+ 1])`` (minimum norm), its mean
    squared loss, whether it is unique (``A`` of full column rank) and a basis ``(q, m)`` of
    the minimisers' directions (the null space of ``A``)."""
    A = design(X, pattern, output_bias)
    y = np.asarray(y, dtype=np.float64).ravel()
    R, *_ = np.linalg.lstsq(A, y, rcond=None)
    _, sv, Vt = np.linalg.svd(A)
    rank = int((sv > sv[0] * max(A.shape) * np.finfo(float).eps).sum()) if sv.size else 0
    return {
        "R": R,
        "loss": float(np.mean((A @ R - y) ** 2)),
        "unique": rank == A.shape[1],
        "null": Vt[rank:].copy(),
    }


def _unit_rows(Xa: np.ndarray, K: int) -> np.ndarray:
    """``G (K n, K (d + 1) [+ 1])``: row (j, i) gives ``x~_i . R_j`` as a row over ``R``."""
    n, dim = Xa.shape
    G = np.zeros((K * n, K * dim))
    for j in range(K):
        G[j * n : (j + 1) * n, j * dim : (j + 1) * dim] = Xa
    return G


def _sign_lp(g0, GN, active, R0, NT, bound, s_rows) -> tuple[float, np.ndarray] | None:
    """Maximise ``t <= 1`` over ``c`` with signed rows ``s (g0 + GN c)`` ``>= t`` where active,
    ``<= 0`` where not, and ``|R0 + N^T c| <= bound``. ``(t*, c)``, or None if infeasible."""
    m = GN.shape[1]
    g0, GN = s_rows * g0, s_rows[:, None] * GN
    A_ub = np.vstack(
        [np.column_stack([-GN[active], np.ones(active.sum())]),
         np.column_stack([GN[~active], np.zeros((~active).sum())]),
         np.column_stack([NT, np.zeros(len(R0))]),
         np.column_stack([-NT, np.zeros(len(R0))])]
    )  # fmt: skip
    b_ub = np.concatenate([g0[active], -g0[~active], bound - R0, bound + R0])
    res = linprog(
        np.r_[np.zeros(m), -1.0], A_ub=A_ub, b_ub=b_ub,
        bounds=[(None, None)] * m + [(None, 1.0)], method="highs",
    )  # fmt: skip
    return None if res.status != 0 else (float(-res.fun), res.x[:m])


def _milp_signs(g0, GN, active, R0, NT, bound, row_bound, K) -> np.ndarray | None:
    """The sign vector maximising the margin, by one MILP: binary ``b_j`` (``s_j = 2 b_j -
    1``) switch each unit's rows between the two sign cases through a big-M of ``row_bound +
    1`` (``|x~_i . R_j|`` cannot exceed ``row_bound``)."""
    n_rows, m = GN.shape
    n = n_rows // K
    unit = np.repeat(np.arange(K), n)
    B = np.zeros((n_rows, K))
    B[np.arange(n_rows), unit] = 1.0
    M = (row_bound + 1.0)[:, None]
    t = np.ones((n_rows, 1))
    zero = np.zeros((n_rows, 1))
    # variables (c, t, b); each row a <= A x <= u
    a, i = active, ~active
    blocks = [
        # active, b = 1: v - t >= 0   ->  GN c - t - M b >= -g0 - M
        (np.hstack([GN, -t, -M * B])[a], (-g0 - M[:, 0])[a], np.inf),
        # active, b = 0: -v - t >= 0  -> -GN c - t + M b >= g0
        (np.hstack([-GN, -t, M * B])[a], g0[a], np.inf),
        # inactive, b = 1: v <= 0     ->  GN c + M b <= M - g0
        (np.hstack([GN, zero, M * B])[i], -np.inf, (M[:, 0] - g0)[i]),
        # inactive, b = 0: v >= 0     ->  GN c + M b >= -g0
        (np.hstack([GN, zero, M * B])[i], (-g0)[i], np.inf),
    ]
    A = np.vstack([b[0] for b in blocks] + [np.hstack([NT, np.zeros((len(R0), 1 + K))])])
    lo = np.concatenate([np.broadcast_to(b[1], len(b[0])) for b in blocks] + [-bound - R0])
    hi = np.concatenate([np.broadcast_to(b[2], len(b[0])) for b in blocks] + [bound - R0])
    res = milp(
        np.r_[np.zeros(m), -1.0, np.zeros(K)],
        constraints=LinearConstraint(A, lo, hi),
        integrality=np.r_[np.zeros(m + 1), np.ones(K)],
        bounds=Bounds(
            np.r_[np.full(m, -np.inf), -1.0, np.zeros(K)],
            np.r_[np.full(m, np.inf), 1.0, np.ones(K)],
        ),  # fmt: skip
    )
    return None if res.x is None else 2.0 * np.round(res.x[m + 1 :]) - 1.0


def _setup(X, y, pattern, box: float, output_bias: bool) -> dict:
    """The pieces every sign vector's LP shares: the cell's minimum ``R0``, its null space
    ``NT``, the unit rows ``g0 + GN c`` at ``R = R0 + NT c``, the active mask, the box."""
    cell = cell_minimum(X, y, pattern, output_bias)
    on = np.asarray(pattern, dtype=bool)
    Xa = augment(X)
    R0, N = cell["R"], cell["null"]
    NT = N.T if N.shape[0] else np.zeros((R0.size, 0))
    G = _unit_rows(Xa, on.shape[1])
    if output_bias:  # the output bias enters the loss, not the cell
        G = np.column_stack([G, np.zeros(len(G))])
    return {"cell": cell, "Xa": Xa, "K": on.shape[1], "R0": R0, "NT": NT, "g0": G @ R0,
            "GN": G @ NT, "active": on.T.ravel(), "bound": box**2}  # fmt: skip


def _search(lp: dict, candidates, best: dict | None = None) -> dict:
    """The best margin over the sign vectors ``candidates`` (stops at the first genuine)."""
    best = best or {"genuine": False, "t": -np.inf, "signs": None, "witness": None}
    if best["genuine"]:
        return best
    for s in candidates:
        solved = _sign_lp(lp["g0"], lp["GN"], lp["active"], lp["R0"], lp["NT"], lp["bound"],
                          np.repeat(s, len(lp["Xa"])))  # fmt: skip
        if solved is None:
            continue
        t, c = solved
        if t > best["t"]:
            best = {"genuine": t > MARGIN, "t": t, "signs": s.tolist(),
                    "witness": lp["R0"] + lp["NT"] @ c}  # fmt: skip
        if best["genuine"]:
            break
    return best


def _free_signs(lp: dict, method: str, best: dict | None = None) -> dict:
    """:func:`_search` over every sign vector (``enumerate``; the all-+1 one is skipped when
    ``best`` already holds its result) or over the one a MILP chooses (``milp``)."""
    K = lp["K"]
    if method == "milp":
        row_bound = np.tile(np.abs(lp["Xa"]).sum(axis=1) * lp["bound"], K)
        found = _milp_signs(lp["g0"], lp["GN"], lp["active"], lp["R0"], lp["NT"], lp["bound"],
                            row_bound, K)  # fmt: skip
        return _search(lp, [] if found is None else [found])
    signs = (np.array(s) for s in itertools.product([1.0, -1.0], repeat=K))
    if best is not None:
        next(signs)  # all +1 comes first: its LP is the one ``best`` solved
    return _search(lp, signs, best)


def _result(lp: dict, best: dict, restricted: bool, method: str) -> dict:
    return best | {
        "loss": lp["cell"]["loss"],
        "unique": lp["cell"]["unique"],
        "variant": "z > 0 (Liu eq. 9)" if restricted else "free signs",
        "method": method,
    }


def _method(method: str, K: int) -> str:
    return ("enumerate" if K <= MAX_ENUMERATED else "milp") if method == "auto" else method


def genuine(
    X, y, pattern, box: float, *, restricted: bool = False, output_bias=False, method="auto"
) -> dict:
    """Is the cell's minimum attained inside the cell? For each sign vector ``s`` (all +1 when
    ``restricted``: Liu's eq. 9, every ``z_j > 0``), a linear program over the minimisers
    ``R = R* + N c`` maximises ``t <= 1`` subject to ``s_j x~_i . R_j >= t`` where the unit is
    active and ``<= 0`` where not, with ``|R| <= box^2`` (from ``|z|, |w| <= box``). Genuine iff
    some ``t* > MARGIN``. ``method``: ``enumerate`` the 2^K sign vectors, ``milp`` (the signs
    as binaries; the LP then rechecks the chosen signs), or ``auto`` (enumerate up to
    :data:`MAX_ENUMERATED` units). Returns ``{genuine, loss, unique, signs, witness (R), t,
    variant, method}``."""
    lp = _setup(X, y, pattern, box, output_bias)
    if restricted:
        return _result(lp, _search(lp, [np.ones(lp["K"])]), True, "enumerate")
    method = _method(method, lp["K"])
    return _result(lp, _free_signs(lp, method), False, method)


def both_variants(X, y, pattern, box: float, *, output_bias=False, method="auto"):
    """:func:`genuine` with free signs and with Liu's restriction, from one set-up: the
    restricted LP (all +1) is also the enumeration's first. Returns ``(free, restricted)``."""
    lp = _setup(X, y, pattern, box, output_bias)
    liu = _search(lp, [np.ones(lp["K"])])
    method = _method(method, lp["K"])
    free = _free_signs(lp, method, best=liu if method == "enumerate" else None)
    return _result(lp, free, False, method), _result(lp, liu, True, "enumerate")


def cover_count(n_points: int, d: int) -> int:
    """Patterns one unit with a bias realises on ``n_points`` in general position in R^d:
    ``2 sum_{k <= d} C(N - 1, k)`` (Cover 1965)."""
    return 2 * sum(math.comb(n_points - 1, k) for k in range(d + 1))


def count_patterns(X: np.ndarray) -> int:
    """How many of the ``2^N`` patterns of one unit are realisable on ``X``, by LP: pattern p
    is realisable iff some ``w`` has ``w . x~_i >= 1`` where p is 1 and ``<= -1`` where 0."""
    Xa = augment(X)
    n = len(Xa)
    count = 0
    for bits in itertools.product([1.0, -1.0], repeat=n):
        sign = np.asarray(bits)
        res = linprog(
            np.zeros(Xa.shape[1]),
            A_ub=-(sign[:, None] * Xa),
            b_ub=-np.ones(n),
            bounds=[(None, None)] * Xa.shape[1],
            method="highs",
        )
        count += res.status == 0
    return count


def liu_gaussian(n: int, d: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Liu's Gaussian data (Sec. IV): ``n`` points in R^d, the first half labelled +1 with
    mean e1, the rest -1 with mean -e1, unit covariance. Returns ``(X, y)``."""
    y = np.where(np.arange(n) < n // 2, 1.0, -1.0)
    X = rng.normal(size=(n, d))
    X[:, 0] += y
    return X, y


def layer_cells_log10(n_points: int, d: int, K: int) -> float:
    """log10 of the cells of a layer of ``K`` units: :func:`cover_count` to the power K."""
    return K * math.log10(cover_count(n_points, d))


def unit_diameters(W: np.ndarray, X: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Liu's sampled diameter of each unit's cell (Sec. VI): from ``w`` (a row of ``W (K, d +
    1)``) along each unit vector of ``directions (m, d + 1)`` and its opposite, the distance
    ``-w.x~_i / u.x~_i`` to the nearest data hyperplane on each side; the largest sum over the
    directions. ``inf`` for an open cell (some direction meets no hyperplane on a side)."""
    Xa = augment(X)
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    along = np.asarray(directions, dtype=np.float64) @ Xa.T  # (directions, points)
    out = np.empty(len(W))
    for j, w in enumerate(W):
        with np.errstate(divide="ignore", invalid="ignore"):
            s = -(Xa @ w)[None, :] / along
        forward = np.where(s >= 0, s, np.inf).min(axis=1)
        backward = np.where(s < 0, -s, np.inf).min(axis=1)
        out[j] = (forward + backward).max()
    return out


def random_directions(n: int, dim: int, rng) -> np.ndarray:
    """``n`` directions uniform on the unit sphere of R^dim."""
    U = rng.normal(size=(n, dim))
    return U / np.linalg.norm(U, axis=1, keepdims=True)


def good_turing_unseen(visits: np.ndarray) -> float:
    """Good-Turing estimate of the probability mass in cells never visited: the fraction of
    draws that fall in cells visited exactly once. Consecutive MCMC draws repeat cells, so
    this is low when the draws are correlated; :func:`incidence_unseen` is not."""
    visits = np.asarray(visits)
    n = visits.sum()
    return float((visits == 1).sum() / n) if n else 1.0


def incidence_unseen(chains_per_cell: np.ndarray, n_chains: int) -> float:
    """The same estimate with independent chains as the sampling units (Chao et al. 2014,
    incidence data): ``Q1/U . (T - 1) Q1 / ((T - 1) Q1 + 2 Q2)`` for ``T`` chains, ``U`` cell
    visits counted once per chain, ``Q1``/``Q2`` cells visited by exactly one/two chains."""
    q = np.asarray(chains_per_cell)
    T, U = int(n_chains), q.sum()
    q1, q2 = int((q == 1).sum()), int((q == 2).sum())
    if U == 0:
        return 1.0
    if q1 == 0:
        return 0.0
    # Chao's bias correction when no cell was seen by exactly two chains
    ratio = (
        (T - 1) * q1 / ((T - 1) * q1 + 2 * q2)
        if q2
        else (T - 1) * (q1 - 1) / ((T - 1) * (q1 - 1) + 2)
    )
    return float(q1 / U * ratio)


def unit_weights(theta: np.ndarray, layout) -> tuple[np.ndarray, np.ndarray]:
    """Hidden weights with their bias ``W~ (n, K, d + 1)`` and output weights ``z (n, K)``
    of draws ``theta (n, p)`` of a one-hidden-layer network."""
    theta = np.atleast_2d(theta)
    hidden, out = layout.layers
    W = theta[:, hidden.weights].reshape(len(theta), hidden.n_out, hidden.n_in)
    Wa = np.concatenate([W, theta[:, hidden.biases][:, :, None]], axis=2)
    return Wa, theta[:, out.weights]


def draw_patterns(theta: np.ndarray, layout, X: np.ndarray) -> np.ndarray:
    """Activation patterns ``(n, N, K)`` of draws ``theta (n, p)``; a unit whose product
    ``z_j w~_j`` is zero computes nothing and counts as inactive (its minimum would sit on
    the active cell's boundary)."""
    Wa, z = unit_weights(theta, layout)
    R = np.abs(z) * np.linalg.norm(Wa, axis=2)
    live = R > 1e-8 * (1.0 + R.max(axis=1, keepdims=True))
    return (np.einsum("ni,bki->bnk", augment(X), Wa) > 0) & live[:, None, :]


# --- from the store ----------------------------------------------------------------------


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
    pattern = draw_patterns(theta, layout, X)
    return _void(np.packbits(pattern.reshape(len(pattern), -1), axis=1))


def _visited_cells(store, layout, X, mean_loss, good, dpb):
    """Every cell the draws visit, most visited first (ties by pattern): its key, visits, good
    visits, chains that reached it, lowest mean loss and the flat index of that draw. One
    pass over the store, one draw block in memory with the distinct cells."""
    n_chains, n_draws, _ = store.theta.shape
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
    return tuple(x[order] for x in (keys, visits, good_visits, chains, lowest, lowest_flat))


def _with_census_cells(cells, census_keys):
    """``cells`` (as :func:`_visited_cells` gives them) with the cells of census minima no draw
    visited appended, unvisited."""
    keys, visits, good_visits, chains, lowest, lowest_flat = cells
    extra = np.setdiff1d(census_keys, keys)
    zeros = np.zeros(len(extra))
    return (
        np.concatenate([keys, extra]),
        np.r_[visits, zeros],
        np.r_[good_visits, zeros],
        np.r_[chains, zeros.astype(int)],
        np.r_[lowest, np.full(len(extra), np.nan)],
        np.r_[lowest_flat, np.full(len(extra), -1)],
    )


def _census_consistency(cell_of_census: dict, minima_rows: pd.DataFrame, table: pd.DataFrame):
    """Per census minimum: its cell, and whether it is that cell's genuine minimum (a box KKT
    point need not be: the wall stops it first)."""
    by_cell = table.set_index("cell")
    census_rows = minima_rows.set_index("id")
    out = []
    for i, c in cell_of_census.items():
        kind = census_rows.loc[i, "classification"]
        loss = float(census_rows.loc[i, "mean_loss"])
        cell_loss = float(by_cell.loc[c, "cell_loss"])
        in_genuine_cell = bool(by_cell.loc[c, "genuine"])
        out.append(
            {
                "id": i,
                "cell": c,
                "classification": kind,
                "mean_loss": loss,
                "cell_loss": cell_loss,
                "genuine": in_genuine_cell,
                "consistent": kind == minima.WALL
                or (in_genuine_cell and abs(cell_loss - loss) <= 1e-8 * max(1, loss)),
            }
        )
    return out


def _cell_row(X, y, target, pattern, representative, directions, output_bias) -> dict:
    """What one examined cell is: its least-squares minimum, Liu's LP (free signs, z > 0) and
    the mean diameter of its unit cells around ``representative``."""
    free, liu = both_variants(X, y, pattern, target.box, output_bias=output_bias)
    Wa, _ = unit_weights(representative, target.mlp.layout)
    diam = unit_diameters(Wa[0], X, directions)
    closed = diam[np.isfinite(diam)]
    return {
        "active_fraction": float(pattern.mean()),
        "cell_loss": free["loss"],
        "unique": free["unique"],
        "genuine": free["genuine"],
        "margin": free["t"],
        "signs": "".join("+" if s > 0 else "-" for s in free["signs"] or []),
        "genuine_z_positive": liu["genuine"],
        "mean_unit_diameter": float(closed.mean()) if closed.size else np.inf,
        "open_units": int((~np.isfinite(diam)).sum()),
    }


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
    n_chains = store.theta.shape[0]
    mean_loss, good = draws.good_mask(store, good_threshold)
    dpb = streaming.draws_per_block(store.theta.shape, draw_block, max_block_mb)
    visited = _visited_cells(store, layout, X, mean_loss, good, dpb)

    minima_rows = census_table[minima.census_minima(census_table)]
    census_ids = minima_rows["id"].astype(int).to_numpy()
    census_theta = np.asarray(census_points, dtype=np.float64)[census_ids]
    census_keys = _cell_keys(census_theta, layout, X) if len(census_ids) else visited[0][:0]
    cells = _with_census_cells(visited, census_keys)
    keys, visits, good_visits, chains, lowest, lowest_flat = cells
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
    directions = random_directions(directions_per_dim * (d + 1), d + 1, np.random.default_rng(seed))
    total = visits.sum()
    rows = []
    for c in examined:
        pattern = np.unpackbits(keys[c : c + 1].view(np.uint8))[: n * K].reshape(n, K).astype(bool)
        rows.append(
            {
                "cell": c,
                "visits": int(visits[c]),
                "good_visits": int(good_visits[c]),
                "chains": int(chains[c]),
                "mass": visits[c] / total if total else 0.0,
                "lowest_loss": lowest[c],
                "census_ids": " ".join(str(i) for i, cc in cell_of_census.items() if cc == c),
                **_cell_row(X, y, target, pattern, reps[c], directions, output_bias),
                "representative": "draw" if lowest_flat[c] >= 0 else "census",
                "pattern": pattern_text(pattern),
            }
        )
    table = pd.DataFrame(rows, columns=CELLS_COLUMNS)
    consistency = _census_consistency(cell_of_census, minima_rows, table)
    meta = {
        "n_points": n,
        "n_features": d,
        "n_units": K,
        "output_bias": output_bias,
        "box": target.box,
        "cells_per_unit": cover_count(n, d),
        "log10_cells_of_layer": layer_cells_log10(n, d, K),
        "draws": int(total),
        "cells_visited": int((visits > 0).sum()),
        "cells_visited_by_good_draws": int((good_visits > 0).sum()),
        "examined": len(examined),
        "mass_examined": float(visits[examined].sum() / total) if total else 0.0,
        "unseen_mass_good_turing": good_turing_unseen(visits[visits > 0]),
        "unseen_mass_by_chains": incidence_unseen(chains[visits > 0], n_chains),
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


# --- figure ------------------------------------------------------------------------------


def plot_cells(table, meta: Mapping, path, title: str | None = None, dpi: int = 120) -> Path:
    """Liu's cells: posterior mass of each examined cell against its minimum's loss, genuine
    cells filled, spurious hollow, cells holding census minima ringed; beside it, each
    cell's lowest sampled loss against its minimum's (``cells.run_cells``)."""
    fig = canvas.figure(8.0, 3.4)
    ax_mass, ax_low = fig.subplots(1, 2)
    genuine = table["genuine"].to_numpy(dtype=bool)
    loss = table["cell_loss"].to_numpy(dtype=float)
    mass = np.maximum(table["mass"].to_numpy(dtype=float), 0.5 / max(meta["draws"], 1))
    census = table["census_ids"].fillna("").astype(str).str.len().to_numpy() > 0
    for ax, y in ((ax_mass, mass), (ax_low, table["lowest_loss"].to_numpy(dtype=float))):
        ax.plot(loss[genuine], y[genuine], "o", color="C0", ms=4, label="genuine")
        ax.plot(loss[~genuine], y[~genuine], "o", mfc="none", color="C3", ms=4,
                label="spurious")  # fmt: skip
        ax.plot(loss[census], y[census], "s", mfc="none", color="k", ms=8,
                label="holds a census minimum")  # fmt: skip
        ax.set_xlabel("cell minimum (mean loss)")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    ax_mass.set_yscale("log")
    ax_mass.set_ylabel("posterior mass (never visited: at the floor)")
    ax_low.set_ylabel("lowest sampled loss in the cell")
    lims = [np.nanmin(loss) if len(loss) else 0, np.nanmax(loss) if len(loss) else 1]
    ax_low.plot(lims, lims, "k-", lw=0.5)
    ax_mass.legend(fontsize="x-small")
    fig.suptitle(
        f"{title + ': ' if title else ''}{meta['cells_visited']} cells visited of "
        f"10^{meta['log10_cells_of_layer']:.1f}; unseen mass {meta['unseen_mass_by_chains']:.2g}"
    )
    return canvas.save(fig, path, dpi)
