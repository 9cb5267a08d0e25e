"""The level-set theorems' known answers: each check must pass where the theorem holds, fail
where its premise is broken, and run through the real workflow."""

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, make_workdir

from lossatlas import cli, config, data
from lossatlas.analysis import theory
from lossatlas.model import MLP, Target

CONNECT = config.section("landscape", {})["connect"]


def _linear_target(hidden: int) -> Target:
    ds = data.regression(6, 2, 2, seed=1, noise=0.05, linear_map=[[1.0, 0.5], [-0.3, 1.0]])
    return Target(MLP((2, hidden, 2), "linear", "mse"), ds.X, ds.Y, box=10.0)


def _passed(rows) -> dict:
    return {r["quantity"]: r["passed"] for r in rows}


def test_linear_barrier_is_the_second_singular_value_squared():
    target = _linear_target(2)
    fit = theory.linear_fit(target.X, target.y)
    a, b, _ = theory.linear_sign_flip_pair(target)
    W1a, W1b = a[:4].reshape(2, 2), b[:4].reshape(2, 2)
    assert np.sign(np.linalg.det(W1a)) == -np.sign(np.linalg.det(W1b))
    np.testing.assert_allclose(target.U(np.vstack([a, b])), fit["L_star"], rtol=1e-12)
    rows = theory.linear_sign_flip(target, CONNECT)
    assert all(r["passed"] for r in rows), rows
    barrier = next(r for r in rows if r["quantity"].startswith("barrier"))
    # the string method finds a path within 5 % of sigma_2^2 (measured: 0.26 % above), and
    # never below it: sigma_2^2 is a lower bound on every path (Eckart-Young)
    s2 = fit["sigma"][1] ** 2
    assert s2 * (1 - 1e-9) <= barrier["measured"] <= 1.05 * s2


def test_wider_linear_network_has_no_barrier():
    target = _linear_target(3)
    rows = theory.linear_sign_flip(target, CONNECT)
    assert all(r["passed"] for r in rows), rows
    barrier = next(r for r in rows if r["quantity"].startswith("barrier"))
    s2 = theory.linear_fit(target.X, target.y)["sigma"][1] ** 2
    # the third unit takes over: measured 0.15 % of sigma_2^2
    assert barrier["predicted"] == 0.0 and barrier["measured"] < 0.01 * s2


def test_relu_permutation_certificate_and_paths():
    ds = data.permute3()
    target = Target(MLP((2, 3, 2), "relu", "mse", "none"), ds.X, ds.Y, box=5.0)
    rows = theory.relu_permutation(target, CONNECT)
    assert all(r["passed"] for r in rows), rows
    barrier = next(r for r in rows if r["quantity"].startswith("barrier"))
    assert 0.5 <= barrier["measured"] < 1.1  # measured 1.003: above the proven 1/2


def test_relu_certificate_bound_holds_on_singular_hidden_layers():
    # the proof's claim, checked directly: for a singular nonnegative H (3 units x 3 points)
    # the best output layer, W2 = Y' H^+, leaves a summed squared error of at least 1/2
    Y = data.permute3().Y
    rng = np.random.default_rng(0)
    A, B = rng.exponential(size=(20000, 3, 2)), rng.exponential(size=(20000, 2, 3))
    H = A @ B  # rank 2, entries >= 0
    H[:5000, 2] = 0.0  # and some with a dead unit
    residual = Y.T[None] - Y.T[None] @ np.linalg.pinv(H) @ H
    sse = (residual**2).sum(axis=(1, 2))
    assert sse.min() >= theory.RELU_CERTIFIED_BOUND - 1e-9


def test_quadratic_minima_and_a_census_that_breaks_the_theorem():
    ds = data.regression(7, 2, 1, seed=2, noise=0.3, teacher_hidden=[4])
    target = Target(MLP((2, 15, 1), "quadratic", "mse"), ds.X, ds.Y, box=5.0)
    F = theory.quadratic_features(ds.X)
    L = float(np.sum((ds.Y - F @ np.linalg.lstsq(F, ds.Y, rcond=None)[0]) ** 2))
    census = pd.DataFrame({"U": [L], "index": [0]})
    rows = theory.quadratic(target, census, CONNECT)
    assert all(r["passed"] for r in rows), rows
    # a census with a minimum above L* contradicts the theorem, and the check says so
    bad = _passed(
        theory.quadratic(target, pd.DataFrame({"U": [L, L + 0.1], "index": [0, 0]}), CONNECT)
    )
    assert not bad["fraction of census minima at L*"]


def test_cooper_check_reads_the_census():
    ds = data.regression(5, 2, 2, seed=3, noise=0.1, teacher_hidden=[3])
    target = Target(MLP((2, 4, 2), "tanh", "mse"), ds.X, ds.Y)
    assert target.p - 2 * 5 == 12
    good = pd.DataFrame(
        {"mean_loss": [0.0, 1e-12, 0.3], "index": [0, 0, 0], "n_zero": [12, 12, 3]}
        | {"cooper_dim": [12, 12, 5]}
    )
    assert all(r["passed"] for r in theory.cooper(target, good))
    off = good.assign(n_zero=[12, 11, 3])
    assert not _passed(theory.cooper(target, off))[
        "n_zero at interpolating minima (fraction equal)"
    ]
    none = good.assign(mean_loss=[0.1, 0.2, 0.3])
    assert not any(r["passed"] for r in theory.cooper(target, none))


def test_expected_checks_refuse_configs_they_do_not_fit():
    base = config.load(REPO / "config" / "theory" / "permute3-relu.yaml")
    with pytest.raises(config.ConfigError, match="expected: relu_permutation needs .*bias: none"):
        config.validate({**base, "model": {**base["model"], "bias": "all"}})
    with pytest.raises(config.ConfigError, match="expected: quadratic needs model.activation"):
        config.validate({**base, "expected": ["quadratic"]})
    with pytest.raises(config.ConfigError, match="expected: cooper needs model.loss: mse"):
        config.validate({"expected": ["cooper"]})


@pytest.mark.slow
def test_theory_configs_run_through_the_workflow(tmp_path, monkeypatch):
    """Two of config/theory/ through Snakemake (sample, reduce, census, connect, theory) by
    the `lossatlas theory` command; the others run the same way (README)."""
    wd = make_workdir(tmp_path / "wd", REPO / "config" / "config.yaml")
    (wd / "config" / "theory").mkdir()
    for name in ("permute3-relu", "linear-2-2-2"):
        shutil.copy(REPO / "config" / "theory" / f"{name}.yaml", wd / "config" / "theory")
    monkeypatch.chdir(wd)
    assert cli.main(["theory", "--cores", "2"]) == 0
    table = pd.read_csv(wd / "results" / "theory" / "checks.csv")
    assert set(table["config"]) == {"permute3-relu", "linear-2-2-2"}
    assert table["passed"].all() and len(table) == 9
