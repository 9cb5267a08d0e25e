"""The run options Snakemake ends up with under each documented command.

Snakemake applies profiles/default as the workflow profile to every run from the checkout, on
top of any --profile, and its values win. Its laptop settings apply only when the command runs
its jobs here (snakemake_profiles.runs_locally), so `snakemake` runs on this machine and
`snakemake --profile slurm` (after `lossatlas install-profile`) gets the SLURM profile whole.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import (
    REPO,
    TEST_CONFIGS,
    install_slurm_profile,
    make_workdir,
    output_of,
    run_snakemake,
    user_config_env,
)
from snakemake_executor_plugin_slurm.partitions import get_job_cpu_requirement

from lossatlas import snakemake_profiles

SLURM_CMD = ["--profile", "slurm"]
SCALARS = ("jobs", "cores", "keep-going", "rerun-incomplete", "latency-wait", "retries")


def slurm_profile() -> dict:
    return yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())


@pytest.fixture
def wd(tmp_path):
    return make_workdir(tmp_path / "wd", TEST_CONFIGS / "small.yaml")


@pytest.fixture
def user(tmp_path, monkeypatch):
    """A user with the SLURM profile installed; this process sees their config folder."""
    env = install_slurm_profile(tmp_path / "home")
    for key in ("HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(key, env[key])
    return env


def parsed(wd, argv: list[str], monkeypatch):
    """snakemake's own parse of ``argv`` (profiles included), run in ``wd`` as its command line."""
    from snakemake import cli

    monkeypatch.chdir(wd)
    monkeypatch.setattr(sys, "argv", ["snakemake", *argv])
    return cli.parse_args(argv)[1]


def option(name: str) -> str:
    return name.replace("-", "_")


@pytest.mark.parametrize("argv", [SLURM_CMD, ["--profile", "profiles/slurm"]])
def test_slurm_command_gets_exactly_the_slurm_profile(wd, user, argv, monkeypatch):
    args = parsed(wd, argv, monkeypatch)
    want = slurm_profile()
    assert args.executor == "slurm"
    for key in SCALARS:  # none from the laptop settings: cores is the profile's, not this box's
        assert getattr(args, option(key)) == want[key], key
    assert args.slurm_status_command == "squeue"
    assert args.scheduler == "greedy"  # the workflow profile's, under every other profile
    assert {k: v.value for k, v in args.set_threads.items()} == want["set-threads"]
    sample = {k: r.value for k, r in args.set_resources["sample"].items()}
    assert sample == want["set-resources"]["sample"]


def test_laptop_commands_get_the_laptop_settings(wd, monkeypatch):
    for argv in ([], ["--profile", "profiles/default"], ["-n"]):
        args = parsed(wd, argv, monkeypatch)
        assert args.executor in (None, "local") and args.cores == os.cpu_count()
        assert args.keep_going is False and args.rerun_incomplete is True
        assert args.latency_wait == 10
        assert args.scheduler == "greedy"  # no CBC solver process per scheduling round


@pytest.mark.parametrize(
    ("argv", "local"),
    [
        ([], True),
        (["-n", "--profile", "profiles/default"], True),
        (["--executor", "slurm"], False),
        (["-e", "local"], True),
        (SLURM_CMD, False),
        (["--profile", "profiles/slurm"], False),
    ],
)
def test_runs_locally(user, argv, local, monkeypatch):
    monkeypatch.chdir(REPO)
    assert snakemake_profiles.runs_locally(argv) is local


def test_slurm_command_dry_run(wd, user):
    """`snakemake --profile slurm` as typed plans the whole DAG for SLURM: every job asks SLURM
    (the plugin's own rule) for the CPUs of its threads, the sample job gets the profile's
    threads and resources, and no laptop value (this machine's cores) caps a job."""
    proc = run_snakemake(wd, "-n", *SLURM_CMD, env=user)
    assert proc.returncode == 0, output_of(proc)
    text = proc.stdout + proc.stderr
    assert "Using profiles slurm and workflow specific profile profiles/default" in text
    jobs = re.findall(
        r"^rule (\w+):\n(?:    .*\n)*?(?:    threads: (\d+)\n)?    resources: (.*)$",
        text,
        flags=re.M,
    )
    want = slurm_profile()
    seen = {}
    for rule, threads, resources in jobs:
        res = dict(kv.split("=", 1) for kv in resources.split(", "))
        job = type("Job", (), {"threads": int(threads or 1), "resources": res})()
        cpus, kind = get_job_cpu_requirement(job)
        assert kind == "task" and cpus == job.threads, (rule, threads, resources)
        seen[rule] = (job.threads, int(res["mem_mb"]), int(res["runtime"]))
    assert seen["sample"] == (
        want["set-threads"]["sample"],
        want["set-resources"]["sample"]["mem_mb"],
        want["set-resources"]["sample"]["runtime"],
    )
    assert seen["diagnose"][0] == want["set-threads"]["diagnose"] > os.cpu_count()
    assert {"dataset", "sample", "diagnose", "reduce", "census", "compare"} <= set(seen)


def test_install_profile_keeps_a_users_own_profile(tmp_path):
    env = install_slurm_profile(tmp_path / "home")
    installed = tmp_path / "home" / ".config" / "snakemake" / "slurm" / "config.yaml"
    assert installed.read_text() == (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    cmd = [sys.executable, "-m", "lossatlas.cli", "install-profile"]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "up to date" in again.stdout
    installed.write_text("executor: slurm\njobs: 3\n")
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert installed.read_text() == "executor: slurm\njobs: 3\n"
    forced = subprocess.run([*cmd, "--force"], env=env, capture_output=True, text=True)
    assert forced.returncode == 0, output_of(forced)
    assert installed.with_name("config.yaml.bak").read_text() == "executor: slurm\njobs: 3\n"
    assert "jobs: 20" in installed.read_text()


def test_without_the_install_the_error_says_what_to_do(wd, tmp_path):
    """Before the one-time step Snakemake cannot find `slurm`; its own message names the folders
    it searched, which docs/cluster.md explains."""
    home = tmp_path / "empty-home"
    home.mkdir()
    proc = run_snakemake(wd, "-n", *SLURM_CMD, env=user_config_env(home), timeout=120)
    assert proc.returncode != 0 and "profile" in (proc.stdout + proc.stderr).lower()
