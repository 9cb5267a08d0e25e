"""Removing a killed snakemake's lock: only for a command that runs jobs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
    """A lock left by a snakemake killed here: no process holds the running lock."""
    locks = wd / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x")
    return locks


def test_a_dry_run_leaves_a_stale_lock_and_a_run_removes_it(tmp_path, monkeypatch):
    wd = make_workdir(tmp_path / "wd", TEST_CONFIGS / "small.yaml")
    locks = stale_lock(wd)
    for argv in (["-n"], ["--lint"]):
        proc = run_snakemake(wd, *argv, timeout=300)
        assert "removed the stale lock" not in proc.stderr, output_of(proc)
        assert list(locks.iterdir()), argv
    monkeypatch.chdir(wd)
    assert not lifecycle.clear_stale_snakemake_lock(["-n"])
    assert list(locks.iterdir())
    assert lifecycle.clear_stale_snakemake_lock(["--profile", "profiles/default"])
    assert not list(locks.iterdir())


# A snakemake that runs jobs: registers itself, then lives until told to stop (its stdin closes).
STARTER = textwrap.dedent(
    """
    import sys, time
    from lossatlas import lifecycle
    barrier = float(sys.argv[1])
    while time.time() < barrier:  # all start at once
        time.sleep(0.001)
    removed = lifecycle.clear_stale_snakemake_lock(["--profile", "profiles/default"])
    print("removed" if removed else "kept", flush=True)
    sys.stdin.read()
    """
)


def start(wd, n: int) -> list[subprocess.Popen]:
    barrier = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(barrier)],
            cwd=wd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(n)
    ]
    return procs


def test_simultaneous_starts_never_remove_a_live_runs_lock(tmp_path):
    """The race that a pid record lost: several snakemakes start at once, then one more."""
    wd = tmp_path / "wd"
    wd.mkdir()
    live = start(wd, 6)
    try:
        said = [p.stdout.readline().strip() for p in live]
        assert said == ["kept"] * 6  # nothing was locked yet
        locks = stale_lock(wd)  # the live runs' lock now (snakemake takes it after parsing)
        for p in start(wd, 3):
            assert p.stdout.readline().strip() == "kept"
            p.communicate("", timeout=30)
        assert list(locks.iterdir())
    finally:
        for p in live:
            p.communicate("", timeout=30)
    # all gone: the next run finds the lock stale
    (late,) = start(wd, 1)
    assert late.stdout.readline().strip() == "removed"
    late.communicate("", timeout=30)
    assert not list(locks.iterdir())


@pytest.mark.parametrize("hdf5_open", [False, True])
def test_a_finished_job_exits_with_everything_written(tmp_path, hdf5_open):
    """exit_finished skips the interpreter's teardown, not what it would have done that
    matters: a file still open has all its bytes, exit handlers ran (a temporary folder is
    gone, the job's CPU line is logged), and an HDF5 file left open for writing is closed
    the usual way, readable afterwards."""
    log, data, h5 = tmp_path / "job.log", tmp_path / "left-open.txt", tmp_path / "open.h5"
    script = textwrap.dedent(f"""
        import atexit, logging, tempfile
        import h5py, numpy as np
        from lossatlas import lifecycle
        logging.basicConfig(filename={str(log)!r}, level=logging.INFO)
        lifecycle.track_peak_rss(logging.getLogger("job"))
        left_open = open({str(data)!r}, "w")
        for _ in range(1000):  # small writes: the last few kB wait in its buffer
            left_open.write("x" * 100)
        folder = tempfile.TemporaryDirectory()
        print(folder.name, flush=True)
        atexit.register(lambda: print("handlers ran", flush=True))
        if {hdf5_open!r}:
            f = h5py.File({str(h5)!r}, "w")
            f["a"] = np.arange(1000)
        lifecycle.exit_finished()
        raise SystemExit(3)  # not reached
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    folder, ran = out.stdout.split("\n")[:2]
    assert ran == "handlers ran" and not Path(folder).exists()
    assert data.read_text() == "x" * 100_000
    assert "CPU time: " in log.read_text()
    if hdf5_open:
        import h5py

        with h5py.File(h5, "r") as f:
            assert f["a"][-1] == 999


def test_a_job_logs_its_peak_memory_and_its_children_cpu_time(tmp_path):
    """Known answer: a job that spins 0.4 CPU-s itself, waits for a child that spins 0.4, and
    exits while another child runs, which waited for a grandchild that spun 0.4 (a
    forkserver and its Dask workers), logs at least 1.2 s of CPU time (and not much more:
    the imports of three interpreters cost well under 3 s)."""
    log = tmp_path / "job.log"
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    middle = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {spin!r}], check=True)\n"
        "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    script = textwrap.dedent(f"""
        import atexit, logging, subprocess, sys
        from lossatlas import lifecycle
        running = []
        atexit.register(lambda: [p.kill() for p in running])  # after the report (LIFO)
        logging.basicConfig(filename={str(log)!r}, level=logging.INFO)
        lifecycle.track_peak_rss(logging.getLogger("job"))
        subprocess.run([sys.executable, "-c", {spin!r}], check=True)
        running.append(subprocess.Popen([sys.executable, "-c", {middle!r}], stdout=subprocess.PIPE))
        running[0].stdout.readline()
        exec({spin!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    text = log.read_text()
    assert "peak RSS:" in text
    cpu = float(text.split("CPU time: ")[1].split(" s")[0])
    assert 1.2 <= cpu < 4.2, text


def test_descendants_are_the_process_tree_psutil_walks():
    """The /proc children listing finds what psutil's walk over every process finds: children
    of the main thread and of another thread, and a grandchild."""
    import threading

    import psutil

    sleeper = [sys.executable, "-c", "import subprocess, sys, time; "
               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
               "time.sleep(30)"]  # fmt: skip
    procs = [subprocess.Popen(sleeper)]
    other = threading.Thread(target=lambda: procs.append(subprocess.Popen(sleeper)))
    other.start()
    other.join()
    try:
        me = psutil.Process()
        deadline = time.monotonic() + 20
        while len(me.children(recursive=True)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        want = sorted(p.pid for p in me.children(recursive=True))
        assert len(want) == 4
        assert sorted(p.pid for p in lifecycle.descendants(me)) == want
    finally:
        for p in psutil.Process().children(recursive=True):
            p.kill()
        for p in procs:
            p.wait()
