"""The flat parameter layout shared by the model, symmetry, dataset maps and kernels."""

from __future__ import annotations

import numpy as np
import pytest

from lossatlas import data, model
from lossatlas.model import symmetry
from lossatlas.model.layout import ParamLayout


def test_layout_of_the_reports_network():
    lay = ParamLayout((2, 2, 2, 2))
    assert lay.p == 18 and symmetry.n_params((2, 2, 2, 2)) == 18
    assert lay.names()[:7] == [
        "W1[0,0]",
        "W1[0,1]",
        "W1[1,0]",
        "W1[1,1]",
        "b1[0]",
        "b1[1]",
        "W2[0,0]",
    ]
    assert lay.table().tolist() == [[0, 4, 2, 2], [6, 10, 2, 2], [12, 16, 2, 2]]
    assert lay.flops_per_point() == 12
    assert model.MLP((2, 2, 2, 2)).param_names() == lay.names()
    with pytest.raises(ValueError, match="positive widths"):
        ParamLayout((2, 0, 2))


def test_unpack_pack_and_views():
    lay = ParamLayout((3, 4, 2))
    theta = np.arange(2 * lay.p, dtype=float).reshape(2, lay.p)
    params = lay.unpack(theta)
    assert [W.shape for W, _ in params] == [(2, 4, 3), (2, 2, 4)]
    np.testing.assert_array_equal(lay.pack(params), theta)
    params[0][0][:] = 0  # copies
    assert theta[0, 0] == 0 and theta[1, 0] == lay.p
    lay.views(theta)[0][1][:] = -1  # views write through
    assert (theta[:, 12:16] == -1).all()  # b1 after W1 (4 x 3)
    with pytest.raises(ValueError, match=r"theta must be \(n, 26\)"):
        lay.unpack(theta[:, :5])


def test_first_layer_maps_compute_the_same_function():
    """W1 -> W1 A^-1, b1 -> b1 - W1 A^-1 t on data x' = A x + t is the same network."""
    rng = np.random.default_rng(0)
    sizes = (2, 3, 2)
    lay, mlp = ParamLayout(sizes), model.MLP(sizes)
    theta = rng.normal(size=(4, lay.p))
    X = rng.normal(size=(6, 2))
    A, t = data.rotation_matrix(70.0) * 1.3, np.array([0.2, -0.5])
    moved = lay.map_first_layer(theta, A, t)
    np.testing.assert_allclose(mlp.forward(moved, X @ A.T + t), mlp.forward(theta, X), atol=1e-12)
    np.testing.assert_allclose(lay.unmap_first_layer(moved, A, t), theta, atol=1e-12)
    np.testing.assert_allclose(data.to_reference(moved, sizes, A, t), theta, atol=1e-12)
