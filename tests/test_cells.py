"""Liu's convex cells: Cover's counts by linear programming, cell minima against the network's
own minima, and the genuine-minimum test with and without Liu's sign restriction."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TEST_CONFIGS
from scipy.optimize import minimize

from lossatlas import config as lacfg
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


def _teacher_case(rng, n, d, K, noise):
    """Data fit by a random relu teacher (plus noise) and the teacher's cell."""
    X = rng.normal(size=(n, d))
    W, z = rng.normal(size=(K, d + 1)), rng.normal(size=K)
    y = np.maximum(cells.augment(X) @ W.T, 0) @ z + noise * rng.normal(size=n)
    return X, y, cells.patterns(W, X)


def test_milp_chooses_the_signs_enumeration_finds():
    # noiseless: the teacher's cell is genuine; noisy: often spurious. Both methods must agree
    rng = np.random.default_rng(0)
    verdicts = []
    for case in range(24):
        X, y, pattern = _teacher_case(rng, 15, 2, 3, 0.3 * (case % 2))
        a = cells.genuine(X, y, pattern, box=5.0, method="enumerate")
        b = cells.genuine(X, y, pattern, box=5.0, method="milp")
        assert a["genuine"] == b["genuine"], case
        assert b["method"] == "milp"
        verdicts.append(a["genuine"])
    assert 4 <= sum(verdicts) <= 20  # both verdicts occur


def test_both_variants_are_the_two_separate_verdicts():
    rng = np.random.default_rng(4)
    for case in range(8):
        X, y, pattern = _teacher_case(rng, 15, 2, 3, 0.3 * (case % 2))
        free, liu = cells.both_variants(X, y, pattern, box=5.0)
        for got, want in (
            (free, cells.genuine(X, y, pattern, box=5.0)),
            (liu, cells.genuine(X, y, pattern, box=5.0, restricted=True)),
        ):
            assert got["genuine"] == want["genuine"] and got["signs"] == want["signs"]
            assert got["t"] == want["t"] and got["variant"] == want["variant"]


def test_milp_decides_wide_layers():
    # K = 12 > MAX_ENUMERATED: 4096 LPs replaced by one MILP and one LP
    rng = np.random.default_rng(1)
    X, y, pattern = _teacher_case(rng, 200, 3, 12, 0.0)
    found = cells.genuine(X, y, pattern, box=5.0)
    assert found["method"] == "milp" and found["genuine"] and found["loss"] < 1e-20
    # the witness realises the pattern with the chosen signs
    R = found["witness"].reshape(12, 4)
    values = cells.augment(X) @ R.T * np.asarray(found["signs"])
    assert np.all(values[pattern] > 0) and np.all(values[~pattern] <= 1e-9)


@pytest.fixture(scope="module")
def liu_data():
    """Liu's Table I data: N = 2000 points in R^3, labels +-1 with class means +-e1."""
    rng = np.random.default_rng(2020)
    return *cells.liu_gaussian(2000, 3, rng), rng


def test_liu_table_one_under_the_sign_restriction(liu_data):
    """Liu's Table I (d = 3, K = 10, N = 2000; random Gaussian weights with every bias set):
    with z > 0 no genuine minimum at biases 20, 3, 0, -3, and the dead plateau at -20 is
    genuine at loss 1. Eight weight draws per bias (Liu: 100); the verdicts are 0 or 100 %."""
    X, y, rng = liu_data
    genuine, active = {}, {}
    for bias in (20, 3, 0, -3, -20):
        found = []
        for _ in range(8):
            W = np.column_stack([rng.normal(size=(10, 3)), np.full(10, float(bias))])
            pattern = cells.patterns(W, X)
            found.append(cells.genuine(X, y, pattern, box=100.0, restricted=True))
            active.setdefault(bias, []).append(pattern.mean())
        genuine[bias] = 100 * np.mean([f["genuine"] for f in found])
        if bias == -20:
            assert all(f["loss"] == 1.0 for f in found)
    assert genuine == {20: 0, 3: 0, 0: 0, -3: 0, -20: 100}
    # Liu's activated states: 100, 91.27, 50.66, 8.04, 0 % (here 8 draws: within 5 points)
    expected = {20: 100, 3: 91.27, 0: 50.66, -3: 8.04, -20: 0}
    for bias, share in expected.items():
        assert abs(100 * np.mean(active[bias]) - share) < 5, bias


def test_liu_all_active_cell_is_genuine_with_free_signs(liu_data):
    """Every unit active: the network is linear, the cell's minimum is the linear least
    squares fit (loss ~0.5 here), and with one negative output weight it is attained: a
    genuine bad minimum, above the mixed cells' minima at bias 0."""
    X, y, rng = liu_data
    W = np.column_stack([rng.normal(size=(10, 3)), np.full(10, 20.0)])
    pattern = cells.patterns(W, X)
    assert pattern.all()
    free = cells.genuine(X, y, pattern, box=100.0)
    linear = np.linalg.lstsq(cells.augment(X), y, rcond=None)[0]
    ls_loss = np.mean((cells.augment(X) @ linear - y) ** 2)
    assert free["genuine"] and -1.0 in free["signs"]
    assert abs(free["loss"] - ls_loss) < 1e-10 and 0.45 < ls_loss < 0.55
    mixed = [
        cells.cell_minimum(X, y, cells.patterns(np.column_stack([rng.normal(size=(10, 3)),
                                                                   np.zeros(10)]), X))["loss"]
        for _ in range(4)
    ]  # fmt: skip
    assert max(mixed) < ls_loss


def test_unit_diameter_is_the_chord_through_the_cell():
    # data x = 0 and 1 in R: the unit (w, b) = (1, -0.5) lies in {b < 0, w + b > 0}
    X = np.array([[0.0], [1.0]])
    w = np.array([[1.0, -0.5]])
    assert cells.unit_diameters(w, X, np.array([[0.0, 1.0]]))[0] == pytest.approx(1.0)
    # along w the chord never meets b = 0: an open cell
    assert np.isinf(cells.unit_diameters(w, X, np.array([[1.0, 0.0]]))[0])
    # the diameter is the longest chord over the directions
    both = np.array([[0.0, 1.0], [np.sqrt(0.5), -np.sqrt(0.5)]])
    assert cells.unit_diameters(w, X, both[:1])[0] <= cells.unit_diameters(w, X, both)[0]


def test_unseen_mass_estimates():
    # visits 1, 1, 2, 3: two of seven draws in cells seen once
    assert cells.good_turing_unseen(np.array([1, 1, 2, 3])) == pytest.approx(2 / 7)
    # chains per cell 1, 1, 2, 4 of T = 4: Q1 = 2, Q2 = 1, U = 8 -> 2/8 * 6 / 8
    assert cells.incidence_unseen(np.array([1, 1, 2, 4]), 4) == pytest.approx(0.1875)
    assert cells.incidence_unseen(np.array([4, 4]), 4) == 0.0


def test_cells_refuses_networks_it_does_not_fit():
    cfg = yaml.safe_load((TEST_CONFIGS / "cells.yaml").read_text())
    assert lacfg.cells_unmet(lacfg.validate(cfg), "hidden-3") is None
    for change, field in (
        ({"model": {**cfg["model"], "activation": "tanh"}}, "model.activation: relu"),
        ({"experiments": {"sweep": {"hidden": [[3, 3]]}}}, "one hidden layer"),
        ({"model": {**cfg["model"], "bias": "none"}}, "model.bias: all or hidden"),
        ({"dataset": {**cfg["dataset"], "n_targets": 2}}, "one output"),
    ):
        with pytest.raises(lacfg.ConfigError, match="landscape.cells.when: always") as err:
            lacfg.validate({**cfg, **change})
        assert field in str(err.value)
    auto = {**cfg, "model": {**cfg["model"], "activation": "tanh"}, "landscape": {}}
    assert lacfg.cells_unmet(lacfg.validate(auto), "hidden-3") is not None  # skipped, no error


def test_cells_rule_on_a_sampled_relu_network(cells_run):
    res = cells_run / "results" / "hidden-3" / "landscape"
    table = pd.read_csv(res / "cells.csv")
    meta = json.loads((res / "cells.json").read_text())
    assert meta["draws"] == 4 * 100 and meta["n_units"] == 3
    assert meta["cells_per_unit"] == cells.cover_count(12, 2) == 2 * (1 + 11 + 55)
    assert 1 <= meta["cells_visited"] <= meta["draws"]
    assert table["visits"].sum() <= meta["draws"] and table["mass"].between(0, 1).all()
    assert meta["genuine"] + meta["spurious"] == len(table) == meta["examined"]
    assert meta["genuine_z_positive"] <= meta["genuine"]
    assert 0 <= meta["unseen_mass_good_turing"] <= 1 and 0 <= meta["unseen_mass_by_chains"] <= 1
    # every interior census minimum lies in a genuine cell at its own loss (to 1e-8)
    assert meta["census"] and meta["census_consistent"]
    inside = [r for r in meta["census"] if r["classification"] != "box KKT point"]
    for row in inside:
        assert row["genuine"] and abs(row["cell_loss"] - row["mean_loss"]) <= 1e-8
    # a cell's draws never go below its minimum (the minimum over a superset of the cell)
    drawn = table.dropna(subset=["lowest_loss"])
    assert (drawn["lowest_loss"] >= drawn["cell_loss"] - 1e-12).all()
    assert (res / "cells.png").stat().st_size > 0
    # each row names its cell: one string of 12 point bits per unit, distinct across rows
    decoded = [cells.pattern_from_text(t) for t in table["pattern"]]
    assert all(pt.shape == (12, 3) for pt in decoded) and table["pattern"].is_unique
    np.testing.assert_allclose([pt.mean() for pt in decoded], table["active_fraction"])
    assert all(cells.pattern_text(pt) == t for pt, t in zip(decoded, table["pattern"], strict=True))
