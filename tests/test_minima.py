import numpy as np
import pytest

from lossatlas.analysis import minima
from lossatlas.model import MLP, Target, symmetry
from lossatlas.model.layout import ParamLayout


def double_well(theta):
    """(x^2 - 1)^2 + y^2: minima (+-1, 0), saddle (0, 0) of index 1."""
    x, y = theta[:, 0], theta[:, 1]
    return (x**2 - 1) ** 2 + y**2, np.stack([4 * x * (x**2 - 1), 2 * y], axis=1)


def flat_valley(theta):
    """(x^2 - 1)^2: y is exactly flat, so the minima are degenerate with one zero eigenvalue."""
    x = theta[:, 0]
    return (x**2 - 1) ** 2, np.stack([4 * x * (x**2 - 1), 0 * x], axis=1)


def index_two(theta):
    """-x^2 - y^2 + z^2: a saddle of index 2 at the origin, otherwise run to the walls."""
    s = np.array([-1.0, -1.0, 1.0])
    return (s * theta**2).sum(1), 2 * s * theta


def test_double_well_census():
    starts = np.array([[0.5, 0.3], [-0.7, -0.2], [0.0, 0.0], [2.0, 1.0], [-1.5, 0.4]])
    c = minima.census(double_well, starts, box=3.0)
    assert [r["classification"] for r in c.table] == ["strict minimum"] * 2 + ["saddle"]
    assert [r["n_starts"] for r in c.table] == [2, 2, 1]
    saddle = c.table[2]
    assert saddle["index"] == 1 and saddle["n_zero"] == 0 and saddle["U"] == 1.0
    np.testing.assert_allclose(sorted(c.points[:2, 0]), [-1, 1], atol=1e-8)
    np.testing.assert_allclose(c.eigenvalues[2], [-4, 2], atol=1e-6)
    # every start is assigned to the point it ended at; the exact start at the saddle stays
    np.testing.assert_allclose(c.points[c.assignment], c.ends, atol=1e-6)
    assert c.assignment[2] == 2 and c.assignment[0] != c.assignment[1]
    assert sum(r["basin_share"] for r in c.table) == pytest.approx(1)


def test_saddle_only_from_exact_start():
    c = minima.census(double_well, np.array([[1e-3, 0.0]]), box=3.0)
    assert c.table[0]["classification"] == "strict minimum"


def test_degenerate_minimum():
    c = minima.census(flat_valley, np.array([[0.5, 0.3], [0.6, -1.0]]), box=3.0)
    # the flat coordinate is where each start left it: two points, both degenerate
    assert len(c.table) == 2
    for r in c.table:
        assert (r["classification"], r["index"], r["n_zero"]) == ("degenerate minimum", 0, 1)


def test_pinned_and_index_two():
    starts = np.array([[0.0, 0.0, 0.5], [0.3, -0.2, 0.1], [0.1, 0.0, 0.3]])
    c = minima.census(index_two, starts, box=1.0)
    by = {(r["classification"], r["index"], r["n_pinned"]) for r in c.table}
    # origin: index-2 saddle; (1, -1, 0): both descent directions pinned at the wall;
    # (1, 0, 0): y has zero gradient but negative curvature, a pinned point of index 1
    assert by == {("saddle", 2, 0), (minima.WALL, 0, 2), (minima.WALL, 1, 1)}
    wall = [r for r in c.table if r["n_pinned"] == 2][0]
    assert wall["U"] == pytest.approx(-2.0)


def test_classify_tolerances_and_not_converged():
    c = minima.classify(double_well, np.array([0.5, 0.0]), box=3.0)
    assert c["classification"] == "not converged"
    c = minima.classify(flat_valley, np.array([1.0, 0.0]), box=3.0, zero_rtol=1e-6)
    assert c["zero_tol"] < 1e-6 and c["n_zero"] == 1 and c["index"] == 0


def test_zeros_are_counted_below_the_widest_spectral_gap():
    """Scales that a fixed relative tolerance misreads: eigenvalues from 1e-3 to 1e3 with three
    at 1e-12 have three zeros (a 9-decade gap), whatever the largest eigenvalue; a spectrum
    spread evenly over 8 decades has none; numerical noise (-1e-13) counts as zero, not as a
    negative direction."""
    spread = np.array([-1e-13, 1e-12, 2e-12, 1e-3, 1e-1, 1e1, 1e3])
    zero, cut = minima.zero_count(spread)
    assert zero.sum() == 3 and 2e-12 < cut < 1e-3
    assert minima.zero_count(spread * 1e6)[0].sum() == 3
    even = 10.0 ** np.arange(-5, 4, 1.0)  # down to 1e-8 of the largest: above the noise
    assert minima.zero_count(even)[0].sum() == 0
    # 1e-4 sits 4 decades below the rest of a spectrum reaching 1e3: zero, though a fixed
    # 1e-8 relative tolerance would call it a direction of curvature
    assert minima.zero_count(np.array([1e-4, 1.0, 1e3]))[0].sum() == 1


def test_a_small_resolved_eigenvalue_under_a_wider_gap_is_not_zero():
    """A near-saturated interpolating minimum: 18 zeros in the finite-difference noise, one
    curvature of 2e-6 (3.3 decades above them, resolved), then the rest from 1e-2 (3.7
    decades higher). The widest gap would count 19 zeros; the Jacobian's rank says 18."""
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1e-9, 1e-9, 18)
    eig = np.concatenate([noise, [2e-6], np.geomspace(1e-2, 10.0, 12)])
    zero, cut = minima.zero_count(eig)
    assert zero.sum() == 18 and 1e-9 < cut < 2e-6


def test_hessian_matches_analytic():
    H = minima.hessian(double_well, np.array([0.3, -0.2]))
    np.testing.assert_allclose(H, [[12 * 0.09 - 4, 0], [0, 2]], atol=1e-8)


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(10, 2)), rng.integers(0, 2, size=10)


def test_linear_net_one_connected_set_of_minima():
    # 2 -> [3] -> 2 linear, squared loss: every local minimum is global and all global
    # minima compute the least-squares affine map (hidden width 3 >= 2 = rank needed).
    # The set is a manifold of dimension p - 6 = 11 (the affine map has 6 numbers).
    X, y = _data()
    sizes = (2, 3, 2)
    target = Target(MLP(sizes, "linear", "squared"), X, y, box=10.0)
    Xa, Y = np.c_[X, np.ones(10)], np.eye(2)[y]
    best = ((Xa @ np.linalg.lstsq(Xa, Y, rcond=None)[0] - Y) ** 2).sum()
    starts = np.random.default_rng(1).normal(size=(8, target.p))
    c = minima.census(
        target.U_and_grad,
        starts,
        10.0,
        key=minima.target_outputs(target),
        merge_tol=1e-6,
        mean_loss=target.mean_loss,
        accuracy=minima.target_accuracy(target),
    )
    assert len(c.table) == 1
    row = c.table[0]
    assert row["U"] == pytest.approx(best, rel=1e-10)
    assert (row["classification"], row["index"], row["n_zero"]) == ("degenerate minimum", 0, 11)
    assert row["n_starts"] == 8 and row["basin_share"] == 1
    assert row["mean_loss"] == pytest.approx(best / 10)
    # merged in function space, the ends are far apart in parameter space
    assert np.abs(c.ends - c.ends[0]).max() > 0.1


def test_symmetric_copies_merge_to_one_point():
    X, y = _data()
    sizes = (2, 2, 2, 2)
    target = Target(MLP(sizes, "tanh", "squared"), X, y, box=10.0)
    rng = np.random.default_rng(2)
    # a loose gtol keeps this fast: the copies of any end point must merge, converged or not
    end, _, _ = minima.local_minimize(target.U_and_grad, rng.normal(size=(1, 18)), 10.0, gtol=1e-6)
    copies = symmetry.random_transform(np.repeat(end, 6, 0), sizes, "tanh", "squared", rng)
    starts = np.vstack([end, copies])
    assert np.abs(starts - end).max() > 1
    raw = minima.census(target.U_and_grad, starts, 10.0, gtol=1e-6)
    assert len(raw.table) > 1  # raw coordinates see several points
    key = lambda t: symmetry.canonicalize(t, sizes, "tanh", "squared")  # noqa: E731
    c = minima.census(target.U_and_grad, starts, 10.0, key=key, gtol=1e-6)
    assert len(c.table) == 1 and c.table[0]["n_starts"] == 7
    np.testing.assert_allclose(c.end_U, c.end_U[0], rtol=1e-10)


def test_select_starts():
    rng = np.random.default_rng(3)
    theta = np.vstack([rng.normal(m, 0.1, size=(100, 4)) for m in (-5, 0, 5)])
    idx, source = minima.select_starts(theta, n_clusters=3, n_random=4, seed=0)
    assert len(idx) == 7 and (source == "cluster").sum() == 3
    centres = sorted(theta[idx[source == "cluster"], 0].round())
    assert centres == [-5, 0, 5]


def _linear_target():
    """3 -> [8] -> 3 linear, squared loss, on 20 seeded points: p = 59. Its minima are
    degenerate (p - 12 flat directions) and W = 0 with b2 = mean target is an exact saddle whose
    most negative eigenvalue has multiplicity 16."""
    rng = np.random.default_rng(0)
    X, y = rng.uniform(-1, 1, size=(20, 3)), rng.integers(0, 3, size=20)
    target = Target(MLP((3, 8, 3), "linear", "squared"), X, y, box=10.0)
    saddle = np.zeros(target.p)
    saddle[-3:] = np.eye(3)[y].mean(0)
    return target, saddle


def test_eigsh_spectrum_agrees_with_the_dense_hessian():
    """eigsh (forced by dense_max=0) on Hessian-vector products against the dense Hessian at a
    minimum, a saddle and a random point: the same 4 smallest and 4 largest eigenvalues to 1e-6
    of the largest |lambda| (eigsh tolerance 1e-10; both sides use central differences), the
    same classification, and counts that are lower bounds exactly when the computed ends cannot
    see them all."""
    target, saddle = _linear_target()
    assert target.p == 59
    rng = np.random.default_rng(7)
    end, _, _ = minima.local_minimize(target.U_and_grad, rng.normal(size=(1, 59)), 10.0)
    kinds = []
    for x in (end[0], saddle, rng.normal(size=59)):
        dense = minima.classify(target.U_and_grad, x, 10.0)
        sparse = minima.classify(target.U_and_grad, x, 10.0, dense_max=0, n_eig=4, eig_tol=1e-10)
        ev = dense["eigenvalues"]
        assert dense["method"] == "dense" and dense["n_eig"] == 59 and dense["index_exact"]
        assert sparse["method"] == "eigsh" and sparse["n_eig"] == 8 and sparse["eig_converged"]
        tol = 1e-6 * np.abs(ev).max()
        np.testing.assert_allclose(sparse["eigenvalues"][:4], ev[:4], atol=tol)
        np.testing.assert_allclose(sparse["eigenvalues"][4:], ev[-4:], atol=tol)
        assert sparse["classification"] == dense["classification"]
        assert sparse["index_exact"] == (dense["index"] < 4)
        assert sparse["index"] == min(dense["index"], 4)
        assert not sparse["n_zero_exact"] and sparse["n_zero"] <= dense["n_zero"]
        kinds.append((dense["classification"], dense["index"]))
    assert kinds[:2] == [("degenerate minimum", 0), ("saddle", 16)]


def test_eigsh_census_table_says_what_was_computed():
    target, _ = _linear_target()
    starts = np.random.default_rng(8).normal(size=(2, 59))
    kw = {"key": minima.target_outputs(target), "merge_tol": 1e-6}
    c = minima.census(target.U_and_grad, starts, 10.0, dense_max=10, n_eig=3, eig_tol=1e-10, **kw)
    assert len(c.table) == 1  # one function: every minimum of a linear net is global
    r = c.table[0]
    assert (r["n_free"], r["n_eig"], r["spectrum"], r["classification"]) == (
        59,
        6,
        "eigsh",
        "degenerate minimum",
    )
    assert (r["index"], r["index_exact"], r["n_zero"], r["n_zero_exact"]) == (0, True, 3, False)
    assert len(c.eigenvalues[0]) == 6 and r["min_eig"] == c.eigenvalues[0][0]


def test_eigsh_stopped_early_keeps_what_converged(monkeypatch):
    """When eigsh hits eig_maxiter, only its converged eigenvalues count: a negative one still
    proves a saddle, without one a converged end is unclassified; counts are never exact."""
    from scipy.sparse.linalg import ArpackNoConvergence

    target, _ = _linear_target()
    end, _, _ = minima.local_minimize(
        target.U_and_grad, np.random.default_rng(7).normal(size=(1, 59)), 10.0
    )
    # a zero Hessian operator: no spectral shift, so eigsh's (mocked) values are H's
    zero = minima.LinearOperator((59, 59), matvec=np.zeros_like, dtype=np.float64)
    monkeypatch.setattr(minima, "hessian_operator", lambda *a, **k: zero)
    for found, kind in (([-3.0, 5.0], "saddle"), ([5.0], "unclassified")):

        def stopped(*args, found=found, **kw):
            raise ArpackNoConvergence("no convergence", np.array(found), None)

        monkeypatch.setattr(minima, "eigsh", stopped)
        c = minima.classify(target.U_and_grad, end[0], 10.0, dense_max=0, n_eig=4)
        assert (c["classification"], c["eig_converged"], c["n_eig"]) == (kind, False, len(found))
        assert not c["index_exact"] and not c["n_zero_exact"]


def test_dense_hessian_of_the_free_coordinates_only():
    """With most coordinates pinned at large p the dense path must not build p x p."""
    target, saddle = _linear_target()
    free = np.arange(59) % 3 != 0
    full = minima.hessian(target.U_and_grad, saddle)
    # same differences, possibly in other batch sizes: equal up to rounding of the gradients
    np.testing.assert_allclose(
        minima.hessian(target.U_and_grad, saddle, free=free), full[np.ix_(free, free)], atol=1e-8
    )


def test_saturated_different_networks_do_not_merge_on_logits():
    """Two cross-entropy networks that classify every point with certainty (softmax one-hot to
    1e-4 on the data) but are different functions: the second has its output layer doubled,
    so its logits differ everywhere. The softmax key merges them; the logit key, on the data
    and probes, keeps them apart, and still merges a symmetric copy of the first."""
    X, _ = _data()
    sizes = (2, 3, 2)
    rng = np.random.default_rng(5)
    layout = ParamLayout(sizes)

    def with_output_scaled(theta, factor):
        params = layout.unpack(theta[None])
        W, b = params[-1]
        return layout.pack([*params[:-1], (W * factor, b * factor)])[0]

    a = rng.normal(size=layout.p)
    a = with_output_scaled(a, 40 / np.abs(layout.unpack(a[None])[-1][0]).max())
    y = MLP(sizes, "tanh", "cross_entropy").forward(a[None], X)[0].argmax(1)  # its own labels
    target = Target(MLP(sizes, "tanh", "cross_entropy"), X, y, box=1e3)
    b = with_output_scaled(a, 2.0)
    soft = minima.target_outputs(target)(np.stack([a, b]))
    if np.abs(soft[0] - soft[1]).max() >= 1e-4:
        pytest.skip("this network is not saturated on every point")
    assert minima.merge(soft, 1e-4).tolist() == [0, 0]
    key = minima.target_logits(target)
    copy = symmetry.random_transform(a[None], sizes, "tanh", "cross_entropy", rng)[0]
    assert minima.merge(key(np.stack([a, b, copy])), 1e-4).tolist() == [0, 1, 0]


def test_box_kkt_points_follow_the_box():
    """-x^2 - y^2 + z^2 falls without bound: its wall point at box 1 has U = -2, and
    re-optimised in boxes of 0.5 and 2 it moves with the wall, U = -0.5 and -8."""
    dep = minima.box_dependence(index_two, np.array([1.0, -1.0, 0.0]), 1.0)
    assert dep["box"] == [0.5, 1.0, 2.0] and dep["falls_with_box"]
    np.testing.assert_allclose(dep["U"], [-0.5, -2.0, -8.0], atol=1e-8)


def test_saddle_search_finds_what_minimization_walks_past():
    """Starts near the double well's saddle: L-BFGS-B runs downhill to the two minima and
    never reports the saddle; the gradient-root search from the same starts lands on it."""
    starts = np.array([[0.3, 0.2], [-0.25, -0.1], [0.8, 0.1]])
    plain = minima.census(double_well, starts, box=3.0)
    assert {r["classification"] for r in plain.table} == {"strict minimum"}
    c = minima.census(double_well, starts, box=3.0, saddle_search=True)
    saddle = [r for r in c.table if r["classification"] == "saddle"]
    assert len(saddle) == 1 and saddle[0]["index"] == 1 and saddle[0]["n_starts"] == 0
    assert saddle[0]["n_roots"] >= 1 and saddle[0]["U"] == pytest.approx(1.0)
    assert minima.index_counts(c) == {"minimize": {"0": 2}, "gradient root": {"0": 1, "1": 1}}
    assert len(c.assignment) == len(starts) and sum(r["n_starts"] for r in c.table) == 3


def test_cooper_zero_eigenvalues_at_an_interpolating_minimum():
    """Known answer (Cooper 2018): a 2 -> 4 -> 2 network (p = 22) with squared loss fitting
    N = 5 points exactly has Jacobian rank rN = 10 there, and its Hessian 2 J'J has
    p - rN = 12 zero eigenvalues, counted at the spectrum's widest gap."""
    from scipy.optimize import least_squares

    from lossatlas.model import MLP
    from lossatlas.model.network import Target

    rng = np.random.default_rng(0)
    X, y = rng.uniform(-1, 1, (5, 2)), np.arange(5) % 2
    mlp = MLP((2, 4, 2), activation="tanh", loss="squared")
    target = Target(mlp, X, y, box=10.0)

    def residuals(theta):
        return (mlp.forward(theta[None], X)[0] - np.eye(2)[y]).ravel()

    fit = least_squares(residuals, rng.uniform(-1, 1, mlp.p), xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert fit.cost < 1e-20

    def outputs(theta):
        return mlp.forward(theta, X).reshape(len(theta), -1)

    rank, sv = minima.jacobian_rank(outputs, fit.x)
    assert rank == 10 and len(sv) == 10
    info = minima.classify(target.U_and_grad, fit.x, target.box)
    assert info["n_zero"] == mlp.p - 10 == 12, info["eigenvalues"]
    assert info["classification"] == "degenerate minimum"
