"""Against a real one-node SLURM (tests/slurm_cluster.py): the slurm Dask placement, the
Snakemake SLURM profile, and resuming after faults. Marked ``slurm``; skipped with the reason
where the daemons cannot run, and failed instead when LOSSATLAS_REQUIRE_SLURM=1 (CI)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import (
    TEST_CONFIGS,
    dask_workers,
    install_profile_for,
    make_workdir,
    output_of,
    run_snakemake,
    runs_rule,
    snakemake_cmd,
)
from slurm_cluster import SlurmCluster, SlurmUnavailable, run, wait_until, why_unavailable
from test_workflow import read_samples

from lossatlas import config
from lossatlas.sampling import cluster
from lossatlas.storage import store

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
    # 4 CPUs on this 2-core machine: a sampling job plus two Dask worker jobs, or two sampling
    # jobs of which one waits for the other's lock, must run at the same time.
    c = SlurmCluster(accounting=True, cpus=4)
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


def local_reference(tmp_path: Path, cfg, target: str) -> dict[str, bytes]:
    wd = make_workdir(tmp_path, cfg)
    proc = run_snakemake(wd, "--profile", "profiles/default", "--cores", "2", target)
    assert proc.returncode == 0, output_of(proc)
    return read_samples(wd / target)


# The documented command (docs/cluster.md), after its one-time `lossatlas install-profile`.
SLURM_CMD = ("--profile", "slurm")


def slurm_user_env(wd: Path) -> dict[str, str]:
    """This user's environment with Snakemake's profile folder under ``wd``, where the one-time
    step has installed the SLURM profile."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(wd / ".config")}
    if not (wd / ".config" / "snakemake" / "slurm").is_dir():
        install_profile_for(env)
    return env


def start_slurm_run(wd: Path, target: str, *extra: str) -> subprocess.Popen:
    env = slurm_user_env(wd)
    with open(wd / "snakemake.out", "a") as out:
        return subprocess.Popen(
            snakemake_cmd(*SLURM_CMD, *extra, target),
            cwd=wd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
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


SMALL_TARGET = "results/rotate-0/samples.h5"


@pytest.fixture(scope="session")
def small_reference(tmp_path_factory):
    """The samples of tests/configs/small.yaml's rotate-0, from a local run."""
    return local_reference(tmp_path_factory.mktemp("small-local"), SMALL, SMALL_TARGET)


# ----------------------------------------------------------------------------- faults and resume

RESUME_EXP = "rotate-120"
RESUME_TARGET = f"results/{RESUME_EXP}/samples.h5"


@pytest.fixture(scope="session")
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
    text = "".join(p.read_text() for p in sorted((wd / "results" / "logs").rglob("sample.log*")))
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
    # Cancelled part-way (how far depends on the machine's load): work is left to resume.
    draws = yaml.safe_load(RESUME.read_text())["sampler"]["draws"]
    assert all(p[0] < draws for p in killed_at), f"cancelled after it finished: {killed_at}"

    again = start_slurm_run(wd, RESUME_TARGET)
    watch_until_exit(again, slurm, 400)
    assert again.returncode == 0, (wd / "snakemake.out").read_text()
    resumed, computed, total = resume_counts(wd)[-1]
    assert resumed >= sum(p[0] for p in before) * 2 and resumed + computed == total
    assert computed > 0
    assert read_samples(wd / RESUME_TARGET) == resume_reference
    print(f"scancel: {resumed} draws resumed, {computed} computed of {total}")


def sample_jobs(slurm: SlurmCluster) -> dict[str, str]:
    """Job id -> state of every sample job of the resume experiment in the queue."""
    out = {}
    for line in slurm.queue("%i %k %T"):
        job_id, comment, state = line.split()
        if comment == f"rule_sample_wildcards_{RESUME_EXP}":
            out[job_id] = state
    return out


def job_script(job_id: str) -> psutil.Process:
    """The python running the sample step inside SLURM job ``job_id``."""

    def find():
        for p in psutil.process_iter(["cmdline"]):
            try:
                if runs_rule(p, "sample") and p.environ().get("SLURM_JOB_ID") == job_id:
                    return p
            except psutil.Error:
                continue
        return None

    return wait_until(find, 60, f"the sample step in job {job_id}")


def stopped(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return True


def sample_log(wd: Path) -> str:
    path = wd / "results" / "logs" / RESUME_EXP / "sample.log"
    return path.read_text() if path.exists() else ""


def test_sigkill_snakemake_then_same_command_waits_for_the_orphan(
    clean_queue, tmp_path, resume_reference
):
    """kill -9 of snakemake on the login node leaves its sample job running in SLURM; the same
    command again starts a second sample job, which waits for the first's sampling lock instead
    of writing the batch files beside it, then resumes what the first checkpointed."""
    slurm = clean_queue
    wd = make_workdir(tmp_path, RESUME)
    proc = start_slurm_run(wd, RESUME_TARGET)
    try:
        old = wait_until(lambda: sample_job(slurm), 120, "the sample job in squeue")
        wait_for_draws(wd, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    # Nothing on the login node stops the job now.
    assert sample_jobs(slurm) == {old: "RUNNING"}
    # Freeze it (SIGSTOP to all of its processes) so that it surely still holds the lock when
    # the rerun's job starts, however fast this machine samples; it keeps its flock meanwhile.
    script = job_script(old)
    job_procs = [script, *script.children(recursive=True)]
    run(["scontrol", "suspend", old])
    suspended, again = True, None
    try:
        # scontrol returns before slurmstepd has stopped every process of the job.
        wait_until(
            lambda: all(stopped(p) for p in job_procs), 60, f"the processes of job {old} to stop"
        )
        at_suspend = progress(wd)
        assert all(p[0] < 5000 for p in at_suspend), at_suspend
        again = start_slurm_run(wd, RESUME_TARGET)

        def rerun_alive():
            assert again.poll() is None, (wd / "snakemake.out").read_text()

        wait_until(
            lambda: f"is held by SLURM job {old}," in sample_log(wd),
            180,
            "the rerun's sample job to wait for the lock",
            rerun_alive,
        )
        new = [j for j, state in sample_jobs(slurm).items() if j != old and state == "RUNNING"]
        assert len(new) == 1, slurm.queue()
        # Waiting, the new job has not touched the batch files.
        assert progress(wd) == at_suspend
        run(["scontrol", "resume", old])
        suspended = False
        watch_until_exit(again, slurm, 400)
    finally:
        if suspended:
            run(["scontrol", "resume", old], check=False)
        if again is not None and again.poll() is None:
            again.kill()
    assert again.returncode == 0, (wd / "snakemake.out").read_text()
    log = sample_log(wd)
    assert "BatchLocked" not in log and "being written by another process" not in log
    # The orphan finished every draw while the new job waited; the new job found them all done.
    # (The orphan's own lines are not in sample.log: Snakemake deletes a job's log before it
    # runs the job again, and the orphan went on writing to the deleted file.)
    assert (
        "Finished jobid" in (wd / "logs/slurm/rule_sample" / RESUME_EXP / f"{old}.log").read_text()
    )
    # The lock comes before the cluster: a waiting run holds no Dask workers (with placement
    # slurm those are SLURM jobs of their own).
    held, free = log.index(f"is held by SLURM job {old},"), log.index("is free after")
    assert held < free < log.index("Dask dashboard"), log
    resumed, computed, total = resume_counts(wd)[-1]
    assert (resumed, computed, total) == (20000, 0, 20000)
    assert read_samples(wd / RESUME_TARGET) == resume_reference
    done = sum(p[0] for p in at_suspend) * 2  # 2 chains per batch
    print(
        f"kill -9 snakemake: orphan job {old} had {done} draws checkpointed when frozen and "
        f"finished the rest; rerun job {new[0]} resumed {resumed}, computed {computed} of {total}"
    )


def test_sigkill_dask_worker_inside_the_sample_job(clean_queue, tmp_path, resume_reference):
    """dask.placement local: a worker process of the job's LocalCluster killed mid-task."""
    slurm = clean_queue
    wd = make_workdir(tmp_path, RESUME)
    proc = start_slurm_run(wd, RESUME_TARGET)
    try:
        job_id = wait_until(lambda: sample_job(slurm), 120, "the sample job in squeue")
        wait_for_draws(wd, proc)
        script = job_script(job_id)
        workers = dask_workers(script)
        assert len(workers) == 2, [p.cmdline() for p in script.children(recursive=True)]
        workers[0].send_signal(signal.SIGKILL)
        watch_until_exit(proc, slurm, 400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (wd / "snakemake.out").read_text()
    resumed, computed, total = resume_counts(wd)[-1]
    # The killed worker's batch went on from its checkpoint, not from scratch.
    assert resumed > 0 and resumed + computed == total
    assert read_samples(wd / RESUME_TARGET) == resume_reference
    print(f"worker SIGKILL: {resumed} draws resumed, {computed} computed of {total}")


def test_slurm_placement_run_survives_a_cancelled_worker_job(
    clean_queue, tmp_path, resume_reference
):
    """dask.placement slurm through the profile: workers are SLURM jobs talking TLS; one of
    them scancel'ed mid-task; the run completes with the local run's samples."""
    slurm = clean_queue
    cfg = yaml.safe_load(RESUME.read_text())
    cfg["dask"] = {
        "placement": "slurm",
        "timeout": 120,
        "progress_interval": 1,
        "slurm": {"n_jobs": 2, "memory": "1GB", "walltime": "00:15:00"},
    }
    wd = make_workdir(tmp_path, cfg)
    proc = start_slurm_run(wd, RESUME_TARGET)
    try:
        wait_until(lambda: sample_job(slurm), 120, "the sample job in squeue")
        wait_for_draws(wd, proc)
        workers = running(slurm, "dask-worker")
        assert len(workers) == 2, slurm.queue()
        subprocess.run(["scancel", workers[0].split()[0]], check=True)
        watch_until_exit(proc, slurm, 400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (wd / "snakemake.out").read_text()
    log = sample_log(wd)
    assert re.search(r"Dask: SLURM cluster, scheduler tls://127\.0\.0\.1:\d+", log), log
    assert "Dask: 2 workers joined" in log
    resumed, computed, total = resume_counts(wd)[-1]
    assert resumed > 0 and resumed + computed == total
    assert read_samples(wd / RESUME_TARGET) == resume_reference
    # The sample job cancelled its remaining worker job when it ended.
    wait_until(lambda: not running(slurm, "dask-worker"), 60, "worker jobs to end")
    print(f"slurm placement, worker job cancelled: {resumed} resumed, {computed} computed")


# ----------------------------------------------------------------------------- no accounting


def test_profile_run_without_accounting_matches_local_run(slurm, tmp_path, small_reference):
    """The small config through the profile on a cluster without slurmdbd (sacct fails there;
    the profile's squeue status and the plugin's account guess must cope): jobs in squeue, the
    local run's samples, logs where docs/cluster.md says. The tests above ran the profile with
    accounting. Last in this file: it stops the session's cluster to start one without
    accounting on the same ports."""
    slurm.stop()
    with SlurmCluster(accounting=False) as bare:
        assert run(["sacct"], check=False).returncode != 0, "accounting is still on"
        wd = make_workdir(tmp_path, SMALL)
        proc = start_slurm_run(wd, SMALL_TARGET)
        seen = watch_until_exit(proc, bare, 300)
        assert proc.returncode == 0, (wd / "snakemake.out").read_text()
        assert any("rule_sample_wildcards_rotate-0 RUNNING" in line for line in seen), seen
        assert read_samples(wd / SMALL_TARGET) == small_reference
        assert list((wd / "logs" / "slurm" / "rule_sample").rglob("*.log"))
        log = (wd / "results" / "logs" / "rotate-0" / "sample.log").read_text()
        assert "Dask: local cluster of 2 worker processes" in log
