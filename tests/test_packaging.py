"""lossatlas outside its checkout: a plain (non-editable) install, and the workflow used as a
Snakemake module from another folder."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, output_of, run_snakemake


def test_a_wheel_ships_the_schema_and_works_outside_the_checkout(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(wheels), str(REPO)], capture_output=True, text=True
    )
    assert build.returncode == 0, output_of(build)
    (wheel,) = wheels.glob("lossatlas-*.whl")
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, output_of(install)
    assert (target / "lossatlas" / "profiles" / "slurm" / "config.yaml").is_file()
    code = (
        "import lossatlas, lossatlas.config as c; "
        "print(lossatlas.__file__); print(c.validate({})['sampler']['n_chains'])"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, output_of(run)
    where, n_chains = run.stdout.split()
    assert where.startswith(str(target)) and n_chains == "32"
    cli = subprocess.run(
        [sys.executable, "-m", "lossatlas.cli", "validate", str(REPO / "config" / "config.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0 and "valid" in cli.stdout, output_of(cli)


def test_the_workflow_runs_as_a_snakemake_module_from_another_folder(tmp_path):
    (tmp_path / "Snakefile").write_text(
        f"""configfile: "config.yaml"


module lossatlas:
    snakefile:
        "{REPO / "workflow" / "Snakefile"}"
    config:
        config


use rule * from lossatlas
"""
    )
    (tmp_path / "config.yaml").write_text(
        "experiments:\n  sweep:\n    rotate: [0, 90]\nsampler:\n  n_chains: 2\n"
        "  chains_per_batch: 1\n"
    )
    proc = run_snakemake(tmp_path, "-n", "--cores", "1", timeout=300)
    assert proc.returncode == 0, output_of(proc)
    out = proc.stdout + proc.stderr
    for job, count in (("sample", 2), ("census", 2), ("compare", 1), ("all", 1)):
        assert any(line.split() == [job, str(count)] for line in out.splitlines()), job
