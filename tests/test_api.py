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
