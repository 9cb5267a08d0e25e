"""The Python API and the lossatlas command, without Snakemake."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import REPO

import lossatlas
from lossatlas import cli
from lossatlas import config as lacfg

TINY = {
    "experiments": {"sweep": {"rotate": [0, 90]}},
    "sampler": {
        "n_chains": 2,
        "chains_per_batch": 1,
        "warmup": 50,
        "draws": 20,
        "thin": 2,
        "checkpoint_every": 10,
    },
    "dask": {"dashboard": False, "progress_interval": 1},
}


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    cfg = {**TINY, "results": str(tmp_path_factory.mktemp("api") / "results")}
    return cfg, lossatlas.sample(cfg, "rotate-90", workers=1)


def test_sample_returns_the_store_and_resumes(sampled, caplog):
    cfg, store = sampled
    with store:
        assert store.theta.shape == (2, 20, 18)
        assert np.isfinite(store.stat("mean_loss")).all()
        first = store.theta[()]
    with caplog.at_level(logging.INFO, logger="lossatlas.sample"):
        again = lossatlas.sample(cfg, "rotate-90", workers=1)
    assert "resumed=40 computed=0" in caplog.text
    with again:
        np.testing.assert_array_equal(again.theta[()], first)


def test_sample_names_the_experiments_it_knows():
    with pytest.raises(lacfg.ConfigError, match="rotate-0, rotate-90"):
        lossatlas.sample(TINY, "rotate-60")


def test_validate_says_what_will_run(capsys):
    assert cli.main(["validate", str(REPO / "config" / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "p = 18" in out and "rotate-0, rotate-120, rotate-240" in out


def test_validate_refuses_a_bad_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler:\n  n_chains: 0\n")
    assert cli.main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sampler.n_chains" in err


def test_summary_of_a_store(sampled, capsys):
    cfg, _ = sampled
    path = f"{cfg['results']}/rotate-90/samples.h5"
    assert cli.main(["summary", path]) == 0
    out = capsys.readouterr().out
    assert "2 chains x 20 draws x 18 parameters" in out and "R-hat" in out


def test_open_samples_is_lazy_in_the_batch_files_chunks(sampled):
    cfg, _ = sampled
    path = f"{cfg['results']}/rotate-90/samples.h5"
    post = lossatlas.open_samples(path)
    theta = post["theta"]
    # one chain per batch, draws in chunks of the checkpoint block, all 18 parameters
    assert theta.chunks == ((1, 1), (10, 10), (18,))
    with lossatlas.sample(cfg, "rotate-90", workers=1) as store:
        np.testing.assert_array_equal(theta.values, store.theta[()])


def test_the_store_follows_inference_data_conventions(sampled):
    """observed_data (labels) and constant_data (inputs) groups, provenance attributes, and
    lp = -beta * U beside U."""
    import arviz_base
    import h5py
    import xarray as xr

    cfg, _ = sampled
    path = f"{cfg['results']}/rotate-90/samples.h5"
    tree = xr.open_datatree(path, engine="h5netcdf")
    assert {"posterior", "sample_stats", "observed_data", "constant_data"} <= set(tree.children)
    data = np.load(f"{cfg['results']}/rotate-90/dataset.npz")
    np.testing.assert_array_equal(tree["observed_data"]["y"].values, data["y"])
    np.testing.assert_array_equal(tree["constant_data"]["X"].values, data["X"])
    stats = tree["sample_stats"]
    np.testing.assert_array_equal(stats["lp"].values, -1.0 * stats["energy"].values)
    with h5py.File(path, "r") as f:
        assert f.attrs["inference_library"] == "lossatlas"
        assert f.attrs["inference_library_version"] == lossatlas.__version__
        assert f.attrs["created_at"].endswith("+00:00")
    dt = arviz_base.convert_to_datatree(tree)
    assert dt["observed_data"]["y"].shape == (10,)
