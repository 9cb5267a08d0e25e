"""Every command the README and the docs show works after the README's first command alone.

The commands run in the whole small run's folder (conftest.small_run) with the
interpreter made to look like a base install (conftest.base_install_env: the test extra's
modules fail to import). A README command this file does not run fails the first test, so a
new one cannot slip in untried. Covered elsewhere, as named: the install lines (.ci/run, from
scratch), the SLURM profile (tests/test_slurm.py, tests/test_profiles.py), the digits run
(too big for the suite: dry-run here, measured in benchmarks/README.md), the calibration run
(dry-run here; its case is run by tests/test_dimension.py), the theory checks
(tests/test_theory.py runs two of them by the same command) and the Snakemake module
(tests/test_packaging.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SMALL, base_install_env, output_of

from lossatlas import config as lacfg

README = (REPO / "README.md").read_text()
# the README and the docs it points to: every command either shows is tried
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
FIRST = lacfg.experiments(lacfg.validate(yaml.safe_load(SMALL.read_text())))
EXP_A, EXP_B = list(FIRST)[:2]

# README command -> how it runs here, or why it cannot run here and which test covers it
COMMANDS = {
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/snakemake": (
        "a fresh install needs the network and minutes: .ci/run installs from scratch; its "
        "snakemake part is `.venv/bin/snakemake` below, and tests/conftest.py's small_run runs "
        "it importing only what `pip install -e .` installs"
    ),
    'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/pytest': (
        "it is this test suite: .ci/run runs it from scratch"
    ),
    ".venv/bin/snakemake -n": [sys.executable, "-m", "snakemake", "-n"],
    ".venv/bin/snakemake": [sys.executable, "-m", "snakemake"],
    ".venv/bin/snakemake --report report.html": [
        *(sys.executable, "-m", "snakemake", "--report", "report.html"),
    ],
    ".venv/bin/snakemake results/rotate-120/samples.h5": [
        *(sys.executable, "-m", "snakemake", f"results/{EXP_B}/samples.h5"),
    ],
    ".venv/bin/lossatlas validate config/config.yaml": [
        str(BIN / "lossatlas"),
        *("validate", "config/config.yaml"),
    ],
    ".venv/bin/lossatlas summary results/rotate-0/samples.h5": [
        str(BIN / "lossatlas"),
        *("summary", f"results/{EXP_A}/samples.h5"),
    ],
    ".venv/bin/lossatlas verify results": [str(BIN / "lossatlas"), "verify", "results"],
    ".venv/bin/lossatlas prune results": [str(BIN / "lossatlas"), "prune", "results"],
    ".venv/bin/snakemake --configfile config/digits.yaml": [
        *(sys.executable, "-m", "snakemake", "-n", "--configfile"),
        str(REPO / "config" / "digits.yaml"),
    ],
    ".venv/bin/snakemake --configfile config/calibration.yaml": [
        *(sys.executable, "-m", "snakemake", "-n", "--configfile"),
        str(REPO / "config" / "calibration.yaml"),
    ],
    ".venv/bin/snakemake --configfile config/cells.yaml": [
        *(sys.executable, "-m", "snakemake", "-n", "--configfile"),
        str(REPO / "config" / "cells.yaml"),
    ],
    ".venv/bin/snakemake results-band/landscape/band.csv --configfile config/band.yaml": [
        *(sys.executable, "-m", "snakemake", "-n", "results-band/landscape/band.csv"),
        *("--configfile", str(REPO / "config" / "band.yaml")),
    ],
    ".venv/bin/python benchmarks/rule_memory.py results-digits": [
        *(sys.executable, str(REPO / "benchmarks" / "rule_memory.py"), "results"),
    ],
    '.venv/bin/pip install -e ".[jax,models,mnist1d]" && .venv/bin/snakemake --configfile '
    "config/mnist1d.yaml": (
        "installs the optional extras (the network) and samples for minutes: "
        "tests/test_jax_workflow.py runs the whole DAG of a smaller convolutional config on "
        "MNIST-1D (test_a_conv_net_runs_every_rule) with the extras .ci/run installs"
    ),
    "snakemake --profile slurm": (
        "needs the installed profile and a SLURM controller: tests/test_profiles.py dry-runs it "
        "as typed (test_slurm_command_dry_run), tests/test_slurm.py runs it on a real one-node "
        "SLURM"
    ),
    "lossatlas install-profile": (
        "writes into the user's ~/.config: tests/test_profiles.py runs it for a user whose home "
        "is a temporary folder (test_install_profile_keeps_a_users_own_profile)"
    ),
    "dask scheduler --protocol tls --host 10.1.2.3 --tls-ca-file ca.pem --tls-cert sched.pem "
    "--tls-key sched.key --scheduler-file ~/scheduler.json --dashboard-address 10.1.2.3:8787": (
        "a user's own scheduler on another host, with their certificates: tests/test_cluster.py "
        "starts a TLS scheduler on loopback and joins it by its file (test_scheduler_file_over_tls)"
    ),
    "dask worker --scheduler-file ~/scheduler.json --tls-ca-file ca.pem --tls-cert worker.pem "
    "--tls-key worker.key": (
        "its workers, on other hosts: tests/test_cluster.py's TLS scheduler has workers "
        "(test_scheduler_file_over_tls)"
    ),
    '.venv/bin/pytest -m "not slow"': (
        "the fast tier of this suite: .ci/run runs the whole suite, needing the test extra"
    ),
    ".venv/bin/lint-imports": (
        "needs the test extra (import-linter): tests/test_lint.py runs it (test_clean) and "
        ".ci/run before the tests"
    ),
    ".venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/snakefmt --check .": (
        "needs the test extra: tests/test_lint.py runs each of them (test_clean)"
    ),
    ".venv/bin/lossatlas theory": (
        "runs every config/theory/ workflow (minutes): tests/test_theory.py runs two of them by "
        "the same command (test_theory_configs_run_through_the_workflow)"
    ),
}


def readme_commands() -> list[str]:
    out = []
    text = "\n".join(p.read_text() for p in DOCS)
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(line.split("  #")[0].split())
            if command and not command.startswith("#"):
                out.append(command)
    return out


def test_every_readme_command_is_tried():
    missing = [c for c in readme_commands() if c not in COMMANDS]
    assert not missing, f"README commands no test runs (add them to COMMANDS): {missing}"
    assert set(COMMANDS) <= set(readme_commands()), "COMMANDS lists a command the README lost"
    for command, run in COMMANDS.items():  # each one run, or the reason it is not, with its test
        assert isinstance(run, list) or "test" in run, (command, run)


@pytest.mark.parametrize("readme", [c for c, run in COMMANDS.items() if isinstance(run, list)])
def test_readme_command_works_after_the_first_alone(small_run, readme):
    wd, _ = small_run
    proc = subprocess.run(
        COMMANDS[readme],
        cwd=wd,
        env=base_install_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, output_of(proc)
    text = proc.stdout + proc.stderr
    assert "outside the base install" not in text, text


def test_readme_python_snippets_work_after_the_first_alone(small_run):
    wd, _ = small_run
    snippet = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    assert "azs.summary" in snippet and "open_samples" in snippet
    code = snippet.replace("results/rotate-0/", f"results/{EXP_A}/")
    code += "\nprint(azs.summary(tree, var_names=['theta']).shape, dict(posterior.sizes))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=wd,
        env=base_install_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, output_of(proc)


def _lands_where() -> list[tuple[str, re.Pattern]]:
    """The README's "What lands where" list as (file pattern, regex), one per file it names."""
    block = README.split("## What lands where", 1)[1].split("```", 2)[1]
    out = []
    for line in block.strip("\n").splitlines():
        names = re.split(r"\s{2,}", line.strip())[0]
        first, *more = names.split(", ")
        folder = first.rsplit("/", 1)[0]
        for name in [first, *more]:
            name = name if "/" in name else f"{folder}/{name}"
            for path in _braces(name):
                rx = re.escape(path)
                for word, part in (("<exp>", "[^/]+"), ("<network>", "hidden-[^/]+"),
                                   ("<rule>", "[a-z_]+"), ("XXXX", r"\d{4}")):  # fmt: skip
                    rx = rx.replace(re.escape(word), part)
                out.append((path, re.compile(rx)))
    return out


def _braces(name: str) -> list[str]:
    m = re.search(r"\{([^}]*)\}", name)
    if not m:
        return [name]
    return [
        x
        for alt in m.group(1).split(",")
        for x in _braces(name[: m.start()] + alt + name[m.end() :])
    ]


# written only by some configs or after a repair (tests/test_cells.py, test_band.py,
# test_theory.py and test_workflow.py check those)
CONDITIONAL = ("cells.", "band.", "predict.", "checks.csv", "restored.json")


def test_what_lands_where_lists_every_file_a_run_writes(small_run):
    wd, _ = small_run
    listed = _lands_where()
    written = [
        str(p.relative_to(wd))
        for p in (wd / "results").rglob("*")
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".lock")
    ]
    unlisted = [f for f in written if not any(rx.fullmatch(f) for _, rx in listed)]
    assert not unlisted, f"files a run writes that the README does not list: {unlisted}"
    stale = [
        path
        for path, rx in listed
        if not any(rx.fullmatch(f) for f in written) and not any(c in path for c in CONDITIONAL)
    ]
    assert not stale, f"files the README lists that a run does not write: {stale}"
