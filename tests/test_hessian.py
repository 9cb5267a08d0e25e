"""The hessian rule's spectra: known answers on quadratics, and agreement with the census."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lossatlas.analysis import hessian


class Quadratic:
    """U = 1/2 (x - c)' A (x - c) in the box [-box, box]^p, with A's eigenvalues known."""

    def __init__(self, eigenvalues, box=10.0, centre=None, seed=0):
        p = len(eigenvalues)
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((p, p)))
        self.A = (q * np.asarray(eigenvalues, float)) @ q.T
        self.c = np.zeros(p) if centre is None else np.asarray(centre, float)
        self.box = box

    def U_and_grad(self, theta):
        d = np.atleast_2d(theta) - self.c
        g = d @ self.A
        return 0.5 * np.einsum("ij,ij->i", d, g), g


EIG = np.r_[-0.5, np.zeros(3), np.geomspace(1e-3, 50.0, 36)]
# Lanczos from one start vector sees one copy of a repeated eigenvalue, and resolves a cluster
# slowly: the ends eigsh is checked on are distinct and separated
SEPARATED = np.r_[-0.5, -0.1, 0.05, 0.2, np.geomspace(1.0, 50.0, 36)]


def test_dense_spectrum_is_every_eigenvalue():
    q = Quadratic(EIG)
    s = hessian.spectrum_at(q.U_and_grad, q.c, q.box, hessian.Settings())
    assert s["method"] == "dense" and s["n_free"] == len(EIG)
    np.testing.assert_allclose(s["eigenvalues"], np.sort(EIG), atol=1e-6)
    assert s["trace"] == pytest.approx(EIG.sum(), abs=1e-5) and s["trace_se"] == 0


def test_above_dense_max_both_ends_trace_and_density_from_products():
    """eigsh's ends are the true ones; Hutchinson's trace lies within 4 standard errors of the
    truth (seeded); each Lanczos run's weights sum to 1 and the density's mean is trace / n
    to the same error."""
    q = Quadratic(SEPARATED)
    settings = hessian.Settings(dense_max=10, n_eig=4, n_probes=32, lanczos_steps=40)
    s = hessian.spectrum_at(q.U_and_grad, q.c, q.box, settings)
    assert s["method"].startswith("eigsh") and len(s["eigenvalues"]) == 8
    np.testing.assert_allclose(s["eigenvalues"][:4], np.sort(SEPARATED)[:4], atol=1e-5)
    np.testing.assert_allclose(s["eigenvalues"][-4:], np.sort(SEPARATED)[-4:], rtol=1e-6)
    assert abs(s["trace"] - SEPARATED.sum()) < 4 * s["trace_se"]
    assert s["weights"].sum() == pytest.approx(1.0)
    mean = s["nodes"] @ s["weights"]
    assert abs(mean * len(SEPARATED) - SEPARATED.sum()) < 4 * s["trace_se"]


def test_lanczos_to_full_length_is_exact():
    q = Quadratic(EIG[4:])
    op = hessian.minima.hessian_operator(q.U_and_grad, q.c, np.ones(len(EIG) - 4, bool))
    nodes, weights = hessian.lanczos_nodes(op, np.ones(len(EIG) - 4), len(EIG))
    np.testing.assert_allclose(nodes, np.sort(EIG[4:]), rtol=1e-6, atol=1e-9)
    assert weights.sum() == pytest.approx(1.0)


def test_pinned_coordinates_leave_the_spectrum():
    """At a box KKT point the coordinates the gradient pushes through the wall are pinned and
    the spectrum is the free block's."""
    q = Quadratic([1.0, 2.0, 3.0], box=1.0, centre=[3.0, 0.0, 0.0], seed=1)
    x = np.array([1.0, 0.0, 0.0])
    free = hessian.free_coordinates(q.U_and_grad, x, q.box)
    assert free.tolist() == [False, True, True]
    s = hessian.spectrum_at(q.U_and_grad, x, q.box, hessian.Settings())
    np.testing.assert_allclose(s["eigenvalues"], np.linalg.eigvalsh(q.A[1:, 1:]), atol=1e-6)


def test_the_finding_names_the_flattest_and_the_correlation():
    census = pd.DataFrame(
        {"id": range(5), "classification": ["strict minimum"] * 4 + ["saddle"],
         "index": [0, 0, 0, 0, 1], "U": [1.0, 2.0, 3.0, 4.0, 0.5],
         "mean_loss": [0.1, 0.2, 0.3, 0.4, 0.05]}
    )  # fmt: skip
    points = np.zeros((5, 3))
    scales = [1.0, 2.0, 4.0, 8.0, 1.0]  # the lower minimum, the flatter

    rows = []
    for i, k in enumerate(scales[:4]):
        q = Quadratic([k, k / 2, k / 4])
        rows.append(hessian.spectrum_at(q.U_and_grad, points[i], q.box, hessian.Settings()))
    table = pd.DataFrame(
        {"id": range(4), "U": census["U"][:4], "lambda_max": [r["eigenvalues"][-1] for r in rows],
         "trace": [r["trace"] for r in rows]}
    )  # fmt: skip
    meta = hessian.summary(table)
    assert meta["lowest_minimum"]["flatness_rank"] == 1
    assert meta["spearman_U_lambda_max"]["rho"] == pytest.approx(1.0)
    assert "the lowest minimum is the 1st flattest of 4" in meta["finding"]
    assert list(hessian.minima_rows(census, 3)["id"]) == [0, 1, 2]  # the saddle left out
