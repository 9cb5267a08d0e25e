"""Kernel PCA (exact and approximate), good-draw selection and the streamed linear PCA."""

import json

import h5py
import numpy as np
import pytest
from sklearn.decomposition import PCA, KernelPCA

from lossatlas import config, steps
from lossatlas.analysis import reduce as rd

C, D, P = 4, 75, 18  # 300 draws


def _basis(rng):
    return np.linalg.qr(rng.normal(size=(P, P)))[0]


def _curved(seed=0):
    """A noisy 2-D curved sheet in 18-D with distinct variances, so components are identifiable."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(C, D, 2)) * np.array([2.0, 1.0])
    core = np.concatenate([u, np.sin(u[..., :1]), np.zeros((C, D, P - 3))], axis=-1)
    return core @ _basis(rng).T + 0.05 * rng.normal(size=(C, D, P))


def _cancorr(a, b):
    """Canonical correlations of two embeddings: 1 when they span the same subspace."""
    qa = np.linalg.qr(a - a.mean(0))[0]
    qb = np.linalg.qr(b - b.mean(0))[0]
    return np.linalg.svd(qa.T @ qb, compute_uv=False)


@pytest.mark.parametrize("draw_block", [1000, 40])  # one block; several blocks, 40 % 4 chains
def test_exact_matches_sklearn_kernel_pca(draw_block):
    x = _curved()
    emb, info = rd.kernel_pca(x, gamma=0.05, draw_block=draw_block)
    ref = KernelPCA(n_components=3, kernel="rbf", gamma=0.05, random_state=0)
    ref = ref.fit_transform(x.reshape(-1, P))
    got = emb.reshape(-1, 3)
    signs = np.sign(np.sum(got * ref, axis=0))
    np.testing.assert_allclose(got * signs, ref, atol=1e-8)
    assert info["method"] == "exact" and info["n_fit"] == C * D
    assert info["gamma_source"] == "config"


def test_default_gamma_is_inverse_p_times_mean_variance():
    x = _curved(1)
    _, info = rd.kernel_pca(x, draw_block=13)
    expected = 1.0 / (P * x.reshape(-1, P).var(axis=0).mean())
    assert info["gamma"] == pytest.approx(expected, rel=1e-12)


def test_approximation_error_low_on_a_line_high_on_noise():
    rng = np.random.default_rng(2)
    t = rng.uniform(-1, 1, size=(C, D, 1))
    line = t * _basis(rng)[:, 0] + 0.01 * rng.normal(size=(C, D, P))
    noise = rng.normal(size=(C, D, P))
    # A kernel wide compared with the line (gamma * var(t) = 0.2) is nearly polynomial on it.
    _, i_line = rd.kernel_pca(line, gamma=0.2 / t.var())
    _, i_noise = rd.kernel_pca(noise)
    e_line = i_line["approximation_error"]["value"]
    e_noise = i_noise["approximation_error"]["value"]
    assert 0.0 <= e_line < 0.02
    assert 0.8 < e_noise <= 1.0


@pytest.mark.parametrize("method", ["nystroem", "subsample"])
def test_approximation_used_above_max_exact_and_agrees(method):
    x = _curved(3)
    exact, _ = rd.kernel_pca(x)
    approx, info = rd.kernel_pca(
        x, max_exact=200, approximation=method, n_landmarks=200, n_heldout=100, draw_block=48
    )
    assert info["method"] == method
    assert info["n_fit"] == (C * D if method == "nystroem" else 200)
    assert 0.0 <= info["approximation_error"]["value"] <= 1.0
    # Same 3-D subspace of draws: every canonical correlation above 0.99.
    assert _cancorr(exact.reshape(-1, 3), approx.reshape(-1, 3)).min() > 0.99
    if method == "nystroem":
        assert info["n_landmarks"] == 200
        assert 0.0 <= info["nystroem_kernel_error"]["value"] < 0.05


def test_landmarks_are_the_fewest_that_reach_the_kernel_error():
    """kernel_error: the landmark count doubles from 250 until the held-out kernel error is at
    most the target; unreachable, every landmark is used, exactly as without a target."""
    rng = np.random.default_rng(7)
    u = rng.normal(size=(4, 600, 2)) * np.array([2.0, 1.0])
    core = np.concatenate([u, np.sin(u[..., :1]), np.zeros((4, 600, P - 3))], axis=-1)
    x = core @ _basis(rng).T + 0.05 * rng.normal(size=(4, 600, P))
    args = {"max_exact": 100, "n_landmarks": 1000, "n_heldout": 200, "draw_block": 256}
    full, i_full = rd.kernel_pca(x, kernel_error=None, **args)
    never, i_never = rd.kernel_pca(x, kernel_error=1e-12, **args)
    curve = i_never["landmark_curve"]
    assert curve["n_landmarks"] == [250, 500, 1000]
    errors = curve["kernel_error"]
    assert errors[0] > errors[1] > errors[2] > 0
    assert i_never["n_landmarks"] == i_full["n_landmarks"] == 1000
    assert never.tobytes() == full.tobytes()
    assert errors[2] == i_full["nystroem_kernel_error"]["value"]
    half, i_half = rd.kernel_pca(x, kernel_error=errors[1], **args)
    assert i_half["n_landmarks"] == 500 and i_half["landmark_curve"]["n_landmarks"] == [250, 500]
    assert i_half["nystroem_kernel_error"]["value"] == errors[1]
    # the embedding the fewer landmarks give spans the same 3-D subspace of draws
    assert _cancorr(full.reshape(-1, 3), half.reshape(-1, 3)).min() > 0.99


def test_nystroem_in_kernel_space_equals_pca_of_the_features():
    """The embedding computed in kernel space is PCA of sklearn's Nystroem features."""
    from sklearn.kernel_approximation import Nystroem

    x = _curved(5)
    emb, info = rd.kernel_pca(x, max_exact=100, n_landmarks=150, n_heldout=50, draw_block=36)
    flat = x.reshape(-1, P)
    landmarks = np.sort(np.random.default_rng(0).permutation(len(flat))[:150])
    ny = Nystroem(gamma=info["gamma"], n_components=150, random_state=0).fit(flat[landmarks])
    features = ny.transform(flat)
    ref = PCA(n_components=3, svd_solver="full").fit(features)
    want = ref.transform(features)
    got = emb.reshape(-1, 3)
    signs = np.sign((want * got).sum(0))
    np.testing.assert_allclose(got, want * signs, atol=1e-9)
    lam = ref.explained_variance_ * (len(flat) - 1)
    np.testing.assert_allclose(info["eigenvalues"], lam, rtol=1e-9)


@pytest.mark.parametrize("spectrum", ["distinct", "clustered"])
def test_top_eigenpairs_equal_a_full_decomposition(spectrum):
    rng = np.random.default_rng(1)
    q = np.linalg.qr(rng.normal(size=(60, 60)))[0]
    w = np.linspace(1, 10, 60) if spectrum == "distinct" else 1 + 1e-13 * rng.random(60)
    w[-3:] = [20.0, 30.0, 40.0] if spectrum == "distinct" else w[-3:]
    sym = (q * w) @ q.T
    vals, vecs = rd.top_eigenpairs(sym, 3)
    full = np.linalg.eigvalsh(sym)[::-1][:3]
    np.testing.assert_allclose(vals, full, rtol=1e-12)
    # orthonormal eigenvectors of those eigenvalues
    np.testing.assert_allclose(vecs.T @ vecs, np.eye(3), atol=1e-8)
    np.testing.assert_allclose(sym @ vecs, vecs * vals, atol=1e-8 * vals.max())


def test_top_eigenpairs_of_tied_eigenvalues_are_the_same_bits_every_call():
    """A kernel near the identity (a gamma far above the draws' scale) has tied top eigenvalues,
    whose eigenvectors the matrix does not determine; Lanczos restarts from random vectors there
    and returned other ones in every call. The pairs must depend on the matrix alone."""
    n = 300
    x = np.random.default_rng(2).normal(size=(n, 18))
    kernel = np.exp(-100.0 * ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    centred = kernel - kernel.mean(0) - kernel.mean(1)[:, None] + kernel.mean()
    first = rd.top_eigenpairs(centred, 3)
    for _ in range(3):
        again = rd.top_eigenpairs(centred.copy(), 3)
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])
    np.testing.assert_allclose(first[0], 1.0, rtol=1e-9)
    np.testing.assert_allclose(centred @ first[1], first[1] * first[0], atol=1e-9)


@pytest.mark.parametrize("n", [4, 5, 60])
def test_top_eigenpairs_of_a_null_or_small_matrix(n):
    """Where Lanczos cannot run (a null matrix: identical draws; k within one of n) every
    pair comes from LAPACK: eigenvalues 0 for the null matrix; a diagonal one's largest, either
    way."""
    vals, vecs = rd.top_eigenpairs(np.zeros((n, n)), 3)
    assert vals.tolist() == [0.0, 0.0, 0.0] and vecs.shape == (n, 3)
    sym = np.diag(np.arange(1.0, n + 1))
    vals, _ = rd.top_eigenpairs(sym, 3)
    np.testing.assert_allclose(vals, [n, n - 1, n - 2], rtol=1e-13)


def test_streaming_from_h5py_equals_numpy(tmp_path):
    x = _curved(4)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        ds = f.create_dataset("theta", data=x, chunks=(C, 10, P))
        a, _ = rd.kernel_pca(ds, max_exact=100, n_landmarks=150, draw_block=36)
    b, _ = rd.kernel_pca(x, max_exact=100, n_landmarks=150, draw_block=1000)
    np.testing.assert_allclose(a, b, atol=1e-10)


def _plane(seed, n_chains=4, n_draws=100, noise=0.02):
    rng = np.random.default_rng(seed)
    basis = _basis(rng)[:, :2]
    coef = rng.normal(size=(n_chains, n_draws, 2)) * np.array([3.0, 1.5])
    return coef @ basis.T + noise * rng.normal(size=(n_chains, n_draws, P)) + 0.7


def test_plane_pca_streamed_equals_in_memory():
    x = _plane(5)
    good = np.random.default_rng(6).random((4, 100)) < 0.6
    info, coords = rd.pca_of_rows(x, good, 2, draw_block=12)
    ref = PCA(2, svd_solver="full").fit(x[good])
    assert info["method"] == "PCA (in memory)"
    assert info["explained_variance_ratio_sum"] > 0.95
    np.testing.assert_allclose(info["explained_variance_ratio"], ref.explained_variance_ratio_)
    np.testing.assert_allclose(coords, ref.transform(x[good]), atol=1e-10)


def test_plane_incremental_pca_close_to_exact():
    x = _plane(7)
    good = np.ones((4, 100), bool)
    info, coords = rd.pca_of_rows(x, good, 2, draw_block=20, max_gather_mb=1e-4)
    assert info["method"] == "IncrementalPCA (streamed)"
    ref = PCA(2, svd_solver="full").fit(x.reshape(-1, P))
    np.testing.assert_allclose(
        info["explained_variance_ratio"], ref.explained_variance_ratio_, atol=1e-4
    )
    signs = np.sign(np.sum(coords * ref.transform(x.reshape(-1, P)), axis=0))
    np.testing.assert_allclose(coords * signs, ref.transform(x.reshape(-1, P)), atol=1e-3)


def _cfg(**reduce):
    """reduce_draws' arguments for these reduce settings, as the workflow gives them."""
    raw = {"seed": 1, "target": {"good_threshold": 0.1}, "reduce": reduce}
    return steps.reduce_arguments(config.validate(raw))


def test_reduce_entry_point_and_round_trip(tmp_path):
    x = _plane(8)
    mean_loss = np.random.default_rng(9).uniform(0, 0.3, size=(4, 100))
    res = rd.reduce_draws(x, mean_loss * 10, mean_loss, **_cfg(draw_block=64))
    s = res.summary
    n_good = int((mean_loss < 0.1).sum())
    assert s["kpca"]["method"] == "exact" and s["good"]["n_good"] == n_good
    assert res.embedding.shape == (4, 100, 3)
    assert res.pca_kpca.shape == res.pca_param.shape == (n_good, 2)
    np.testing.assert_array_equal(res.good_index, np.argwhere(mean_loss < 0.1))
    assert s["pca_param"]["explained_variance_ratio_sum"] > 0.95
    assert "report" in s["pca_kpca"]["space"] and "parameter" in s["pca_param"]["space"]
    json.dumps(s)
    for name in ("r.h5", "r.npz"):
        res.save(tmp_path / name)
        back = rd.Reduction.load(tmp_path / name)
        assert back.summary == json.loads(json.dumps(s))
        for a in rd.Reduction.ARRAYS:
            np.testing.assert_array_equal(getattr(back, a), getattr(res, a))


def test_reduce_states_the_approximation():
    x = _curved(10)
    loss = np.full((C, D), 1.0)
    cfg = _cfg(kpca={"max_exact": 100, "approximation": "subsample"})
    res = rd.reduce_draws(x, loss, loss, **cfg)
    assert res.summary["kpca"]["method"] == "subsample"
    assert res.summary["kpca"]["n_fit"] == 100


@pytest.mark.parametrize("n_good", [0, 1])
def test_zero_or_one_good_draw_is_reported_not_raised(n_good):
    x = _plane(11)
    loss = np.ones((4, 100))
    loss.flat[:n_good] = 0.0
    res = rd.reduce_draws(x, loss, loss, **_cfg())
    for key in ("pca_kpca", "pca_param"):
        assert res.summary[key]["status"] == "skipped"
        assert "at least 2" in res.summary[key]["message"]
    assert res.pca_param.shape == (n_good, 2)
    assert res.summary["good"]["n_good"] == n_good


def test_identical_good_draws_are_reported_and_store_like_accepted():
    class StoreLike:  # what reduce needs of store.SampleStore
        theta = np.tile(np.arange(P, dtype=float), (2, 30, 1))

    loss = np.zeros((2, 30))
    res = rd.reduce_draws(StoreLike(), loss, loss, **_cfg())
    assert res.summary["pca_param"]["status"] == "skipped"
    assert "coincide" in res.summary["pca_param"]["message"]
    json.loads(json.dumps(res.summary, allow_nan=False))


def test_gamma_scan_knows_when_the_reports_error_is_reachable():
    """Known answers: points on a 3-D linear subspace of R^10 reach the report's error < 0.01
    at small gamma (the kernel tends to the linear one) with a trustworthy embedding; an
    isotropic 10-D cloud keeps more than 1 - 3/10 of its variance out of any 3 components, so
    no gamma reaches it, and the reading says so."""
    from lossatlas.analysis import reduce as red

    rng = np.random.default_rng(3)
    basis, _ = np.linalg.qr(rng.normal(size=(10, 3)))
    flat = rng.normal(size=(300, 3)) * [3, 2, 1] @ basis.T
    gamma0 = 1.0 / (10 * flat.var(axis=0).mean())
    scan = red.gamma_scan(flat, gamma0)
    assert scan["gamma_reaching_report_error"] is not None
    assert scan["approximation_error"][0] < 0.01 and scan["trustworthiness"][0] > 0.99
    assert "needs gamma" in scan["reading"]
    ball = rng.normal(size=(300, 10))
    scan = red.gamma_scan(ball, 1.0 / 10)
    assert scan["gamma_reaching_report_error"] is None and min(scan["approximation_error"]) > 0.5
    assert scan["reading"].startswith("the report's error < 0.01 is not reproduced")
