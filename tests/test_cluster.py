"""cluster.connect: local, address and scheduler_file placements against real Dask processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from distributed.security import Security

from lossatlas import config
from lossatlas.sampling import cluster

DASK = str(Path(sys.executable).with_name("dask"))


def _dask_cfg(**kw) -> dict:
    cfg = config.validate({"dask": kw})
    return cfg["dask"]


def _listening_ports(pid: int) -> set[tuple[str, int]]:
    import psutil

    out = set()
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                out.add((conn.laddr.ip, conn.laddr.port))
    return out


def test_local_cluster_sizes_binds_and_pins_threads(monkeypatch, caplog):
    # A caller's OMP_NUM_THREADS must not leak into the workers: nested BLAS pools would
    # oversubscribe the job's cores.
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    caplog.set_level(logging.INFO, logger="lossatlas.sampling.cluster")
    with cluster.connect(_dask_cfg(n_workers=2), threads=8) as client:
        info = client.scheduler_info(n_workers=-1)
        workers = info["workers"]
        assert len(workers) == 2
        assert all(w["nthreads"] == 1 for w in workers.values())
        assert all(a.startswith("tls://127.0.0.1:") for a in workers)
        assert info["address"].startswith("tls://127.0.0.1:")
        envs = client.run(lambda: {k: os.environ.get(k) for k in cluster.THREAD_ENV})
        assert all(e == cluster.THREAD_ENV for e in envs.values())
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids  # processes, not threads
        bound = _listening_ports(os.getpid())
        assert bound and all(ip == "127.0.0.1" for ip, _ in bound), bound
        assert client.submit(sum, [1, 2, 3]).result() == 6
    assert os.environ["OMP_NUM_THREADS"] == "4"
    assert "Dask dashboard: http://127.0.0.1:" in caplog.text


def _loaded_modules() -> list[str]:
    return sorted(m for m in cluster.WORKER_PRELOAD if m in sys.modules)


@pytest.mark.skipif(sys.platform == "win32", reason="no forkserver on Windows")
def test_local_workers_start_with_the_sampling_code_loaded():
    # Forked from a server that imported it once, rather than each importing it afresh: the
    # job's fixed cost. A worker that was spawned has none of it until a task imports it.
    with cluster.connect(_dask_cfg(n_workers=2), threads=2) as client:
        loaded = client.run(_loaded_modules)
        methods = client.run(lambda: __import__("multiprocessing").get_start_method())
    assert all(m == sorted(cluster.WORKER_PRELOAD) for m in loaded.values()), loaded
    assert set(methods.values()) == {"forkserver"}


@pytest.mark.skipif(sys.platform == "win32", reason="no forkserver on Windows")
def test_prestart_starts_the_server_the_workers_fork_from():
    # A sample job starts the server first, so its imports overlap the job's own start-up;
    # the cluster's workers are then its children, not a second server's.
    import multiprocessing.forkserver
    import os

    cluster.prestart(_dask_cfg(n_workers=2), threads=2)
    server = multiprocessing.forkserver._forkserver._forkserver_pid  # no public accessor
    assert server is not None
    with cluster.connect(_dask_cfg(n_workers=2, dashboard=False), threads=2) as client:
        parents = client.run(os.getppid)
    assert set(parents.values()) == {server}
    cluster.prestart(_dask_cfg(placement="slurm"), threads=2)  # nothing for other placements
    assert multiprocessing.forkserver._forkserver._forkserver_pid == server


def test_one_local_worker_is_a_thread_of_the_job_reached_from_it_alone():
    """One worker runs in the job's process: no forkserver or worker process to import the
    sampling code again, and a scheduler that talks in-process (inproc://) and listens on no
    port; only its HTTP server, on loopback, as for processes."""
    script = textwrap.dedent("""
        import multiprocessing.forkserver, os
        from lossatlas import config
        from lossatlas.sampling import cluster
        d = config.validate({"dask": {"dashboard": False}})["dask"]
        cluster.prestart(d, threads=1)
        assert multiprocessing.forkserver._forkserver._forkserver_pid is None
        with cluster.connect(d, threads=1) as client:
            assert client.scheduler.address.startswith("inproc://"), client.scheduler.address
            assert set(client.run(os.getpid).values()) == {os.getpid()}
            assert client.submit(sum, [1, 2]).result() == 3
        assert multiprocessing.forkserver._forkserver._forkserver_pid is None
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_local_cluster_refuses_clients_without_its_credentials():
    """Another user of the machine cannot reach the sampling job's scheduler: not in plain TCP,
    not without credentials, not with TLS credentials of their own."""
    from distributed import Client
    from distributed.security import Security

    with cluster.connect(_dask_cfg(n_workers=2, dashboard=False), threads=2) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        attempts = [
            {"address": address.replace("tls://", "tcp://")},
            {"address": address},
            {"address": address, "security": Security.temporary()},
        ]
        for kw in attempts:
            with pytest.raises((OSError, TypeError, TimeoutError)):
                Client(**kw, timeout="5s")
        assert client.submit(sum, [1, 2]).result() == 3  # the job's own client still works


def test_local_cluster_defaults_to_threads_and_no_dashboard():
    lines = []
    with cluster.connect(_dask_cfg(dashboard=False), threads=1, log=lines.append) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
        # The scheduler's HTTP server (health, metrics) still runs, on loopback only.
        bound = _listening_ports(os.getpid())
        assert bound and all(ip == "127.0.0.1" for ip, _ in bound), bound
    assert not any("dashboard" in line for line in lines)


def test_local_dashboard_is_served_on_loopback():
    with cluster.connect(_dask_cfg(n_workers=1), threads=1) as client:
        link = client.dashboard_link
        assert link.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(link, timeout=10) as resp:
            assert resp.status == 200


def _write_tls(tmp: Path) -> dict[str, str]:
    """Write a self-signed CA/cert/key triple; the same pair serves every role."""
    pytest.importorskip("cryptography", reason="TLS credentials need the cryptography package")
    sec = Security.temporary()
    files = {"ca_file": tmp / "ca.pem", "cert": tmp / "cert.pem", "key": tmp / "key.pem"}
    files["ca_file"].write_text(sec.tls_ca_file)
    files["cert"].write_text(sec.tls_client_cert)
    files["key"].write_text(sec.tls_client_key)
    for p in files.values():
        p.chmod(0o600)
    return {k: str(v) for k, v in files.items()}


def _wait_for(predicate, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: process {p.args[:2]} exited {p.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def tls_scheduler(tmp_path_factory):
    """A real `dask scheduler` + `dask worker` over TLS on loopback, via a scheduler file."""
    tmp = tmp_path_factory.mktemp("dask-tls")
    tls = _write_tls(tmp)
    sfile = tmp / "scheduler.json"
    tls_args = ["--tls-ca-file", tls["ca_file"], "--tls-cert", tls["cert"]]
    tls_args += ["--tls-key", tls["key"]]
    logs = open(tmp / "dask.log", "w")
    sched = subprocess.Popen(
        [DASK, "scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0"]
        + ["--no-dashboard", "--scheduler-file", str(sfile), *tls_args],
        stdout=logs,
        stderr=subprocess.STDOUT,
    )
    procs = [sched]
    try:
        _wait_for(sfile.exists, 60, "the scheduler file", procs)
        worker = subprocess.Popen(
            [DASK, "worker", "--scheduler-file", str(sfile), "--host", "127.0.0.1"]
            + ["--nthreads", "1", "--no-dashboard", *tls_args],
            stdout=logs,
            stderr=subprocess.STDOUT,
        )
        procs.append(worker)
        address = json.loads(sfile.read_text())["address"]
        yield {"tls": tls, "scheduler_file": str(sfile), "address": address, "procs": procs}
    finally:
        _stop(procs[::-1])
        logs.close()


def test_scheduler_file_over_tls(tls_scheduler):
    assert tls_scheduler["address"].startswith("tls://127.0.0.1:")
    lines = []
    cfg = _dask_cfg(
        placement="scheduler_file",
        scheduler_file=tls_scheduler["scheduler_file"],
        tls=tls_scheduler["tls"],
        timeout=60,
    )
    with cluster.connect(cfg, threads=1, log=lines.append) as client:
        assert client.scheduler.address == tls_scheduler["address"]
        assert client.submit(pow, 2, 10).result() == 1024
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert workers and all(a.startswith("tls://127.0.0.1:") for a in workers)
    assert any("joined tls://127.0.0.1:" in line and "TLS" in line for line in lines)
    assert any(line.startswith("Dask dashboard:") for line in lines)


def test_address_over_tls(tls_scheduler):
    cfg = _dask_cfg(placement="address", address=tls_scheduler["address"], timeout=60)
    cfg["tls"] = dict(tls_scheduler["tls"])
    with cluster.connect(cfg, threads=1) as client:
        assert client.submit(lambda: "ok").result() == "ok"


def test_tls_scheduler_without_credentials_is_refused(tls_scheduler):
    cfg = _dask_cfg(placement="address", address=tls_scheduler["address"], timeout=10)
    with pytest.raises(cluster.ClusterError, match=r"dask\.tls\.ca_file"):
        with cluster.connect(cfg, threads=1):
            pass


def test_wrong_ca_is_refused(tls_scheduler, tmp_path):
    # A client holding another CA's certificate must not get in: TLS authenticates, too.
    cfg = _dask_cfg(placement="address", address=tls_scheduler["address"], timeout=5)
    cfg["tls"].update(_write_tls(tmp_path))
    with pytest.raises(cluster.ClusterError, match="could not connect"):
        with cluster.connect(cfg, threads=1):
            pass


def test_plain_tcp_needs_explicit_consent(tmp_path):
    cfg = _dask_cfg(placement="address", address="tcp://127.0.0.1:9", timeout=2)
    with pytest.raises(cluster.ClusterError, match="allow_plain"):
        with cluster.connect(cfg, threads=1):
            pass
    cfg["tls"]["allow_plain"] = True
    # Consent given, the error is now about reaching the (absent) scheduler.
    with pytest.raises(cluster.ClusterError, match="could not connect"):
        with cluster.connect(cfg, threads=1):
            pass


def test_missing_scheduler_file_is_a_clear_error(tmp_path):
    cfg = _dask_cfg(placement="scheduler_file", scheduler_file=str(tmp_path / "no.json"))
    cfg["timeout"] = 0.5
    with pytest.raises(cluster.ClusterError, match="is the scheduler running"):
        with cluster.connect(cfg, threads=1):
            pass


def test_tls_files_must_exist(tmp_path):
    cfg = _dask_cfg(placement="address", address="tls://127.0.0.1:9")
    cfg["tls"].update(ca_file=str(tmp_path / "ca.pem"), cert=str(tmp_path / "c.pem"))
    with pytest.raises(cluster.ClusterError, match="no such file"):
        with cluster.connect(cfg, threads=1):
            pass


UNGUARDED = """
import os, signal, sys
from lossatlas.sampling import cluster
print("top level", flush=True)
with cluster.connect({"placement": "local", "n_workers": 2, "dashboard": False}, 2) as c:
    victim = sorted(c.scheduler_info(n_workers=-1)["workers"])[0]
    try:
        c.run(lambda: os.kill(os.getpid(), signal.SIGKILL), workers=[victim])
    except Exception:
        pass  # the worker died mid-call, as intended
    c.wait_for_workers(2, timeout=60)
    print("result", c.submit(lambda x: 2 * x, 21).result(), flush=True)
"""


def test_unguarded_script_is_not_rerun_by_workers(tmp_path):
    # Snakemake runs rule scripts at module level, without an `if __name__ == "__main__"`
    # guard; spawned workers (and the one respawned after a kill) must not rerun it.
    script = tmp_path / "rule_script.py"
    script.write_text(UNGUARDED)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("top level") == 1, out.stdout
    assert "result 42" in out.stdout
