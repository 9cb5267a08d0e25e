"""Liu's convex cells of a one-hidden-layer ReLU network with squared loss.

The data cut the weight space of each hidden unit into convex cells, one per activation
pattern ``I[i, j] = [w_j . x~_i > 0]`` with ``x~ = (x, 1)``. Inside a cell the network is
linear in the products ``R_j = z_j w_j`` (``z_j`` the unit's output weight), so the loss is a
convex quadratic with a closed-form minimum (:func:`cell_minimum`). That minimum is *genuine*
when some minimiser, with some output signs ``s_j = sign(z_j)``, realises the cell's own
pattern; else it is spurious (:func:`genuine`, a linear program per sign vector, HiGHS).

:func:`cover_count` is Cover's count of the patterns one unit can realise on N points in
general position in R^d with a bias; :func:`count_patterns` counts them by LP, to check it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.optimize import linprog

# the LP's margin below which a strict inequality counts as not met
MARGIN = 1e-9


def augment(X: np.ndarray) -> np.ndarray:
    """``x~ = (x, 1)`` for each row of ``X (n, d)``."""
    X = np.asarray(X, dtype=np.float64)
    return np.column_stack([X, np.ones(len(X))])


def patterns(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Activation pattern ``(n, K)`` of hidden weights ``W (K, d + 1)`` (bias last) on ``X``."""
    return augment(X) @ np.asarray(W, dtype=np.float64).T > 0


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


def genuine(X, y, pattern, box: float, *, restricted: bool = False, output_bias=False) -> dict:
    """Is the cell's minimum attained inside the cell? For each sign vector ``s`` (all +1 when
    ``restricted``: Liu's eq. 9, every ``z_j > 0``), a linear program over the minimisers
    ``R = R* + N c`` maximises ``t <= 1`` subject to ``s_j x~_i . R_j >= t`` where the unit is
    active and ``<= 0`` where not, with ``|R| <= box^2`` (from ``|z|, |w| <= box``). Genuine iff
    some ``t* > MARGIN``. Returns ``{genuine, loss, signs, witness (R), t, variant}``."""
    cell = cell_minimum(X, y, pattern, output_bias)
    on = np.asarray(pattern, dtype=bool)
    Xa = augment(X)
    n, K = on.shape
    dim = Xa.shape[1]
    R0, N = cell["R"], cell["null"]
    m = N.shape[0]
    bound = box**2
    signs = (
        [np.ones(K)]
        if restricted
        else [np.array(s) for s in itertools.product([1.0, -1.0], repeat=K)]
    )
    best = {"genuine": False, "t": -np.inf, "signs": None, "witness": None}
    for s in signs:
        # rows of (unit j, point i): value s_j x~_i . R_j, as a row over R's coordinates
        G = np.zeros((n * K, R0.size))
        for j in range(K):
            G[j * n : (j + 1) * n, j * dim : (j + 1) * dim] = s[j] * Xa
        active = on.T.ravel()
        # variables (c (m), t): maximise t
        GN = G @ N.T if m else np.zeros((n * K, 0))
        g0 = G @ R0
        # active: -(g0 + GN c) + t <= 0 ; inactive: g0 + GN c <= 0
        A_ub = np.vstack(
            [np.column_stack([-GN[active], np.ones(active.sum())]),
             np.column_stack([GN[~active], np.zeros((~active).sum())])]
        )  # fmt: skip
        b_ub = np.concatenate([g0[active], -g0[~active]])
        # the box on R = R0 + N^T c
        NT = N.T if m else np.zeros((R0.size, 0))
        A_box = np.vstack([np.column_stack([NT, np.zeros(R0.size)]),
                           np.column_stack([-NT, np.zeros(R0.size)])])  # fmt: skip
        b_box = np.concatenate([bound - R0, bound + R0])
        res = linprog(
            np.r_[np.zeros(m), -1.0],
            A_ub=np.vstack([A_ub, A_box]),
            b_ub=np.concatenate([b_ub, b_box]),
            bounds=[(None, None)] * m + [(None, 1.0)],
            method="highs",
        )
        if res.status != 0:
            continue
        t = float(-res.fun)
        if t > best["t"]:
            best = {"genuine": t > MARGIN, "t": t, "signs": s.tolist(),
                    "witness": R0 + NT @ res.x[:m]}  # fmt: skip
        if best["genuine"]:
            break
    return best | {
        "loss": cell["loss"],
        "variant": "z > 0 (Liu eq. 9)" if restricted else "free signs",
    }


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
