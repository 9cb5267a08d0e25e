"""Local jobs forked from one warm interpreter.

Every job of a rule is a new Python process, and each imports NumPy, SciPy, scikit-learn,
pandas, matplotlib, h5py, Numba and Dask again: 1 to 2.5 CPU-s a job, about a third of what a
local run spends. On a local run the Snakefile starts one server (:func:`start`), a child of
snakemake, that imports them once. Each job's script (``workflow/scripts/step.py``) hands
itself to it (:func:`hand_over`): the server forks a child that runs the same script with the
job's standard streams, directory, environment and thread limits, and the job's own process
waits for it, passes signals on, and exits with its status. The results do not change: the
child runs the same code on the same inputs.

Snakemake waits for the server when it ends, so every job's CPU still counts in snakemake's
(``resource.getrusage(RUSAGE_CHILDREN)``), and each job logs its own CPU and peak memory
(:func:`lossatlas.lifecycle.track_peak_rss`). Snakemake's ``benchmark:`` files of a local run
see only the waiting process: read the job logs there. Cluster jobs, runs with
``LOSSATLAS_WARM_JOBS=0`` and jobs that find no server run in their own process as before.

Only the standard library is imported here: the job's process pays nothing for the hand-over.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

__all__ = ["SOCKET_ENV", "hand_over", "start", "stop"]

SOCKET_ENV = "LOSSATLAS_WARM_JOBS"  # the server's socket, in the jobs' environment; "0": none
FORKED_ENV = "LOSSATLAS_FORKED_FROM"  # in a forked job: the server's pid (it runs itself)
# What the jobs of the workflow's rules import; not JAX, whose threads a fork would not carry.
PRELOAD = (
    "lossatlas.steps",
    "lossatlas.plots",
    "lossatlas.sampling.engine",
    "lossatlas.sampling.fused",
    "lossatlas.analysis.census",
    "lossatlas.analysis.compare",
    "lossatlas.analysis.connect",
    "lossatlas.analysis.diagnostics",
    "lossatlas.analysis.dimension_run",
    "lossatlas.analysis.hessian",
    "lossatlas.analysis.reduce",
    "lossatlas.model.symmetry",
    # what the analyses import where they use it
    "sklearn.cluster",
    "sklearn.gaussian_process",
    "sklearn.isotonic",
    "sklearn.manifold",
    "scipy.cluster.hierarchy",
    "pandas.io.formats.csvs",
    "snakemake.iocontainers",
    "snakemake.script",
)
# the thread counts Snakemake sets for a job; read by the libraries when they load, so the
# forked child applies them itself
THREAD_ENV = {"OMP_NUM_THREADS": "openmp", "OPENBLAS_NUM_THREADS": "blas"}
# A job alone gains nothing from a server that imports for it: it runs in its own process.
MIN_JOBS = 2
_HEADER = struct.Struct("!I")
_server: subprocess.Popen | None = None


# --- snakemake's side --------------------------------------------------------------------------


def start(n_jobs: int = MIN_JOBS) -> subprocess.Popen | None:
    """Start the server for the ``n_jobs`` jobs of this snakemake process, once; None where
    they are fewer than :data:`MIN_JOBS`, this system cannot (no ``os.pidfd_open``) or the
    user turned it off (``LOSSATLAS_WARM_JOBS=0``)."""
    global _server
    if (
        _server is not None
        or n_jobs < MIN_JOBS
        or os.environ.get(SOCKET_ENV) == "0"
        or not hasattr(os, "pidfd_open")
    ):
        return _server
    # a short path (sockets take 107 bytes) without "snakemake" in it, which the jobs look for
    # in their ancestors' command lines (lifecycle.exit_with_snakemake)
    folder = tempfile.mkdtemp(prefix="lossatlas-jobs-")
    path = os.path.join(folder, "socket")
    _server = subprocess.Popen(
        [sys.executable, "-m", __name__, path, str(os.getpid())], stdin=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and _server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if not os.path.exists(path):
        stop()
        shutil.rmtree(folder, ignore_errors=True)
        return None
    os.environ[SOCKET_ENV] = path
    atexit.register(stop)
    return _server


def stop() -> None:
    """End the server: it takes no more jobs, waits for its running ones, and exits."""
    global _server
    if _server is None:
        return
    os.environ.pop(SOCKET_ENV, None)
    with contextlib.suppress(ProcessLookupError):
        _server.terminate()
    _server.wait()
    _server = None


# --- the job's side ----------------------------------------------------------------------------


def hand_over(script: str) -> None:
    """Run this job's ``script`` in a child of the run's server and exit with its status;
    return, for the job to run itself, where no server takes it."""
    path = os.environ.get(SOCKET_ENV)
    if not path or path == "0" or os.environ.get(FORKED_ENV):
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        request = {
            "script": script,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "python": [sys.executable, sys.version],
        }
        _send(conn, request, fds=[0, 1, 2])
        pid = int(_receive(conn)[0]["pid"])  # no pid: the server refused, the job runs here
    except (OSError, ValueError, KeyError, TypeError):
        conn.close()
        return
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: os.kill(pid, signum))
    try:
        status = int(_receive(conn)[0]["status"])
    except (OSError, ValueError, KeyError, TypeError):
        print(f"lossatlas: the job's process {pid} was lost with its server", file=sys.stderr)
        status = 1
    if status < 0:  # killed by a signal: end the same way
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


# --- the server --------------------------------------------------------------------------------


def serve(path: str, parent: int) -> None:
    """Take jobs at the socket ``path`` until told to stop (SIGTERM) or snakemake (``parent``)
    is gone, then wait for the running ones. One thread: forking is safe."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)  # jobs that come while the libraries load wait in the backlog
    stopping = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches snakemake, which stops this
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        _preload()
    except BaseException:
        os.unlink(path)  # the jobs run themselves
        raise
    jobs = selectors.DefaultSelector()
    jobs.register(listener, selectors.EVENT_READ)
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)
    try:
        while running or listener.fileno() >= 0:
            if listener.fileno() >= 0 and (stopping or os.getppid() != parent):
                jobs.unregister(listener)
                listener.close()
                os.unlink(path)
            for key, _ in jobs.select(timeout=0.5) if running or listener.fileno() >= 0 else ():
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    # the child closes what is the server's: the listener, the selector, the
                    # other jobs' connections and process handles
                    theirs = [listener, jobs, *(c for _, c in running.values())]
                    pid = _fork_job(conn, theirs, list(running))
                    if pid is None:
                        conn.close()
                        continue
                    pidfd = os.pidfd_open(pid)
                    running[pidfd] = (pid, conn)
                    jobs.register(pidfd, selectors.EVENT_READ)
                else:
                    pid, conn = running.pop(key.fd)
                    jobs.unregister(key.fd)
                    os.close(key.fd)
                    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                    with contextlib.suppress(OSError):
                        _send(conn, {"status": status})
                    conn.close()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))


def _preload() -> None:
    import gc
    import importlib

    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        importlib.import_module(name)
    # what loads at first use: Numba's typing and target registries (a first compile), the
    # image formats PIL registers when a figure is first saved
    import numba
    from PIL import Image

    numba.njit(lambda x: x + 1)(1)
    Image.preinit()
    # the children's collector leaves these objects alone: they stay shared, not copied
    gc.freeze()


def _fork_job(conn: socket.socket, inherited: list, fds_inherited: list[int]) -> int | None:
    """Fork a child that runs the job ``conn`` asks for; its pid, or None where the request
    was unreadable (the job then runs itself)."""
    conn.settimeout(10)
    try:
        request, fds = _receive(conn, n_fds=3)
        if len(fds) != 3:
            raise ValueError("a job sends its standard streams")
    except (OSError, ValueError):
        return None
    # from here the connection waits as long as the job runs: the child's watch on it too
    conn.settimeout(None)
    if request.get("python") != [sys.executable, sys.version]:
        # another interpreter (a conda environment, a container): not what was imported here
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            _send(conn, {"refused": "another Python"})
        return None
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd in fds_inherited:
                os.close(fd)
            code = _run_child(conn, request, fds, inherited)
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    try:
        _send(conn, {"pid": pid})
    except OSError:
        os.kill(pid, signal.SIGKILL)
    return pid


def _run_child(conn: socket.socket, request: dict, fds: list[int], inherited: list) -> int:
    """The job, as ``python <script>`` would run it: the job's streams, directory and
    environment; its exit status."""
    import runpy
    import threading

    for obj in inherited:
        obj.close()
    # a process group of its own: signals reach it once, through the job's process
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[FORKED_ENV] = str(os.getppid())
    tempfile.tempdir = None  # found again from the job's TMPDIR, not the server's
    _limit_threads()
    # the job's process is gone (killed): so is the job, as a job's children would be
    threading.Thread(target=_end_with, args=(conn,), name="job-process", daemon=True).start()
    sys.argv = [request["script"]]
    try:
        runpy.run_path(request["script"], run_name="__main__")
        code = 0
    except SystemExit as end:
        code = _exit_code(end.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    atexit._run_exitfuncs()  # what the interpreter runs at exit; os._exit does not
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _limit_threads() -> None:
    from threadpoolctl import threadpool_limits

    for var, api in THREAD_ENV.items():
        if os.environ.get(var, "").isdigit():
            threadpool_limits(limits=int(os.environ[var]), user_api=api)


def _end_with(conn: socket.socket) -> None:
    """Wait for the job's process to close its end; then kill this job and its children."""
    with contextlib.suppress(OSError):
        while conn.recv(4096):
            pass
    import psutil

    from lossatlas.lifecycle import descendants

    for child in descendants(psutil.Process()):
        with contextlib.suppress(psutil.Error):
            child.kill()
    os._exit(1)


# --- messages: a length, then JSON; file descriptors ride on the first part ---------------------


def _send(conn: socket.socket, message: dict, fds: list[int] = ()) -> None:
    body = json.dumps(message).encode()
    data = _HEADER.pack(len(body)) + body
    sent = socket.send_fds(conn, [data], list(fds)) if fds else conn.send(data)
    if sent < len(data):
        conn.sendall(data[sent:])


def _receive(conn: socket.socket, n_fds: int = 0) -> tuple[dict, list[int]]:
    """One message, read exactly: the next one stays in the socket."""
    if n_fds:
        head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, n_fds)
    else:
        head, fds = conn.recv(_HEADER.size), []
    head += _exactly(conn, _HEADER.size - len(head))
    (size,) = _HEADER.unpack(head)
    return json.loads(_exactly(conn, size)), fds


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            raise ValueError("the other end closed the connection")
        data += more
    return data


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
