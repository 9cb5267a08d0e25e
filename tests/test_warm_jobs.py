"""Local jobs forked from one warm interpreter (lossatlas.warm_jobs): a real server, real job
processes. A job handed over must behave as the same script run by ``python``: its streams,
directory, environment, thread limits, exit status and signals; and die with its process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lossatlas import warm_jobs

JOB = """
import os, sys, tempfile
from lossatlas.warm_jobs import hand_over

hand_over(sys.argv[0])

import numpy  # noqa: F401 (its BLAS)
from threadpoolctl import threadpool_info

print("cwd", os.getcwd())
print("x", os.environ.get("JOB_X"))
print("tmp", tempfile.gettempdir())
print("forked", os.environ.get("LOSSATLAS_FORKED_FROM"))
print("blas", max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
print("to stderr", file=sys.stderr)
mode = os.environ.get("JOB_MODE", "")
if mode == "raise":
    raise RuntimeError("the job failed")
if mode == "sleep":
    with open("job.pid", "w") as fh:
        fh.write(str(os.getpid()))
    import time
    time.sleep(120)
sys.exit(int(os.environ.get("JOB_EXIT", "0")))
"""


@pytest.fixture
def server():
    proc = warm_jobs.start()
    if proc is None:
        pytest.skip("no os.pidfd_open on this system: jobs run in their own processes")
    yield proc
    warm_jobs.stop()


def job(tmp_path: Path, **env) -> tuple[list[str], dict]:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    return [sys.executable, str(script)], {**os.environ, "OPENBLAS_NUM_THREADS": "1", **env}


def lines(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_a_handed_over_job_runs_forked_with_its_streams_directory_environment_and_status(
    tmp_path, server
):
    (tmp_path / "job-tmp").mkdir()
    cmd, env = job(tmp_path, JOB_X="value", JOB_EXIT="3", TMPDIR=str(tmp_path / "job-tmp"))
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    out = lines(done.stdout)
    assert done.returncode == 3, done.stderr
    assert out["forked"] == str(server.pid)
    assert out["cwd"] == str(tmp_path)
    assert out["x"] == "value"
    assert out["tmp"] == str(tmp_path / "job-tmp")  # Snakemake sets TMPDIR per job
    assert out["blas"] == "1"  # the job's thread limit, though the server loaded BLAS unlimited
    assert "to stderr" in done.stderr


def test_a_failing_job_reports_its_traceback_and_fails(tmp_path, server):
    cmd, env = job(tmp_path, JOB_MODE="raise")
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "RuntimeError: the job failed" in done.stderr
    assert lines(done.stdout)["forked"] == str(server.pid)


def started_job(tmp_path: Path) -> tuple[subprocess.Popen, psutil.Process]:
    cmd, env = job(tmp_path, JOB_MODE="sleep")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
    pid_file = tmp_path / "job.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "the job did not start"
        time.sleep(0.05)
    child = psutil.Process(int(pid_file.read_text()))
    assert child.pid != proc.pid and child.ppid() != proc.pid  # the server's child
    return proc, child


def gone(child: psutil.Process, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.is_running() or child.status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_a_signal_to_the_jobs_process_reaches_the_job(tmp_path, server):
    proc, child = started_job(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM  # it ends as the job did
    assert gone(child)


def test_a_killed_jobs_process_takes_its_job_with_it(tmp_path, server):
    proc, child = started_job(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    assert gone(child)


def test_stop_waits_for_running_jobs_and_then_jobs_run_themselves(tmp_path, server):
    proc, child = started_job(tmp_path)
    socket_path = os.environ[warm_jobs.SOCKET_ENV]
    child.terminate()  # the job ends; stop() must not return before its server has reaped it
    warm_jobs.stop()
    assert server.returncode == 0 and proc.wait(timeout=30) == -signal.SIGTERM
    assert not Path(socket_path).exists()
    # a job given the old socket, or told there is none, runs in its own process
    for value in (socket_path, "0"):
        cmd, env = job(tmp_path, JOB_EXIT="4", **{warm_jobs.SOCKET_ENV: value})
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 4 and lines(done.stdout)["forked"] == "None", done.stderr


def test_a_job_of_another_interpreter_is_refused(server):
    """A conda environment's or a container's Python did not import what the server has."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(os.environ[warm_jobs.SOCKET_ENV])
    with open(os.devnull) as null:
        request = {"script": "job.py", "cwd": "/", "env": {}, "python": ["/other/python", ""]}
        warm_jobs._send(conn, request, fds=[null.fileno()] * 3)
        assert warm_jobs._receive(conn)[0] == {"refused": "another Python"}
    conn.close()


def test_no_server_for_a_few_jobs_or_where_the_user_turned_it_off(monkeypatch):
    assert warm_jobs.start(n_jobs=warm_jobs.MIN_JOBS - 1) is None
    monkeypatch.setenv(warm_jobs.SOCKET_ENV, "0")
    assert warm_jobs.start() is None
