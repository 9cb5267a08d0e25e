"""Helpers for tests that run the real workflow: run directories and snakemake subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

# test files that import JAX (pytest_collection_modifyitems runs them last)
JAX_TEST_FILES = ("test_jaxnet.py", "test_jax_backend.py", "test_jax_workflow.py")

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIGS = REPO / "tests" / "configs"
SMALL = TEST_CONFIGS / "small.yaml"
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


def _requirement_closure(root: str) -> set[str]:
    """Normalised names of ``root`` and every distribution it requires, recursively, with the
    extras each requirement asks for (not ``root``'s own extras)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, set[str]] = {}
    todo = [(root, set())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen and extras <= seen[key]:
            continue
        seen.setdefault(key, set()).update(extras)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in (extras or {""})
            ):
                todo.append((req.name, set(req.extras)))
    return set(seen)


def _top_level_modules(dist) -> set[str]:
    names = set()
    for f in dist.files or []:
        top = f.parts[0]
        if top.endswith((".dist-info", ".egg-info", ".data")) or top in ("..", "__pycache__"):
            continue
        names.add(top.split(".")[0] if top.endswith((".py", ".so", ".pth")) else top)
    return {n for n in names if n.isidentifier()}


def base_install_env(env: dict | None = None) -> dict[str, str]:
    """An environment whose Python processes import only what ``pip install -e .`` installs:
    modules of the test extra (and anything else outside lossatlas's requirements) fail to
    import, so a command that works here works after the README's first command alone."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    # a fresh venv brings pip (and on Python 3.11 setuptools) with it
    allowed = _requirement_closure("lossatlas") | {"pip", "setuptools"}
    ok, other = set(), set()
    for dist in metadata.distributions():
        mods = _top_level_modules(dist)
        (ok if canonicalize_name(dist.metadata["Name"]) in allowed else other).update(mods)
    env = dict(os.environ if env is None else env)
    env["LOSSATLAS_BLOCKED_MODULES"] = ",".join(sorted(other - ok))
    site = str(REPO / "tests" / "base_install")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, env.get("PYTHONPATH")]))
    return env


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


def dask_workers(job) -> list:
    """The LocalCluster worker processes of a sample job: forked by the forkserver the job
    started (lossatlas.sampling.cluster), so the job's grandchildren."""
    servers = [p for p in job.children() if "forkserver" in " ".join(p.cmdline())]
    return [w for server in servers for w in server.children()]


def runs_rule(process, rule: str) -> bool:
    """Whether ``process`` is a job of ``rule``: every rule runs workflow/scripts/step.py,
    in its own process or in a child of the run's warm interpreter (lossatlas.warm_jobs),
    and a job holds its own log, ``logs/.../<rule>.log``, open while it runs."""
    import psutil

    try:
        if not any(s in " ".join(process.cmdline()) for s in ("step.py", "lossatlas.warm_jobs")):
            return False
        return any(f.path.endswith(f"/{rule}.log") for f in process.open_files())
    except psutil.Error:
        return False


def output_of(proc: subprocess.CompletedProcess) -> str:
    return f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The whole DAG of tests/configs/small.yaml, with the README's command, importing only
    what the README's first command installs (no test extra); (folder, seconds)."""
    wd = make_workdir(tmp_path_factory.mktemp("small"), SMALL)
    t0 = time.monotonic()
    proc = run_snakemake(wd, env=base_install_env())
    assert proc.returncode == 0, output_of(proc)
    return wd, time.monotonic() - t0


@pytest.fixture(scope="session")
def cells_run(tmp_path_factory):
    """tests/configs/cells.yaml run through the cells rule (and what it needs)."""
    wd = make_workdir(tmp_path_factory.mktemp("cells"), TEST_CONFIGS / "cells.yaml")
    proc = run_snakemake(
        wd, "--profile", "profiles/default", "results/hidden-3/landscape/cells.csv"
    )
    assert proc.returncode == 0, output_of(proc)
    return wd


# ------------------------------------------------------------------------- the two test tiers

# What starts another process, a cluster or a browser: a test whose code, whose helpers in its
# module or whose fixtures (recursively) contain one of these is in the slow tier. One rule,
# applied at collection; a hand-written `slow` mark is left only on tests that are slow for
# their computing alone (a calibration over many seeds), with the reason beside it.
STARTS_PROCESSES = (
    "subprocess.",
    "run_snakemake(",
    "snakemake_cmd(",
    "Popen(",
    "LocalCluster(",
    "ProcessPoolExecutor(",
    "cluster.connect(",
    "lossatlas.sample(",
    "api.sample(",
    "engine.run_experiment(",
    'cli.main(["theory"',  # runs the theory configs' workflows
    "chromium",
)


def _source(obj) -> str:
    import inspect

    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _starts_processes(func, seen: set) -> bool:
    """Whether ``func`` or a function of its module that it names starts a process."""
    import ast
    import textwrap

    if func in seen:
        return False
    seen.add(func)
    text = _source(func)
    if any(token in text for token in STARTS_PROCESSES):
        return True
    try:
        tree = ast.parse(textwrap.dedent(text))
    except SyntaxError:
        return False
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    module_globals = getattr(func, "__globals__", {})
    return any(
        _starts_processes(module_globals[n], seen)
        for n in sorted(names)
        if callable(module_globals.get(n))
        and getattr(module_globals[n], "__module__", "").startswith(("test_", "conftest"))
    )


def pytest_collection_modifyitems(config, items):
    """Put every test that starts snakemake, a subprocess, a cluster or a browser (itself,
    through a helper of its module or through a fixture) in the slow tier."""
    slow = pytest.mark.slow
    for item in items:
        if item.get_closest_marker("slow"):
            continue
        funcs = [getattr(item, "function", None)]
        for defs in item._fixtureinfo.name2fixturedefs.values():
            funcs += [d.func for d in defs]
        seen: set = set()
        if any(f is not None and _starts_processes(f, seen) for f in funcs):
            item.add_marker(slow)
    # JAX starts threads when it is imported, and a fork after that (the diagnostics' process
    # pools) may deadlock: the tests that import it run last, after every fork of this process
    items.sort(key=lambda item: Path(str(item.fspath)).name in JAX_TEST_FILES)
