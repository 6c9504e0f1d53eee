"""The `sortformer-build` command: Hydra composes the config, a job builds or plans it, and the
job's status is left for the sweep summary."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sortformer_build.cli.help import groups_help
from sortformer_build.cli.logs import quiet_third_party
from sortformer_build.cli.preflight import check_command_line, describe_config_error
from sortformer_build.cli.workers import parallel_jobs
from sortformer_build.config import (
    BuildConfig,
    CheckpointConfig,
    CompressionConfig,
    EvaluateConfig,
    TraceConfig,
    VariantConfig,
    as_custom,
)
from sortformer_build.errors import BuildError
from sortformer_build.job.build import BuildResult, build
from sortformer_build.job.plan import plan_job
from sortformer_build.records.status import JobPlan, JobStatus
from sortformer_build.release.matrix import verification_summary

log = logging.getLogger("sortformer_build")

SWEEPER = "hydra_plugins.sortformer_build_sweeper.first_values_sweeper.FirstValuesSweeper"


def register_schemas() -> None:
    """Schemas live in their own `schema` group so that `variant=glob(*)` never picks one up."""
    store = ConfigStore.instance()
    for name, node in (
        ("build", BuildConfig),
        ("variant", VariantConfig),
        ("compression", CompressionConfig),
        ("checkpoint", CheckpointConfig),
        ("evaluate", EvaluateConfig),
        ("trace", TraceConfig),
    ):
        store.store(group="schema", name=name, node=node)
    # By name: importing the sweeper before Hydra's plugin scan would bind it to a class the scan
    # then reloads (see `main`).
    sweeper: dict[str, object] = {
        "_target_": SWEEPER,
        "max_batch_size": None,
        "params": None,
        "first": {},
        "longest": {},
    }
    store.store(group="hydra/sweeper", name="first_values", node=sweeper)


def run_job(
    cfg: DictConfig,
    job_dir: Path | None = None,
    keep_going: bool = False,
    preset: VariantConfig | None = None,
) -> bool:
    """Build (with `dry_run`, plan) one job; report failure in one line. Returns whether it succeeded.

    With `keep_going` (a sweep), a failure is recorded, not raised, so the other jobs still
    run; the sweep's summary then exits non-zero. `job_dir` receives the job's status. `preset`
    is the variant option as published, to tell a changed geometry from a released one.
    """
    started = time.perf_counter()
    status = status_of(cfg)
    try:
        config = OmegaConf.to_object(cfg)
        assert isinstance(config, BuildConfig)
        if preset is not None:
            config.variant = as_custom(config.variant, preset)
            status = status.model_copy(update={"file_name": config.variant.file_name})
        outcome = plan_job(config) if config.dry_run else build(config)
    except (OmegaConfBaseException, BuildError, OSError) as error:
        return _failed(job_dir, status, started, describe(error), keep_going)
    except Exception as error:
        # A bug, not bad input: alone, show the traceback; in a sweep, keep it in the job's log
        # and let the other jobs run.
        if not keep_going:
            raise
        log.exception("The job failed unexpectedly")
        return _failed(job_dir, status, started, f"unexpected {type(error).__name__}: {error}", keep_going)
    status, line = _record_outcome(outcome, status)
    if not keep_going and isinstance(outcome, BuildResult):
        line += "\n" + write_job_report(outcome, _timed(status, started))
    _finish(job_dir, status, started)
    # One write, flushed: parallel workers share the terminal, and a worker may end before its
    # buffer would be written.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return True


def status_of(cfg: DictConfig) -> JobStatus:
    """Who the job is, read leniently: a config that fails validation still names its job."""

    def select(key: str) -> str | None:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        return None if value is None else str(value)

    return JobStatus(
        variant=select("variant.name"),
        compression=select("compression.name"),
        fp16=OmegaConf.select(cfg, "compression.nbits", default=None) is None
        and not OmegaConf.select(cfg, "compression.mixed", default=False),
        file_name=select("variant.file_name"),
        output_dir=select("output_dir"),
        dry_run=bool(OmegaConf.select(cfg, "dry_run", default=False)),
    )


def _record_outcome(outcome: BuildResult | JobPlan, status: JobStatus) -> tuple[JobStatus, str]:
    """`status` with what the job did, and the line that tells the user."""
    if isinstance(outcome, JobPlan):
        return status.model_copy(update={"ok": True, "plan": outcome}), outcome.describe()
    done = status.model_copy(
        update={
            "ok": True,
            "up_to_date": outcome.up_to_date,
            "package": str(outcome.package),
            "manifest": str(outcome.manifest_path),
        }
    )
    if outcome.up_to_date and not outcome.evaluated:
        # Nothing ran: say what the delivered package's manifest vouches for.
        return done, f"Up to date: {outcome.package} [{verification_summary(outcome.manifest)}]"
    statuses = ", ".join(f"{step.name} {step.status.value}" for step in outcome.manifest.steps)
    return done, f"{'Evaluated' if outcome.evaluated else 'Built'}: {outcome.package} [{statuses}]"


def write_job_report(outcome: BuildResult, status: JobStatus) -> str:
    """A job run on its own: the report about its one artifact, beside it; the line naming it."""
    from sortformer_build.release.matrix import matrix_rows, report_line, sweep_command
    from sortformer_build.release.report.page import write_report
    from sortformer_build.stages.artifact import ArtifactPaths

    path = ArtifactPaths.beside(outcome.package).report
    started = time.perf_counter()
    size = write_report(
        path,
        Path(status.output_dir or "."),
        matrix_rows([status]),
        f"Report: {outcome.manifest.release_stem}",
        sweep_command(),
    )
    return report_line(path, size, time.perf_counter() - started)


def _failed(job_dir: Path | None, status: JobStatus, started: float, error: str, keep_going: bool) -> bool:
    _finish(job_dir, status.model_copy(update={"ok": False, "error": error}), started)
    print(f"sortformer-build: error: {error}", file=sys.stderr)
    if not keep_going:
        sys.exit(1)
    return False


def describe(error: BaseException) -> str:
    """One line a user can act on."""
    if isinstance(error, OmegaConfBaseException):
        return f"invalid configuration: {describe_config_error(error)}"
    if isinstance(error, OSError) and not isinstance(error, BuildError):
        return f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}"
    return str(error)


def _timed(status: JobStatus, started: float) -> JobStatus:
    return status.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})


def _finish(job_dir: Path | None, status: JobStatus, started: float) -> None:
    if job_dir is not None:
        _timed(status, started).write_into(job_dir)


@hydra.main(version_base="1.3", config_path="pkg://sortformer_build.conf", config_name="build")
def _hydra_main(cfg: DictConfig) -> None:
    quiet_third_party(verbose=bool(OmegaConf.select(cfg, "verbose", default=False)))
    hydra_config = HydraConfig.get()
    multirun = hydra_config.mode == RunMode.MULTIRUN
    if multirun:
        _stages_to_job_log_only()
    preset = _preset(hydra_config.runtime.choices.get("variant"))
    run_job(cfg, Path(hydra_config.runtime.output_dir), keep_going=multirun, preset=preset)


def _stages_to_job_log_only() -> None:
    """In a sweep the console gets one line per job (and warnings): the stage-by-stage log of
    every job still goes to its own log file in the sweep folder."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)


def _preset(option: str | None) -> VariantConfig | None:
    """The variant option as its YAML defines it, before the command line's `variant.*` overrides."""
    if option is None:
        return None
    try:
        composed = compose(config_name="build", overrides=[f"variant={option}", "checkpoint=tiny"])
    except Exception:  # an option Hydra could not compose fails the job itself, with its own message
        return None
    preset = OmegaConf.to_object(composed.variant)
    return preset if isinstance(preset, VariantConfig) else None


def main() -> None:
    register_schemas()
    # Hydra finds plugins by scanning its namespace, which misses editable installs: register
    # the sweeper and the Slurm launcher by hand, after that scan, which reloads the module of
    # the sweeper ours extends.
    plugins = Plugins.instance()
    from hydra_plugins.sortformer_build_launcher.parallel_launcher import ParallelLauncher
    from hydra_plugins.sortformer_build_launcher.slurm_launcher import SlurmLauncher
    from hydra_plugins.sortformer_build_sweeper.first_values_sweeper import FirstValuesSweeper

    plugins.register(FirstValuesSweeper)
    plugins.register(ParallelLauncher)
    plugins.register(SlurmLauncher)
    if not OmegaConf.has_resolver("sortformer_build_groups"):
        OmegaConf.register_new_resolver("sortformer_build_groups", groups_help)
    if not OmegaConf.has_resolver("sortformer_build_parallel_jobs"):
        OmegaConf.register_new_resolver("sortformer_build_parallel_jobs", parallel_jobs)
    problem = check_command_line(sys.argv[1:])
    if problem is not None:
        print(f"sortformer-build: error: {problem.message}", file=sys.stderr)
        if problem.hint:
            print(f"  {problem.hint}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()
