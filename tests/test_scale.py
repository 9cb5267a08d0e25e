"""The scale path (issue 6) scaled down: p ~ 1e4, a few hundred float32 draws written by the
sampler's own writer, and the streaming diagnostics and PCA against in-memory computations on
the same data. Also the datasets and the energy code that the scale run relies on."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from arviz_stats.base import array_stats
from sklearn.decomposition import PCA, KernelPCA

from lossatlas import config, data, model, steps
from lossatlas.analysis import diagnostics, reduce
from lossatlas.sampling import engine
from lossatlas.storage.store import SampleStore, build

CONFIG = Path(__file__).parent / "configs" / "scale.yaml"
N_COLS = 300  # parameters diagnosed (arviz-stats costs ~10 ms each): two blocks and a remainder
PCA_COLS = 2000  # parameters in the linear-PCA comparison: keeps the exact SVD quick


# ---------------------------------------------------------------------------- datasets


def test_digits_standardized_and_seeded_subset():
    ds = data.generate(
        config.validate({"dataset": {"generator": "digits"}, **_no_rotation()})["dataset"]
    )
    assert ds.X.shape == (1797, 64) and ds.n_classes == 10 and set(ds.y) == set(range(10))
    sd = ds.X.std(axis=0)
    # standardized: mean 0, sd 1, except the constant border pixels, which stay at 0
    np.testing.assert_allclose(ds.X.mean(axis=0), 0, atol=1e-12)
    assert np.all(np.isclose(sd, 1, atol=1e-12) | (sd == 0)) and (sd == 0).sum() >= 1
    a, b = data.digits(subset=100, seed=3), data.digits(subset=100, seed=3)
    np.testing.assert_array_equal(a.X, b.X)
    assert a.X.shape == (100, 64)
    assert not np.array_equal(a.y, data.digits(subset=100, seed=4).y)
    with pytest.raises(ValueError, match="subset"):
        data.digits(subset=0)


def test_teacher_labels_are_learnable_and_seeded():
    ds = data.teacher(500, 300, 4, seed=1, noise=0.0)
    assert ds.X.shape == (500, 300) and set(ds.y) == {0, 1, 2, 3}
    np.testing.assert_array_equal(ds.y, data.teacher(500, 300, 4, seed=1).y)
    assert not np.array_equal(ds.y, data.teacher(500, 300, 4, seed=2).y)
    # noise 0: the labels are exactly a linear function's argmax, so least squares on one-hot
    # targets separates them far better than chance (0.25)
    onehot = np.eye(4)[ds.y]
    w, *_ = np.linalg.lstsq(ds.X, onehot, rcond=None)
    assert (np.argmax(ds.X @ w, axis=1) == ds.y).mean() > 0.9


def test_schema_accepts_the_new_generators():
    cfg = config.validate(
        {"dataset": {"generator": "teacher", "n_features": 50, "n_classes": 3}, **_no_rotation()}
    )
    ds = data.generate(cfg["dataset"])
    assert ds.X.shape == (10, 50) and ds.n_classes == 3
    with pytest.raises(config.ConfigError, match="dataset.subset"):
        config.validate({"dataset": {"generator": "digits", "subset": 5000}})


@pytest.mark.parametrize("act", model.ACTIVATIONS)
def test_in_place_energy_path_is_bitwise_the_kept_path(act):
    mlp = model.MLP((64, 40, 20, 10), activation=act)
    X = data.digits(subset=50).X.astype(np.float32)
    theta = np.random.default_rng(0).uniform(-1, 1, (3, mlp.p)).astype(np.float32)
    kept = mlp._forward(theta, X, keep=True)[0]
    np.testing.assert_array_equal(mlp._forward(theta, X, keep=False)[0], kept)


def _no_rotation():
    return {"experiments": {"sweep": {"scale": [1]}}}


# ---------------------------------------------------------------------------- the store


@pytest.fixture(scope="module")
def scale_store(tmp_path_factory):
    """tests/configs/scale.yaml sampled by engine.run_batch (no Dask) into batch files and the
    virtual samples.h5, exactly as the sample rule lays them out."""
    raw = yaml.safe_load(CONFIG.read_text())
    cfg = config.validate(raw)
    exp = next(iter(config.experiments(cfg).values()))
    ds = data.for_experiment(cfg["dataset"], exp.transforms)
    out = tmp_path_factory.mktemp("scale")
    specs = engine.batch_specs(exp, ds, out, **steps.sampling_arguments(cfg))
    for spec in specs:
        engine.run_batch(spec)
    names = steps.target(cfg, ds).mlp.param_names()
    path = build([s["path"] for s in specs], out / "samples.h5", names, n_draws=100)
    return cfg, path


def test_scale_store_is_float32_at_p_1e4(scale_store):
    cfg, path = scale_store
    with SampleStore(path) as st:
        assert st.theta.shape == (4, 100, 10_530) and st.theta.dtype == np.float32
        assert np.isfinite(st.stat("energy")).all()


class _Cols:
    """The first ``k`` parameters of an h5py theta, still read lazily by slices."""

    def __init__(self, theta, k):
        self._t, self.shape = theta, (*theta.shape[:2], k)

    def __getitem__(self, key):
        c, d, j = key
        start, stop, _ = j.indices(self.shape[2])
        return self._t[c, d, start:stop]


def test_streamed_diagnostics_equal_in_memory(scale_store):
    """Blocks of 128 parameters read from the store on 2 processes against arviz-stats on the
    whole in-memory array in one call: equal to 1e-12 relative (the same code on the same
    numbers; only the blocking differs)."""
    _, path = scale_store
    with SampleStore(path) as st:
        energy = st.stat("energy")
        table, norm, _ = diagnostics.diagnose(
            _Cols(st.theta, N_COLS), energy, st.param_names[:N_COLS], block=128, workers=2
        )
        x = np.asarray(st.theta[:, :, :N_COLS], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = {
            "r_hat": array_stats.rhat(x, chain_axis=0, draw_axis=1, method="rank"),
            "ess_bulk": array_stats.ess(x, chain_axis=0, draw_axis=1, method="bulk"),
            "ess_tail": array_stats.ess(
                x, chain_axis=0, draw_axis=1, method="tail", prob=diagnostics.TAIL_PROB
            ),
            "mcse_mean": array_stats.mcse(x, chain_axis=0, draw_axis=1, method="mean"),
            "mean": x.mean(axis=(0, 1)),
        }
    params = table[table["kind"] == "param"]
    assert len(params) == N_COLS and table["name"].iloc[0] == "U"
    for col, v in want.items():
        np.testing.assert_allclose(params[col].to_numpy(), v, rtol=1e-12, atol=0, err_msg=col)
    # the serial path gives the very same tables
    with SampleStore(path) as st:
        t1, n1, _ = diagnostics.diagnose(
            _Cols(st.theta, N_COLS), energy, st.param_names[:N_COLS], block=128, workers=1
        )
    assert t1.equals(table) and n1.equals(norm)


def test_streamed_pca_equals_in_memory(scale_store):
    """Good rows (first PCA_COLS parameters) streamed in draw blocks of <= 1 MiB.

    The gathered exact path equals PCA of the in-memory array to 1e-8. The IncrementalPCA path
    (max_gather_mb 2 forces it) keeps only its leading components between batches, so it is
    close, not equal: explained-variance ratios to 1e-2 relative, and the same plane up to
    what the spectrum determines: its coordinates are a linear map of the exact leading
    components up to 2% relative residual, taking every component down to the first clear gap
    (a variance more than twice the next). The leading variances of these draws are nearly
    equal (two or three of them, depending on the rounding of the sampler's build), and within
    a nearly degenerate eigenspace no plane is better determined than the others.
    """
    cfg, path = scale_store
    with SampleStore(path) as st:
        theta = _Cols(st.theta, PCA_COLS)
        x = np.asarray(st.theta[:, :, :PCA_COLS], dtype=np.float64).reshape(400, -1)
        good = np.ones((4, 100), dtype=bool)
        ref = PCA(n_components=2, svd_solver="full").fit(x)
        want = ref.transform(x)
        gathered, c_g = reduce.pca_of_rows(theta, good, 2, draw_block=64, max_block_mb=1,
                                           max_gather_mb=1e6)  # fmt: skip
        streamed, c_s = reduce.pca_of_rows(theta, good, 2, draw_block=64, max_block_mb=1,
                                           max_gather_mb=2)  # fmt: skip
    assert gathered["method"] == "PCA (in memory)"
    assert streamed["method"] == "IncrementalPCA (streamed)"
    np.testing.assert_allclose(np.abs(c_g), np.abs(want), rtol=0, atol=1e-8 * np.abs(want).max())
    np.testing.assert_allclose(
        streamed["explained_variance_ratio"], ref.explained_variance_ratio_, rtol=1e-2
    )
    variances = PCA(n_components=10, svd_solver="full").fit(x).explained_variance_
    gap = next(k for k in range(2, 10) if variances[k - 1] > 2 * variances[k])
    span = PCA(n_components=gap, svd_solver="full").fit(x).transform(x)
    fit, *_ = np.linalg.lstsq(span, c_s, rcond=None)
    assert np.linalg.norm(span @ fit - c_s) < 0.02 * np.linalg.norm(c_s)


def test_streamed_kernel_pca_equals_in_memory_and_reference_cap(scale_store):
    """Exact kernel PCA built block by block equals sklearn's on the in-memory array (to 1e-8
    up to sign); above max_exact the Nystroem reference rows obey max_reference_mb."""
    cfg, path = scale_store
    with SampleStore(path) as st:
        x = np.asarray(st.theta[...], dtype=np.float64).reshape(400, -1)
        emb, info = reduce.kernel_pca(st.theta, max_exact=400, draw_block=64, max_block_mb=1)
        assert info["method"] == "exact"
        want = KernelPCA(3, kernel="rbf", gamma=info["gamma"]).fit_transform(x)
        got = emb.reshape(400, 3)
        np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-8 * np.abs(want).max())
        kw = steps.reduce_arguments(cfg)
        res = reduce.reduce_draws(st, st.stat("energy"), st.stat("mean_loss"), **kw)
    k = res.summary["kpca"]
    cap = reduce.reference_rows(10_530, 8)
    assert k["method"] == "nystroem" and k["reference_rows_cap"] == cap == 99
    assert k["n_landmarks"] + k["nystroem_kernel_error"]["n_heldout"] <= cap
    assert k["n_landmarks_requested"] == 300 and k["n_landmarks"] == 74
    assert res.summary["pca_param"]["method"] == "IncrementalPCA (streamed)"


def test_streamed_pca_keeps_the_directions_later_batches_need():
    """Known answer where IncrementalPCA carrying only the k = 2 components it reports loses
    variance for good: the early draws vary along e1, e2 and e3 (variances 2, 1, 0.9), the later
    ones along e3 (2), so after the early batches e3 is the third direction, dropped at k = 2,
    and later the second. Carrying IPCA_KEEP components, the streamed fit gives the exact
    plane to 4% and its variance ratios to 5% (at k = 2: 9% and 14%)."""
    rng = np.random.default_rng(0)
    n_chains, n_draws, p = 4, 100, 50
    early, late = np.zeros(p), np.zeros(p)
    early[:3], late[:3] = [2.0, 1.0, 0.9], [0.01, 0.01, 2.0]
    sd = np.where(np.arange(n_draws)[:, None] < n_draws // 2, np.sqrt(early), np.sqrt(late))
    theta = rng.standard_normal((n_chains, n_draws, p)) * sd
    theta += 1e-3 * rng.standard_normal(theta.shape)
    x = theta.reshape(-1, p)
    ref = PCA(n_components=2, svd_solver="full").fit(x)
    streamed, coords = reduce.pca_of_rows(
        theta, np.ones((n_chains, n_draws), bool), 2, draw_block=64, max_block_mb=1,
        max_gather_mb=0.05,
    )  # fmt: skip
    assert streamed["method"] == "IncrementalPCA (streamed)"
    np.testing.assert_allclose(
        streamed["explained_variance_ratio"], ref.explained_variance_ratio_, rtol=5e-2
    )
    want = ref.transform(x)
    fit, *_ = np.linalg.lstsq(want, coords, rcond=None)
    assert np.linalg.norm(want @ fit - coords) < 0.04 * np.linalg.norm(coords)
