"""Against a real one-node SLURM (tests/slurm_cluster.py): the slurm Dask placement, the
Snakemake SLURM profile, and resuming after faults. Marked ``slurm``; skipped with the reason
where the daemons cannot run, and failed instead when LOSSATLAS_REQUIRE_SLURM=1 (CI)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import h5py
import pytest
import yaml
from conftest import TEST_CONFIGS, make_workdir, output_of, run_snakemake, snakemake_cmd
from slurm_cluster import SlurmCluster, SlurmUnavailable, wait_until, why_unavailable

from lossatlas import cluster, config, store

pytestmark = pytest.mark.slurm

SMALL = TEST_CONFIGS / "small.yaml"
RESUME = TEST_CONFIGS / "resume.yaml"


@pytest.fixture(scope="session")
def slurm():
    """A running one-node SLURM with accounting; stopped (by PID) after the session."""
    required = os.environ.get("LOSSATLAS_REQUIRE_SLURM") == "1"
    reason = why_unavailable(accounting=True)
    if reason:
        if required:
            pytest.fail(f"LOSSATLAS_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    c = SlurmCluster(accounting=True)
    try:
        c.start()
    except SlurmUnavailable as err:
        if required:
            raise
        pytest.skip(f"SLURM did not start: {err}")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def clean_queue(slurm):
    """Each test starts and ends with an empty queue, so squeue shows only its own jobs."""
    wait_until(lambda: not slurm.queue("%i %T"), 60, "an empty queue")
    yield slurm
    subprocess.run(["scancel", "--full", f"--partition={slurm.partition}"], check=False)
    wait_until(lambda: not slurm.queue("%i %T"), 60, "the queue to drain")


def running(slurm: SlurmCluster, name_part: str = "") -> list[str]:
    return [line for line in slurm.queue("%i %j %k %T") if name_part in line and "RUNNING" in line]


# ----------------------------------------------------------------------------- slurm placement


def slurm_dask_cfg(tmp_path: Path, **slurm_over) -> dict:
    sl = {
        "n_jobs": 2,
        "memory": "1GB",
        "walltime": "00:15:00",
        "log_directory": str(tmp_path / "dask-workers"),
    }
    sl.update(slurm_over)
    return config.validate({"dask": {"placement": "slurm", "timeout": 120, "slurm": sl}})["dask"]


def test_slurm_placement_workers_are_jobs_over_tls(clean_queue, tmp_path):
    pytest.importorskip("cryptography", reason="TLS credentials need the cryptography package")
    slurm = clean_queue
    lines: list[str] = []
    cfg = slurm_dask_cfg(tmp_path)
    with cluster.connect(cfg, threads=1, log=lines.append) as client:
        jobs = running(slurm, "dask-worker")
        assert len(jobs) == 2, slurm.queue()
        info = client.scheduler_info(n_workers=-1)
        assert info["address"].startswith("tls://127.0.0.1:")
        assert len(info["workers"]) == 2
        assert all(a.startswith("tls://127.0.0.1:") for a in info["workers"])
        # Each worker runs inside its own SLURM job.
        job_ids = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        assert sorted(job_ids.values()) == sorted(j.split()[0] for j in jobs)
        total = client.submit(sum, client.map(lambda x: x * x, range(100))).result()
        assert total == sum(x * x for x in range(100))
    # Closing the cluster cancels the worker jobs.
    wait_until(lambda: not running(slurm, "dask-worker"), 60, "worker jobs to end")
    assert any(line.startswith("Dask dashboard: http://127.0.0.1:") for line in lines)
    assert any("workers joined" in line for line in lines)
    logs = list((tmp_path / "dask-workers").glob("*.err"))
    assert logs, "worker job logs not in dask.slurm.log_directory"
    # The temporary worker credentials do not outlive the cluster.
    assert not list((tmp_path / "dask-workers").glob(".dask-jobqueue.worker.*"))


def test_slurm_placement_times_out_with_a_clear_error(clean_queue, tmp_path):
    slurm = clean_queue
    # Jobs held for an hour never start: connect must give up after dask.timeout and cancel them.
    cfg = slurm_dask_cfg(tmp_path, n_jobs=1, job_extra_directives=["--begin=now+1hour"])
    cfg["timeout"] = 5
    t0 = time.monotonic()
    with pytest.raises(cluster.ClusterError, match=r"0 of 1 Dask workers joined within 5 s"):
        with cluster.connect(cfg, threads=1):
            pass
    assert time.monotonic() - t0 < 60
    wait_until(lambda: not slurm.queue("%i %T"), 60, "the held job to be cancelled")


# ----------------------------------------------------------------------------- the SLURM profile


def read_samples(path: Path) -> dict[str, bytes]:
    """Every (chain, draw) array of a samples.h5 as raw bytes."""
    out = {}
    with h5py.File(path, "r") as f:
        out["posterior/theta"] = f["posterior/theta"][...].tobytes()
        for name, ds in f["sample_stats"].items():
            if isinstance(ds, h5py.Dataset) and ds.ndim == 2:
                out[f"sample_stats/{name}"] = ds[...].tobytes()
    return out


def local_reference(tmp_path: Path, cfg, target: str) -> dict[str, bytes]:
    wd = make_workdir(tmp_path, cfg)
    proc = run_snakemake(wd, "--profile", "profiles/default", "--cores", "2", target)
    assert proc.returncode == 0, output_of(proc)
    return read_samples(wd / target)


def start_slurm_run(wd: Path, target: str, *extra: str) -> subprocess.Popen:
    with open(wd / "snakemake.out", "a") as out:
        return subprocess.Popen(
            snakemake_cmd("--profile", "profiles/slurm", *extra, target),
            cwd=wd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def watch_until_exit(proc: subprocess.Popen, slurm: SlurmCluster, timeout: float) -> list[str]:
    """Wait for snakemake, collecting the queue lines seen meanwhile."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        seen.update(slurm.queue("%i %k %T"))
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"snakemake still running after {timeout} s")
        time.sleep(0.5)
    return sorted(seen)


def test_profile_run_matches_local_run(clean_queue, tmp_path):
    slurm = clean_queue
    target = "results/rotate-0/samples.h5"
    reference = local_reference(tmp_path / "local", SMALL, target)
    wd = make_workdir(tmp_path / "slurm", SMALL)
    proc = start_slurm_run(wd, target)
    seen = watch_until_exit(proc, slurm, 400)
    assert proc.returncode == 0, (wd / "snakemake.out").read_text()
    assert any("rule_sample_wildcards_rotate-0 RUNNING" in line for line in seen), seen
    assert read_samples(wd / target) == reference
    # SLURM's job logs and the rule's log are where docs/cluster.md says.
    assert list((wd / "logs" / "slurm" / "rule_sample").rglob("*.log"))
    assert (
        "Dask: local cluster of 2 worker processes"
        in (wd / "logs" / "rotate-0" / "sample.log").read_text()
    )


# ----------------------------------------------------------------------------- faults and resume

RESUME_EXP = "rotate-120"
RESUME_TARGET = f"results/{RESUME_EXP}/samples.h5"


@pytest.fixture(scope="module")
def resume_reference(tmp_path_factory):
    """The uninterrupted samples of tests/configs/resume.yaml, from a local run."""
    return local_reference(tmp_path_factory.mktemp("resume-local"), RESUME, RESUME_TARGET)


def n_batches() -> int:
    s = config.validate(yaml.safe_load(RESUME.read_text()))["sampler"]
    return s["n_chains"] // s["chains_per_batch"]


def progress(wd: Path) -> list:
    files = sorted((wd / "results" / RESUME_EXP / "chains").glob("batch-*.h5"))
    return [store.read_progress(f) for f in files]


def wait_for_draws(wd: Path, proc: subprocess.Popen, timeout: float = 300) -> list:
    """Until every batch file has checkpointed draws (sampling is under way, not finished)."""

    def check():
        assert proc.poll() is None, "snakemake ended before the batches checkpointed draws"

    def ready():
        p = progress(wd)
        return p if len(p) == n_batches() and all(x and x[0] >= 1 for x in p) else None

    return wait_until(ready, timeout, "checkpointed draws in every batch", check, 0.1)


def resume_counts(wd: Path) -> list[tuple[int, int, int]]:
    """(resumed, computed, total) draws of every sample run logged so far, in order."""
    text = "".join(p.read_text() for p in sorted((wd / "logs").rglob("sample.log*")))
    found = re.findall(r"resume summary: resumed=(\d+) computed=(\d+) total=(\d+)", text)
    return [tuple(int(x) for x in m) for m in found]


def sample_job(slurm: SlurmCluster) -> str | None:
    for line in slurm.queue("%i %k %T"):
        job_id, comment, state = line.split()
        if comment == f"rule_sample_wildcards_{RESUME_EXP}" and state == "RUNNING":
            return job_id
    return None


def test_scancel_sample_job_then_same_command_resumes(clean_queue, tmp_path, resume_reference):
    slurm = clean_queue
    wd = make_workdir(tmp_path, RESUME)
    # No retries: the second command, not the executor, is what resumes here.
    proc = start_slurm_run(wd, RESUME_TARGET, "--retries", "0")
    try:
        job_id = wait_until(lambda: sample_job(slurm), 120, "the sample job in squeue")
        before = wait_for_draws(wd, proc)
        subprocess.run(["scancel", job_id], check=True)
        assert proc.wait(timeout=300) != 0, "snakemake succeeded although its job was cancelled"
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = progress(wd)
    assert all(p[0] < 2000 for p in killed_at), f"cancelled too late: {killed_at}"

    again = start_slurm_run(wd, RESUME_TARGET)
    watch_until_exit(again, slurm, 400)
    assert again.returncode == 0, (wd / "snakemake.out").read_text()
    resumed, computed, total = resume_counts(wd)[-1]
    assert resumed >= sum(p[0] for p in before) * 2 and resumed + computed == total
    assert read_samples(wd / RESUME_TARGET) == resume_reference
    print(f"scancel: {resumed} draws resumed, {computed} computed of {total}")
