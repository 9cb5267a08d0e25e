"""Start and stop a one-node SLURM on loopback (munge, MariaDB + slurmdbd, slurmctld, slurmd).

Everything lives in a temp dir except the two config files SLURM insists on reading from
/etc/slurm (a custom SLURM_CONF breaks Snakemake's nested srun): any existing ones are moved
aside and put back on stop. Daemons run in the foreground as our children; they are stopped
by PID. Also a command line for trying it by hand:

    python tests/slurm_cluster.py up [--no-accounting] [--cpus=N]  # prints the state dir
    python tests/slurm_cluster.py down STATE_DIR
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ETC = Path("/etc/slurm")
CLUSTER = "lossatlas"
ACCOUNT = "lossatlas"
BINARIES = ["munged", "slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "scancel"]
ACCT_BINARIES = ["slurmdbd", "sacctmgr", "sacct", "mariadbd", "mariadb-install-db", "mariadb"]


class SlurmUnavailable(RuntimeError):
    """The daemons cannot run here (not root, binaries missing); the message says why."""


def why_unavailable(accounting: bool = True) -> str | None:
    if os.geteuid() != 0:
        return "the SLURM daemons need root (slurmd launches jobs as their users)"
    missing = [b for b in BINARIES + (ACCT_BINARIES if accounting else []) if not _which(b)]
    if missing:
        return (
            f"SLURM binaries missing: {', '.join(missing)} (apt-get install slurmctld slurmd "
            "slurm-client munge slurmdbd mariadb-server)"
        )
    return None


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the daemons do: connections in TIME_WAIT from a previous run do not block a bind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, check=None, interval: float = 0.2):
    """Poll ``predicate`` until truthy (returned) or ``timeout``; ``check()`` may raise early."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def run(cmd: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()}")
    return out


class SlurmCluster:
    """One node, one partition, on 127.0.0.1; with accounting (MariaDB + slurmdbd) by default."""

    def __init__(
        self, root: str | Path | None = None, accounting: bool = True, cpus: int | None = None
    ):
        self.accounting = accounting
        # More CPUs than the machine has lets jobs that mostly wait (a sampling job whose
        # workers are other jobs, two sampling jobs of which one waits for a lock) run at once.
        self.cpus = cpus
        self.root = Path(root or tempfile.mkdtemp(prefix="lossatlas-slurm-"))
        self.host = socket.gethostname().split(".")[0]
        self.partition = "debug"
        self.account = ACCOUNT if accounting else None
        self.procs: dict[str, subprocess.Popen] = {}
        self.pids: dict[str, int] = {}
        self._backups: dict[Path, Path | None] = {}
        self._logs: list = []

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> SlurmCluster:
        reason = why_unavailable(self.accounting)
        if reason:
            raise SlurmUnavailable(reason)
        ports = [6817, 6818] + ([6819] if self.accounting else [])
        busy = [p for p in ports if not _port_free(p)]
        if busy:
            raise SlurmUnavailable(f"ports {busy} are taken: is another SLURM running here?")
        for d in ("state", "spool", "log", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        try:
            self._start_munge(timeout)
            if self.accounting:
                self._start_mariadb(timeout)
            self._write_configs()
            if self.accounting:
                self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])
                wait_until(
                    lambda: not _port_free(6819),
                    timeout,
                    "slurmdbd on port 6819",
                    self._check_alive,
                )
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])
            wait_until(self._ctld_up, timeout, "slurmctld to answer", self._check_alive)
            if self.accounting:
                self._add_account(timeout)
            self._spawn("slurmd", [_which("slurmd"), "-D"])
            wait_until(self.node_idle, timeout, "the node to become idle", self._check_alive)
        except BaseException:
            self.stop()
            raise
        self._save_state()
        return self

    def stop(self) -> None:
        """Cancel our jobs, stop every daemon we started (by PID), restore /etc/slurm."""
        if "slurmctld" in self.pids and self._alive("slurmctld"):
            run(["scancel", "--full", f"--partition={self.partition}"], check=False)
            try:
                wait_until(lambda: not self.queue(), 30, "the queue to drain")
            except (TimeoutError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            if name in self.pids:
                self._terminate(name)
        self._kill_orphan_steps()
        for path, backup in self._backups.items():
            path.unlink(missing_ok=True)
            if backup is not None:
                backup.rename(path)
        self._backups.clear()
        for fh in self._logs:
            fh.close()
        self._logs.clear()
        (self.root / "state.json").unlink(missing_ok=True)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- queries ------------------------------------------------------------------------------
    def node_state(self) -> str:
        out = run(["sinfo", "-h", "-N", "-o", "%T"], check=False, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    def node_idle(self) -> bool:
        return self.node_state() == "idle"

    def queue(self, fmt: str = "%i %j %T") -> list[str]:
        """Lines of squeue for this cluster: job id, name and state by default."""
        out = run(["squeue", "-h", "-o", fmt], check=False, timeout=10)
        if out.returncode != 0:
            raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
        return [line for line in out.stdout.splitlines() if line.strip()]

    def log(self, name: str) -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- internals ----------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], **kw) -> None:
        fh = open(self.root / "log" / f"{name}.out", "ab")
        self._logs.append(fh)
        # New session: a Ctrl-C to the test run does not hit the daemons before we stop them.
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
        self.procs[name] = proc
        self.pids[name] = proc.pid

    def _alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.root / "log" / f"{name}.out").read_text(errors="replace")[-1500:]
                tail += self.log(name)[-1500:]
                raise SlurmUnavailable(f"{name} exited {proc.returncode}: {tail.strip()}")

    def _terminate(self, name: str, timeout: float = 20) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        del self.pids[name]

    def _kill_orphan_steps(self) -> None:
        """slurmstepd outlives slurmd; kill the ones started after our slurmd, by PID."""
        import psutil

        start = getattr(self, "_slurmd_started", None)
        if start is None:
            return
        for p in psutil.process_iter(["name", "create_time"]):
            if p.info["name"] == "slurmstepd" and p.info["create_time"] >= start:
                try:
                    p.kill()
                except psutil.Error:
                    pass

    def _start_munge(self, timeout: float) -> None:
        import pwd

        sock = Path("/run/munge/munge.socket.2")
        if sock.exists() and _munge_works():
            return  # a munged is already serving; share it rather than start a second one
        munge = pwd.getpwnam("munge")
        for d in ("/run/munge", "/var/lib/munge", "/var/log/munge", "/etc/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            os.chown(d, munge.pw_uid, munge.pw_gid)
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            run([_which("mungekey"), "-c", "-f", "-k", str(key)])
            os.chown(key, munge.pw_uid, munge.pw_gid)
        self._spawn(
            "munged",
            [
                "setpriv",
                "--reuid=munge",
                "--regid=munge",
                "--init-groups",
                _which("munged"),
                "-F",
                "--force",
            ],
        )
        wait_until(_munge_works, timeout, "munged to answer", self._check_alive)

    def _start_mariadb(self, timeout: float) -> None:
        data = self.root / "mysql"
        self.db_socket = self.root / "run" / "mysqld.sock"
        self.db_port = _free_port()
        self.db_password = os.urandom(12).hex()
        run(
            [
                _which("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            timeout=120,
        )
        self._spawn(
            "mariadbd",
            [
                _which("mariadbd"),
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--bind-address=127.0.0.1",
                f"--port={self.db_port}",
                f"--socket={self.db_socket}",
                f"--pid-file={self.root / 'run' / 'mysqld.pid'}",
                "--skip-log-bin",
                f"--log-error={self.root / 'log' / 'mariadb.log'}",
                "--innodb-buffer-pool-size=64M",
            ],
        )
        wait_until(self.db_socket.exists, timeout, "MariaDB's socket", self._check_alive)
        sql = (
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
            "FLUSH PRIVILEGES;"
        )
        wait_until(
            lambda: (
                run(
                    [_which("mariadb"), f"--socket={self.db_socket}", "-u", "root", "-e", sql],
                    check=False,
                ).returncode
                == 0
            ),
            timeout,
            "MariaDB to accept the slurm user",
            self._check_alive,
            interval=0.5,
        )

    def _install(self, name: str, text: str, mode: int) -> None:
        """Write /etc/slurm/<name>, moving any existing file aside until stop()."""
        path = ETC / name
        ETC.mkdir(parents=True, exist_ok=True)
        if path not in self._backups:
            backup = None
            if path.exists():
                backup = self.root / f"{name}.orig"
                shutil.move(path, backup)
            self._backups[path] = backup
        path.write_text(text)
        path.chmod(mode)
        shutil.copy(path, self.root / name)  # a copy beside the logs, for debugging

    def _write_configs(self) -> None:
        r = self.root
        cpus = self.cpus or os.cpu_count() or 1
        mem = int(_free_mb() * 0.9)
        user = getpass.getuser()
        if self.accounting:
            acct = [
                "AccountingStorageType=accounting_storage/slurmdbd",
                "AccountingStorageHost=127.0.0.1",
                "AccountingStoragePort=6819",
                "AccountingStorageEnforce=associations",
            ]
        else:
            acct = ["AccountingStorageType=accounting_storage/none"]
        conf = [
            f"ClusterName={CLUSTER}",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmUser={user}",
            "SlurmctldPort=6817",
            "SlurmdPort=6818",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # No cgroups or systemd here: track processes by parentage, no task binding.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ReturnToService=2",
            # Finished jobs stay in squeue this long; Snakemake's squeue status needs >= 120 s.
            "MinJobAge=300",
            "MailProg=/bin/true",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2",
            "KillWait=5",
            "InactiveLimit=0",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            *acct,
            "JobCompType=jobcomp/none",
            # slurmd would drain a node configured with more CPUs than it finds.
            *(["SlurmdParameters=config_overrides"] if cpus > (os.cpu_count() or 1) else []),
            # Daemons bind to the node address (127.0.0.1 here), not every interface.
            "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE "
            "State=UP",
        ]
        self._install("slurm.conf", "\n".join(conf) + "\n", 0o644)
        if self.accounting:
            dbd = [
                "AuthType=auth/munge",
                "DbdHost=localhost",
                "DbdAddr=127.0.0.1",
                "DbdPort=6819",
                f"SlurmUser={user}",
                f"PidFile={r / 'run' / 'slurmdbd.pid'}",
                f"LogFile={r / 'log' / 'slurmdbd.log'}",
                "DebugLevel=info",
                "StorageType=accounting_storage/mysql",
                "StorageHost=127.0.0.1",
                f"StoragePort={self.db_port}",
                "StorageUser=slurm",
                f"StoragePass={self.db_password}",
                "StorageLoc=slurm_acct_db",
            ]
            # slurmdbd refuses a config readable by others: it holds the DB password.
            self._install("slurmdbd.conf", "\n".join(dbd) + "\n", 0o600)

    def _ctld_up(self) -> bool:
        return run(["scontrol", "ping"], check=False, timeout=10).stdout.count("UP") > 0

    def _add_account(self, timeout: float) -> None:
        # slurmctld registers the cluster with slurmdbd when it starts; wait for that.
        wait_until(
            lambda: (
                CLUSTER
                in run(
                    ["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], check=False
                ).stdout
            ),
            timeout,
            "slurmctld to register the cluster with slurmdbd",
            self._check_alive,
        )
        run(
            [
                "sacctmgr",
                "-i",
                "add",
                "account",
                ACCOUNT,
                f"cluster={CLUSTER}",
                "description=lossatlas tests",
                "organization=lossatlas",
            ],
            check=False,
        )
        run(
            [
                "sacctmgr",
                "-i",
                "add",
                "user",
                getpass.getuser(),
                f"account={ACCOUNT}",
                f"cluster={CLUSTER}",
                f"defaultaccount={ACCOUNT}",
            ],
            check=False,
        )
        wait_until(
            lambda: (
                ACCOUNT
                in run(
                    ["sacctmgr", "-n", "-P", "list", "assoc", "format=account"], check=False
                ).stdout
            ),
            timeout,
            "the account association",
            self._check_alive,
        )

    def _save_state(self) -> None:
        self._slurmd_started = time.time() - 5
        state = {
            "pids": self.pids,
            "backups": {str(k): str(v) if v else None for k, v in self._backups.items()},
            "accounting": self.accounting,
            "slurmd_started": self._slurmd_started,
        }
        (self.root / "state.json").write_text(json.dumps(state))


def _munge_works() -> bool:
    try:
        enc = subprocess.run(["munge", "-n"], capture_output=True, timeout=5)
        if enc.returncode != 0:
            return False
        dec = subprocess.run(["unmunge"], input=enc.stdout, capture_output=True, timeout=5)
        return dec.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _free_mb() -> int:
    with open("/proc/meminfo") as fh:
        info = dict(line.split(":", 1) for line in fh)
    return int(info["MemAvailable"].split()[0]) // 1024


def _down(root: Path) -> None:
    """Stop a cluster started by `up` in another process, from its state file."""
    state = json.loads((root / "state.json").read_text())
    subprocess.run(["scancel", "--full", "--partition=debug"], capture_output=True)
    for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
        pid = state["pids"].get(name)
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        wait_until(lambda p=pid: not _pid_alive(p), 30, f"{name} ({pid}) to exit")
    for path, backup in state["backups"].items():
        Path(path).unlink(missing_ok=True)
        if backup:
            shutil.move(backup, path)
    (root / "state.json").unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of a dead parent still answers kill(0); read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if argv[:1] == ["up"]:
        cpus = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--cpus=")), None)
        c = SlurmCluster(accounting="--no-accounting" not in argv, cpus=cpus)
        c.start()
        print(c.root)
        # Keep the parent alive? No: the daemons run in their own sessions and outlive us.
        return 0
    if argv[:1] == ["down"] and len(argv) == 2:
        _down(Path(argv[1]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
