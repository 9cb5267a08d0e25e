"""Streaming views (lazy rows, derived coordinates), landscape glue and its figures, on small
arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lossatlas import config, data, model, steps
from lossatlas.analysis import census, compare, diagnostics, dimension, dimension_run, draws
from lossatlas.model import symmetry
from lossatlas.model.layout import ParamLayout
from lossatlas.storage import streaming

SIZES = (2, 2, 2, 2)
P = symmetry.n_params(SIZES)


class MemStore:
    """The part of store.SampleStore the analyses use, over in-memory arrays."""

    def __init__(self, theta, mean_loss, energy=None):
        self.theta = theta
        self.n_chains, self.n_draws, self.n_params = theta.shape
        self.param_names = model.MLP(SIZES).param_names()
        self._stats = {
            "mean_loss": mean_loss,
            "energy": mean_loss * 10 if energy is None else energy,
        }

    def stat(self, name):
        return self._stats[name]

    def potential(self):
        return self._stats["energy"]

    def group(self, name):
        return None  # keeps no sampler.until table: the analyses measure what they need


def cfg_for(**over):
    raw = {
        "dataset": {"n_points": 10},
        "landscape": {
            "dimension": {"n_null": 3, "n_boot": 5, "max_points": 200, "pipeline_max_draws": 100},
            "census": {"n_clusters": 2, "n_random": 1, "maxiter": 500},
            "compare": {"n_perm": 19, "max_points": 100},
        },
        "reduce": {"draw_block": 16},  # several blocks even for these small arrays
        **over,
    }
    return config.validate(raw)


# The analyses with the arguments the workflow's steps give them for ``cfg``.
def dimension_rows(store, ds, cfg):
    transform = steps.coordinates(cfg, ds)
    return dimension_run.dimension_rows(store, transform, **steps.dimension_arguments(cfg))


def run_census(store, ds, cfg):
    target, transform = steps.target(cfg, ds), steps.coordinates(cfg, ds)
    return census.run_census(store, target, transform, **steps.census_arguments(cfg))


def good_plane(store, ds, cfg, reduction, points):
    transform = steps.coordinates(cfg, ds)
    return census.good_plane(store, transform, reduction, points, **steps.plane_arguments(cfg))


def compare_rows(ref, other, cfg, ds, ref_exp, exp, n_good):
    sizes, key = steps.sizes(cfg, ds), steps.coordinates(cfg, ds)
    kw = steps.compare_arguments(cfg)
    return compare.compare_rows(ref, other, sizes, key, ref_exp, exp, n_good, **kw)


def good_rows(store, cfg, max_points, seed):
    kw = {**steps.good_rows_arguments(cfg), "max_points": max_points, "seed": seed}
    return draws.good_rows(store, **kw)


@pytest.fixture
def ds():
    return data.generate(config.validate({})["dataset"])


@pytest.fixture
def theta():
    return np.random.default_rng(0).uniform(-3, 3, size=(4, 50, P))


def test_rowview_reads_rows_in_chain_major_order(theta):
    v = streaming.RowView(theta, draw_block=8)
    flat = theta.reshape(-1, P)
    assert v.shape == (200, P) and v.dpb == 2
    idx = np.array([199, 3, 57, 57, 120])
    np.testing.assert_array_equal(v[idx], flat[np.sort(idx)])
    np.testing.assert_array_equal(v[10:20], flat[10:20])
    assert v[np.array([], dtype=int)].shape == (0, P)


def test_rowview_reads_a_small_store_once_and_gives_the_same_rows(theta, tmp_path):
    """Within one block's budget the whole of theta is read at the first request and indexed
    after; over it, every request reads its blocks. Both give the same bits."""
    import h5py

    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["theta"] = theta
    with h5py.File(tmp_path / "t.h5", "r") as f:
        whole = streaming.RowView(f["theta"], draw_block=8)
        blocked = streaming.RowView(f["theta"], draw_block=8, max_block_mb=theta.nbytes / 2**21)
        for idx in (np.array([199, 3, 57, 57, 120]), np.arange(0, 200, 7), slice(10, 20)):
            np.testing.assert_array_equal(whole[idx], blocked[idx])
        assert whole._held is not None and blocked._held is None


def test_rowview_and_drawview_apply_the_transform_by_blocks(theta, ds):
    cfg = cfg_for(coordinates="canonical")
    canon = steps.coordinates(cfg, ds)
    flat = theta.reshape(-1, P)
    want = symmetry.canonicalize(flat, SIZES)
    np.testing.assert_allclose(
        streaming.RowView(theta, canon, **steps.blocks(cfg))[np.arange(200)], want
    )
    dv = streaming.DrawView(theta, canon, **steps.blocks(cfg))
    assert dv.shape == theta.shape
    np.testing.assert_allclose(dv[:, 5:40, 3:9], want.reshape(theta.shape)[:, 5:40, 3:9])
    np.testing.assert_allclose(np.asarray(dv), want.reshape(theta.shape))
    assert steps.coordinates(cfg_for(), ds) is None


def test_materialized_view_is_the_view_chunked_by_columns_and_then_removed(theta, ds, tmp_path):
    cfg = cfg_for(coordinates="canonical")
    dv = streaming.DrawView(theta, steps.coordinates(cfg, ds), **steps.blocks(cfg))
    assert dv.dpb < theta.shape[1]  # written in several draw blocks
    with streaming.materialized(dv, tmp_path, col_block=4) as x:
        assert x.shape == dv.shape and x.dtype == np.float64 and x.chunks[2] == 4
        np.testing.assert_array_equal(x[()], np.asarray(dv))
        a = diagnostics.summarize(x, theta[:, :, 0], block=4)
        pd.testing.assert_frame_equal(a, diagnostics.summarize(dv, theta[:, :, 0], block=4))
        b = diagnostics.summarize(x, theta[:, :, 0], block=4, workers=2)
        pd.testing.assert_frame_equal(a, b)
    assert list(tmp_path.iterdir()) == []
    with streaming.materialized(dv, tmp_path, col_block=4, dtype=np.float32) as x:
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x[()], np.asarray(dv).astype(np.float32))


def test_canonical_view_keeps_U_and_merges_symmetric_copies(ds):
    cfg = cfg_for(coordinates="canonical")
    target = steps.target(cfg, ds)
    x = np.random.default_rng(1).uniform(-2, 2, size=(5, P))
    copy = symmetry.random_transform(x, SIZES, rng=2)
    canon = steps.coordinates(cfg, ds)
    np.testing.assert_allclose(target.U(canon(x)), target.U(x), rtol=1e-10)
    np.testing.assert_allclose(canon(copy), canon(x), atol=1e-10)


def test_uniform_null_is_mapped_like_the_data():
    """In canonical coordinates the draws have 3 exactly flat directions less; an untransformed
    uniform null would not, and the PCA share of the data would look special for that alone."""
    rng = np.random.default_rng(3)
    canon = lambda x: symmetry.canonicalize(x, SIZES)  # noqa: E731
    theta = canon(rng.uniform(-5, 5, size=(400, P)))
    ml = rng.uniform(0, 1, size=400)
    kw = {"n_null": 3, "n_boot": 5, "kpca": dimension.Pipeline(max_draws=100)}
    raw = dimension.dimension_table(theta, ml, 0.5, 5.0, **kw)
    mapped = dimension.dimension_table(theta, ml, 0.5, 5.0, null_transform=canon, **kw)

    def null_mle(rows):
        return next(r for r in rows if r["statistic"] == "mle" and r["null"] == "uniform")

    assert null_mle(mapped)["null_value"] < null_mle(raw)["null_value"] - 1


def test_dimension_rows_skip_without_good_draws(theta, ds):
    store = MemStore(theta, np.full(theta.shape[:2], 0.7))
    rows, meta = dimension_rows(store, ds, cfg_for())
    assert meta["n_good"] == 0
    assert {r["statistic"] for r in rows} == {
        *("twonn", "mle", "twonn_naive", "mle_naive", "pca_ev2", "pipeline_ev2"),
    }
    assert all(r["verdict"].startswith("skipped: n_good=0") for r in rows)


def test_compare_rows_skip_with_too_few_good_draws(ds):
    cfg = cfg_for()
    exps = config.experiments(cfg)
    ref, other = exps["rotate-0"], exps["rotate-120"]
    x = np.random.default_rng(0).normal(size=(40, P))
    chains = np.arange(40) % 8
    rows, full = compare_rows((x, chains), (x[:2], chains[:2]), cfg, ds, ref, other, (40, 2))
    assert [r["stage"] for r in rows] == ["before", "after"]
    assert all(r["status"].startswith("skipped: n_good=40 (reference), 2 (this)") for r in rows)
    # a rotated copy of the reference's draws agrees with it once mapped back
    A, _, _ = data.experiment_affine(other.transforms, 2)
    moved = ParamLayout(SIZES).map_first_layer(x, A)
    rows, full = compare_rows((x, chains), (moved, chains), cfg, ds, ref, other, (40, 40))
    after = rows[1]
    assert after["stage"] == "after" and after["pvalue"] == 1.0 and after["max_angle"] < 1e-4
    assert 0 <= rows[0]["pvalue"] <= 1 and 0 <= rows[0]["max_angle"] <= 90


def test_census_and_plane_on_a_small_store(ds):
    cfg = cfg_for()
    rng = np.random.default_rng(5)
    theta = rng.uniform(-4, 4, size=(2, 30, P))
    target = steps.target(cfg, ds)
    ml = target.mean_loss(target.U(theta.reshape(-1, P))).reshape(2, 30)
    good = ml < np.quantile(ml, 0.2)
    cfg["target"]["good_threshold"] = float(np.quantile(ml, 0.2))
    store = MemStore(theta, ml)
    cfg["landscape"]["census"]["maxiter"] = 30  # the bookkeeping is under test, not L-BFGS-B
    c, table, meta = run_census(store, ds, cfg)
    assert meta["n_starts"] == 6 and table["n_starts"].sum() == 6
    assert (table["n_from_good"] + table["n_from_all"] == table["n_starts"]).all()
    assert set(meta["starts_by_source"]) == {
        "cluster-all",
        "random-all",
        "cluster-good",
        "random-good",
    }

    class Red:  # what good_plane reads of a reduce.Reduction
        good_index = np.argwhere(good)
        mean_loss = ml
        pca_param = np.asarray(
            __import__("sklearn.decomposition")
            .decomposition.PCA(2, svd_solver="full")
            .fit_transform(theta[good])
        )

    plane = good_plane(store, ds, cfg, Red, c.points)
    assert plane["matches_reduce"] and plane["points"].shape == (len(table), 2)


def test_landscape_figures(tmp_path):
    table = pd.DataFrame(
        {
            "mean_loss": [0.01, 0.3, 0.5],
            "index": [0, 0, 2],
            "classification": ["pinned", "strict minimum", "saddle"],
            "basin_share": [0.5, 0.3, 0.2],
            "good": [True, False, False],
        }
    )
    plane = {
        "good": np.random.default_rng(0).normal(size=(30, 2)),
        "points": np.zeros((3, 2)),
        "ratio": [0.6, 0.2],
        "colour": np.linspace(0, 0.1, 30),
    }
    paths = [
        census.plot_census_loss_index(table, tmp_path / "a.png", title="x"),
        census.plot_census_plane(plane, table, tmp_path / "b.png"),
        census.plot_census_plane(None, table, tmp_path / "c.png"),
        compare.plot_compare(
            {
                "e": {
                    "rows": [{"stage": "before", "status": "skipped: n_good=0"}],
                    "projection": None,
                }
            },
            tmp_path / "d.png",
        ),
    ]
    for p in paths:
        assert p.read_bytes()[:4] == b"\x89PNG"


def test_dimension_counts_distinct_good_draws_only():
    """Rejected proposals repeat a position: 200 good draws at 5 places are too few for the
    neighbour estimates, which must be skipped, not fail."""
    rng = np.random.default_rng(4)
    theta = np.vstack([np.repeat(rng.normal(size=(5, P)), 40, axis=0), rng.normal(size=(200, P))])
    ml = np.r_[np.zeros(200), np.ones(200)]
    rows = dimension.dimension_table(theta, ml, 0.5, 5.0, n_null=2, n_boot=2)
    assert {r["statistic"] for r in rows} == {"pipeline_ev2"}


def test_memory_budget_caps_the_clouds(theta, ds):
    """max_mb caps every cloud at max_mb / (8 p) rows and the JSON says so; the default budget
    leaves small-p settings as they are."""
    assert draws.budget_rows(100_810, 128) == 166 and draws.budget_rows(P, 128) > 10**5
    mb = 40 * 8 * P / 2**20  # exactly 40 rows
    cfg = cfg_for()
    cfg["landscape"]["dimension"]["max_mb"] = mb
    ml = np.where(np.arange(200) % 2 == 0, 0.05, 0.7).reshape(4, 50)
    rows, meta = dimension_rows(MemStore(theta, ml), ds, cfg)
    mem = meta["memory"]
    assert mem["rows_in_budget"] == 40
    assert mem["max_points"] == {"requested": 200, "used": 40, "limited_by": "max_mb"}
    assert mem["pipeline_max_draws"] == {"requested": 100, "used": 40, "limited_by": "max_mb"}
    _, meta = dimension_rows(MemStore(theta, ml), ds, cfg_for())
    assert meta["memory"]["max_points"]["limited_by"] == "max_points"
    store = MemStore(theta, ml)
    cfg["landscape"]["compare"]["max_mb"] = mb
    rows, chains = good_rows(store, cfg, 1000, 0)
    assert rows.shape == (40, P) and chains.shape == (40,)
    assert good_rows(store, cfg_for(), 1000, 0)[0].shape == (100, P)


def test_streamed_plane_equals_the_refit(ds):
    """Above census.max_mb the plane's axes come from the stored coordinates in one streamed
    pass: the same projection of census points as the exact refit, to 1e-8."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(6)
    theta = rng.normal(size=(3, 40, P)) * np.linspace(0.1, 2, P)
    ml = rng.uniform(0, 1, size=(3, 40))
    good = ml < 0.5
    store = MemStore(theta, ml)

    class Red:
        good_index = np.argwhere(good)
        mean_loss = ml
        pca_param = PCA(2, svd_solver="full").fit_transform(theta[good])
        summary = {"pca_param": {"explained_variance_ratio": [0.3, 0.2]}}

    points = rng.normal(size=(5, P))
    cfg = cfg_for()
    exact = good_plane(store, ds, cfg, Red, points)
    cfg["landscape"]["census"]["max_mb"] = 7 * 8 * P / 2**20  # 7 rows per streamed block
    streamed = good_plane(store, ds, cfg, Red, points)
    assert exact["matches_reduce"] and streamed["matches_reduce"]
    np.testing.assert_allclose(streamed["points"], exact["points"], atol=1e-8)
    np.testing.assert_array_equal(streamed["good"], Red.pca_param)
    assert streamed["ratio"] == [0.3, 0.2]
    # coordinates that are not an exact PCA of these draws are caught, not trusted
    Red.pca_param = Red.pca_param + rng.normal(size=Red.pca_param.shape)
    assert not good_plane(store, ds, cfg, Red, points)["matches_reduce"]


def test_census_settings_reach_the_spectrum(ds):
    """census.dense_max and n_eig from the config: above dense_max the table says eigsh and how
    many eigenvalues it computed."""
    cfg = cfg_for()
    cfg["landscape"]["census"].update(maxiter=30, n_restarts=0, dense_max=5, n_eig=2)
    theta = np.random.default_rng(9).uniform(-4, 4, size=(2, 30, P))
    store = MemStore(theta, np.full((2, 30), 0.7))
    _, table, meta = run_census(store, ds, cfg)
    assert meta["spectrum"].startswith("eigsh: the 2 smallest and 2 largest")
    assert table["spectrum"].str.startswith("eigsh").all() and (table["n_free"] <= P).all()
    assert (table["n_eig"] <= 4).all() and (table["n_eig"] == 4).any()
