"""Sweeps through a real Slurm controller (`hydra/launcher=slurm`) on a one-node cluster that
tests/slurm_cluster.py starts for the session: the artifacts match the serial sweep's, a job
cancelled mid-build is listed as failed and a rerun completes it, and `array_parallelism` caps
the jobs the controller runs at once. Parity checks are off: these tests are about the sweep."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortformer_build.records.matrix import ReleaseMatrix
from sortformer_build.records.steps import StepStatus
from sortformer_build.release.matrix import read_matrix

from .conftest import Run, run_cli, start_cli
from .rendezvous import Rendezvous
from .slurm_cluster import PARTITION, Cluster, ClusterError, missing_programs

pytestmark = pytest.mark.slurm

FAST = ("checkpoint=tiny", "verify.parity=false")
SLURM = ("hydra/launcher=slurm", f"hydra.launcher.partition={PARTITION}")
# Two geometries x both precisions: palettized jobs reuse their fp16 twin's conversion.
SWEEP = ("variant=default,efficient", "compression=fp16,palettized6")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = missing_programs()
    if missing:
        pytest.skip(f"Slurm tests need {', '.join(missing)} (Debian packages; .ci/run installs them)")
    if os.geteuid() != 0:
        pytest.skip("Slurm tests start munged, slurmdbd, slurmctld and slurmd, which needs root")
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterError as error:
        shutil.rmtree(cluster.folder, ignore_errors=True)
        pytest.fail(str(error))
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)


def _sweep(work: Path, cache: Path, cluster: Cluster, *overrides: str) -> Run:
    return run_cli("--multirun", *FAST, f"cache_dir={cache}", *SLURM, *overrides, cwd=work, env=cluster.env)


def _start_sweep(
    work: Path, cache: Path, cluster: Cluster, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The same sweep in the background, so that the test can act on the cluster meanwhile; its
    output goes to `work`/sweep.log. Slurm passes the sweep's environment (`env` added) to the jobs."""
    args = ("--multirun", *FAST, f"cache_dir={cache}", *SLURM, *overrides)
    return start_cli(*args, cwd=work, log=work / "sweep.log", env={**cluster.env, **(env or {})})


def _matrix(work: Path) -> ReleaseMatrix:
    return read_matrix(work / "outputs" / "tiny")


def _digests(work: Path) -> dict[str | None, str]:
    """Package -> content digest, from each manifest the latest summary lists."""
    return {
        row.package: row.manifest.artifact.content_sha256
        for row in _matrix(work).rows
        if row.manifest is not None
    }


def test_slurm_sweep_builds_the_serial_sweeps_artifacts(
    tmp_path: Path, shared_cache: Path, fresh_build_cache: Path, cluster: Cluster
) -> None:
    for work in ("serial", "slurm"):
        (tmp_path / work).mkdir()
    serial = run_cli(
        "--multirun",
        *SWEEP,
        *FAST,
        f"cache_dir={shared_cache}",
        "hydra/launcher=basic",
        cwd=tmp_path / "serial",
    )
    assert serial.returncode == 0, serial.output[-3000:]
    # Its own empty build cache: the jobs convert on the cluster instead of reusing the serial run.
    run = _sweep(tmp_path / "slurm", fresh_build_cache, cluster, *SWEEP)
    assert run.returncode == 0, run.output[-3000:]
    assert "Bypassing" not in run.output  # submitit reads job states through sacct
    matrix = _matrix(tmp_path / "slurm")
    assert (len(matrix.rows), matrix.failed) == (4, 0)
    converted = [
        step.status
        for row in matrix.rows
        if row.manifest
        for step in row.manifest.steps
        if step.name == "programs"
    ]
    assert converted.count(StepStatus.built) == 2  # each fp16 job converted; its palettized twin reused it
    digests = _digests(tmp_path / "slurm")
    assert len(digests) == 4
    assert digests == _digests(tmp_path / "serial")
    # One Slurm array task per job, each completed in the controller's record.
    tasks = [log.parent.name for log in (tmp_path / "slurm").rglob(".submitit/*_*/*_log.out")]
    assert len(tasks) == 4
    states = {task: job.state for task, job in cluster.ended_jobs(tasks).items()}
    assert states == dict.fromkeys(tasks, "COMPLETED")


def test_job_cancelled_mid_build_is_listed_and_a_rerun_completes_it(
    tmp_path: Path, fresh_build_cache: Path, cluster: Cluster
) -> None:
    sweep = ("variant=default,efficient", "compression=fp16")
    with Rendezvous() as meeting:
        # Each job holds where its converted programs are written, until the test lets it go:
        # job 0 (variant=default) is cancelled there, the other goes on. They get there in either
        # order; both are kept, so that the cancelled one stays held until it dies.
        job = _start_sweep(
            tmp_path, fresh_build_cache, cluster, *sweep, env=meeting.environment("cache.programs")
        )
        try:
            arrived = [meeting.wait(), meeting.wait()]
            for held in arrived:
                task = _task_of(held.pid)
                if task.endswith("_0"):
                    cluster.command("scancel", task)
                else:
                    held.release()
            job.wait(timeout=600)
        finally:
            job.kill()
    output = (tmp_path / "sweep.log").read_text()
    assert job.returncode == 1, output[-3000:]
    assert "sortformer-build: 1 of 2 jobs failed" in output
    matrix = _matrix(tmp_path)
    assert (len(matrix.rows), matrix.failed) == (2, 1)
    (failed,) = [row.status for row in matrix.rows if not row.status.ok]
    assert failed.file_name == "Sortformer_v2.1"
    assert failed.error is not None
    assert "ended CANCELLED" in failed.error and "before reporting" in failed.error
    assert failed.seconds > 0  # from the controller's accounting: the job ran into its conversion
    (built,) = [row for row in matrix.rows if row.status.ok]
    assert built.package == "fp16/SortformerEfficient_v2.1.mlpackage"
    assert not (tmp_path / "outputs" / "tiny" / "fp16" / "Sortformer_v2.1.mlpackage").exists()
    cluster.wait_until_drained()  # nothing left behind on the cluster

    rerun = _sweep(tmp_path, fresh_build_cache, cluster, *sweep)
    assert rerun.returncode == 0, rerun.output[-3000:]
    rows = {row.status.file_name: row.status for row in _matrix(tmp_path).rows}
    assert rows["SortformerEfficient_v2.1"].up_to_date
    assert rows["Sortformer_v2.1"].ok and not rows["Sortformer_v2.1"].up_to_date


def _task_of(pid: int) -> str:
    """The Slurm id (`<array job>_<task>`) of the array task that process `pid` runs in."""
    environment = dict(
        entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in entry
    )
    return f"{environment['SLURM_ARRAY_JOB_ID']}_{environment['SLURM_ARRAY_TASK_ID']}"


def test_array_parallelism_limits_the_jobs_slurm_runs_at_once(
    tmp_path: Path, shared_cache: Path, cluster: Cluster
) -> None:
    """Dry runs, quick jobs; the node has room for two at once. What ran when is read afterwards
    from the controller's record of each task (the times `sacct` lists, which the controller
    reports to it): every task completed, and none started before the one before it ended (times
    in whole seconds)."""
    cluster.wait_until_drained()  # earlier tests' tasks may still be exiting
    run = _sweep(
        tmp_path,
        shared_cache,
        cluster,
        "variant=default,efficient,nvidia_low",
        "compression=fp16",
        "dry_run=true",
        "hydra.launcher.array_parallelism=1",
    )
    assert run.returncode == 0, run.output[-3000:]
    assert "Dry run of 3 jobs" in run.output
    tasks = [log.parent.name for log in tmp_path.rglob(".submitit/*_*/*_log.out")]
    assert len(tasks) == 3
    jobs = cluster.ended_jobs(tasks)
    assert {task: job.state for task, job in jobs.items()} == dict.fromkeys(tasks, "COMPLETED")
    spans = sorted((job.start, job.end) for job in jobs.values())
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans)), spans
