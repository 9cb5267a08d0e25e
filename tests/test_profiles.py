"""The run options Snakemake ends up with under each documented command.

Snakemake applies profiles/default as the workflow profile to every run from the checkout, on
top of any --profile, and its values win. The SLURM command therefore says
``--workflow-profile none``; these tests pin what each combination yields.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml
from conftest import REPO, TEST_CONFIGS, make_workdir, output_of, run_snakemake

SLURM_CMD = ["--profile", "profiles/slurm", "--workflow-profile", "none"]


def profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())


def parsed(wd, argv: list[str]):
    """snakemake's own parse of ``argv`` (profiles included), run in ``wd``."""
    from snakemake import cli

    cwd = os.getcwd()
    os.chdir(wd)
    try:
        return cli.parse_args(argv)[1]
    finally:
        os.chdir(cwd)


def option(name: str) -> str:
    return name.replace("-", "_")


SCALARS = ("jobs", "cores", "keep-going", "rerun-incomplete", "latency-wait", "retries")


@pytest.fixture
def wd(tmp_path):
    return make_workdir(tmp_path, TEST_CONFIGS / "small.yaml")


def test_slurm_command_gets_exactly_the_slurm_profile(wd, capsys):
    args = parsed(wd, SLURM_CMD)
    assert "workflow specific profile" not in capsys.readouterr().err
    want = profile("slurm")
    assert args.executor == "slurm"
    for key in SCALARS:
        assert getattr(args, option(key)) == want[key], key
    assert args.slurm_status_command == "squeue"
    assert args.set_threads["sample"].value == want["set-threads"]["sample"]
    sample = {k: r.value for k, r in args.set_resources["sample"].items()}
    assert sample == want["set-resources"]["sample"]


def test_without_the_flag_the_laptop_profile_would_win(wd, capsys):
    """Why the docs say --workflow-profile none: the default profile overrides the SLURM one."""
    args = parsed(wd, ["--profile", "profiles/slurm"])
    assert "workflow specific profile profiles/default" in capsys.readouterr().err
    assert args.keep_going is profile("default")["keep-going"] is False
    assert args.cores == os.cpu_count()  # `cores: all` of the submitting machine


def test_default_profile_alone_and_by_name(wd):
    for argv in ([], ["--profile", "profiles/default"]):
        args = parsed(wd, argv)
        assert args.executor in (None, "local") and args.cores == os.cpu_count()
        assert args.keep_going is False and args.rerun_incomplete is True


def test_slurm_command_dry_run(wd):
    """The whole DAG plans under the SLURM command without reaching a cluster."""
    proc = run_snakemake(wd, "-n", *SLURM_CMD)
    assert proc.returncode == 0, output_of(proc)
    text = proc.stdout + proc.stderr
    assert "Using profile profiles/slurm for setting" in text
    assert "workflow specific profile" not in text
    # each sample job gets the profile's threads, not the submitting machine's cores
    threads = re.findall(r"rule sample:.*?threads: (\d+)", text, flags=re.S)
    assert threads and set(threads) == {str(profile("slurm")["set-threads"]["sample"])}, text
