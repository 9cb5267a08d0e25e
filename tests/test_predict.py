"""The posterior-predictive analysis against answers known without it: an exact teacher
classifies its own test points without error and another teacher does not; the streamed tallies
equal the sums over every draw at once, whatever the block."""

from __future__ import annotations

import numpy as np
import pytest
from pandas.testing import assert_frame_equal

from lossatlas import data
from lossatlas.analysis import predict as pp
from lossatlas.model.network import MLP
from lossatlas.schema import section


def _settings(generator: str, seed: int = 0, **extra) -> dict:
    return section("dataset", {"generator": generator, "n_points": 300, "seed": seed, **extra})


def _linear_teacher(d: int = 5, k: int = 3):
    """The teacher generator's weights, as the weights of a linear network (no hidden layer,
    zero biases): it computes the teacher's logits up to the positive factor 1/sqrt(d)."""
    rng = np.random.default_rng(0)
    rng.standard_normal((300, d))
    T = rng.standard_normal((d, k))
    net = MLP((d, k), "tanh", "cross_entropy")
    theta = np.concatenate([T.T.ravel(), np.zeros(k)])
    return net, theta


def test_an_exact_teacher_classifies_its_test_points_without_error():
    """Noise-free teacher labels are the argmax of the teacher's logits: draws at the
    teacher's weights score 100 %, on test points they never saw; draws of another teacher do
    not."""
    net, theta = _linear_teacher()
    test = data.heldout(_settings("teacher", n_features=5, n_classes=3, noise=0.0), 500)
    draws = np.broadcast_to(theta, (2, 6, theta.size))
    r = pp.posterior_predictive(
        draws, np.zeros((2, 6)), net, test.X, test.y, good_threshold=1.0, max_draws=10
    )
    pooled = r.table[r.table["chain"] == -1].set_index("draws")
    assert pooled.loc["good", "ensemble_accuracy"] == 1.0
    assert pooled.loc["good", "mean_accuracy"] == 1.0 and pooled.loc["good", "n_draws"] == 12
    other = np.random.default_rng(7).standard_normal(theta.size)
    r = pp.posterior_predictive(
        np.broadcast_to(other, (1, 3, theta.size)), np.zeros((1, 3)), net, test.X, test.y,
        good_threshold=1.0, max_draws=10,
    )  # fmt: skip
    assert r.summary["good"]["ensemble_accuracy"] < 0.9


def _reference(theta, train_loss, net, X, y, good_threshold):
    """Every tally of the analysis, computed from all draws at once."""
    C, D, p = theta.shape
    out = net.forward(theta.reshape(-1, p), X).reshape(C, D, len(X), -1)
    prob = np.exp(out - out.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    good = train_loss < good_threshold
    mean_good = prob[good].mean(axis=0)
    per_draw = (prob.argmax(-1) == y).mean(-1)
    return {
        "ensemble_accuracy": (mean_good.argmax(-1) == y).mean(),
        "ensemble_loss": -np.log(mean_good[np.arange(len(y)), y]).mean(),
        "mean_accuracy": per_draw[good].mean(),
        "chain_1_accuracy": (prob[1][good[1]].mean(0).argmax(-1) == y).mean(),
    }


@pytest.mark.parametrize("draw_block", [1, 7, 4096])
def test_streamed_tallies_equal_the_sums_over_every_draw(draw_block):
    """The posterior predictive, each draw's accuracy and a chain's own ensemble do not depend
    on how the draws are read; the ensemble's loss is below the draws' mean loss (Jensen)."""
    rng = np.random.default_rng(3)
    net = MLP((4, 5, 3), "tanh", "cross_entropy")
    theta = rng.normal(size=(3, 20, net.layout.p))
    train_loss = rng.uniform(0, 2, size=(3, 20))
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    r = pp.posterior_predictive(
        theta, train_loss, net, X, y, good_threshold=1.0, max_draws=20, draw_block=draw_block
    )
    want = _reference(theta, train_loss, net, X, y, 1.0)
    got = r.table[r.table["draws"] == "good"].set_index("chain")
    for key in ("ensemble_accuracy", "ensemble_loss", "mean_accuracy"):
        assert got.loc[-1, key] == pytest.approx(want[key], abs=1e-12), key
    assert got.loc[1, "ensemble_accuracy"] == pytest.approx(want["chain_1_accuracy"], abs=1e-12)
    assert got.loc[-1, "ensemble_loss"] < got.loc[-1, "mean_test_loss"]


def test_at_most_max_draws_evenly_spaced_and_a_regression_scores_its_loss():
    rng = np.random.default_rng(4)
    net = MLP((2, 3, 2), "tanh", "mse")
    theta = rng.normal(size=(2, 50, net.layout.p))
    X, Y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    r = pp.posterior_predictive(theta, np.zeros((2, 50)), net, X, Y, good_threshold=1.0,
                                max_draws=6)  # fmt: skip
    assert r.test_loss.shape == (2, 6) and r.summary["draws_per_chain"] == 6
    used = theta[:, [0, 10, 20, 29, 39, 49]]
    mean_out = net.forward(used.reshape(-1, net.layout.p), X).mean(axis=0)
    assert r.summary["good"]["ensemble_loss"] == pytest.approx(((mean_out - Y) ** 2).sum(1).mean())
    assert np.isnan(r.accuracy).all() and "test loss" in r.summary["finding"]


def test_a_test_split_the_data_lacks_is_refused_before_any_job(tmp_path):
    """A file without X_test, or more test points than it holds, names predict.n_test and
    says what to do."""
    from lossatlas import config

    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, X=rng.normal(size=(20, 2)), y=np.arange(20) % 2,
             X_test=rng.normal(size=(7, 2)), y_test=np.arange(7) % 2)  # fmt: skip
    cfg = {"dataset": {"generator": "file", "path": str(path)}, "predict": {"n_test": 7}}
    assert config.validate(cfg)["predict"]["n_test"] == 7
    with pytest.raises(config.ConfigError, match=r"^invalid config: predict.n_test: 8, .* 7"):
        config.validate({**cfg, "predict": {"n_test": 8}})
    np.savez(path, X=rng.normal(size=(20, 2)), y=np.arange(20) % 2)
    with pytest.raises(config.ConfigError, match="X_test"):
        config.validate(cfg)


@pytest.mark.parametrize("max_draws", [7, 20])
def test_a_store_on_disk_gives_what_the_array_gives(tmp_path, max_draws):
    """Read from a real HDF5 dataset, as a slice (every draw) or a list of draws (evenly
    spaced), the tallies are those of the same draws in memory."""
    import h5py

    rng = np.random.default_rng(5)
    net = MLP((3, 4, 2), "tanh", "cross_entropy")
    theta = rng.normal(size=(2, 20, net.layout.p))
    train_loss = rng.uniform(0, 2, size=(2, 20))
    X, y = rng.normal(size=(25, 3)), rng.integers(0, 2, size=25)
    with h5py.File(tmp_path / "theta.h5", "w") as f:
        f["theta"] = theta
    args = {"good_threshold": 1.0, "max_draws": max_draws, "draw_block": 6}
    want = pp.posterior_predictive(theta, train_loss, net, X, y, **args)
    with h5py.File(tmp_path / "theta.h5", "r") as f:
        got = pp.posterior_predictive(f["theta"], train_loss, net, X, y, **args)
    assert_frame_equal(got.table, want.table)
    assert got.summary["draws_per_chain"] == min(max_draws, 20)


def test_calibration_error_reads_zero_when_calibrated_and_the_gap_when_not():
    """Known answers: labels right with exactly the stated probability give an expected
    calibration error near 0 (binomial noise over 15 bins: below 0.02 at 20,000 points, at
    every seed); stated certainty that is right 70 % of the time gives 0.3 (within 3 binomial
    standard errors)."""
    n = 20_000
    for seed in range(4):
        rng = np.random.default_rng(seed)
        conf = rng.uniform(0.5, 1.0, size=n)
        y = np.where(rng.uniform(size=n) < conf, 0, 1)  # class 0 is right with prob conf
        prob = np.column_stack([conf, 1 - conf])
        assert pp.calibration_error(prob, y) < 0.02, seed
        right = rng.uniform(size=n) < 0.7
        sure = np.column_stack([np.ones(n), np.zeros(n)])
        gap = pp.calibration_error(sure, np.where(right, 0, 1))
        assert abs(gap - 0.3) < 3 * np.sqrt(0.21 / n), (seed, gap)
