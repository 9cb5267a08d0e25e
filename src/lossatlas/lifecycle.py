"""The life of a job's processes: file locks, the watchdog on snakemake, signals, peak memory,
and the removal of a killed snakemake's lock.

- Locks (``flock``): one sampling run per experiment (:func:`sampling_lock` on
  ``chains/.sampling.lock``) and one writer per batch file (:func:`try_flock`, used by the
  store). The kernel drops a flock when its holder dies, so a dead run never blocks the next.
- :func:`exit_with_snakemake`: a job stops, and its Dask workers with it, when its snakemake is
  gone (kill -9) or it is signalled.
- :func:`track_peak_rss`: the job's peak memory, logged on exit.
- :func:`exit_finished`: a job that has done its work ends without tearing down its imports.
- :func:`clear_stale_snakemake_lock`: the same command resumes after snakemake was killed,
  without ``--unlock``; only on a run that executes jobs.
"""

from __future__ import annotations

import _io
import atexit
import contextlib
import errno
import fcntl
import gc
import json
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import psutil

# --- file locks --------------------------------------------------------------------------------

LOCK_NAME = ".sampling.lock"
_LOCK_POLL_S = 0.5
_HELD = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


class SamplingLocked(RuntimeError):
    """Another run kept the experiment's sampling lock past ``dask.lock_timeout``."""


class SamplingLockError(OSError):
    """The file system refused the lock itself (no flock support, e.g. NFS without lockd)."""


def try_flock(fd: int, path: Path) -> bool:
    """True if the exclusive lock was taken, False if another holder has it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in _HELD:
            return False
        # ENOLCK (NFS without lockd), ENOSYS/EOPNOTSUPP (Lustre mounted noflock, ...): without
        # a working lock two runs could write the same batch files, so refuse to sample.
        raise SamplingLockError(
            e.errno,
            f"cannot lock {path}: {os.strerror(e.errno)}. The results directory is on a file "
            "system without working flock (NFSv3 needs lockd and rpc.statd; Lustre needs the "
            "'flock' mount option); see docs/cluster.md",
        ) from e


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "an unknown process"
    job = info.get("slurm_job_id")
    where = f"pid {info.get('pid')} on {info.get('host')}"
    return (f"SLURM job {job}, " if job else "") + where + f" (since {info.get('since', '?')})"


def _wait_for(fd: int, path: Path, timeout: float, interval: float, log, what: str, who) -> None:
    """Block until ``fd`` holds the flock, logging ``who()`` holds it once, then every
    ``interval`` seconds; SamplingLocked after ``timeout`` seconds."""
    if try_flock(fd, path):
        return
    t0 = time.monotonic()
    log.warning(
        "%s is held by %s; waiting for it (dask.lock_timeout = %g s). Its checkpoints are "
        "resumed when it finishes or dies.",
        what,
        who(),
        timeout,
    )
    next_report = t0 + interval
    while not try_flock(fd, path):
        now = time.monotonic()
        if now - t0 > timeout:
            raise SamplingLocked(
                f"{what} is still held by {who()} after {timeout:g} s "
                "(dask.lock_timeout). That run is still sampling this experiment: let it "
                "finish, or cancel it (scancel <job> / kill <pid>), then run the same command."
            )
        if now >= next_report:
            log.info("still waiting for %s, held by %s (%.0f s)", what, who(), now - t0)
            next_report = now + interval
        time.sleep(min(_LOCK_POLL_S, interval))
    log.info("%s is free after %.1f s of waiting", what, time.monotonic() - t0)


@contextlib.contextmanager
def sampling_lock(
    chains_dir, timeout: float, interval: float = 5.0, log: logging.Logger | None = None
):
    """Hold the exclusive flock on ``chains_dir/.sampling.lock`` for the block.

    One sampling run per experiment: a run whose snakemake was killed may still be running as
    a SLURM job when the same command starts a second one. The second waits here (up to
    ``timeout`` s) instead of meeting the first in the batch files, then resumes whatever the
    first checkpointed. The kernel drops a flock when its holder dies, so a dead run never
    blocks. The file records the holder (host, pid, SLURM job) for the waiting run's log.
    """
    log = log or logging.getLogger(__name__)
    chains_dir = Path(chains_dir)
    chains_dir.mkdir(parents=True, exist_ok=True)
    path = chains_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _wait_for(
            fd, path, timeout, interval, log, f"the sampling lock {path}", lambda: _holder(path)
        )
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        wait_for_batch_writers(chains_dir, timeout, interval, log)
        yield path
    finally:
        os.close(fd)  # releases the flock


def _earlier_task() -> str:
    return "a task of an earlier run (a worker that outlived its sampling job)"


def wait_for_batch_writers(chains_dir: Path, timeout: float, interval: float, log) -> None:
    """Wait until no process still holds a batch file's writer lock (store's ``.h5.lock``).

    With ``dask.placement: slurm`` the worker jobs of a killed sampling job run on until they
    notice their scheduler is gone; a task of theirs may still be writing a batch file after
    the sampling lock was released. Taking and dropping each lock here waits for them.
    """
    for lock in sorted(chains_dir.glob("batch-*.h5.lock")):
        fd = os.open(lock, os.O_RDWR)
        try:
            _wait_for(fd, lock, timeout, interval, log, f"the writer lock {lock}", _earlier_task)
        finally:
            os.close(fd)


# --- the job's processes -------------------------------------------------------------------------


def track_peak_rss(log: logging.Logger, interval: float = 0.25) -> None:
    """Log the job's peak memory when it exits: the summed RSS of its process tree (Dask
    workers, diagnostic pools), sampled every ``interval`` seconds, and the job process's own
    kernel-recorded peak; and its CPU time, counted by the kernel.

    Snakemake's ``benchmark:`` samples the tree only every 30 s after a job's first 30 s, so a
    short peak between two samples is missed, and it reads CPU time the same way;
    ``benchmarks/rule_memory.py`` reads both, ``benchmarks/bench_e2e.py`` the CPU time.
    """
    me = psutil.Process()
    peak = [0]

    def tree_rss() -> int:
        total = 0
        for proc in [me, *descendants(me)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def sample():
        while True:
            peak[0] = max(peak[0], tree_rss())
            threading.Event().wait(interval)

    def report():
        peak[0] = max(peak[0], tree_rss())
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        log.info(
            "peak RSS: %.0f MB process tree (sampled every %g s), %.0f MB job process",
            peak[0] / 2**20,
            interval,
            own,
        )
        log.info("CPU time: %.2f s (job process and every process it started)", cpu_seconds())

    threading.Thread(target=sample, name="peak-rss", daemon=True).start()
    atexit.register(report)


def descendants(proc: psutil.Process) -> list[psutil.Process]:
    """``proc``'s children, theirs, and so on. Linux lists each thread's children in
    ``/proc/<pid>/task/<tid>/children``: a few small reads, where psutil reads the parent of
    every process on the machine (thousands on a cluster node) four times a second. Elsewhere,
    psutil's walk."""
    if not os.path.exists(f"/proc/{proc.pid}/task/{proc.pid}/children"):
        return proc.children(recursive=True)  # no such listing on this system
    found, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        try:
            kids = []
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    kids += map(int, fh.read().split())
        except (OSError, ValueError):  # the process or a thread ended meanwhile
            continue
        for kid in kids:
            try:
                found.append(psutil.Process(kid))
            except psutil.Error:
                continue
            todo.append(kid)
    return found


def cpu_seconds() -> float:
    """User and system CPU seconds of this process (all its threads), of the children it
    waited for, theirs included, and of the descendants still running with those they waited
    for: a forkserver lives until this process exits, and the Dask workers it forked are its
    children, not this process's."""
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    running = 0.0
    for proc in descendants(psutil.Process()):
        try:
            t = proc.cpu_times()
        except psutil.Error:  # it ended meanwhile: whoever waited for it counts it
            continue
        running += t.user + t.system + t.children_user + t.children_system
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + running


def _snakemake_ancestor():
    """The nearest ancestor process running snakemake, else the parent."""
    me = psutil.Process()
    for proc in me.parents():
        try:
            if any("snakemake" in part for part in proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    return me.parent()


def exit_with_snakemake(log: logging.Logger, interval: float = 0.2) -> None:
    """Stop this job, and its Dask workers, as soon as its snakemake is gone or it is signalled.

    A SIGKILLed snakemake cannot stop its jobs: the job (under its `bash -c`) would be adopted
    by init and keep writing the batch files while the rerun starts on them. The direct parent
    is that bash, which survives, so the watch is on the snakemake ancestor itself. Dask worker
    processes exit when this process does (their parent-alive pipe closes), but they are
    killed first so that none writes on after the watch fires.
    """
    watched = _snakemake_ancestor()
    if watched is None:
        return
    log.info("exiting if snakemake (pid %d) exits", watched.pid)

    def stop(code: int):
        for child in descendants(psutil.Process()):
            try:
                child.kill()
            except psutil.Error:
                pass
        logging.shutdown()
        os._exit(code)

    def watch():
        while True:
            # is_running() also compares the start time, so a reused pid does not fool it.
            if not watched.is_running() or watched.status() == psutil.STATUS_ZOMBIE:
                break
            threading.Event().wait(interval)
        log.error("snakemake (pid %d) is gone; stopping this job and its workers", watched.pid)
        stop(1)

    def on_signal(signum, frame):
        # A graceful cluster shutdown lets running tasks sample on for seconds after Ctrl-C;
        # the batch files are consistent at any kill (SWMR, double-buffered checkpoints), so
        # the workers are killed at once and the rerun resumes from their last checkpoint.
        log.error("%s received; stopping this job and its workers", signal.Signals(signum).name)
        stop(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    threading.Thread(target=watch, name="exit-with-snakemake", daemon=True).start()


def exit_finished() -> NoReturn:
    """End a job whose work is done and written, without the interpreter's teardown.

    Tearing down what a job imported (numpy, SciPy, scikit-learn, pandas, matplotlib, h5py)
    costs about 0.3 CPU-s, paid by each of a run's jobs for nothing. What of it matters runs
    first: the exit handlers (the job's CPU and memory line, temporary folders, Dask's and
    multiprocessing's clean-up), every Python file still open for writing flushed, logging
    shut down. Where an HDF5 file is still open (the library caches its metadata), the usual
    exit closes it instead.
    """
    # private, but the one way to run the handlers the interpreter would run at exit; it
    # clears them, so the usual exit below does not run them twice
    atexit._run_exitfuncs()
    logging.shutdown()
    # io.IOBase's C base: the same files without the ABC's slow check (10 ms, not 90)
    for obj in gc.get_objects():
        if isinstance(obj, _io._IOBase):
            with contextlib.suppress(Exception):
                if not obj.closed and obj.writable():
                    obj.flush()
    h5py = sys.modules.get("h5py")
    if h5py is not None and h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        sys.exit(0)
    os._exit(0)


# --- snakemake's own lock ------------------------------------------------------------------------

# Every snakemake that runs jobs here holds a shared flock on this file for its lifetime; the
# kernel drops it when the process dies, so a free exclusive lock means no live snakemake.
# (A record of pids, read and rewritten by each start, lost entries when two started at once.)
RUNNING = Path(".snakemake/lossatlas-running.lock")
_running_fds: dict[Path, int] = {}  # per working directory, kept open for the process's life
# snakemake options that run no job: a stale lock stays for them (they do not need it gone,
# and a dry run must change nothing)
_NO_JOBS = (
    "dryrun",
    "lint",
    "report",
    "unlock",
    "summary",
    "detailed_summary",
    "list_rules",
    "list_target_rules",
    "list_changes",
    "dag",
    "rulegraph",
    "filegraph",
    "d3dag",
    "print_compilation",
    "archive",
    "containerize",
    "generate_unit_tests",
    "cleanup_metadata",
    "cleanup_shadow",
    "delete_all_output",
    "delete_temp_output",
    "touch",
    "conda_create_envs_only",
    "list_conda_envs",
)


def snakemake_argv() -> list[str] | None:
    """This process's snakemake command line without the program; None outside snakemake."""
    prog = Path(sys.argv[0])  # the snakemake script, or snakemake/__main__.py (-m)
    if prog.name != "snakemake" and prog.parent.name != "snakemake":
        return None
    return sys.argv[1:]


def runs_jobs(argv: list[str]) -> bool:
    """Whether snakemake's command line ``argv`` (without the program) executes jobs."""
    from lossatlas.snakemake_profiles import snakemake_args

    args = snakemake_args(argv)
    return not any(getattr(args, name, None) for name in _NO_JOBS)


def makes_report(argv: list[str]) -> bool:
    """Whether snakemake's command line ``argv`` (without the program) writes a report."""
    from lossatlas.snakemake_profiles import snakemake_args

    return bool(getattr(snakemake_args(argv), "report", None))


def clear_stale_snakemake_lock(argv: list[str] | None = None) -> bool:
    """Let the same command resume after snakemake was killed (kill -9, power loss); True if a
    stale lock was removed.

    A killed snakemake leaves its lock in .snakemake/locks and the next run refuses to start
    until ``snakemake --unlock``. Every snakemake that runs jobs here holds a shared flock on
    :data:`RUNNING` while it lives; the lock is removed only when no process holds it, so a
    running snakemake keeps its lock. Nothing happens for a command that runs no job (``-n``,
    ``--lint``, ``--report``, ``--unlock``, ...) or outside the snakemake command line
    (``argv`` defaults to this process's).
    """
    if argv is None:
        argv = snakemake_argv()
    if argv is None or not runs_jobs(argv) or RUNNING.resolve() in _running_fds:
        return False
    RUNNING.parent.mkdir(exist_ok=True)
    fd = os.open(RUNNING, os.O_RDWR | os.O_CREAT, 0o644)
    locks = Path(".snakemake/locks")
    removed = False
    if locks.is_dir() and any(locks.iterdir()) and try_flock(fd, RUNNING):
        for f in locks.iterdir():
            f.unlink(missing_ok=True)
        print(
            f"lossatlas: removed the stale lock of a killed snakemake in {locks}", file=sys.stderr
        )
        removed = True
    # converts the exclusive lock, or waits the moment another start holds one
    fcntl.flock(fd, fcntl.LOCK_SH)
    _running_fds[RUNNING.resolve()] = fd
    return removed
