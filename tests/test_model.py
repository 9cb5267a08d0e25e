"""Energy and gradient of the MLP target against independent references."""

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp

from lossatlas.model import ACTIVATIONS, LOSSES, MLP, Target
from lossatlas.model import network as model

ARCHS = [(2, 1, 2), (3, 5, 4), (2, 2, 2, 2), (2, 3, 1, 4, 3)]  # depth 1-3, widths 1-5, 2-4 classes


def _problem(sizes, activation, loss, energy, seed=0, n=7, bias="all"):
    rng = np.random.default_rng(seed)
    mlp = MLP(sizes, activation, loss, bias)
    X = rng.uniform(-1, 1, (n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    y[: sizes[-1]] = np.arange(sizes[-1])  # every class present
    if loss == "mse":
        y = rng.normal(size=(n, sizes[-1]))
    target = Target(mlp, X, y, box=10.0, beta=1.0, energy=energy)
    theta = rng.normal(0, 1.0, (3, mlp.p))
    return target, theta


def _reference_U(target, theta_row):
    """Per-point loop, independent of the batched code."""
    mlp, total = target.mlp, 0.0
    for x, label in zip(target.X, target.y, strict=True):
        h, off = x, 0
        for layer, (n_in, n_out) in enumerate(itertools.pairwise(mlp.sizes)):
            W = theta_row[off : off + n_out * n_in].reshape(n_out, n_in)
            off += n_out * n_in
            last = layer == mlp.n_layers - 1
            if mlp.bias == "all" or (mlp.bias == "hidden" and not last):
                b = theta_row[off : off + n_out]
                off += n_out
            else:
                b = 0.0
            z = W @ h + b
            if layer < mlp.n_layers - 1:
                z = {
                    "tanh": np.tanh,
                    "relu": lambda v: np.maximum(v, 0),
                    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
                    "linear": lambda v: v,
                    "quadratic": lambda v: v**2,
                }[mlp.activation](z)
            h = z
        if mlp.loss == "cross_entropy":
            total += logsumexp(h) - h[label]
        elif mlp.loss == "mse":
            total += np.sum((h - label) ** 2)
        else:
            total += np.sum((h - np.eye(len(h))[label]) ** 2)
    return total / len(target.y) if target.energy == "mean" else total


def _use_path(monkeypatch, path):
    """Force the batched or the chainwise computation whatever the network's size."""
    limit = 0 if path == "chainwise" else 1 << 62
    monkeypatch.setattr(model, "CHAINWISE_MIN_GRAD", limit)
    monkeypatch.setattr(model, "CHAINWISE_MIN_ENERGY", limit)


@pytest.mark.parametrize("sizes", ARCHS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    "loss, bias",
    [("cross_entropy", "all"), ("squared", "all"), ("mse", "all"), ("mse", "none")]
    + [("cross_entropy", "hidden")],
)
@pytest.mark.parametrize("energy", ["sum", "mean"])
@pytest.mark.parametrize("path", ["batched", "chainwise"])
def test_energy_and_gradient(sizes, activation, loss, bias, energy, path, monkeypatch):
    _use_path(monkeypatch, path)
    target, theta = _problem(sizes, activation, loss, energy, bias=bias)
    u = target.U(theta)
    ref = [_reference_U(target, row) for row in theta]
    np.testing.assert_allclose(u, ref, rtol=1e-12, atol=1e-12)
    u2, g = target.U_and_grad(theta)
    np.testing.assert_array_equal(u2, u)
    # central differences: truncation O(h^2) ~ 1e-10 relative, rounding ~ 1e-16 |U| / h
    h = 1e-5
    eye = np.eye(target.p)
    fd = np.stack(
        [
            (target.U(theta + h * eye[i]) - target.U(theta - h * eye[i])) / (2 * h)
            for i in range(target.p)
        ],
        axis=1,
    )
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7 + 1e-9 * np.abs(u).max())


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_float32_agrees_with_float64(activation, loss):
    # float32 has ~6e-8 relative precision; a few layers and a 7-term sum stay within 1e-5
    target, theta = _problem((2, 3, 4, 3), activation, loss, "sum", seed=3)
    u64, g64 = target.U_and_grad(theta)
    u32, g32 = target.U_and_grad(theta.astype(np.float32))
    assert u32.dtype == np.float32 and g32.dtype == np.float32
    np.testing.assert_allclose(u32, u64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4 * np.abs(g64).max())


def test_report_architecture_and_names():
    mlp = MLP((2, 2, 2, 2))
    assert mlp.p == 18
    names = mlp.param_names()
    assert len(names) == 18 and len(set(names)) == 18
    assert names[:7] == ["W1[0,0]", "W1[0,1]", "W1[1,0]", "W1[1,1]", "b1[0]", "b1[1]", "W2[0,0]"]
    assert names[-1] == "b3[1]"
    # W1[0,1] multiplies input 1 into hidden unit 0
    theta = np.zeros((1, 18))
    theta[0, names.index("W1[0,1]")] = 1.0
    W1, _ = mlp.unflatten(theta)[0]
    assert W1[0, 0, 1] == 1.0


def test_cross_entropy_is_stable_for_huge_logits():
    mlp = MLP((1, 2), "linear")
    target = Target(mlp, np.array([[1.0], [1.0]]), np.array([0, 1]), box=1e4)
    theta = np.array([[1000.0, -1000.0, 0.0, 0.0]])  # logits (1000, -1000)
    u, g = target.U_and_grad(theta)
    assert np.isfinite(u).all() and np.isfinite(g).all()
    np.testing.assert_allclose(u, [2000.0])  # point 0 loses ~0, point 1 loses 2000


def test_mean_loss_and_log_density():
    t_sum, theta = _problem((2, 2, 2), "tanh", "cross_entropy", "sum", n=5)
    t_mean, _ = _problem((2, 2, 2), "tanh", "cross_entropy", "mean", n=5)
    np.testing.assert_allclose(t_sum.mean_loss(t_sum.U(theta)), t_mean.mean_loss(t_mean.U(theta)))
    np.testing.assert_allclose(t_sum.U(theta) / 5, t_mean.U(theta))
    outside = theta.copy()
    outside[0, 0] = 11.0
    ld = t_sum.log_density(outside)
    assert ld[0] == -np.inf and np.all(np.isfinite(ld[1:]))


def test_uniform_prediction_energy():
    # all-zero parameters give uniform softmax: U = n log k exactly
    target, _ = _problem((2, 3, 4), "tanh", "cross_entropy", "sum", n=9)
    np.testing.assert_allclose(target.U(np.zeros((2, target.p))), 9 * np.log(4))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", ["all", "none"])
def test_chainwise_is_bitwise_the_batched_path(activation, loss, dtype, bias, monkeypatch):
    rng = np.random.default_rng(5)
    mlp = MLP((6, 9, 5, 4), activation, loss, bias)
    X = rng.uniform(-2, 2, (23, 6)).astype(dtype)
    y = rng.normal(size=(23, 4)) if loss == "mse" else rng.integers(0, 4, 23)
    weights = rng.uniform(0, 2, 23)
    theta = rng.normal(0, 1.0, (4, mlp.p)).astype(dtype)
    results = {}
    for path in ("batched", "chainwise"):
        _use_path(monkeypatch, path)
        # a column-major theta: its rows are strided, the gradient still comes back row-major
        results[path] = [
            mlp.forward(theta, X),
            *mlp.loss_and_grad(theta, X, y),
            *mlp.loss_and_grad(np.asfortranarray(theta), X, y, weights),
        ]
    for batched, chainwise in zip(results["batched"], results["chainwise"], strict=True):
        assert chainwise.dtype == dtype and chainwise.shape == batched.shape
        np.testing.assert_array_equal(chainwise, batched)


def test_wide_network_goes_chainwise_with_the_same_numbers(monkeypatch):
    # over both thresholds, so the default settings go chainwise for energies and gradients;
    # forcing the batched path must not change a bit
    rng = np.random.default_rng(2)
    mlp = MLP((64, 128, 64, 10))
    X = rng.standard_normal((300, 64))
    assert mlp._chainwise(X, model.CHAINWISE_MIN_GRAD)
    assert mlp._chainwise(X, model.CHAINWISE_MIN_ENERGY)
    target = Target(mlp, X, rng.integers(0, 10, 300), box=1.0)
    theta = rng.uniform(-1, 1, (3, mlp.p)).astype(np.float32)
    u, g = target.U_and_grad(theta)
    np.testing.assert_array_equal(target.U(theta), u)
    _use_path(monkeypatch, "batched")
    u_ref, g_ref = target.U_and_grad(theta)
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(g, g_ref)
