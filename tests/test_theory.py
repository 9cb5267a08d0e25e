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


@pytest.mark.parametrize("d, h, r", [(3, 2, 2), (2, 2, 3), (3, 1, 1)])
def test_linear_barrier_for_any_inputs_and_outputs(d, h, r):
    """d-[h]-r with h = min(d, r): the barrier is the smallest singular value of the fit,
    squared (Eckart-Young), for data of any shape."""
    rng = np.random.default_rng(d * 10 + r)
    X = rng.normal(size=(8, d))
    Y = X @ rng.normal(size=(d, r)) + 0.05 * rng.normal(size=(8, r))
    target = Target(MLP((d, h, r), "linear", "mse"), X, Y, box=10.0)
    rows = theory.linear_sign_flip(target, CONNECT)
    assert all(r_["passed"] for r_ in rows), rows
    k = min(d, r)
    sk = theory.linear_fit(X, Y)["sigma"][k - 1] ** 2
    barrier = next(r_ for r_ in rows if r_["quantity"].startswith("barrier"))
    assert barrier["quantity"].startswith(f"barrier (string method) / sigma_{k}^2")
    assert sk * (1 - 1e-9) <= barrier["measured"] <= 1.05 * sk


def test_linear_check_reads_a_files_real_shape(tmp_path):
    """A 3-input, 2-output file with a 3-[2]-2 linear network is accepted as it is (no
    n_features or n_targets claimed in the config); a width below min(d, r) is refused with
    the data's real sizes."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 3))
    np.savez(tmp_path / "lin.npz", X=X, Y=X @ rng.normal(size=(3, 2)))
    cfg = {
        "dataset": {"generator": "file", "path": str(tmp_path / "lin.npz")},
        "model": {"hidden": [2], "activation": "linear", "loss": "mse"},
        "experiments": {"sweep": {"scale": [1]}},
        "expected": ["linear_sign_flip"],
    }
    assert config.validate(cfg)["expected"] == ["linear_sign_flip"]
    narrow = {**cfg, "model": {**cfg["model"], "hidden": [1]}}
    with pytest.raises(config.ConfigError, match=r"min\(d, r\) = 2 \(the data have d = 3"):
        config.validate(narrow)


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
    """Like against like: a point pinned at the box wall has its zeros counted on fewer free
    coordinates; a point that disagrees is counted and named."""
    ds = data.regression(5, 2, 2, seed=3, noise=0.1, teacher_hidden=[3])
    target = Target(MLP((2, 4, 2), "tanh", "mse"), ds.X, ds.Y)
    assert target.p - 2 * 5 == 12
    good = pd.DataFrame(
        {"id": [0, 1, 2, 3], "mean_loss": [0.0, 1e-12, 1e-10, 0.3], "index": [0, 0, 0, 0]}
        | {"n_zero": [12, 12, 11, 3], "n_pinned": [0, 0, 1, 0], "cooper_dim": [12, 12, 12, 5]}
    )
    rows = theory.cooper(target, good)
    assert all(r["passed"] for r in rows), rows
    assert [r["measured"] for r in rows] == [0, 0]
    assert "1 on the box wall" in rows[0]["note"]
    off = good.assign(n_zero=[12, 13, 11, 3])
    bad = theory.cooper(target, off)[0]
    assert not bad["passed"] and bad["measured"] == 1
    assert "disagree: id 1 (13, expected 12)" in bad["note"]
    none = good.assign(mean_loss=[0.1, 0.2, 0.3, 0.4])
    assert not any(r["passed"] for r in theory.cooper(target, none))


def test_expected_checks_refuse_configs_they_do_not_fit():
    base = config.load(REPO / "config" / "theory" / "permute3-relu.yaml")
    with pytest.raises(config.ConfigError, match="expected: relu_permutation needs .*bias: none"):
        config.validate({**base, "model": {**base["model"], "bias": "all"}})
    with pytest.raises(config.ConfigError, match="expected: quadratic needs model.activation"):
        config.validate({**base, "expected": ["quadratic"]})
    with pytest.raises(config.ConfigError, match="expected: cooper needs model.loss: mse"):
        config.validate({"expected": ["cooper"]})


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
