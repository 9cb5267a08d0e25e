"""Connectivity on landscapes whose answers are known in closed form."""

import numpy as np
import pytest

from lossatlas.analysis import connect


def double_well(X):
    """U = (x^2 - 1)^2 + y^2: minima at (+-1, 0), U = 0; the saddle at the origin, U = 1.
    Every path between the minima crosses x = 0, where U >= 1: a certificate."""
    x, y = X[:, 0], X[:, 1]
    return (x**2 - 1) ** 2 + y**2, np.column_stack([4 * x * (x**2 - 1), 2 * y])


def ring(X):
    """U = 10 (|z| - 1)^2: zero on the unit circle, 10 at the origin."""
    r = np.linalg.norm(X, axis=1)
    return 10 * (r - 1) ** 2, (20 * (r - 1) / r)[:, None] * X


A, B = np.array([-1.0, 0.0]), np.array([1.0, 0.0])


def test_line_max_finds_the_top_between_grid_nodes():
    """On the double well's axis the maximum, 1 at t = 1/2, lies between grid nodes of an
    even grid; the bounded search finds it to 1e-9."""
    u, t = connect.line_max(double_well, A, B, n_grid=8)
    assert u == pytest.approx(1.0, abs=1e-9) and t == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("level", [0.25, 0.5, 0.9])
def test_dss_never_connects_below_a_certified_barrier(level):
    """Below the saddle's U = 1 no path exists: DSS must say "not connected within budget"
    and never report a path below 1."""
    out = connect.dynamic_string(double_well, A, B, level, box=3.0, max_depth=6, max_beads=16)
    assert not out["connected"]
    assert out["status"].startswith("not connected within budget")
    assert out["path_max"] >= 1.0 - 1e-9


def test_dss_connects_above_the_barrier_and_the_string_finds_it():
    """Above the saddle DSS connects; the string method from its path finds the barrier 1
    (the saddle) to 1e-3."""
    out = connect.dynamic_string(double_well, A, B, 1.2, box=3.0)
    assert out["connected"] and out["path_max"] <= 1.2
    barrier = connect.string_barrier(double_well, out["beads"], box=3.0)
    assert barrier["barrier"] == pytest.approx(1.0, abs=1e-3)


def test_dss_follows_a_curved_valley_with_beads():
    """The straight line through the ring's centre rises to 10; at level 0.5 DSS bends the
    string round the valley with beads, and its length over the straight distance tends to
    pi / 2 (the half circle): within 15 % here."""
    a, b = np.array([1.0, 0.0]), np.array([-1.0, 1e-3])
    assert connect.line_max(ring, a, b)[0] > 9
    out = connect.dynamic_string(ring, a, b, 0.5, box=2.0)
    assert out["connected"] and out["n_beads"] >= 1 and out["path_max"] <= 0.5
    assert out["normalised_length"] == pytest.approx(np.pi / 2, rel=0.15)


def test_components_by_level_is_the_merge_tree():
    """Nodes at U = 0, 0.1, 0.2; pairs 0-1 join at 1, 1-2 at 3, 0-2 unknown: one component
    per node until 1, two until 3, then one; nodes above the level do not count."""
    M = np.array([[0, 1, np.inf], [1, 0, 3], [np.inf, 3, 0]], dtype=float)
    got = connect.components_by_level([0.0, 0.1, 0.2], M, [0.05, 0.15, 0.5, 1.0, 2.0, 3.0])
    assert got.tolist() == [1, 2, 3, 2, 2, 1]


def test_sample_components_of_two_wells_and_one_ring():
    # two wells separated by a barrier of 1 (at x = 0): below 0.5 the draws form two
    # components and DSS cannot join them; at 1.2 the straight segments cross, one component
    def double_well(X):
        x = X[:, 0]
        u = (x**2 - 1) ** 2 + X[:, 1] ** 2
        g = np.column_stack([4 * x * (x**2 - 1), 2 * X[:, 1]])
        return u, g

    rng = np.random.default_rng(0)
    pts = np.vstack([rng.normal([-1, 0], 0.1, (60, 2)), rng.normal([1, 0], 0.1, (60, 2))])
    low = connect.sample_components(double_well, pts, 0.5, 3.0, k=6)
    assert low["n_components_knn"] >= 2 and low["upper_bound"] == 2
    assert low["sizes"] == [60, 60] and low["merged_by_dss"] == 0
    high = connect.sample_components(double_well, pts, 1.2, 3.0, k=6)
    assert high["upper_bound"] == 1 and high["sizes"] == [120]
