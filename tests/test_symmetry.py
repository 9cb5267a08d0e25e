import numpy as np
import pytest

from lossatlas.model import MLP, Target, symmetry
from lossatlas.model.layout import ParamLayout

ACTS = ("tanh", "relu", "sigmoid", "linear", "quadratic")
LOSSES = ("cross_entropy", "squared")


def _target(sizes, act, loss, energy="sum"):
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(10, sizes[0]))
    y = rng.integers(0, sizes[-1], size=10)
    return Target(MLP(sizes, act, loss), X, y, box=10.0, energy=energy)


def _close(a, b, rtol=1e-12):
    # relative to the largest entry: rescaling and deep products change magnitudes
    return np.abs(a - b).max() <= rtol * max(1.0, np.abs(a).max())


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTS)
def test_symmetric_copies_share_canonical_point(act, loss):
    sizes = (2, 3, 2, 2)
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(40, symmetry.n_params(sizes)))
    moved = symmetry.random_transform(theta, sizes, act, loss, rng)
    assert np.abs(moved - theta).max() > 1  # the copies really are different points
    c1 = symmetry.canonicalize(theta, sizes, act, loss)
    c2 = symmetry.canonicalize(moved, sizes, act, loss)
    assert _close(c1, c2)
    # idempotent
    assert _close(symmetry.canonicalize(c1, sizes, act, loss), c1)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTS)
def test_energy_unchanged(act, loss):
    sizes = (2, 3, 2, 2)
    target = _target(sizes, act, loss)
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(40, target.p))
    u = target.U(theta)
    for other in (
        symmetry.canonicalize(theta, sizes, act, loss),
        symmetry.random_transform(theta, sizes, act, loss, rng),
    ):
        np.testing.assert_allclose(target.U(other), u, rtol=1e-12, atol=1e-12)


def test_permuted_and_flipped_copy_by_hand():
    # 2 -> [2] -> 2, tanh: swap the hidden units and flip unit 0
    sizes = (2, 2, 2)
    rng = np.random.default_rng(3)
    theta = rng.normal(size=(1, symmetry.n_params(sizes)))
    [(W1, b1), (W2, b2)] = symmetry.unpack(theta, sizes)
    s = np.array([-1.0, 1.0])
    W1c, b1c, W2c = (W1[0] * s[:, None])[::-1], (b1[0] * s)[::-1], (W2[0] * s)[:, ::-1]
    copy = ParamLayout(sizes).pack([(W1c[None], b1c[None]), (W2c[None], b2)])
    a = symmetry.canonicalize(theta, sizes, "tanh", "squared")
    b = symmetry.canonicalize(copy, sizes, "tanh", "squared")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # relu: the same swap is a symmetry, the sign flip is not
    a = symmetry.canonicalize(theta, sizes, "relu", "squared")
    b = symmetry.canonicalize(copy, sizes, "relu", "squared")
    assert np.abs(a - b).max() > 1e-3


def test_canonical_form_is_fixed():
    sizes = (2, 3, 2)
    rng = np.random.default_rng(4)
    c = symmetry.canonicalize(rng.normal(size=(20, 17)), sizes, "relu", "cross_entropy")
    [(W1, b1), (W2, b2)] = symmetry.unpack(c, sizes)
    np.testing.assert_allclose((W1**2).sum(-1) + b1**2, 1.0, atol=1e-12)
    assert np.all(np.diff(W1[:, :, 0], axis=1) >= 0)
    np.testing.assert_allclose(W2.sum(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(b2.sum(axis=1), 0, atol=1e-12)


def test_flat_directions_default_architecture():
    sizes = (2, 2, 2, 2)
    basis = symmetry.flat_directions(sizes)
    assert basis.shape == (3, 18)
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-15)
    assert symmetry.flat_directions(sizes, loss="squared").shape == (0, 18)
    target = _target(sizes, "tanh", "cross_entropy")
    rng = np.random.default_rng(5)
    theta = rng.normal(size=(16, 18))
    u = target.U(theta)
    for step in (1e-3, 1.0, 7.0):
        for v in basis:
            np.testing.assert_allclose(target.U(theta + step * v), u, rtol=1e-13, atol=1e-13)
    # directions off the flat space do change U
    assert np.abs(target.U(theta + rng.normal(size=18)) - u).max() > 1e-3
    # the flat directions are the null space of the centring done by canonicalize
    c = symmetry.canonicalize(theta, sizes, "tanh", "cross_entropy")
    np.testing.assert_allclose(c @ basis.T, 0, atol=1e-12)


def test_orbit_size():
    assert symmetry.orbit_size((2, 2, 2, 2), "tanh") == (2 * 4) ** 2
    assert symmetry.orbit_size((2, 2, 2, 2), "relu") == 4
    assert symmetry.orbit_size((2, 3, 2), "sigmoid") == 6 * 8
    # a generic draw has that many distinct images: enumerate all for 2 -> [2] -> 1
    sizes = (2, 2, 1)
    rng = np.random.default_rng(6)
    theta = rng.normal(size=(1, symmetry.n_params(sizes)))
    images = symmetry.random_transform(np.repeat(theta, 400, 0), sizes, "tanh", "squared", rng)
    assert len(np.unique(images.round(12), axis=0)) == symmetry.orbit_size(sizes, "tanh")


def test_bad_shape():
    with pytest.raises(ValueError, match="theta must be"):
        symmetry.canonicalize(np.zeros((3, 17)), (2, 2, 2, 2))


@pytest.mark.parametrize("bias", ["hidden", "none"])
@pytest.mark.parametrize("act", ("tanh", "relu", "linear", "quadratic"))
def test_networks_without_biases_keep_their_symmetries(act, bias):
    # the layout drops the missing biases; the symmetry maps must neither need nor invent them
    sizes = (2, 3, 2, 2)
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, (9, 2))
    for loss, y in (("cross_entropy", rng.integers(0, 2, 9)), ("mse", rng.normal(size=(9, 2)))):
        target = Target(MLP(sizes, act, loss, bias), X, y, box=10.0)
        theta = rng.normal(size=(20, target.p))
        moved = symmetry.random_transform(theta, sizes, act, loss, rng, bias=bias)
        assert moved.shape == theta.shape and np.abs(moved - theta).max() > 0.5
        np.testing.assert_allclose(target.U(moved), target.U(theta), rtol=1e-11)
        c1 = symmetry.canonicalize(theta, sizes, act, loss, bias)
        assert _close(c1, symmetry.canonicalize(moved, sizes, act, loss, bias), rtol=1e-10)
        np.testing.assert_allclose(target.U(c1), target.U(theta), rtol=1e-11)


@pytest.mark.parametrize("max_enumerate", [4096, 0])
@pytest.mark.parametrize("act", ("tanh", "relu", "quadratic"))
def test_nearest_copy_undoes_a_symmetry(act, max_enumerate):
    # b is a permuted, sign-flipped (and for softmax shifted) copy of a: the nearest copy of b
    # is a itself, found by enumerating the group (64 elements) or by assignment per layer
    sizes = (2, 2, 2, 2)
    rng = np.random.default_rng(7)
    a = rng.normal(size=(5, symmetry.n_params(sizes)))
    b = symmetry.random_transform(a, sizes, act, "cross_entropy", rng, scale_range=(1.0, 1.0))
    target = _target(sizes, act, "cross_entropy")
    for ai, bi in zip(a, b, strict=True):
        near, method = symmetry.nearest_copy(
            ai, bi, sizes, act, "cross_entropy", max_enumerate=max_enumerate
        )
        assert method == ("whole group" if max_enumerate else "assignment per layer")
        np.testing.assert_allclose(near, ai, atol=1e-10)
        np.testing.assert_allclose(target.U(near[None]), target.U(bi[None]), rtol=1e-10)
