"""The Snakemake workflow, run for real: dry runs, config errors, a whole small run, resume.

Every test runs `python -m snakemake` in its own directory laid out like a checkout
(conftest.make_workdir), so results/ and .snakemake/ never touch the repository.
"""

from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
import yaml
from conftest import (
    REPO,
    SMALL,
    TEST_CONFIGS,
    dask_workers,
    make_workdir,
    output_of,
    run_snakemake,
    runs_rule,
    snakemake_cmd,
)

from lossatlas import config as lacfg
from lossatlas import warm_jobs
from lossatlas.storage import store

DEFAULT_CONFIG = REPO / "config" / "config.yaml"
PROFILES = sorted(p.name for p in (REPO / "profiles").iterdir() if (p / "config.yaml").is_file())


def job_counts(text: str) -> dict[str, int]:
    """The 'job count' table of a dry run, as {rule: count}."""
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def expected_jobs(cfg_path: Path) -> dict[str, int]:
    cfg = lacfg.validate(yaml.safe_load(cfg_path.read_text()))
    n = len(lacfg.experiments(cfg))
    jobs = {"dataset": n, "sample": n, "diagnose": n, "reduce": n, "figures": 1, "all": 1}
    jobs["findings"] = 1
    jobs.update(dataset_figure=n, dimension=n, census=n, connect=n, hessian=n)
    # one uniform pipeline null per network
    jobs["pipeline_null"] = len({tuple(lacfg.hidden_of(cfg, e)) for e in lacfg.experiments(cfg)})
    if n > 1:
        jobs["compare"] = 1
    cells = sum(lacfg.cells_unmet(cfg, name) is None for name in lacfg.experiments(cfg))
    if cells:
        jobs["cells"] = cells
    if lacfg.band_unmet(cfg) is None:
        jobs.update(critical_points=n, band=1)
    if cfg["predict"]["n_test"]:
        jobs["predict"] = n
    return jobs


# ----------------------------------------------------------------------------- the config

SCHEMA = lacfg.load_schema()


def schema_fields(node: dict, path: tuple = ()):
    """Every leaf field of the schema as a path tuple (objects without properties are leaves)."""
    for name, sub in node.get("properties", {}).items():
        if sub.get("type") == "object" and sub.get("properties"):
            yield from schema_fields(sub, (*path, name))
        else:
            yield (*path, name)


@pytest.mark.parametrize(
    "sweep",
    [
        {"rotate": [0, 120, 240]},
        {"rotate": list(range(0, 360, 7)), "scale": [1.0, 1.5, 2]},
        {"hidden": [[2], [2, 3]], "label_noise": [0.1, 0.25], "reflect": [0, 45]},
    ],
)
def test_experiment_names_and_widths_come_from_the_sweep_alone(sweep):
    """The workflow's wildcard pattern matches exactly the experiments' names (nothing
    else), and hidden_of reads each experiment's widths off its name as experiments() has them."""
    cfg = lacfg.validate({"experiments": {"sweep": sweep}})
    pattern, exps = lacfg.experiment_pattern(cfg), lacfg.experiments(cfg)
    assert all(re.fullmatch(pattern, name) for name in exps)
    near = [n + "0" for n in exps] + [n.replace("-", "--", 1) for n in exps] + ["landscape"]
    assert not any(re.fullmatch(pattern, name) for name in near if name not in exps)
    for name, e in exps.items():
        assert lacfg.hidden_of(cfg, name) == list(e.hidden or cfg["model"]["hidden"])


def test_default_config_is_the_schema_defaults():
    """config/config.yaml writes the defaults out: same run as an empty config."""
    assert lacfg.validate(yaml.safe_load(DEFAULT_CONFIG.read_text())) == lacfg.validate({})


def test_config_readme_documents_every_field():
    text = (REPO / "config" / "README.md").read_text()
    sections = {
        m[1]: text[m.end() : text.find("\n### ", m.end())]
        for m in re.finditer(r"^### `?([\w ]+?)`?(?::.*)?$", text, re.M)
    }
    missing = []
    for path in schema_fields(SCHEMA):
        where = sections.get(path[0]) if len(path) > 1 else sections.get("Top level")
        rest = path[1:] or path
        # sweep's keys are transform names, documented inside the sweep row
        name = rest[-1] if path[:2] == ("experiments", "sweep") else ".".join(rest)
        if where is None or f"`{name}`" not in where:
            missing.append(".".join(path))
    assert not missing, f"config/README.md does not document: {', '.join(missing)}"


def test_conda_env_pins_every_dependency():
    """envs/lossatlas.yaml (for --sdm conda) pins each runtime dependency and installs the repo."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs" / "lossatlas.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = {line.split("==")[0].lower() for line in pip if "==" in line}
    wanted = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in deps}
    assert wanted <= pinned, f"not pinned in envs/lossatlas.yaml: {sorted(wanted - pinned)}"
    assert "-e ../.." in pip


# ----------------------------------------------------------------------------- dry runs


def test_dry_run_default_config(tmp_path):
    wd = make_workdir(tmp_path, DEFAULT_CONFIG)
    proc = run_snakemake(wd, "-n")
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc.stdout + proc.stderr) == expected_jobs(DEFAULT_CONFIG)
    assert not (wd / "results").exists() and not (wd / "logs").exists()


def test_another_config_file_cannot_overwrite_a_run(tmp_path):
    """The first run that executes a job records its config file in results/; a run of another
    file into that folder is refused before any job, naming a folder of its own, while a rerun
    of the same file with a changed value goes ahead."""
    wd = make_workdir(tmp_path, SMALL)
    first = next(iter(lacfg.experiments(lacfg.validate(yaml.safe_load(SMALL.read_text())))))
    proc = run_snakemake(wd, "-c1", f"results/{first}/dataset.npz")
    assert proc.returncode == 0, output_of(proc)
    record = json.loads((wd / "results" / "configfiles.json").read_text())
    assert record == {"configfiles": ["config/config.yaml"]}
    (wd / "mine.yaml").write_text("seed: 7\n")
    before = {p: p.stat().st_mtime_ns for p in (wd / "results").rglob("*")}
    refused = run_snakemake(wd, "-c1", "--configfile", "mine.yaml")
    assert refused.returncode != 0
    assert (
        "results: results/ holds the results of config/config.yaml; this run of mine.yaml "
        "would overwrite them" in output_of(refused)
    )
    assert "--config results=results-mine" in output_of(refused)
    assert {p: p.stat().st_mtime_ns for p in (wd / "results").rglob("*")} == before
    assert not (wd / "results-mine").exists()
    ok = run_snakemake(wd, "-n", "--configfile", "mine.yaml", "--config", "results=results-mine")
    assert ok.returncode == 0, output_of(ok)
    again = run_snakemake(wd, "-n", "--config", "seed=7")
    assert again.returncode == 0, output_of(again)


def test_a_users_config_file_plans_what_validate_lists(tmp_path):
    """`snakemake --configfile mine.yaml` plans exactly the experiments `lossatlas validate
    mine.yaml` lists: the shipped config's sweep is not merged into the user's."""
    wd = make_workdir(tmp_path, DEFAULT_CONFIG)
    mine = {
        "dataset": {"generator": "circles", "n_points": 20},
        "model": {"hidden": [3, 2], "activation": "sigmoid"},
        "experiments": {"sweep": {"reflect": [0, 45], "scale": [1.0, 1.5]}},
        "sampler": {"kind": "hmc", "tempering": {"n_temps": 3}, "until": {"r_hat": 1.01}},
        "results": "results-mine",
    }
    (wd / "mine.yaml").write_text(yaml.safe_dump(mine))
    shown = subprocess.run(
        [sys.executable, "-m", "lossatlas.cli", "validate", "mine.yaml"],
        cwd=wd,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, output_of(shown)
    listed = re.search(r"experiments: 4 \((.*)\), reference", shown.stdout).group(1).split(", ")
    assert "tempering: 3 temperatures" in shown.stdout and "hmc (numba)" in shown.stdout
    assert "stops: at the first checkpoint" in shown.stdout
    plan = run_snakemake(wd, "-n", "--configfile", "mine.yaml")
    assert plan.returncode == 0, output_of(plan)
    planned = set(re.findall(r"results-mine/([^/\s]+)/samples\.h5", plan.stdout))
    assert planned == set(listed), (planned, listed)
    assert job_counts(plan.stdout)["sample"] == 4


def test_catalog_test_config_is_the_small_one():
    """The workflow catalog draws the rule graph from .test/ (snakemake --directory .test)."""
    catalog = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    assert catalog == yaml.safe_load(SMALL.read_text())


def test_catalog_draws_the_rule_graph(tmp_path):
    proc = subprocess.run(
        snakemake_cmd("--directory", ".test", "--rulegraph"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, output_of(proc)
    assert proc.stdout.startswith("digraph") and 'label = "sample"' in proc.stdout


# test configs that need an optional extra: they are refused, by design, where it is missing
EXTRAS_OF = {"conv": ("jax", "mnist1d")}


@pytest.mark.parametrize("config", sorted(TEST_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_dry_run_test_configs(tmp_path, config):
    missing = [m for m in EXTRAS_OF.get(config.stem, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{config.name} needs {', '.join(missing)}: pip install -e '.[jax,mnist1d]'")
    wd = make_workdir(tmp_path, config)
    proc = run_snakemake(wd, "-n")
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc.stdout + proc.stderr) == expected_jobs(config)


@pytest.mark.parametrize("profile", PROFILES)
def test_dry_run_profiles(tmp_path, profile):
    """A dry run plans the jobs under every profile without reaching any cluster."""
    wd = make_workdir(tmp_path, DEFAULT_CONFIG)
    proc = run_snakemake(wd, "-n", "--profile", f"profiles/{profile}")
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc.stdout + proc.stderr) == expected_jobs(DEFAULT_CONFIG)


# ----------------------------------------------------------------------------- a whole run


def test_small_run_writes_every_output(small_run):
    wd, seconds = small_run
    cfg = lacfg.validate(yaml.safe_load(SMALL.read_text()))
    names = list(lacfg.experiments(cfg))
    for name in names:
        d = wd / "results" / name
        for rel in (
            "dataset.npz",
            "samples.h5",
            "diagnostics/summary.csv",
            "diagnostics/normality.csv",
            "diagnostics/convergence.json",
            "reduce/reduction.h5",
            "reduce/summary.json",
        ):
            assert (d / rel).stat().st_size > 0, d / rel
        for png in ("trace_U.png", "rank_U.png", "rhat.png"):
            assert (d / "diagnostics" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # The batch files are the resume state: present, and not Snakemake outputs.
        assert len(list((d / "chains").glob("batch-*.h5"))) == 2
        summary = json.loads((d / "reduce" / "summary.json").read_text())
        assert summary["n_chains"] * summary["n_draws"] == 4 * 300
        # 1200 draws > max_exact = 1000: the kernel must have been approximated, and say so.
        assert "nystroem" in json.dumps(summary["kpca"]).lower()
        log = (wd / "results" / "logs" / name / "sample.log").read_text()
        # progress lines (with an ETA) only when a checkpoint moved between two reports; the
        # final line always gives the rate
        assert "Dask dashboard" in log and "draws/s (" in log
    for fig in ("fig1_datasets.png", "fig2_good_minima.png"):
        assert (wd / "results" / "figures" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # "a couple of minutes" on 2 cores, with margin for a loaded machine
    assert seconds < 300, f"the small run took {seconds:.0f} s"


def test_small_run_records_every_jobs_peak_memory(small_run):
    import importlib.util

    wd, _ = small_run
    spec = importlib.util.spec_from_file_location(
        "rule_memory", REPO / "benchmarks" / "rule_memory.py"
    )
    rule_memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule_memory)
    table = rule_memory.rows(wd / "results")
    jobs = {(r["rule"], r["experiment"]) for r in table}
    names = list(lacfg.experiments(lacfg.validate(yaml.safe_load(SMALL.read_text()))))
    for name in names:
        for rule in ("dataset", "sample", "diagnose", "reduce", "dimension", "census"):
            assert (rule, name) in jobs, (rule, name, sorted(jobs))
    assert ("figures", "") in jobs
    for r in table:
        # every job logged its own peak, and a Python job with numpy loaded is tens of MB
        assert 30 < r["tree_peak_mb"] < 2048 and r["process_peak_mb"] > 30, r
        assert r["peak_mb"] >= r["tree_peak_mb"], r
    assert rule_memory.main([str(wd / "results"), "--limit-mb", "2048"]) == 0
    assert rule_memory.main([str(wd / "results"), "--limit-mb", "1"]) == 1


def test_small_run_forks_every_job_from_one_warm_interpreter(small_run):
    wd, _ = small_run
    logs = sorted((wd / "results" / "logs").rglob("*.log"))
    servers = set()
    for log in logs:
        started = re.findall(r"job for .* started \(pid \d+(.*)\)", log.read_text())
        assert len(started) == 1, (log, started)
        found = re.fullmatch(r", forked from the run's warm interpreter, pid (\d+)", started[0])
        assert found, (log, started)
        servers.add(found[1])
    assert len(logs) > 10 and len(servers) == 1, servers


def test_small_run_store_opens_with_named_dims(small_run):
    import xarray as xr

    wd, _ = small_run
    path = wd / "results" / "rotate-0" / "samples.h5"
    with xr.open_dataset(path, group="posterior", engine="h5netcdf") as post:
        theta = next(iter(post.data_vars.values()))
        assert theta.dims[:2] == ("chain", "draw") and theta.shape[:2] == (4, 300)
    with xr.open_dataset(path, group="sample_stats", engine="h5netcdf") as stats:
        assert "energy" in stats and stats["energy"].dims == ("chain", "draw")


def test_small_run_is_up_to_date_and_reports(small_run):
    wd, _ = small_run
    proc = run_snakemake(wd, "-n")
    assert proc.returncode == 0, output_of(proc)
    assert "Nothing to be done" in proc.stdout + proc.stderr, output_of(proc)
    proc = run_snakemake(wd, "--report", "report.html")
    assert proc.returncode == 0, output_of(proc)
    html = (wd / "report.html").read_text(errors="replace")
    assert "fig2_good_minima.png" in html and "summary.csv" in html


def _tool(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_first_page_states_the_findings_of_the_run(small_run):
    """The landing page is the findings (one short block per experiment), and the report
    describes the run as it was made: a config edited since (good_threshold 0.3) changes
    neither the landing page nor the captions, which keep the run's 0.5."""
    wd, _ = small_run
    names = list(lacfg.experiments(lacfg.validate(yaml.safe_load(SMALL.read_text()))))
    page = (wd / "results" / "findings.rst").read_text()
    assert page.startswith("Findings\n") and len(page.splitlines()) <= 6 + 7 * len(names)
    for name in names:
        assert f"- **{name}**: " in page
    cfg_file = wd / "config" / "config.yaml"
    original = cfg_file.read_text()
    try:
        cfg = yaml.safe_load(original)
        cfg["target"]["good_threshold"] = 0.3
        cfg_file.write_text(yaml.safe_dump(cfg))
        proc = run_snakemake(wd, "--report", "findings-report.html")
    finally:
        cfg_file.write_text(original)
    assert proc.returncode == 0, output_of(proc)
    html = (wd / "findings-report.html").read_text(errors="replace")
    assert "findings.html" in html and "draws good" in html
    assert re.search(r"loss below\s+0\.5\b", html) and not re.search(r"below\s+0\.3\b", html)
    shot = _tool("report_screenshot")
    if shot.chromium() is None:
        pytest.skip("no Chromium here: the rendered page was not checked")
    lines = shot.landing_text(shot.render(wd / "findings-report.html", wd / "landing.png"))
    assert lines[0] == "Findings", lines
    for name in names:
        assert any(line.startswith(f"{name}: ") for line in lines), (name, lines)
    assert (wd / "landing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_changed_threshold_reruns_only_downstream(small_run, tmp_path):
    """params carry each rule's settings: the 'good' threshold must not resample.

    The config is rewritten with its keys sorted, so this also checks that key order in the
    file is not taken for a change.
    """
    wd, _ = small_run
    cfg_file = wd / "config" / "config.yaml"
    original = cfg_file.read_text()
    try:
        cfg = yaml.safe_load(original)
        cfg.setdefault("target", {})["good_threshold"] = 0.3
        cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=True))
        proc = run_snakemake(wd, "-n")
    finally:
        cfg_file.write_text(original)
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc.stdout + proc.stderr) == {
        "reduce": 2,
        "figures": 1,
        "dimension": 2,
        "census": 2,
        "connect": 2,
        "hessian": 2,  # reads the census, which reruns
        "compare": 1,
        "findings": 1,
        "all": 1,
    }


# ----------------------------------------------------------------------------- kill and resume

RESUME = TEST_CONFIGS / "resume.yaml"
RESUME_EXP = "rotate-120"
RESUME_TARGET = f"results/{RESUME_EXP}/samples.h5"


def read_samples(path: Path) -> dict[str, bytes]:
    """Every array of a samples.h5 (theta and all sample stats) as raw bytes."""
    out = {}
    with h5py.File(path, "r") as f:
        out["posterior/theta"] = f["posterior/theta"][...].tobytes()
        for name, ds in f["sample_stats"].items():
            if isinstance(ds, h5py.Dataset) and ds.ndim == 2:
                out[f"sample_stats/{name}"] = ds[...].tobytes()
    return out


@pytest.fixture(scope="module")
def resume_reference(tmp_path_factory):
    """An uninterrupted run, on ONE core (one Dask worker), each job in a process of its own:
    the killed runs use two cores and fork their jobs from the warm interpreter."""
    wd = make_workdir(tmp_path_factory.mktemp("reference"), RESUME)
    proc = run_snakemake(
        wd,
        "--profile",
        "profiles/default",
        "--cores",
        "1",
        RESUME_TARGET,
        env={**os.environ, warm_jobs.SOCKET_ENV: "0"},
    )
    assert proc.returncode == 0, output_of(proc)
    arrays = read_samples(wd / RESUME_TARGET)
    assert {"posterior/theta", "sample_stats/energy"} <= set(arrays)
    return arrays


def batch_progress(wd: Path) -> list:
    files = sorted((wd / "results" / RESUME_EXP / "chains").glob("batch-*.h5"))
    return [store.read_progress(f) for f in files]


def wait_for_draws(wd: Path, proc: subprocess.Popen, n_batches: int, timeout: float = 300):
    """Poll until every batch file has a checkpoint with draws; fail if snakemake ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "snakemake ended before the batches had checkpointed draws"
        progress = batch_progress(wd)
        if len(progress) == n_batches and all(p and p[0] >= 1 for p in progress):
            return progress
        time.sleep(0.1)
    pytest.fail(f"no checkpointed draws within {timeout} s: {batch_progress(wd)}")


def start(wd: Path) -> subprocess.Popen:
    # The child keeps its own copy of the file descriptor; ours can close at once.
    with open(wd / "snakemake.out", "w") as out:
        return subprocess.Popen(
            snakemake_cmd("--profile", "profiles/default", RESUME_TARGET),
            cwd=wd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # its own process group, like a job started from a terminal: Ctrl-C reaches it all
            start_new_session=True,
        )


def resume_counts(wd: Path) -> tuple[int, int, int]:
    log = (wd / "results" / "logs" / RESUME_EXP / "sample.log").read_text()
    m = re.findall(r"resume summary: resumed=(\d+) computed=(\d+) total=(\d+)", log)
    assert m, log
    return tuple(int(x) for x in m[-1])


def sampler_cfg() -> dict:
    return lacfg.validate(yaml.safe_load(RESUME.read_text()))["sampler"]


@pytest.mark.parametrize("how", ["kill-9", "ctrl-c", "kill-9+truncated", "kill-9+scribbled"])
def test_interrupted_snakemake_then_rerun_is_bit_identical(tmp_path, resume_reference, how):
    """kill -9 of snakemake alone, or Ctrl-C (SIGINT to the whole foreground process group);
    then, for the damage cases, a batch file truncated or overwritten in the middle."""
    s = sampler_cfg()
    wd = make_workdir(tmp_path, RESUME)
    proc = start(wd)
    try:
        at_kill = wait_for_draws(wd, proc, n_batches=s["n_chains"] // s["chains_per_batch"])
        job = psutil.Process(proc.pid).children(recursive=True)
        sampling = [p for p in job if runs_rule(p, "sample")]
        assert sampling, "no sample job running"
        # as a local run's jobs do, it runs forked from the warm interpreter
        assert "lossatlas.warm_jobs" in " ".join(sampling[0].cmdline())
        if how == "kill-9":
            proc.send_signal(signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # The job and its Dask workers must stop with snakemake: an orphaned job would keep writing
    # the batch files (and finish them) while the rerun starts on the same files.
    _, alive = psutil.wait_procs(job, timeout=10)
    assert not alive, f"left running after snakemake stopped: {[p.pid for p in alive]}"
    progress = batch_progress(wd)
    assert all(p[0] < s["draws"] for p in progress), (
        f"batches finished after snakemake was stopped (at the kill: {at_kill}, now: {progress})"
    )

    damaged = wd / "results" / RESUME_EXP / "chains" / "batch-0001.h5"
    damage(damaged, how)

    # The same command again: stale lock and incomplete output are handled, sampling resumes.
    again = run_snakemake(wd, "--profile", "profiles/default", RESUME_TARGET)
    assert again.returncode == 0, output_of(again)
    resumed, computed, total = resume_counts(wd)
    assert read_samples(wd / RESUME_TARGET) == resume_reference
    if "+" in how:  # named in the job's log, moved aside, only that batch redone
        log = (wd / "results" / "logs" / RESUME_EXP / "sample.log").read_text()
        assert f"{damaged.relative_to(wd)} is damaged: " in log
        assert "batch-0001.h5.damaged" in log and "batch 0001 (worker pid" in log
        assert (damaged.parent / "batch-0001.h5.damaged").exists()
        assert resumed >= progress[0][0] > 0 and resumed + computed == total
    else:
        assert resumed >= min(p[0] for p in progress) > 0 and resumed + computed == total


def damage(path: Path, how: str) -> None:
    """Truncate ``path`` to half, or write random bytes over its middle chunk of committed draws
    (per ``how``). Only a committed chunk: one written after the last checkpoint, as a kill can
    leave it, is not damage (the rerun writes those draws again)."""
    if how.endswith("truncated"):
        os.truncate(path, path.stat().st_size // 2)
    elif how.endswith("scribbled"):
        committed = store.read_progress(path)[0]
        with h5py.File(path, "r", swmr=True) as f:
            per_chunk = f["posterior/theta"].chunks[1]
            middle = (committed - 1) // 2 // per_chunk * per_chunk
            chunk = f["posterior/theta"].id.get_chunk_info_by_coord((0, middle, 0))
        with open(path, "r+b") as fh:
            fh.seek(chunk.byte_offset)
            fh.write(np.random.default_rng(1).bytes(min(4096, chunk.size)))


def test_damage_after_a_complete_run_is_repaired_by_the_same_command(tmp_path):
    """A finished run of the user's own file (`snakemake --cores 2 --configfile mine.yaml`, the
    default target) whose batch file is damaged: `lossatlas verify` finds it, `--repair` moves
    it aside, and the same command samples that batch alone again, checks it against the store
    and reruns nothing that read it: every batch file and table is byte-identical to the
    undamaged run's. Random bytes first, then a truncation of another experiment's batch."""
    wd = make_workdir(tmp_path / "run", DEFAULT_CONFIG)
    shutil.copyfile(SMALL, wd / "mine.yaml")
    command = ["--cores", "2", "--configfile", "mine.yaml"]
    first = run_snakemake(wd, *command)
    assert first.returncode == 0, output_of(first)
    undamaged = tmp_path / "undamaged"
    shutil.copytree(wd / "results", undamaged)
    verify = [sys.executable, "-m", "lossatlas.cli", "verify", "results"]
    for exp, how in [("rotate-0", "scribbled"), ("rotate-120", "truncated")]:
        batch = wd / "results" / exp / "chains" / "batch-0000.h5"
        damage(batch, how)
        found = subprocess.run(verify, cwd=wd, capture_output=True, text=True, timeout=300)
        assert found.returncode == 1 and f"damaged  results/{exp}/chains/batch-0000.h5" in (
            found.stdout
        ), found.stdout
        repair = subprocess.run([*verify, "--repair"], cwd=wd, capture_output=True, text=True)
        assert repair.returncode == 0, repair.stdout + repair.stderr
        assert "run the same snakemake command again" in repair.stdout
        again = run_snakemake(wd, *command)
        assert again.returncode == 0, output_of(again)
        assert job_counts(again.stdout + again.stderr) == {"restore": 1, "all": 1}
        log = (wd / "results" / "logs" / exp / "restore.log").read_text()
        assert "batch-0000.h5 sampled again" in log and "energy equals" in log
        assert filecmp.cmp(batch, undamaged / exp / "chains" / batch.name, shallow=False)
        assert read_samples(wd / "results" / exp / "samples.h5") == read_samples(
            undamaged / exp / "samples.h5"
        )
        same = subprocess.run(
            [sys.executable, str(REPO / "tools" / "compare_runs.py"), str(undamaged), "results"],
            cwd=wd,
            capture_output=True,
            text=True,
        )
        # the restore's own record is new; every batch file and table is identical
        assert same.stdout.count("MISSING") == same.stdout.count("restored.json"), same.stdout
        assert "DIFFERENT" not in same.stdout, same.stdout
        assert "Nothing to be done" in output_of(run_snakemake(wd, *command, "-n"))


def test_sigkill_dask_worker_run_completes_bit_identical(tmp_path, resume_reference):
    s = sampler_cfg()
    wd = make_workdir(tmp_path, RESUME)
    proc = start(wd)
    try:
        wait_for_draws(wd, proc, n_batches=s["n_chains"] // s["chains_per_batch"])
        job = [
            p for p in psutil.Process(proc.pid).children(recursive=True) if runs_rule(p, "sample")
        ]
        assert len(job) == 1, "expected one running sample job"
        workers = dask_workers(job[0])
        assert len(workers) == 2, [p.cmdline() for p in job[0].children(recursive=True)]
        workers[0].send_signal(signal.SIGKILL)
        assert proc.wait(timeout=600) == 0, (wd / "snakemake.out").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    resumed, computed, total = resume_counts(wd)
    # The killed worker's batch restarted from its checkpoint, not from scratch.
    assert resumed > 0 and resumed + computed == total
    assert read_samples(wd / RESUME_TARGET) == resume_reference
