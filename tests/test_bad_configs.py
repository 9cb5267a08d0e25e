"""Every config of tests/configs/bad/corpus.yaml is refused before any job runs, with one line
that names the field first; the workflow writes nothing."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os

import pytest
import yaml
from conftest import REPO, TEST_CONFIGS, make_workdir, output_of, run_snakemake

from lossatlas import config as lacfg
from lossatlas import preflight
from lossatlas.sampling import cuda

CORPUS = yaml.safe_load((TEST_CONFIGS / "bad" / "corpus.yaml").read_text())
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def merge(base: dict, over: dict) -> dict:
    """``over`` merged into ``base``; a sweep replaces the default sweep as a whole."""
    out = dict(base)
    for k, v in over.items():
        nested = isinstance(v, dict) and isinstance(base.get(k), dict) and k != "sweep"
        out[k] = merge(base[k], v) if nested else v
    return out


def applies(case: dict) -> bool:
    """Whether ``case`` is refused for its own field here: a case that needs no GPU skips
    where one is, and one for the JAX backend where JAX is missing (its absence is then
    what the config is refused for, as it should be)."""
    if case.get("needs") == "no_gpu" and cuda.unavailable() is None:
        return False
    jax = case["config"].get("sampler", {}).get("backend") == "jax"
    return not jax or importlib.util.find_spec("jax") is not None


CASES = [c for c in CORPUS if applies(c)]


def test_the_corpus_is_large_and_names_every_field_once_per_fault():
    assert len(CORPUS) >= 60
    assert all(set(c) <= {"field", "config", "needs"} for c in CORPUS)


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['field']}" for i, c in enumerate(CASES)])
def test_refused_with_the_field_named(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the disk estimate looks at results/ under the working directory
    with pytest.raises(lacfg.ConfigError) as err:
        preflight.check(lacfg.validate(merge(DEFAULT, case["config"])), local=True)
    message = str(err.value)
    assert message.startswith(f"invalid config: {case['field']}: "), message
    assert "\n" not in message


def _run(case: dict, where) -> str | None:
    """What is wrong with a real run of ``case``, or None."""
    wd = make_workdir(where, merge(DEFAULT, case["config"]))
    before = set(os.listdir(wd))
    proc = run_snakemake(wd, "--profile", "profiles/default", timeout=300)
    text = proc.stdout + proc.stderr
    errors = [line for line in text.splitlines() if "invalid config" in line]
    if proc.returncode == 0 or len(errors) != 1:
        return f"not refused with one line: {output_of(proc)}"
    if not errors[0].startswith(f"invalid config: {case['field']}: "):
        return f"names another field: {errors[0]}"
    if "Traceback" in text:
        return f"a traceback: {output_of(proc)}"
    # Nothing of the workflow's; snakemake itself opens .snakemake/log/ before it reads the
    # Snakefile, and that is all it may leave.
    left = set(os.listdir(wd)) - before
    if left - {".snakemake"} or (
        (wd / ".snakemake").exists() and os.listdir(wd / ".snakemake") != ["log"]
    ):
        return f"wrote {sorted(left)}"
    return None


def test_real_runs_write_nothing(tmp_path):
    """Each config through `snakemake --profile profiles/default` (a real run, not a dry run,
    so a config that slipped through would start jobs and write results/)."""
    with concurrent.futures.ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 1))) as pool:
        found = pool.map(lambda ic: _run(ic[1], tmp_path / str(ic[0])), enumerate(CASES))
        faults = {
            f"{i}-{c['field']}": f for (i, c), f in zip(enumerate(CASES), found, strict=True) if f
        }
    assert not faults, faults


def test_nested_command_line_values_are_read_as_the_schema_says():
    """`--config sampler='{n_chains: 64}'` reaches the config as strings inside a mapping:
    numbers, integers, booleans and null are read as such; a word where a number belongs is
    still refused, naming the field."""
    given = {"sampler": {"n_chains": "64", "step_size": "0.5", "until": "null"}, "seed": "7"}
    cfg = lacfg.validate(given, command_line=given)
    assert cfg["sampler"]["n_chains"] == 64 and cfg["sampler"]["step_size"] == 0.5
    assert cfg["sampler"]["until"] is None and cfg["seed"] == 7
    dash = {"dask": {"dashboard": "false"}}
    assert lacfg.validate(dash, command_line=dash)["dask"]["dashboard"] is False
    for word in ("many", "true"):  # a boolean is no count
        bad = {"sampler": {"n_chains": word}}
        with pytest.raises(lacfg.ConfigError, match=f"sampler.n_chains: '{word}'"):
            lacfg.validate(bad, command_line=bad)
    # a config file's quoted number stays a string, and is refused
    with pytest.raises(lacfg.ConfigError, match="sampler.n_chains: '64'"):
        lacfg.validate({"sampler": {"n_chains": "64"}, "seed": "7"}, command_line={"seed": "7"})


def test_a_nested_command_line_value_runs(tmp_path):
    """The documented one-off override, through Snakemake: planned with 2 batches of 2."""
    wd = make_workdir(tmp_path, TEST_CONFIGS / "small.yaml")
    proc = run_snakemake(wd, "-n", "--config", "sampler={n_chains: 8, chains_per_batch: 4}")
    assert proc.returncode == 0, output_of(proc)
    assert "invalid config" not in output_of(proc)
