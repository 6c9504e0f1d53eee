"""A one-node Slurm cluster for tests, with job accounting, everything under one folder.

    python -m tests.slurm_cluster start FOLDER   # prints the SLURM_CONF line to export
    python -m tests.slurm_cluster stop FOLDER    # cancels every job, stops the daemons

Needs root and Debian's packages: slurm-wlm, slurmdbd, munge,
mariadb-server-core, mariadb-client-core. Daemons:
munged, mariadbd (accounting database), slurmdbd, slurmctld, slurmd. Accounting is kept so that
`sacct` answers: submitit reads job states with it, and without it a job that dies without a
result is never seen as finished. Both commands are idempotent: `start` on a running cluster
only checks it, `stop` on a stopped one does nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PARTITION = "debug"
CLUSTER = "sortformer-test"
# Start order; stopped in reverse.
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
PROGRAMS = (
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "my_print_defaults",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sacct",
)
DB_USER = "slurm"
# Job states that `sacct` may still list for a job that has left the queue.
UNFINISHED = frozenset({"PENDING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"})


class ClusterError(RuntimeError):
    """The cluster could not be started or a client command failed."""


def missing_programs() -> list[str]:
    """The programs this cluster needs that are not installed."""
    return [name for name in PROGRAMS if not shutil.which(name, path=_sbin_path())]


def _sbin_path() -> str:
    return f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"


@dataclass(frozen=True)
class Ports:
    slurmctld: int
    slurmd: int
    slurmdbd: int
    mariadb: int


@dataclass(frozen=True)
class Cluster:
    """The folder a cluster lives in: etc/ (configs, munge key), state/, spool/, db/, log/, run/."""

    folder: Path

    @property
    def conf(self) -> Path:
        return self.folder / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, sacct, scancel) needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def path(self, *parts: str) -> Path:
        return self.folder.joinpath(*parts)

    def pid_file(self, daemon: str) -> Path:
        return self.path("run", f"{daemon}.pid")

    def log_file(self, daemon: str) -> Path:
        return self.path("log", f"{daemon}.log")

    def command(self, *args: str, check: bool = True) -> str:
        """Run a Slurm client against this cluster; its stdout."""
        completed = subprocess.run(
            args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60
        )
        if check and completed.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed: {completed.stderr.strip()}")
        return completed.stdout

    def running(self) -> list[str]:
        return [daemon for daemon in DAEMONS if _alive(self.pid_file(daemon))]

    def start(self) -> None:
        missing = missing_programs()
        if missing:
            raise ClusterError(f"not installed: {', '.join(missing)}")
        if self.running() == list(DAEMONS):
            self.wait_until_idle()
            return
        self.stop()
        try:
            self._start_daemons()
        except (ClusterError, OSError, subprocess.SubprocessError):
            self.stop()  # nothing half-started is left running
            raise

    def _start_daemons(self) -> None:
        for folder in ("etc", "state", "spool", "db", "log", "run"):
            self.path(folder).mkdir(parents=True, exist_ok=True)
        self._write_configs(Ports(*(_free_port() for _ in range(4))))
        self._start_munged()
        self._start_mariadb()
        for daemon in ("slurmdbd", "slurmctld", "slurmd"):
            self._spawn(daemon, [daemon, "-D"], {"SLURM_CONF": str(self.conf)})
            if daemon == "slurmdbd":
                self._wait(lambda: _listening(self._port("slurmdbd")), "slurmdbd")
        self.wait_until_idle()

    def wait_until_idle(self) -> None:
        self._wait(
            lambda: self.command("sinfo", "-h", "-o", "%t", check=False).strip() == "idle",
            "the node to come up",
        )

    def wait_until_drained(self) -> None:
        """Until the controller holds no job: a job's task may still be exiting after its
        result is written."""
        self._wait(lambda: not self.command("squeue", "-h", check=False).strip(), "jobs to end")

    def accounted_states(self, jobs: list[str]) -> dict[str, str]:
        """Each job's state as `sacct` lists it, once every one has ended there: the controller
        reports a job's end to slurmdbd after the job has left its queue."""
        states: dict[str, str] = {}

        def ended() -> bool:
            listed = self.command(
                "sacct", "-n", "-X", "-o", "JobID,State", "-P", f"--jobs={','.join(jobs)}", check=False
            )
            states.clear()
            for line in listed.splitlines():
                if "|" in line:
                    job, state = line.split("|", 1)
                    states[job] = state
            return set(states) == set(jobs) and not set(states.values()) & UNFINISHED

        self._wait(ended, "the accounting of the jobs' end")
        return states

    def stop(self) -> None:
        """Cancel every job, stop the daemons and keep the folder (logs) for the caller to remove."""
        if _alive(self.pid_file("slurmctld")):
            self.command("scancel", "--full", f"--partition={PARTITION}", check=False)
            self.wait_until_drained()
        for daemon in reversed(DAEMONS):
            _terminate(self.pid_file(daemon))

    def _write_configs(self, ports: Ports) -> None:
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
        node_line = node.splitlines()[0]  # NodeName=<host> CPUs=... RealMemory=...
        host = node_line.split()[0].removeprefix("NodeName=")
        munge = f"AuthInfo=socket={self.path('run', 'munge.socket')}"
        self.conf.write_text(
            "\n".join(
                [
                    f"ClusterName={CLUSTER}",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={ports.slurmctld}",
                    f"SlurmdPort={ports.slurmd}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    munge,
                    f"StateSaveLocation={self.path('state')}",
                    f"SlurmdSpoolDir={self.path('spool')}",
                    f"SlurmctldPidFile={self.path('run', 'slurmctld.daemon.pid')}",
                    f"SlurmdPidFile={self.path('run', 'slurmd.daemon.pid')}",
                    f"SlurmctldLogFile={self.log_file('slurmctld')}",
                    f"SlurmdLogFile={self.log_file('slurmd')}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "MpiDefault=none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "ReturnToService=2",
                    # Fast turnaround for tests: cancelled jobs are killed promptly.
                    "KillWait=2",
                    "AccountingStorageType=accounting_storage/slurmdbd",
                    "AccountingStorageHost=127.0.0.1",
                    f"AccountingStoragePort={ports.slurmdbd}",
                    # With slurmdbd this names the munge socket its connections use.
                    f"AccountingStoragePass={self.path('run', 'munge.socket')}",
                    "JobAcctGatherType=jobacct_gather/none",
                    f"{node_line} NodeAddr=127.0.0.1 State=UNKNOWN",
                    f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        dbd = self.path("etc", "slurmdbd.conf")
        dbd.write_text(
            "\n".join(
                [
                    "AuthType=auth/munge",
                    munge,
                    "DbdHost=localhost",
                    "DbdAddr=127.0.0.1",
                    f"DbdPort={ports.slurmdbd}",
                    "SlurmUser=root",
                    f"LogFile={self.log_file('slurmdbd')}",
                    f"PidFile={self.path('run', 'slurmdbd.daemon.pid')}",
                    "StorageType=accounting_storage/mysql",
                    "StorageHost=127.0.0.1",
                    f"StoragePort={ports.mariadb}",
                    f"StorageUser={DB_USER}",
                    f"StoragePass={DB_USER}",
                    "StorageLoc=slurm_acct_db",
                    "",
                ]
            )
        )
        dbd.chmod(0o600)  # slurmdbd refuses a config others can read (it holds the password)
        self.path("etc", "mariadb.sql").write_text(
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_USER}';\n"
            f"GRANT ALL ON *.* TO '{DB_USER}'@'127.0.0.1';\n"
        )

    def _port(self, name: str) -> int:
        """The port slurmdbd.conf gives slurmdbd or MariaDB."""
        key = {"slurmdbd": "DbdPort=", "mariadb": "StoragePort="}[name]
        lines = self.path("etc", "slurmdbd.conf").read_text().splitlines()
        return int(next(line for line in lines if line.startswith(key)).removeprefix(key))

    def _start_munged(self) -> None:
        key = self.path("etc", "munge.key")
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={self.path('run', 'munge.socket')}",
                f"--pid-file={self.path('run', 'munged.daemon.pid')}",
                f"--seed-file={self.path('run', 'munged.seed')}",
                f"--log-file={self.log_file('munged')}",
            ],
        )
        self._wait(lambda: self.path("run", "munge.socket").exists(), "munged")

    def _start_mariadb(self) -> None:
        data = self.path("db", "data")
        if not data.exists():
            made = subprocess.run(
                ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root"],
                capture_output=True,
                text=True,
            )
            if made.returncode != 0:
                raise ClusterError(f"mariadb-install-db failed: {made.stdout[-500:]}{made.stderr[-500:]}")
        self._spawn(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                "--user=root",
                f"--datadir={data}",
                f"--socket={self.path('run', 'mariadb.socket')}",
                f"--pid-file={self.path('run', 'mariadbd.daemon.pid')}",
                "--bind-address=127.0.0.1",
                f"--port={self._port('mariadb')}",
                "--skip-name-resolve",
                f"--init-file={self.path('etc', 'mariadb.sql')}",
            ],
        )
        self._wait(lambda: _listening(self._port("mariadb")), "mariadbd")

    def _spawn(self, daemon: str, args: list[str], env: dict[str, str] | None = None) -> None:
        """Start a daemon in the foreground of its own session; its pid goes to run/<daemon>.pid."""
        with self.log_file(f"{daemon}.console").open("ab") as console:
            process = subprocess.Popen(
                args,
                env={**os.environ, "PATH": _sbin_path(), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file(daemon).write_text(f"{process.pid}\n")

    def _wait(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            dead = [daemon for daemon in DAEMONS if self.pid_file(daemon).exists() and not self._up(daemon)]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"timed out after {timeout:.0f} s"
                raise ClusterError(f"waiting for {what}: {why}; logs in {self.path('log')}")
            time.sleep(0.2)

    def _up(self, daemon: str) -> bool:
        return _alive(self.pid_file(daemon))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid_file: Path) -> bool:
    pid = _pid(pid_file)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is a child we started and nobody reaped yet: it is not running.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _terminate(pid_file: Path, timeout: float = 30) -> None:
    """SIGTERM the daemon whose pid the file holds, SIGKILL it if it lingers; remove the file."""
    pid = _pid(pid_file)
    if pid is not None and _alive(pid_file):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid_file):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
    pid_file.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child (an earlier `start`'s): init reaps it
        os.waitpid(pid, 0)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.slurm_cluster start|stop FOLDER", file=sys.stderr)
        return 2
    cluster = Cluster(Path(argv[1]).resolve())
    try:
        cluster.start() if argv[0] == "start" else cluster.stop()
    except ClusterError as error:
        print(f"slurm_cluster: {error}", file=sys.stderr)
        return 1
    if argv[0] == "start":
        print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
