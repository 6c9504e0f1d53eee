"""A one-node Slurm cluster for tests, with job accounting, everything under one folder.

    python -m tests.slurm_cluster start FOLDER   # prints the SLURM_CONF line to export
    python -m tests.slurm_cluster stop FOLDER    # cancels every job, stops the daemons

Needs root and Debian's packages: slurm-wlm, slurmdbd, munge,
mariadb-server-core, mariadb-client-core. Daemons:
munged, mariadbd (accounting database), slurmdbd, slurmctld, slurmd. Accounting is kept so that
`sacct` answers: submitit reads job states with it, and without it a job that dies without a
result is never seen as finished. Both commands are idempotent: `start` on a running cluster
only checks it, `stop` on a stopped one does nothing.

Nothing here polls: each wait blocks on what a daemon or the kernel signals (munged's parent
exiting once munged is ready, mariadbd's sd_notify, a line slurmdbd writes to its log, srun
returning once a job ran), together with a pidfd of each daemon started so far, so that one that
dies meanwhile fails the wait at once; a timeout ends a wait on a daemon that hangs.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from inotify_simple import INotify, flags

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
# Seconds a daemon may take to become ready, or jobs to end, before the cluster is declared broken.
TIMEOUT = 60
# What slurmdbd logs once it is operational.
SLURMDBD_STARTED = re.compile(rb"slurmdbd version \S+ started")


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
class Job:
    """The controller's record of an ended job."""

    state: str
    start: datetime
    end: datetime


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
            args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=TIMEOUT
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
            self._run_job("the node to run a job")
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
        ports = Ports(*(_free_port() for _ in range(4)))
        self._write_configs(ports)
        self._start_munged()
        self._start_mariadb(ports.mariadb)
        self._start_slurmdbd()
        # Neither says when it is ready; srun retries reaching the controller while it starts
        # (MessageTimeout), and its job runs once slurmd has registered the node.
        for daemon in ("slurmctld", "slurmd"):
            self._spawn(daemon, [daemon, "-D"], {"SLURM_CONF": str(self.conf)})
        self._run_job("the node to run a job")

    def wait_until_drained(self) -> None:
        """Until every job the controller holds has ended and left the node: a job's task may
        still be exiting after its result is written."""
        jobs = sorted(set(self.command("squeue", "-h", "-o", "%A").split()))
        if jobs:
            self._after(jobs)

    def ended_jobs(self, jobs: list[str]) -> dict[str, Job]:
        """The controller's record of each job (`<id>` or `<array id>_<task>`), once every one has
        ended and left the node. These are the states and times that `sacct` lists, read where
        they are made: the controller reports them to slurmdbd later, with nothing to wait for."""
        self._after(jobs)
        ended = {}
        for job in jobs:
            line = self.command("scontrol", "show", "job", "--oneliner", job)
            record = dict(field.partition("=")[::2] for field in line.split())
            start, end = (datetime.fromisoformat(record[key]) for key in ("StartTime", "EndTime"))
            ended[job] = Job(record["JobState"], start, end)
        return ended

    def stop(self) -> None:
        """Cancel every job, stop the daemons and keep the folder (logs) for the caller to remove."""
        try:
            if _alive(self.pid_file("slurmctld")):
                self.command("scancel", "--full", f"--partition={PARTITION}", check=False)
                self.wait_until_drained()
        finally:
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
                    # After an event (a job ended, the node registered) the controller schedules
                    # pending jobs on its next tick (about a second) instead of at least 3 s after
                    # its previous scheduling: jobs here are few and the tests wait on them.
                    "SchedulerParameters=batch_sched_delay=0",
                    "ReturnToService=2",
                    # Fast turnaround for tests: cancelled jobs are killed promptly.
                    "KillWait=2",
                    # How long srun and slurmd go on trying to reach a controller that is still starting.
                    "MessageTimeout=30",
                    # How long the controller keeps an ended job's record, which `ended_jobs` reads.
                    "MinJobAge=3600",
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

    def _start_munged(self) -> None:
        key = self.path("etc", "munge.key")
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        # Without --foreground munged forks, and its parent exits once the daemon listens on its
        # socket (the daemon tells it through a pipe); the pid file munged writes names the daemon.
        self._finish(
            [
                "munged",
                "--force",
                f"--key-file={key}",
                f"--socket={self.path('run', 'munge.socket')}",
                f"--pid-file={self.pid_file('munged')}",
                f"--seed-file={self.path('run', 'munged.seed')}",
                f"--log-file={self.log_file('munged')}",
            ],
            "munged",
        )

    def _start_mariadb(self, port: int) -> None:
        data = self.path("db", "data")
        if not data.exists():
            made = subprocess.run(
                ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root"],
                capture_output=True,
                text=True,
            )
            if made.returncode != 0:
                raise ClusterError(f"mariadb-install-db failed: {made.stdout[-500:]}{made.stderr[-500:]}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            # An abstract address the kernel picks: no path to outgrow, nothing left on disk.
            notify.bind("")
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
                    f"--port={port}",
                    "--skip-name-resolve",
                    f"--init-file={self.path('etc', 'mariadb.sql')}",
                ],
                {"NOTIFY_SOCKET": "@" + notify.getsockname()[1:].decode()},
            )
            # mariadbd sends READY=1 by sd_notify once it has run the init file and takes
            # connections; other notifications (STATUS=...) may come first.
            deadline = time.monotonic() + TIMEOUT
            notified: list[bytes] = []
            while b"READY=1" not in notified:
                self._wait(notify.fileno(), "mariadbd", deadline)
                notified += notify.recv(4096).splitlines()

    def _start_slurmdbd(self) -> None:
        """slurmdbd 22.05 signals nothing when it is ready (no sd_notify; without -D its parent
        exits before the daemon is ready) but its log line `slurmdbd version ... started`, written
        where its source calls it fully operational: after it has started the thread that listens
        for connections. slurmctld, which must find it listening (on its first start it exits
        without slurmdbd's TRES), connects only after loading its own plugins, tens of
        milliseconds after this line."""
        log = self.log_file("slurmdbd")
        log.touch()
        with INotify() as inotify, log.open("rb") as reader:
            reader.seek(0, os.SEEK_END)  # an earlier start's lines stay in the log
            inotify.add_watch(log, flags.MODIFY)
            self._spawn("slurmdbd", ["slurmdbd", "-D"], {"SLURM_CONF": str(self.conf)})
            deadline = time.monotonic() + TIMEOUT
            written = b""
            while not SLURMDBD_STARTED.search(written):
                self._wait(inotify.fileno(), "slurmdbd", deadline)
                inotify.read()
                written += reader.read()

    def _after(self, jobs: list[str]) -> None:
        """Block until `jobs` have ended and left the node."""
        self._run_job("jobs to end", f"--dependency=afterany:{':'.join(jobs)}")

    def _run_job(self, what: str, *options: str) -> None:
        """Run `true` as a job on the whole node and block until it has run: srun waits for the
        allocation the controller sends it, and the controller gives the node to a job only once
        no other job runs or completes on it."""
        self._finish(
            ["srun", f"--partition={PARTITION}", "--exclusive", "--job-name=cluster-check", *options, "true"],
            what,
        )

    def _finish(self, args: list[str], what: str) -> None:
        """Run a command that returns once `what` has happened; a failure of it is the cluster's."""
        env = {**os.environ, "PATH": _sbin_path(), **self.env}
        with subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as process:
            pidfd = os.pidfd_open(process.pid)
            try:
                self._wait(pidfd, what, time.monotonic() + TIMEOUT)
            except ClusterError:
                process.kill()
                raise
            finally:
                os.close(pidfd)
            output = process.communicate()[0].decode().strip()
        if process.returncode != 0:
            raise ClusterError(f"waiting for {what}: {args[0]} failed: {output}; logs in {self.path('log')}")

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

    def _wait(self, ready: int, what: str, deadline: float) -> None:
        """Block until file descriptor `ready` can be read. Each daemon started so far is watched
        through its pidfd (readable once it exits), so one that dies meanwhile fails the wait at
        once; the deadline ends a wait on one that hangs."""
        exited = []
        with contextlib.ExitStack() as stack:
            selector = stack.enter_context(selectors.DefaultSelector())
            selector.register(ready, selectors.EVENT_READ)
            for daemon in DAEMONS:
                if not self.pid_file(daemon).exists():
                    continue  # not started yet
                pidfd = _pidfd(self.pid_file(daemon))
                if pidfd is None:
                    exited.append(daemon)
                    continue
                stack.callback(os.close, pidfd)
                selector.register(pidfd, selectors.EVENT_READ, daemon)
            events = [] if exited else selector.select(deadline - time.monotonic())
        exited += [key.data for key, _ in events if key.data]
        if exited or not events:
            why = f"{', '.join(exited)} exited" if exited else f"no answer in {TIMEOUT} s"
            raise ClusterError(f"waiting for {what}: {why}; logs in {self.path('log')}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pidfd(pid_file: Path) -> int | None:
    """A pidfd of the process the file names; None without the file or the process."""
    try:
        return os.pidfd_open(int(pid_file.read_text()))
    except (OSError, ValueError):
        return None


def _exits(pidfd: int, timeout: float) -> bool:
    """Whether the process has exited or exits within `timeout` seconds (a zombie has exited)."""
    return bool(select.select([pidfd], [], [], timeout)[0])


def _alive(pid_file: Path) -> bool:
    pidfd = _pidfd(pid_file)
    if pidfd is None:
        return False
    try:
        return not _exits(pidfd, 0)
    finally:
        os.close(pidfd)


def _terminate(pid_file: Path, timeout: float = 30) -> None:
    """SIGTERM the daemon whose pid the file holds, SIGKILL it if it lingers; remove the file."""
    pidfd = _pidfd(pid_file)
    if pidfd is not None:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            if not _exits(pidfd, timeout):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                if not _exits(pidfd, timeout):
                    raise ClusterError(f"{pid_file.stem} outlived SIGKILL for {timeout:.0f} s")
            # Reap it if it is our child; one an earlier `start` left is init's to reap.
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        finally:
            os.close(pidfd)
    pid_file.unlink(missing_ok=True)


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
