"""Networks other than the MLP through the workflow: a convolutional network (model.layers)
runs every rule, and a user's model (model.python) is checked before any job and diagnosed
without canonical parameters. Needs the jax and mnist1d extras."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import TEST_CONFIGS, make_workdir, output_of, run_snakemake

pytest.importorskip("jax")
pytest.importorskip("mnist1d")

from lossatlas.storage.store import SampleStore  # noqa: E402

CONV = TEST_CONFIGS / "conv.yaml"
EXPS = ("label_noise-0", "label_noise-0.5")

USER_CNN = """
import jax
import jax.numpy as jnp
import numpy as np


def _apply(params, X):
    x = X[:, None, :]  # (n, 1 channel, 40)
    h = jax.lax.conv_general_dilated(x, params["conv"]["w"], (3,), "VALID")
    h = jnp.tanh(h + params["conv"]["b"][None, :, None]).reshape(X.shape[0], -1)
    return h @ params["out"]["W"].T + params["out"]["b"]


def cnn():
    rng = np.random.default_rng(0)
    return _apply, {
        "conv": {"w": rng.normal(size=(2, 1, 5)), "b": np.zeros(2)},
        "out": {"W": rng.normal(size=(10, 24)), "b": np.zeros(10)},
    }


def wrong_width():
    return (lambda p, X: X[:, :3] * p["w"]), {"w": np.ones(3)}
"""


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    wd = make_workdir(tmp_path_factory.mktemp("conv"), CONV)
    proc = run_snakemake(wd, "--cores", "2", timeout=900)
    assert proc.returncode == 0, output_of(proc)
    return wd / "results"


def test_a_conv_net_runs_every_rule(conv_run):
    """Every rule's outputs exist, the store names the conv parameters, the canonical
    parameters are judged, the draws are scored on test sequences, and the label-noise
    experiment is compared with the reference (no input transform to map)."""
    findings = json.loads((conv_run / "findings.json").read_text())
    assert [e["experiment"] for e in findings["experiments"]] == list(EXPS)
    with SampleStore(conv_run / EXPS[0] / "samples.h5") as store:
        names = store.param_names
        assert store.theta.shape == (4, 50, 262)
    assert names[:2] == ["conv1.w[0,0,0]", "conv1.w[0,0,1]"] and names[-1] == "dense3.b[9]"
    for exp in EXPS:
        inv = json.loads((conv_run / exp / "diagnostics" / "invariant.json").read_text())
        assert inv["canonical parameters"]["n"] == 262 and "note" not in inv["canonical parameters"]
        # output_points: 10 of the 60 points, 10 classes each
        assert inv["outputs on the data"]["n"] == 100
        for table in ("census.csv", "connect.csv", "dimension.csv", "hessian.csv"):
            assert (conv_run / exp / "landscape" / table).exists(), (exp, table)
        # the conv net's draws on 200 of MNIST-1D's test sequences, 20 draws of each chain
        predicted = json.loads((conv_run / exp / "landscape" / "predict.json").read_text())
        assert predicted["n_test"] == 200 and predicted["all"]["n_draws"] == 4 * 20
        assert 0 <= predicted["all"]["ensemble_accuracy"] <= 1
    analyses = {a["analysis"] for a in findings["experiments"][0]["analyses"]}
    assert "posterior predictive on test points" in analyses
    compare = pd.read_csv(conv_run / "landscape" / "compare.csv")
    assert set(compare["experiment"]) == {EXPS[1]}


@pytest.fixture
def user_model_dir(tmp_path):
    (tmp_path / "user_cnn.py").write_text(USER_CNN)
    return tmp_path


def _user_config(model: str) -> dict:
    cfg = yaml.safe_load(CONV.read_text())
    cfg["model"] = {"python": model}
    cfg["experiments"] = {"sweep": {"label_noise": [0.0]}}
    return cfg


def test_validate_explains_a_broken_user_model_in_one_line(user_model_dir):
    config = user_model_dir / "broken.yaml"
    config.write_text(yaml.safe_dump(_user_config("user_cnn:wrong_width")))
    proc = subprocess.run(
        [sys.executable, "-m", "lossatlas.cli", "validate", str(config)],
        capture_output=True,
        text=True,
        cwd=user_model_dir,
        env={**os.environ, "PYTHONPATH": str(user_model_dir)},
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"{config}: invalid config: model.python: user_cnn:wrong_width: outputs of shape "
        "(2, 3) on 2 points; the data needs (2, 10)"
    )


def test_a_users_model_is_diagnosed_on_u_and_outputs(user_model_dir):
    """A user's network has no known symmetry group: its canonical parameters are reported
    as not available, and the verdict is judged on U and the outputs on the data."""
    wd = make_workdir(user_model_dir / "run", _user_config("user_cnn:cnn"))
    env = {**os.environ, "PYTHONPATH": str(user_model_dir)}
    target = "results/label_noise-0/diagnostics/invariant.json"
    proc = run_snakemake(wd, "--cores", "2", target, timeout=600, env=env)
    assert proc.returncode == 0, output_of(proc)
    inv = json.loads((wd / target).read_text())
    assert inv["canonical parameters"]["n"] == 0
    assert inv["canonical parameters"]["note"].startswith("not available")
    with SampleStore(wd / "results" / "label_noise-0" / "samples.h5") as store:
        assert store.param_names[:2] == ["conv.b[0]", "conv.b[1]"]
        assert store.theta.shape[2] == 262
