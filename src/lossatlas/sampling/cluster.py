"""Where the sampling tasks run: a Dask client for the placement chosen in ``cfg["dask"]``.

``connect(cfg["dask"], threads, log)`` is a context manager yielding a ``distributed.Client``:

- ``local``: a LocalCluster inside the job: single-threaded worker processes on loopback, or,
  for one worker, a worker thread in the job's own process.
- ``slurm``: Dask workers as SLURM jobs (dask-jobqueue's SLURMCluster), over TLS.
- ``address`` / ``scheduler_file``: join a running cluster, over TLS unless explicitly allowed.

docs/cluster.md describes the placements and the config fields.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster
from distributed.security import Security
from distributed.utils import get_mp_context

from lossatlas.schema import section

__all__ = ["ClusterError", "connect", "security_for_join", "THREAD_ENV"]

logger = logging.getLogger(__name__)

# One BLAS/OpenMP thread per worker process: workers are already one per core, and nested
# thread pools would oversubscribe the job's CPUs.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


# What a sampling task imports, loaded once in the forkserver that forks the local workers
# rather than once per spawned worker (:func:`_forked_workers`). Nothing that starts threads
# at import (JAX does) may be here: the server forks after loading them.
WORKER_PRELOAD = (
    "numpy",
    "lossatlas.sampling.engine",
    "lossatlas.sampling.fused",
    "threadpoolctl",
)


class ClusterError(RuntimeError):
    """The Dask cluster could not be reached or did not come up; the message says what to check."""


def _say(log) -> Callable[[str], None]:
    if log is None:
        return logger.info
    if hasattr(log, "info"):
        return log.info
    return log


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block.

    The nanny reads the pre-spawn environment (OMP_NUM_THREADS, ...) from ``os.environ`` when it
    is created, taking the OS value over its config, so the values must be in place then.
    """
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Keep spawned worker processes from re-running the ``__main__`` script.

    multiprocessing's spawn re-executes the parent's main file in every child. Snakemake's
    ``script:`` rules run their code at module level with no ``__name__`` guard, so each
    worker would rerun the rule (and fail while bootstrapping). Without ``__file__`` the
    children leave ``__main__`` alone, as for an interactive session; functions defined in
    the script still reach the workers, pickled by value. Held for the cluster's whole life
    because the nanny respawns a worker that dies.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main.__spec__, "name", None):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


@contextlib.contextmanager
def _forked_workers() -> Iterator[bool]:
    """Start local workers from a forkserver that has already imported the sampling code;
    yields whether they are.

    A spawned worker imports distributed, numpy, numba and lossatlas afresh, about 2 CPU-s
    each. The forkserver pays that once per process (a job, a notebook, a test session); its
    forks start with the modules loaded and no threads. The server inherits the environment
    in force when it starts, so callers hold :data:`THREAD_ENV` around this. Where there is
    no forkserver (Windows), workers are spawned as before.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        yield False
        return
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        ctx = get_mp_context()
        # in force when the server starts, i.e. at the first worker; later calls leave it
        ctx.set_forkserver_preload(
            ["distributed", *(m for m in WORKER_PRELOAD if importlib.util.find_spec(m))]
        )
        yield True


def local_workers(dask_cfg: dict, threads: int) -> int:
    """The worker count of a ``local`` placement: ``n_workers``, else the job's threads."""
    return int(section("dask", dask_cfg)["n_workers"] or threads or 1)


def prestart(dask_cfg: dict, threads: int) -> None:
    """Start the server that :func:`connect`'s local workers fork from now, in the
    background: its imports (about 1.5 s) then overlap whatever the job does before it
    connects, instead of delaying the first worker. Nothing for the other placements, for
    one local worker (a thread of this process), or where workers are spawned."""
    if section("dask", dask_cfg)["placement"] != "local" or local_workers(dask_cfg, threads) == 1:
        return
    with _main_not_reimported(), _forked_workers() as forked, _environ(THREAD_ENV):
        if forked:
            multiprocessing.forkserver.ensure_running()


def _dashboard_line(client: Client) -> str:
    try:
        link = client.dashboard_link
    except KeyError:  # the scheduler runs no dashboard
        return "Dask dashboard: none (the scheduler serves no dashboard)"
    port = urllib.parse.urlsplit(link).port
    # the scheduler listens on this machine only: a laptop reaches it through an SSH tunnel
    reach = (
        f"; from a laptop: ssh -L {port}:127.0.0.1:{port} {socket.gethostname()}, then open "
        f"http://127.0.0.1:{port}/status"
        if port and urllib.parse.urlsplit(link).hostname in ("127.0.0.1", "localhost")
        else ""
    )
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return f"Dask dashboard: {link} (pip install 'lossatlas[dashboard]' for its plots{reach})"
    return f"Dask dashboard: {link}{' (' + reach[2:] + ')' if reach else ''}"


@contextlib.contextmanager
def connect(dask_cfg: dict, threads: int, log=None) -> Iterator[Client]:
    """Yield a Client for ``dask_cfg["placement"]``; close what was started on exit.

    ``threads`` sizes the local cluster when ``n_workers`` is null. ``log`` is a logger or a
    callable taking one string; the dashboard address and cluster size are reported through it.
    """
    dask_cfg = section("dask", dask_cfg)  # the schema's defaults for keys left out
    say = _say(log)
    placement = dask_cfg["placement"]
    if placement == "local":
        cm = _local(dask_cfg, threads, say)
    elif placement == "slurm":
        cm = _slurm(dask_cfg, say)
    elif placement in ("address", "scheduler_file"):
        cm = _join(dask_cfg, placement, say)
    else:
        raise ClusterError(f"dask.placement: unknown placement {placement!r}")
    with cm as client:
        yield client


@contextlib.contextmanager
def _local(dask_cfg: dict, threads: int, say) -> Iterator[Client]:
    n_workers = local_workers(dask_cfg, threads)
    dashboard = bool(dask_cfg["dashboard"])
    if n_workers == 1:
        with _in_process(dashboard, say) as client:
            yield client
        return
    # Loopback alone does not keep other users of a shared login node out: anyone on the
    # machine could connect and run code as this user. Temporary TLS credentials, held in this
    # process and passed to the workers it starts, make the scheduler refuse everyone else.
    security = Security.temporary()
    with _main_not_reimported(), _forked_workers():
        with _environ(THREAD_ENV):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                # Processes, not threads: the samplers are Python/numpy loops holding the GIL.
                processes=True,
                protocol="tls://",
                security=security,
                host="127.0.0.1",
                scheduler_port=0,
                # The scheduler's HTTP server (health, metrics, and the dashboard when on)
                # always starts; without an address it would take the fixed port 8787.
                dashboard_address="127.0.0.1:0",
                scheduler_kwargs={"dashboard": dashboard},
                worker_dashboard_address=None,
                env=dict(THREAD_ENV),
            )
        try:
            with Client(cluster) as client:
                say(
                    f"Dask: local cluster of {n_workers} worker processes x 1 thread "
                    f"at {cluster.scheduler_address} (TLS, temporary credentials)"
                )
                if dashboard:
                    say(_dashboard_line(client))
                yield client
        finally:
            cluster.close()


@contextlib.contextmanager
def _in_process(dashboard: bool, say) -> Iterator[Client]:
    """One worker thread in this process. A worker process would add only costs: its server's
    and its own imports (about 2 CPU-s a job) and a copy of every task and result; the
    kernels it runs are compiled once, here. Its scheduler talks in-process (``inproc://``)
    and listens on no port, so nothing outside this process can reach it."""
    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="inproc://",
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": dashboard},
        # a worker in this process always serves HTTP (health, metrics): on loopback, not on
        # every interface as None would have it
        worker_dashboard_address="127.0.0.1:0",
    )
    # the dashboard listens on loopback; the link would name the host of the inproc address
    link = {"distributed.dashboard.link": "{scheme}://127.0.0.1:{port}/status"}
    try:
        with Client(cluster) as client, dask.config.set(link):
            say(f"Dask: in-process cluster of 1 worker thread at {cluster.scheduler_address}")
            if dashboard:
                say(_dashboard_line(client))
            yield client
    finally:
        cluster.close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _slurm_addresses(interface: str | None, host: str, dashboard: bool, say):
    """Where a SLURM run's scheduler and workers listen: the scheduler's options and the
    workers' extra arguments."""
    scheduler_options: dict[str, Any] = {"dashboard": dashboard}
    # Bind the scheduler (and its dashboard) to one address: the configured interface, or
    # host (loopback by default), never every interface unless host says 0.0.0.0.
    if interface:
        # The dashboard does not take an interface; resolve it to that interface's address.
        from distributed.utils import get_ip_interface

        scheduler_options["interface"] = interface
        scheduler_options["dashboard_address"] = f"{get_ip_interface(interface)}:0"
        # Worker dashboards are not needed (the scheduler's shows the workers) and would
        # listen on every interface of the compute node.
        return scheduler_options, ["--no-dashboard"]
    scheduler_options["host"] = host
    scheduler_options["dashboard_address"] = f"{host}:0"
    if _is_loopback(host):
        return scheduler_options, ["--no-dashboard", "--host", host]
    say(
        f"Dask: dask.slurm.host is {host} and no interface is set; worker processes "
        "listen on every interface of their node (TLS still authenticates peers). "
        "Set dask.slurm.interface to bind them to one."
    )
    return scheduler_options, ["--no-dashboard"]


@contextlib.contextmanager
def _slurm(dask_cfg: dict, say) -> Iterator[Client]:
    from dask_jobqueue import SLURMCluster

    s = dask_cfg["slurm"]
    timeout = float(dask_cfg["timeout"])
    n_jobs = int(s["n_jobs"])
    processes = int(s["processes"])
    cores = int(s["cores"])
    interface = s["interface"]
    host = s["host"] or "127.0.0.1"
    log_dir = Path(s["log_directory"] or "results/logs/dask-workers").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    security = _security_for_slurm(dask_cfg["tls"])

    scheduler_options, worker_args = _slurm_addresses(
        interface, host, bool(dask_cfg["dashboard"]), say
    )

    prologue = [f"export {k}={v}" for k, v in THREAD_ENV.items()] + list(s["job_script_prologue"])
    kwargs: dict[str, Any] = dict(
        cores=cores,
        processes=processes,
        memory=s["memory"],
        walltime=s["walltime"],
        queue=s["queue"],
        account=s["account"],
        job_extra_directives=list(s["job_extra_directives"]),
        job_script_prologue=prologue,
        log_directory=str(log_dir),
        python=s["python"] or sys.executable,
        worker_extra_args=worker_args,
        interface=interface,
        scheduler_options=scheduler_options,
        security=security,
        protocol="tls://",
        # Temporary worker credentials are written here (mode 600, removed on close); the
        # log directory sits in the working directory, which the compute nodes share.
        shared_temp_directory=str(log_dir),
        name="lossatlas",
    )
    n_workers = n_jobs * processes
    want = min(int(s["min_workers"] or n_workers), n_workers)
    cluster = SLURMCluster(**kwargs)
    try:
        say(f"Dask: SLURM cluster, scheduler {cluster.scheduler_address}; worker logs in {log_dir}")
        say("Dask: worker job script:\n" + cluster.job_script())
        cluster.scale(jobs=n_jobs)
        with Client(cluster, security=security) as client:
            if scheduler_options.get("dashboard"):
                say(_dashboard_line(client))
            t0 = time.monotonic()
            try:
                client.wait_for_workers(want, timeout=timeout)
            except TimeoutError as err:
                got = len(client.scheduler_info(n_workers=-1)["workers"])
                raise ClusterError(
                    f"only {got} of {want} Dask workers joined within {timeout:g} s "
                    f"({n_jobs} SLURM jobs submitted); check `squeue --me` for pending jobs "
                    f"and the worker logs in {log_dir}; raise dask.timeout if the queue is slow"
                ) from err
            say(
                f"Dask: {len(client.scheduler_info(n_workers=-1)['workers'])} workers joined "
                f"in {time.monotonic() - t0:.1f} s ({n_jobs} SLURM jobs x {processes} processes)"
            )
            yield client
    finally:
        # Closing the cluster scancels the worker jobs.
        cluster.close()
        _remove_worker_credentials(cluster)


def _remove_worker_credentials(cluster) -> None:
    """Delete the temporary TLS key and certificates written for the worker jobs.

    dask-jobqueue keeps them as NamedTemporaryFile attributes (``_job_<field>``) that vanish
    only when the cluster object is garbage-collected; the key must not linger on disk.
    """
    for name in list(vars(cluster)):
        fh = getattr(cluster, name, None)
        if name.startswith("_job_") and hasattr(fh, "close"):
            fh.close()


def _security_for_slurm(tls: dict) -> Security:
    if any(tls.get(k) for k in ("ca_file", "cert", "key")):
        return _security_from_files(tls)
    # The scheduler and workers are ours: a fresh self-signed CA shared only with our own
    # worker jobs both encrypts and authenticates every connection.
    return Security.temporary()


def _security_from_files(tls: dict) -> Security:
    ca, cert, key = tls["ca_file"], tls["cert"], tls["key"]
    if not ca or not cert:
        raise ClusterError(
            "dask.tls: ca_file and cert are both required for TLS (key too unless it is in cert)"
        )
    for name, path in (("ca_file", ca), ("cert", cert), ("key", key)):
        if path and not Path(path).is_file():
            raise ClusterError(f"dask.tls.{name}: no such file {path}")
    roles = {}
    for role in ("client", "scheduler", "worker"):
        roles[f"tls_{role}_cert"] = str(cert)
        roles[f"tls_{role}_key"] = str(key) if key else None
    return Security(tls_ca_file=str(ca), require_encryption=True, **roles)


def security_for_join(dask_cfg: dict, address: str) -> Security | None:
    """Security for joining ``address``: TLS from ``dask.tls``, or None for an allowed tcp://.

    A tls:// scheduler needs ``dask.tls.ca_file`` and ``cert`` (and ``key`` unless in ``cert``).
    A scheduler without TLS is refused unless ``dask.tls.allow_plain`` is true.
    """
    tls = dask_cfg["tls"]
    has_files = any(tls.get(k) for k in ("ca_file", "cert", "key"))
    if address.startswith("tls://"):
        if not has_files:
            raise ClusterError(
                f"the scheduler at {address} uses TLS: set dask.tls.ca_file, dask.tls.cert and "
                "dask.tls.key to the CA and a client certificate signed by it"
            )
        return _security_from_files(tls)
    if tls["allow_plain"]:
        return None
    raise ClusterError(
        f"the scheduler at {address} does not use TLS, so its traffic is neither encrypted nor "
        "authenticated; start it with --tls-ca-file/--tls-cert/--tls-key (docs/cluster.md), "
        "or set dask.tls.allow_plain: true to accept it"
    )


def _scheduler_file_address(path: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as fh:
                return json.load(fh)["address"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError) as err:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"dask.scheduler_file: {path} does not hold a scheduler address after "
                    f"{timeout:g} s ({type(err).__name__}); is the scheduler running?"
                ) from err
            time.sleep(0.2)


@contextlib.contextmanager
def _join(dask_cfg: dict, placement: str, say) -> Iterator[Client]:
    timeout = float(dask_cfg["timeout"])
    if placement == "address":
        address = dask_cfg["address"]
        where = address
    else:
        where = dask_cfg["scheduler_file"]
        address = _scheduler_file_address(where, timeout)
    if "://" not in address:
        address = "tcp://" + address
    security = security_for_join(dask_cfg, address)
    try:
        client = Client(address, security=security, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise ClusterError(
            f"could not connect to the Dask scheduler at {address} (from dask.{placement} = "
            f"{where}) within {timeout:g} s: {err}"
        ) from err
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError as err:
            raise ClusterError(
                f"the Dask scheduler at {address} has no workers after {timeout:g} s"
            ) from err
        n = len(client.scheduler_info(n_workers=-1)["workers"])
        say(f"Dask: joined {address} ({n} workers{', TLS' if security else ', no TLS'})")
        say(_dashboard_line(client))
        yield client
