"""Helpers for tests that run the real workflow: run directories and snakemake subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIGS = REPO / "tests" / "configs"
# What a run directory links from the checkout; config/ and everything written are its own.
WORKFLOW_PARTS = ("Snakefile", "workflow", "profiles", "envs")


def make_workdir(path: Path, config: Path | dict) -> Path:
    """A directory laid out like a checkout, with ``config`` as its config/config.yaml.

    The workflow itself is symlinked, so the run uses this checkout's rules and scripts while
    results/, logs/ and .snakemake/ land in ``path``.
    """
    path.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_PARTS:
        (path / name).symlink_to(REPO / name)
    (path / "config").mkdir()
    target = path / "config" / "config.yaml"
    if isinstance(config, dict):
        target.write_text(yaml.safe_dump(config, sort_keys=False))
    else:
        shutil.copyfile(config, target)
    return path


def snakemake_cmd(*args: str) -> list[str]:
    """snakemake of the running interpreter's environment (the one lossatlas is installed in)."""
    return [sys.executable, "-m", "snakemake", *args]


def run_snakemake(
    workdir: Path, *args: str, timeout: float = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_cmd(*args),
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def user_config_env(home: Path) -> dict[str, str]:
    """The environment of a user whose home (and Snakemake's profile folder) is ``home``."""
    return {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}


def install_slurm_profile(home: Path) -> dict[str, str]:
    """Do the documented one-time step (`lossatlas install-profile`) for a user whose home is
    ``home``; returns that user's environment."""
    home.mkdir(parents=True, exist_ok=True)
    return install_profile_for(user_config_env(home))


def install_profile_for(env: dict[str, str]) -> dict[str, str]:
    """`lossatlas install-profile` in the environment ``env``; returns ``env``."""
    proc = subprocess.run(
        [sys.executable, "-m", "lossatlas.cli", "install-profile"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, output_of(proc)
    return env


def output_of(proc: subprocess.CompletedProcess) -> str:
    return f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
