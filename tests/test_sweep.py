"""Sweeps through the console script: the summary, failures that do not stop the others, the
submitit launcher, dry runs, and jobs killed mid-build. Parity checks are switched off
(`verify.parity=false`): these tests are about the sweep, not about numerics."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
from pathlib import Path

from sortformer_build import faults
from sortformer_build.cli.workers import parallel_jobs, usable_cores
from sortformer_build.job.scratch import staging_pattern
from sortformer_build.job.status import record_lost_job
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.matrix import ReleaseMatrix
from sortformer_build.records.status import JobStatus, read_statuses
from sortformer_build.records.steps import StepStatus

from .conftest import ALL_VARIANTS, Run, run_cli, start_cli, sweep_statuses
from .forked import run_build
from .rendezvous import Rendezvous

FAST = ("checkpoint=tiny", "verify.parity=false")


def _sweep_default(work: Path, cache: Path, *overrides: str) -> Run:
    return run_cli("--multirun", "variant=default", *FAST, f"cache_dir={cache}", *overrides, cwd=work)


def test_failing_job_is_listed_and_the_sweep_exits_non_zero(tmp_path: Path, shared_cache: Path) -> None:
    run = _sweep_default(tmp_path, shared_cache, "variant.chunk_len=6,0")
    assert run.returncode == 1, run.output[-3000:]
    assert "sortformer-build: 1 of 2 jobs failed" in run.stderr
    matrix = ReleaseMatrix.read(tmp_path / "outputs" / "tiny" / "matrix.json")
    assert (len(matrix.rows), matrix.failed) == (2, 1)
    failed = [row for row in matrix.rows if not row.status.ok]
    assert failed[0].status.error == "chunk_len must be at least 1, got 0"
    built = [row for row in matrix.rows if row.status.ok]
    assert built[0].package == "fp16/Sortformer_v2.1.mlpackage"
    # A sweep's console has one line per job; each job's stage-by-stage log is in its own folder.
    assert "Converting" not in run.output
    (job_log,) = (tmp_path / "outputs" / ".hydra-runs").glob("multirun-*/0-*/sortformer-build.log")
    assert "Delivered outputs/tiny/fp16/Sortformer_v2.1.mlpackage" in job_log.read_text()
    assert (
        "chunk_len must be at least 1, got 0 |" in (tmp_path / "outputs" / "tiny" / "matrix.md").read_text()
    )


def test_submitit_local_launcher_runs_the_sweep(tmp_path: Path, shared_cache: Path) -> None:
    run = _sweep_default(
        tmp_path, shared_cache, "compression=fp16,palettized6", "hydra/launcher=submitit_local"
    )
    assert run.returncode == 0, run.output[-3000:]
    # Each job ran in its own submitit process, which keeps its output beside the sweep.
    assert len(list((tmp_path / "outputs" / ".hydra-runs").glob("multirun-*/.submitit/*/*_log.out"))) == 2
    assert [status["ok"] for status in sweep_statuses(tmp_path)] == [True, True]
    matrix = ReleaseMatrix.read(tmp_path / "outputs" / "tiny" / "matrix.json")
    assert [row.package for row in matrix.rows] == [
        "fp16/Sortformer_v2.1.mlpackage",
        "palettized/Sortformer_v2.1.mlpackage",
    ]
    ratio = matrix.rows[1].ratio_to_fp16
    assert ratio is not None and 0.3 < ratio < 0.8


def test_dry_run_lists_the_release_and_builds_nothing(tmp_path: Path) -> None:
    """With an empty cache: no checkpoint is made and torch, coremltools and NeMo are never
    imported (stand-ins that refuse to import shadow them)."""
    blocked = tmp_path / "blocked"
    for name in ("torch", "coremltools", "nemo"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('a dry run imported {name}')\n")
    cache = tmp_path / "cache"
    run = run_cli(
        "--multirun",
        "variant=glob(*)",
        "compression=fp16,palettized6",
        "checkpoint=synthetic",
        "dry_run=true",
        f"cache_dir={cache}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(blocked)},
    )
    assert run.returncode == 0, run.output[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("Dry run: ")]
    assert len(lines) == 16
    assert all(
        "would build" in line and "checkpoint not on this machine yet (would be made)" in line
        for line in lines
    )
    assert run.stdout.count("cache states are unknown until the checkpoint exists") == 16
    plans = [status["plan"] for status in sweep_statuses(tmp_path)]
    assert {plan["package"] for plan in plans} == {
        f"outputs/synthetic/{folder}/{file_name}.mlpackage"
        for folder in ("fp16", "palettized")
        for file_name, *_ in ALL_VARIANTS.values()
    }
    assert {plan["latency_seconds"] for plan in plans} == {1.04, 2.56, 30.4, 30.72}
    assert not (tmp_path / "outputs" / "synthetic").exists()
    assert not list(cache.rglob("*.nemo")) and not (cache / "build").exists()


def test_killed_job_leaves_no_corrupt_entry_and_the_next_run_completes(
    tmp_path: Path, fresh_build_cache: Path
) -> None:
    programs = fresh_build_cache / "build" / "programs"
    # Killed (SIGKILL: no cleanup code runs) with the converted programs written, before the
    # entry is made.
    killed = run_build(
        *FAST, f"cache_dir={fresh_build_cache}", cwd=tmp_path, env={faults.FAULT_VARIABLE: "cache.programs"}
    )
    assert killed.returncode == -signal.SIGKILL, killed.output[-3000:]
    assert any(programs.glob(".partial-*")), "the job was killed after its entry was complete"
    assert [entry for entry in programs.iterdir() if not entry.name.startswith(".")] == []
    assert not list((tmp_path / "outputs").rglob("*.mlpackage"))

    run = run_build(*FAST, f"cache_dir={fresh_build_cache}", cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    entries = [entry for entry in programs.iterdir() if not entry.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "entry.json").is_file()
    assert not list(programs.glob(".partial-*"))  # the killed job's half entry went with the rebuild
    record = Manifest.read(tmp_path / "outputs" / "tiny" / "fp16" / "Sortformer_v2.1.json")
    programs_step = record.step("programs")
    assert programs_step is not None and programs_step.status is StepStatus.built
    # The killed job's scratch folder was swept by the next run, which removed its own.
    assert list((fresh_build_cache / "scratch").iterdir()) == []


def test_a_killed_jobs_staging_folder_goes_with_the_next_job_into_its_folder(
    tmp_path: Path, fresh_build_cache: Path
) -> None:
    """Killed between assembling its package and verifying it (NeMo's reference outputs are being
    stored): the unverified package stays in the job's staging folder until the next job into the
    same release folder, even one building another artifact, removes it."""
    killed = run_build(
        "checkpoint=tiny",
        f"cache_dir={fresh_build_cache}",
        cwd=tmp_path,
        env={faults.FAULT_VARIABLE: "cache.nemo-reference"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.output[-3000:]
    release = tmp_path / "outputs" / "tiny" / "fp16"
    (staging,) = release.glob(staging_pattern())
    assert list(staging.glob("*.mlpackage")), "the killed job had staged its package"
    other = run_build(*FAST, "variant=efficient", f"cache_dir={fresh_build_cache}", cwd=tmp_path)
    assert other.returncode == 0, other.output[-3000:]
    assert sorted(path.name for path in release.iterdir() if not path.name.startswith(".")) == [
        "SortformerEfficient_v2.1.json",
        "SortformerEfficient_v2.1.mlpackage",
        "SortformerEfficient_v2.1.report.html",
    ]
    assert list(release.glob(".partial-*")) == []


def test_a_sweep_killed_outright_takes_its_workers_with_it(tmp_path: Path, fresh_build_cache: Path) -> None:
    """The launcher killed (SIGKILL) while a worker converts: the worker dies too, instead of
    finishing its job into the release folder with no one left to list it."""
    args = ["--multirun", "variant=default,efficient", "compression=fp16", "hydra.launcher.n_jobs=2"]
    with Rendezvous() as meeting:
        sweep = start_cli(
            *args,
            *FAST,
            f"cache_dir={fresh_build_cache}",
            cwd=tmp_path,
            log=tmp_path / "sweep.log",
            env=meeting.environment("cache.programs"),
        )
        try:
            held = meeting.wait()
            worker = os.pidfd_open(held.pid)
        finally:
            sweep.kill()
            sweep.wait()
        try:
            assert held.pid != sweep.pid, "the job ran in the launcher, not in a worker"
            # Readable once the worker has exited; the timeout only bounds a failing test.
            ended, _, _ = select.select([worker], [], [], 120)
            assert ended, "the worker outlived its launcher"
        finally:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(worker, signal.SIGKILL)
            os.close(worker)


def test_dry_run_of_a_single_job(tmp_path: Path, shared_cache: Path) -> None:
    run = run_cli(*FAST, "dry_run=true", f"cache_dir={shared_cache}", cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    assert "Dry run: outputs/tiny/fp16/Sortformer_v2.1.mlpackage would build" in run.stdout
    assert not (tmp_path / "outputs" / "tiny").exists()


def test_dry_run_reports_a_job_that_would_fail(tmp_path: Path, shared_cache: Path) -> None:
    run = _sweep_default(tmp_path, shared_cache, "variant.chunk_len=6,0", "dry_run=true")
    assert run.returncode == 1, run.output[-3000:]
    assert "Dry run of 2 jobs: 1 to build, 0 up to date, 1 failed" in run.stdout
    assert "| chunk_len must be at least 1, got 0 |" in run.stdout
    assert not (tmp_path / "outputs" / "tiny").exists()


def _job_order(work: Path, *typed: str) -> list[tuple[str, str]]:
    work.mkdir()
    run = run_cli("--multirun", *typed, "checkpoint=tiny", "dry_run=true", cwd=work)
    assert run.returncode == 0, run.output[-3000:]
    sweep = sorted((work / "outputs" / ".hydra-runs").glob("multirun-*"))[-1]
    jobs = sorted(sweep.glob("*/job_status.json"), key=lambda path: int(path.parent.name.split("-")[0]))
    return [(status["variant"], status["compression"]) for status in map(_read, jobs)]


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_job_order_does_not_depend_on_the_typed_order(tmp_path: Path) -> None:
    """fp16 jobs first (they convert; their palettized twins reuse the conversion)."""
    typed = _job_order(tmp_path / "a", "variant=default,efficient", "compression=palettized6,fp16")
    swapped = _job_order(tmp_path / "b", "compression=fp16,palettized6", "variant=default,efficient")
    assert typed == swapped
    assert [compression for _, compression in typed] == ["fp16", "fp16", "palettized6", "palettized6"]


def test_longest_jobs_go_first_within_the_precision_major_order(tmp_path: Path) -> None:
    """The configured order (conf/build.yaml: NvidiaHigh, then offline), and one typed instead."""
    typed = ("variant=default,offline,nvidia_high", "compression=palettized6,fp16")
    configured = [(variant, "fp16") for variant in ("nvidia_high", "offline", "default")]
    assert _job_order(tmp_path / "configured", *typed) == [
        *configured,
        *((variant, "palettized6") for variant, _ in configured),
    ]
    swapped = [(variant, "fp16") for variant in ("offline", "nvidia_high", "default")]
    assert _job_order(
        tmp_path / "typed", *typed, "hydra.sweeper.longest={variant:[offline,nvidia_high]}"
    ) == [
        *swapped,
        *((variant, "palettized6") for variant, _ in swapped),
    ]


def _launcher(work: Path, *overrides: str) -> tuple[str, str]:
    """The launcher a sweep would use and its n_jobs line, from the resolved Hydra config."""
    run = run_cli("--cfg", "all", "--resolve", *overrides, cwd=work)
    assert run.returncode == 0, run.output[-3000:]
    lines = run.stdout.splitlines()
    start = lines.index("  launcher:")
    block = [line.strip() for line in lines[start + 1 : start + 4]]
    target = next(line for line in block if line.startswith("_target_:"))
    jobs = next((line for line in block if line.startswith("n_jobs:")), "")
    return target, jobs


def test_sweeps_run_in_parallel_by_default_and_serially_when_asked(tmp_path: Path) -> None:
    target, jobs = _launcher(tmp_path)
    assert target.endswith("parallel_launcher.ParallelLauncher")  # joblib's, keeping on when a worker dies
    assert jobs == f"n_jobs: {parallel_jobs(3.5)}"
    assert _launcher(tmp_path, "hydra.launcher.n_jobs=5")[1] == "n_jobs: 5"
    assert _launcher(tmp_path, "hydra/launcher=basic")[0].endswith("BasicLauncher")


def test_slurm_launcher_is_the_projects(tmp_path: Path) -> None:
    """Wired up where the Slurm tests skip: `hydra/launcher=slurm` is submitit's Slurm launcher
    behind the project's own, which records the jobs that end without a result."""
    run = run_cli("--cfg", "hydra", "hydra/launcher=slurm", "hydra.launcher.partition=cpu", cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    lines = [line.strip() for line in run.stdout.splitlines()]
    launcher = lines[lines.index("launcher:") :]
    assert "_target_: hydra_plugins.sortformer_build_launcher.slurm_launcher.SlurmLauncher" in launcher
    assert "partition: cpu" in launcher


def test_a_lost_job_is_listed_as_failed_unless_it_left_its_own_status(tmp_path: Path) -> None:
    identity = JobStatus(
        variant="default",
        compression="fp16",
        fp16=True,
        file_name="Sortformer_v2.1",
        output_dir="outputs/tiny",
        dry_run=False,
    )
    assert record_lost_job(identity, tmp_path / "0-default-fp16", "Slurm job 7_0 ended CANCELLED", 2.0)
    identity.model_copy(update={"ok": True}).write_into(tmp_path / "1-default-fp16")
    assert not record_lost_job(identity, tmp_path / "1-default-fp16", "Slurm job 7_1 ended TIMEOUT", 9.0)
    lost, finished = read_statuses(tmp_path)
    assert (lost.ok, lost.error) == (False, "Slurm job 7_0 ended CANCELLED")
    assert (lost.file_name, lost.seconds) == ("Sortformer_v2.1", 2.0)
    assert (finished.ok, finished.error) == (True, None)


def test_parallel_jobs_follow_cores_and_memory() -> None:
    assert parallel_jobs(1e-6) == usable_cores()  # memory is no limit
    assert parallel_jobs(1e9) == 1  # never fewer than one
