"""The `sortformer-build` command: Hydra composes the config, `build` does the work."""

from __future__ import annotations

import json
import logging
import sys
import time
from importlib import resources
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .build import BuildResult, build
from .config import BuildConfig, CheckpointConfig, CompressionConfig, VariantConfig
from .errors import BuildError
from .geometry import StreamingGeometry
from .logs import quiet_third_party
from .plan import JobPlan, plan_job
from .workers import parallel_jobs

log = logging.getLogger("sortformer_build")


def register_schemas() -> None:
    """Schemas live in their own `schema` group so that `variant=glob(*)` never picks one up."""
    store = ConfigStore.instance()
    for name, node in (
        ("build", BuildConfig),
        ("variant", VariantConfig),
        ("compression", CompressionConfig),
        ("checkpoint", CheckpointConfig),
    ):
        store.store(group="schema", name=name, node=node)


def groups_help() -> str:
    """The option lists of `--help`, computed from the options themselves."""
    conf = resources.files("sortformer_build.conf")
    lines = [
        "== Variants: geometry, checkpoint version, file name; latency = (chunk + right context) x 80 ms =="
    ]
    for option in _options(conf, "variant"):
        variant = _variant_option(conf / "variant", option)
        geometry = StreamingGeometry(
            **{key: int(variant[key]) for key in StreamingGeometry.__dataclass_fields__}
        )
        lines.append(
            f"  {option:<15} {variant['file_name']:<27} latency {geometry.latency_seconds:>5.2f} s"
            f"  chunk {geometry.chunk_len:>3}  fifo {geometry.fifo_len:>3}  spkcache {geometry.spkcache_len}"
        )
    for group, title in (("compression", "Compressions"), ("checkpoint", "Checkpoints (weight sources)")):
        lines.append(f"== {title} ==")
        for option in _options(conf, group):
            text = (conf / group / f"{option}.yaml").read_text()
            folder = OmegaConf.create(text).get("folder")
            where = f"-> {folder}/ " if folder else ""
            lines.append(f"  {option:<15} {where:<17}{text.splitlines()[0].lstrip('# ')}")
    return "\n".join(lines)


def _options(conf, group: str) -> list[str]:
    return sorted(
        entry.name.removesuffix(".yaml") for entry in (conf / group).iterdir() if entry.name.endswith(".yaml")
    )


def _variant_option(folder, option: str) -> DictConfig:
    """An option merged over the twin its defaults list names (the `_v2` options reuse geometry)."""
    node = OmegaConf.create((folder / f"{option}.yaml").read_text())
    twins = [
        entry
        for entry in node.pop("defaults", [])
        if isinstance(entry, str) and not entry.startswith(("/", "_"))
    ]
    merged = [_variant_option(folder, twin) for twin in twins]
    return OmegaConf.merge(*merged, node) if merged else node


JOB_STATUS_FILE = "job_status.json"


def run_job(cfg: DictConfig, job_dir: Path | None = None, keep_going: bool = False) -> bool:
    """Build (with `dry_run`, plan) one job; report failure in one line. Returns whether it succeeded.

    With `keep_going` (a sweep), a failure is recorded, not raised, so the other jobs still
    run; the sweep's summary then exits non-zero. `job_dir` receives `job_status.json`.
    """
    started = time.perf_counter()
    status: dict[str, object] = {
        "variant": OmegaConf.select(cfg, "variant.name", default=None),
        "compression": OmegaConf.select(cfg, "compression.name", default=None),
        "file_name": OmegaConf.select(cfg, "variant.file_name", default=None),
        "output_dir": OmegaConf.select(cfg, "output_dir", default=None),
        "dry_run": OmegaConf.select(cfg, "dry_run", default=False),
    }
    try:
        config = OmegaConf.to_object(cfg)
        assert isinstance(config, BuildConfig)
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
    line = _record_outcome(outcome, status)
    _write_status(job_dir, status, started)
    print(line, flush=True)  # a worker process may end before its buffer would be written
    return True


def _record_outcome(outcome: BuildResult | JobPlan, status: dict[str, object]) -> str:
    """Put what the job did into `status`; return the line that tells the user."""
    if isinstance(outcome, JobPlan):
        status.update(ok=True, plan=outcome.as_dict())
        return outcome.describe()
    status.update(
        ok=True, up_to_date=outcome.up_to_date, package=str(outcome.package), manifest=str(outcome.manifest)
    )
    statuses = ", ".join(f"{step['name']} {step['status']}" for step in outcome.record["steps"])
    return f"{'Up to date' if outcome.up_to_date else 'Built'}: {outcome.package} [{statuses}]"


def _failed(
    job_dir: Path | None, status: dict[str, object], started: float, error: str, keep_going: bool
) -> bool:
    status.update(ok=False, error=error)
    _write_status(job_dir, status, started)
    print(f"sortformer-build: error: {error}", file=sys.stderr)
    if not keep_going:
        sys.exit(1)
    return False


def describe(error: BaseException) -> str:
    """One line a user can act on."""
    if isinstance(error, OmegaConfBaseException):
        return f"invalid configuration: {str(error).splitlines()[0]}"
    if isinstance(error, OSError) and not isinstance(error, BuildError):
        return f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}"
    return str(error)


def _write_status(job_dir: Path | None, status: dict[str, object], started: float) -> None:
    status["seconds"] = round(time.perf_counter() - started, 3)
    if job_dir is not None:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / JOB_STATUS_FILE).write_text(json.dumps(status, indent=1) + "\n")


@hydra.main(version_base="1.3", config_path="pkg://sortformer_build.conf", config_name="build")
def _hydra_main(cfg: DictConfig) -> None:
    quiet_third_party()
    hydra_config = HydraConfig.get()
    run_job(cfg, Path(hydra_config.runtime.output_dir), keep_going=hydra_config.mode == RunMode.MULTIRUN)


def main() -> None:
    register_schemas()
    if not OmegaConf.has_resolver("sortformer_build_groups"):
        OmegaConf.register_new_resolver("sortformer_build_groups", groups_help)
    if not OmegaConf.has_resolver("sortformer_build_parallel_jobs"):
        OmegaConf.register_new_resolver("sortformer_build_parallel_jobs", parallel_jobs)
    _hydra_main()
