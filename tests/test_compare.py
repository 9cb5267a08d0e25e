import numpy as np
import pytest

from lossatlas import data
from lossatlas.analysis import compare
from lossatlas.model import symmetry
from lossatlas.model.layout import ParamLayout

SIZES = (2, 2, 2, 2)


@pytest.mark.parametrize("method", ["energy", "mmd"])
def test_same_distribution_is_not_rejected(method):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    r = compare.two_sample_test(X, Y, method, n_perm=500, seed=0)
    assert r["pvalue"] > 0.05
    assert (r["n_x"], r["n_y"]) == (200, 200)


@pytest.mark.parametrize("method", ["energy", "mmd"])
def test_shift_is_detected(method):
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    Y[:, 0] += 0.5
    r = compare.two_sample_test(X, Y, method, n_perm=500, seed=0)
    assert r["pvalue"] < 0.01


def test_energy_statistic_value():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(30, 3)), rng.normal(1, 1, size=(40, 3))

    def mean_dist(A, B):
        return np.linalg.norm(A[:, None] - B[None], axis=-1).mean()

    expected = 2 * mean_dist(X, Y) - mean_dist(X, X) - mean_dist(Y, Y)
    got = compare.two_sample_test(X, Y, "energy", n_perm=9)["statistic"]
    assert got == pytest.approx(expected, rel=1e-12)


def test_pca_angles():
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(500, 2)) * [3, 2]
    plane = np.c_[Z, 0.01 * rng.normal(size=(500, 3))]
    np.testing.assert_allclose(compare.pca_angles(plane, plane, 2), 0, atol=1e-6)
    other = plane[:, [0, 2, 1, 3, 4]]  # the second axis swapped for an orthogonal one
    angles = compare.pca_angles(plane, other, 2)
    assert angles.max() == pytest.approx(90, abs=1) and angles.min() < 1


@pytest.mark.parametrize(
    "transforms",
    [[("rotate", 120)], [("rotate", 240)], [("shear", 2.0), ("translate", 1.0)]],
)
def test_mapping_back_recovers_the_reference_cloud(transforms):
    rng = np.random.default_rng(4)
    ref = rng.normal(0, 2, size=(300, 18))
    ref[:, :6] *= [3, 0.3, 1, 1, 0.5, 2]  # anisotropic first layer: rotation is visible
    A, t, _ = data.experiment_affine(transforms, 2)
    other = ParamLayout(SIZES).map_first_layer(ref, A, t)  # W1 -> W1 A^{-1}, b1 -> b1 - W1 A^{-1} t
    mapped, info = compare.map_back(other, SIZES, transforms, box=10.0)
    np.testing.assert_allclose(mapped, ref, atol=1e-12)
    assert info["exact"]
    r = compare.compare_clouds(ref, other, SIZES, transforms, box=10.0, n_perm=200, seed=0)
    assert r["before"]["pvalue"] < 0.01
    assert r["after"]["pvalue"] == 1.0 and r["after"]["statistic"] == pytest.approx(0, abs=1e-12)
    assert r["after"]["max_angle"] == pytest.approx(0, abs=1e-5)


def test_compare_in_canonical_coordinates():
    # the other experiment's chains landed on symmetric copies: only canonical coordinates agree
    rng = np.random.default_rng(5)
    ref = rng.normal(size=18) + 0.2 * rng.normal(size=(200, 18))  # one mode, no symmetry
    R = data.rotation_matrix(120)
    copies = symmetry.random_transform(ref, SIZES, "tanh", "cross_entropy", rng)
    other = ParamLayout(SIZES).map_first_layer(copies, R)
    transforms = [("rotate", 120)]
    raw = compare.compare_clouds(ref, other, SIZES, transforms, n_perm=200)
    assert raw["after"]["pvalue"] < 0.01

    def key(t):
        return symmetry.canonicalize(t, SIZES, "tanh", "cross_entropy")

    can = compare.compare_clouds(ref, other, SIZES, transforms, key=key, n_perm=200)
    assert can["after"]["pvalue"] == 1.0


def test_label_noise_is_not_exact():
    _, info = compare.map_back(np.zeros((3, 18)), SIZES, [("label_noise", 0.1)], box=10.0)
    assert not info["exact"] and info["frac_outside_box"] == 0
