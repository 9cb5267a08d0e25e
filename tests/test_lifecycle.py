"""Removing a killed snakemake's lock: only for a command that runs jobs."""

from __future__ import annotations

import json
import os
import socket

import pytest
from conftest import TEST_CONFIGS, make_workdir, output_of, run_snakemake

from lossatlas import lifecycle


@pytest.mark.parametrize(
    ("argv", "runs"),
    [
        ([], True),
        (["--profile", "profiles/default"], True),
        (["-n"], False),
        (["-np"], False),
        (["--dry-run", "--profile", "profiles/default"], False),
        (["--lint"], False),
        (["--report", "report.html"], False),
        (["--unlock"], False),
        (["--summary"], False),
        (["--rulegraph"], False),
    ],
)
def test_runs_jobs(argv, runs):
    assert lifecycle.runs_jobs(argv) is runs


def stale_lock(wd):
    """A lock left by a snakemake (pid 2**22 + 1, never alive) killed on this host."""
    locks = wd / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x")
    owner = {"host": socket.gethostname(), "pid": 2**22 + 1, "started": 1.0}
    (wd / ".snakemake" / "lossatlas-owners.json").write_text(json.dumps([owner]))
    return locks


def test_a_dry_run_leaves_a_stale_lock_and_a_run_removes_it(tmp_path):
    wd = make_workdir(tmp_path / "wd", TEST_CONFIGS / "small.yaml")
    locks = stale_lock(wd)
    for argv in (["-n"], ["--lint"]):
        proc = run_snakemake(wd, *argv, timeout=300)
        assert "removed the stale lock" not in proc.stderr, output_of(proc)
        assert list(locks.iterdir()), argv
    cwd = os.getcwd()
    os.chdir(wd)
    try:
        assert not lifecycle.clear_stale_snakemake_lock(["-n"])
        assert list(locks.iterdir())
        assert lifecycle.clear_stale_snakemake_lock(["--profile", "profiles/default"])
    finally:
        os.chdir(cwd)
    assert not list(locks.iterdir())
    owners = json.loads((wd / ".snakemake" / "lossatlas-owners.json").read_text())
    assert [o["pid"] for o in owners] == [os.getpid()]
