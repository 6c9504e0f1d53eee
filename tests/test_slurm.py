"""Sweeps through a real Slurm controller (`hydra/launcher=slurm`) on a one-node cluster that
tests/slurm_cluster.py starts for the session: the artifacts match the serial sweep's, a job
cancelled mid-build is listed as failed and a rerun completes it, and `array_parallelism` caps
the jobs the controller runs at once. Parity checks are off: these tests are about the sweep."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sortformer_build.records.matrix import ReleaseMatrix
from sortformer_build.records.steps import StepStatus
from sortformer_build.release.matrix import read_matrix

from .conftest import SCRIPT, Run, run_cli
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


def _start_sweep(work: Path, cache: Path, cluster: Cluster, *overrides: str) -> subprocess.Popen[bytes]:
    """The same sweep in the background, so that the test can act on the cluster meanwhile; its
    output goes to `work`/sweep.log."""
    args = [SCRIPT, "--multirun", *FAST, f"cache_dir={cache}", *SLURM, *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **cluster.env}
    with (work / "sweep.log").open("wb") as log:
        return subprocess.Popen(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)


def _matrix(work: Path) -> ReleaseMatrix:
    return read_matrix(work / "outputs" / "tiny")


def _digests(work: Path) -> dict[str | None, str]:
    """Package -> content digest, from each manifest the latest summary lists."""
    return {
        row.package: row.manifest.artifact.content_sha256
        for row in _matrix(work).rows
        if row.manifest is not None
    }


def _running(cluster: Cluster) -> list[str]:
    return cluster.command("squeue", "-h", "-t", "RUNNING", "-o", "%i").split()


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
    # One Slurm array task per job, each in the controller's accounting as completed.
    tasks = [log.parent.name for log in (tmp_path / "slurm").rglob(".submitit/*_*/*_log.out")]
    assert len(tasks) == 4
    assert cluster.accounted_states(tasks) == dict.fromkeys(tasks, "COMPLETED")


def test_job_cancelled_mid_build_is_listed_and_a_rerun_completes_it(
    tmp_path: Path, fresh_build_cache: Path, cluster: Cluster
) -> None:
    sweep = ("variant=default,efficient", "compression=fp16")
    job = _start_sweep(tmp_path, fresh_build_cache, cluster, *sweep)
    try:
        # Job 0 (variant=default) builds once its array task runs and its log says it converts.
        _wait_for(lambda: _converting(tmp_path) and bool(_first_task(cluster)), job)
        cluster.command("scancel", _first_task(cluster))
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


def _converting(work: Path) -> bool:
    """Whether job 0 of the sweep run in `work` has begun a conversion, by its own log."""
    logs = work.glob("outputs/.hydra-runs/multirun-*/0-*/sortformer-build.log")
    return any("Converting" in log.read_text() for log in logs)


def _first_task(cluster: Cluster) -> str:
    """The Slurm id of array task 0 (the sweep's job 0) if it is running, else ''."""
    return next((task for task in _running(cluster) if task.endswith("_0")), "")


def test_array_parallelism_limits_the_jobs_slurm_runs_at_once(
    tmp_path: Path, shared_cache: Path, cluster: Cluster
) -> None:
    """Dry runs: quick jobs, yet long enough for the controller to be seen running them; the
    node has room for two at once."""
    cluster.wait_until_drained()  # earlier tests' tasks may still be exiting
    job = _start_sweep(
        tmp_path,
        shared_cache,
        cluster,
        "variant=default,efficient,nvidia_low",
        "compression=fp16",
        "dry_run=true",
        "hydra.launcher.array_parallelism=1",
    )
    seen: set[str] = set()
    most = 0
    try:
        while job.poll() is None:
            running = _running(cluster)
            seen.update(running)
            most = max(most, len(running))
            time.sleep(0.1)
    finally:
        job.kill()
        job.wait()
    output = (tmp_path / "sweep.log").read_text()
    assert job.returncode == 0, output[-3000:]
    assert "Dry run of 3 jobs" in output
    assert len(seen) >= 2, f"the controller was seen running only {seen}"
    assert most == 1


def _wait_for(condition: Callable[[], bool], job: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert job.poll() is None, f"the sweep ended (exit {job.returncode}) before the awaited moment"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
