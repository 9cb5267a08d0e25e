"""Liu's convex cells: Cover's counts by linear programming, cell minima against the network's
own minima, and the genuine-minimum test with and without Liu's sign restriction."""

import numpy as np
import pytest
from scipy.optimize import minimize

from lossatlas.analysis import cells
from lossatlas.model import MLP, Target


@pytest.mark.parametrize(
    "points, expected",
    [
        (np.array([[0.0], [1.0], [2.5]]), 6),  # N = 3 on a line
        (np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), 14),  # a square's corners
        (5, 22),
        (6, 32),
        (10, 92),
    ],
)
def test_cover_counts_by_lp(points, expected):
    if isinstance(points, int):  # random points in the plane: general position almost surely
        points = np.random.default_rng(points).normal(size=(points, 2))
    n, d = points.shape
    assert cells.count_patterns(points) == cells.cover_count(n, d) == expected


def test_liu_sentence_matches_n_100():
    # "1,000 examples in 10-D give 1.9e13 cells": the formula gives that for N = 100
    assert round(cells.cover_count(101, 10) / 2 / 1e13, 2) == 1.94


def _relu_net(X, y, K, seed):
    """A local minimum of 2-[K]-1 relu with biases (mse), by L-BFGS from a seeded start."""
    mlp = MLP((X.shape[1], K, 1), "relu", "mse")
    target = Target(mlp, X, y[:, None], box=50.0)

    def fg(th):
        u, g = target.U_and_grad(th[None])
        return float(u[0]), g[0]

    th0 = np.random.default_rng(seed).normal(size=mlp.p)
    res = minimize(fg, th0, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 0})
    W1 = res.x[: K * X.shape[1]].reshape(K, -1)
    b1 = res.x[K * X.shape[1] : K * X.shape[1] + K]
    z = res.x[K * X.shape[1] + K : K * X.shape[1] + 2 * K]
    return np.column_stack([W1, b1]), z, res.fun / len(X)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_network_minimum_is_its_cells_genuine_minimum(seed):
    rng = np.random.default_rng(10)
    X = rng.normal(size=(30, 2))
    y = np.maximum(X @ [1.0, -0.5] + 0.3, 0) - 0.7 * np.maximum(X @ [-0.4, 1.0], 0)
    W, z, loss = _relu_net(X, y, 3, seed)
    # a unit whose output weight went to 0 computes nothing: its cell is the inactive one
    # (active, its zero product would sit on the cell's boundary, and Liu's test says so)
    pattern = cells.patterns(W, X) & (np.abs(z) > 1e-8)
    cell = cells.cell_minimum(X, y, pattern, output_bias=True)
    assert abs(cell["loss"] - loss) <= 1e-8 * max(1.0, loss)
    found = cells.genuine(X, y, pattern, box=50.0, output_bias=True)
    assert found["genuine"] and found["variant"] == "free signs"
    assert abs(found["loss"] - loss) <= 1e-8 * max(1.0, loss)


def test_sign_restriction_makes_a_negative_unit_spurious():
    # y = -relu(w.x~): its own cell's minimum needs z < 0. Free signs: genuine; Liu's z > 0
    # restriction: the same cell is spurious
    rng = np.random.default_rng(3)
    X = rng.normal(size=(25, 2))
    w = np.array([1.0, 0.5, 0.2])
    y = -np.maximum(cells.augment(X) @ w, 0)
    pattern = cells.patterns(w[None], X)
    free = cells.genuine(X, y, pattern, box=10.0)
    assert free["genuine"] and free["signs"] == [-1.0] and free["loss"] < 1e-20
    assert not cells.genuine(X, y, pattern, box=10.0, restricted=True)["genuine"]
    # a pattern no unit realises on its data (active exactly on points the fit cannot
    # separate) is spurious under both variants
    odd = (np.arange(25) % 2 == 0)[:, None]
    assert not cells.genuine(X, y, odd, box=10.0)["genuine"]
