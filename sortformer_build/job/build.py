"""One build job: config -> checkpoint -> traced programs -> Core ML -> compressed -> verified
-> published. Every stage is a plain function over typed values; this module only sequences them.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sortformer_build.checkpoint.sources import Checkpoint, load_model, resolve_checkpoint
from sortformer_build.config import BuildConfig, PalettizerEngine, config_dict, validate_config
from sortformer_build.coreml import macos
from sortformer_build.coreml.package import package_digest, package_size
from sortformer_build.errors import BuildError
from sortformer_build.job.steps import CACHED, VERIFIED, Step, StepFailed, StepLog
from sortformer_build.store import atomic
from sortformer_build.store.cache import ArrayStore, BuildCache, Entry, digest_of, tool_versions
from sortformer_build.verify.lint import Expectation, lint_package

log = logging.getLogger("sortformer_build")

MANIFEST_FORMAT = 1
PRECISION = "fp16"
# Build cache stages (folders under <cache>/build/).
PROGRAMS_STAGE, PALETTIZE_STAGE = "programs", "palettized-head"


class OutputError(BuildError):
    """The output folder cannot receive the artifact."""


@dataclass
class BuildResult:
    package: Path
    manifest: Path
    record: dict[str, Any]
    up_to_date: bool


class _LazyModel:
    """Restores the NeMo model on first use: a fully cached job never pays for it."""

    def __init__(self, checkpoint: Checkpoint, steps: StepLog) -> None:
        self._checkpoint, self._steps, self._model = checkpoint, steps, None

    def get(self) -> Any:
        if self._model is None:
            with self._steps.step("restore", f"Restoring the NeMo model from {self._checkpoint.path.name}"):
                self._model = load_model(self._checkpoint)
        return self._model


def build(config: BuildConfig) -> BuildResult:
    """Build, verify and publish one artifact; raise BuildError (nothing published) if unfit."""
    for warning in validate_config(config):
        log.warning("%s", warning)
    name = config.variant.file_name
    package, manifest = artifact_paths(config)
    ensure_writable(config.artifact_dir)
    atomic.sweep_stale_partials(config.artifact_dir)  # what killed jobs left behind
    steps = StepLog()
    with steps.step("checkpoint", "Locating the checkpoint") as step:
        checkpoint = resolve_checkpoint(
            config.checkpoint, config.variant.version, config.cache_root / "checkpoints"
        )
        if checkpoint.reused:
            step.status = CACHED
        step.detail = f"{checkpoint.origin}, sha256 {checkpoint.sha256[:12]}"
    versions = tool_versions()
    job_key = artifact_key(config, checkpoint.sha256, versions)
    if config.cache:
        current = published_record(config, digest_of(job_key))
        if current is not None:
            log.info("%s is up to date (same checkpoint, config and tools); nothing to build", package)
            return BuildResult(package, manifest, current, up_to_date=True)

    job = _Job(config, checkpoint, versions, steps)
    programs = job.programs()
    head = programs.path / "head.mlpackage"
    if config.compression.nbits is not None:
        head = job.palettized_head(programs) / "head.mlpackage"

    with atomic.scratch_folder(config.artifact_dir) as staging:
        staged_package = staging / package.name
        with steps.step("assemble", "Assembling the pipeline (pre-encoder -> head) with its metadata"):
            from sortformer_build.coreml.convert import assemble_pipeline

            metadata = {"sortformer_build.compression": config.compression.name}
            pre_encoder = programs.path / "pre_encoder.mlpackage"
            assemble_pipeline(pre_encoder, head, config.variant.geometry, metadata, staged_package)
        verification = job.verify(staged_package, programs)
        verification |= job.on_device(staged_package, staging / f"{name}.mlmodelc", programs)
        record = _manifest(config, checkpoint, versions, job_key, staged_package, programs, steps)
        record["verification"] = verification
        _publish(staging, config.artifact_dir, name, record)
    # The digest just computed, remembered for the published files: the next warm check is free.
    package_digest(package, config.cache_root / "package-digests", known=record["artifact"]["content_sha256"])
    log.info("Published %s (%.1f MB)", package, record["artifact"]["bytes"] / 1e6)
    return BuildResult(package, manifest, record, up_to_date=False)


def ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=atomic.PARTIAL_PREFIX):
            pass
    except OSError as error:
        raise OutputError(f"output folder {folder} is not writable: {error.strerror or error}") from None


def _job_config(config: BuildConfig) -> dict[str, Any]:
    """The parts of the config that shape the artifact (not where files go)."""
    plain = config_dict(config)
    return {key: plain[key] for key in ("variant", "compression", "deployment_target", "verify")}


def artifact_paths(config: BuildConfig) -> tuple[Path, Path]:
    """The published package and the manifest that vouches for it."""
    name = config.variant.file_name
    return config.artifact_dir / f"{name}.mlpackage", config.artifact_dir / f"{name}.json"


def artifact_key(config: BuildConfig, checkpoint_sha256: str, versions: dict[str, str]) -> dict[str, Any]:
    """Everything a published artifact depends on; its manifest records the digest as `job_digest`."""
    return {"config": _job_config(config), "checkpoint": checkpoint_sha256, "versions": versions}


def programs_key(config: BuildConfig, checkpoint_sha256: str, versions: dict[str, str]) -> dict[str, Any]:
    """What tracing and conversion depend on: not the compression, so fp16 and palettized share it."""
    geometry = config.variant.geometry
    return {
        "checkpoint": checkpoint_sha256,
        "chunk_mel_frames": geometry.chunk_mel_frames,
        "spkcache_len": geometry.spkcache_len,
        "fifo_len": geometry.fifo_len,
        "precision": PRECISION,
        "deployment_target": config.deployment_target,
        "versions": versions,
    }


def palettize_key(config: BuildConfig, programs_digest: str, versions: dict[str, str]) -> dict[str, Any]:
    """What palettizing a head depends on; `programs_digest` names the programs entry."""
    compression = config.compression
    engine = PalettizerEngine(compression.engine).value
    return {"programs": programs_digest, "nbits": compression.nbits, "engine": engine, "versions": versions}


def published_record(config: BuildConfig, job_digest: str) -> dict[str, Any] | None:
    """The published manifest if it describes `job_digest` and the package on disk is intact."""
    package, manifest = artifact_paths(config)
    try:
        record = json.loads(manifest.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if record.get("job_digest") != job_digest or not package.is_dir():
        return None
    content = package_digest(package, config.cache_root / "package-digests")
    if content != record.get("artifact", {}).get("content_sha256"):
        return None
    return record


class _Job:
    """One build's stages over the shared facts: config, weights, tools, cache and step log."""

    def __init__(self, config: BuildConfig, checkpoint: Checkpoint, versions: dict[str, str], steps: StepLog):
        self.config, self.checkpoint, self.versions, self.steps = config, checkpoint, versions, steps
        self.cache = BuildCache(config.cache_root / "build", enabled=config.cache)
        self.model = _LazyModel(checkpoint, steps)

    def programs(self) -> Entry:
        """The traced and converted fp16 pre-encoder and head (shared by every compression)."""
        config, geometry = self.config, self.config.variant.geometry

        def convert(folder: Path) -> dict[str, Any]:
            from sortformer_build.coreml.convert import convert_programs
            from sortformer_build.coreml.export import trace

            nemo = self.model.get()
            description = f"Tracing the pre-encoder and head for a {geometry.chunk_mel_frames}-frame chunk"
            with self.steps.step("trace", description):
                traced = trace(nemo, geometry)
            description = f"Converting both programs to Core ML ({PRECISION}, {config.deployment_target})"
            with self.steps.step("convert", description):
                convert_programs(traced, PRECISION, config.deployment_target, folder)
            return {"d_model": traced.d_model, "parameters": parameter_counts(nemo)}

        key = programs_key(config, self.checkpoint.sha256, self.versions)
        return self._fetch(PROGRAMS_STAGE, key, convert, "convert")

    def palettized_head(self, programs: Entry) -> Path:
        compression = self.config.compression
        engine = PalettizerEngine(compression.engine).value

        def palettize(folder: Path) -> dict[str, Any]:
            from sortformer_build.coreml.palettize import palettize_head

            luts = ArrayStore(self.cache.root / "luts" if self.cache.enabled else None)
            description = f"Palettizing the head to {compression.nbits} bits ({engine} k-means)"
            with self.steps.step("palettize", description) as step:
                head = programs.path / "head.mlpackage"
                facts = palettize_head(head, compression, folder / "head.mlpackage", luts)
                if "lut_cache_hits" in facts:
                    hits, misses = facts["lut_cache_hits"], facts["lut_cache_misses"]
                    step.detail = f"look-up tables: {hits} cached, {misses} computed"
            return facts

        key = palettize_key(self.config, programs.path.name, self.versions)
        return self._fetch(PALETTIZE_STAGE, key, palettize, "palettize").path

    def _fetch(self, stage: str, key: dict[str, Any], build: Any, step_name: str) -> Entry:
        entry = self.cache.fetch(stage, key, build)
        if entry.hit:
            log.info("Reusing the cached %s result (%s)", step_name, entry.path)
            self.steps.steps.append(Step(name=step_name, status=CACHED, seconds=0.0, detail=str(entry.path)))
        return entry

    def verify(self, package: Path, programs: Entry) -> dict[str, Any]:
        """Static checks, then numerical parity with NeMo; raise StepFailed if a gate fails."""
        config = self.config
        expected = Expectation(
            geometry=config.variant.geometry,
            d_model=programs.facts["d_model"],
            nbits=config.compression.nbits,
            deployment_target=config.deployment_target,
        )
        with self.steps.step(
            "lint", "Checking the I/O contract, metadata, aliasing, target ops, compression"
        ) as step:
            findings = lint_package(package, expected)
            if findings:
                raise StepFailed(f"the package fails {len(findings)} static check(s): " + "; ".join(findings))
            step.status = VERIFIED
        if not config.verify.parity:
            self.steps.skip("parity", "verify.parity=false")
            return {"lint": "passed", "parity": "skipped (verify.parity=false)"}
        from sortformer_build.verify.check import run_parity

        description = (
            f"Comparing the package with NeMo ({config.verify.precision} executor, per step and streaming)"
        )
        with self.steps.step("parity", description) as step:
            figures, failures = run_parity(
                self._parity_job(package, programs), config.verify, self.cache, self.model.get
            )
            step.detail = _parity_summary(figures)
            if failures:
                raise StepFailed(f"parity with NeMo fails: {'; '.join(failures)} [{step.detail}]")
            step.status = VERIFIED
        return {"lint": "passed", "parity": figures}

    def on_device(self, package: Path, compiled: Path, programs: Entry) -> dict[str, Any]:
        """Core ML itself, where it exists: compile, load with all compute units, predict the
        per-step inputs and compare with NeMo."""
        if not macos.available():
            for name in ("compile", "load", "predict"):
                self.steps.skip(name, macos.NEEDS_MACOS)
            return {"core_ml": f"skipped: {macos.NEEDS_MACOS}"}
        with self.steps.step("compile", "Compiling the package to .mlmodelc"):
            macos.compile_package(package, compiled)
        with self.steps.step("load", "Loading the compiled model with all compute units") as step:
            loaded = macos.load_compiled(compiled)
            step.status = VERIFIED
        if not self.config.verify.parity:
            self.steps.skip("predict", "verify.parity=false")
            return {"core_ml": "loaded"}
        from sortformer_build.verify.check import run_device_parity

        with self.steps.step("predict", "Predicting with Core ML and comparing with NeMo") as step:
            job = self._parity_job(package, programs)
            figures, failures = run_device_parity(
                job, self.config.verify, self.cache, self.model.get, loaded.predict
            )
            if failures:
                raise StepFailed(f"Core ML predictions differ from NeMo: {'; '.join(failures)}")
            step.status = VERIFIED
        return {"core_ml": figures}

    def _parity_job(self, package: Path, programs: Entry) -> Any:
        from sortformer_build.verify.check import ParityJob

        return ParityJob(
            package=package,
            geometry=self.config.variant.geometry,
            d_model=programs.facts["d_model"],
            nbits=self.config.compression.nbits,
            checkpoint_sha256=self.checkpoint.sha256,
            programs=programs,
            versions=self.versions,
        )


def parameter_counts(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    pre_encoder = sum(p.numel() for p in model.encoder.pre_encode.parameters())
    return {"total": total, "pre_encoder": pre_encoder, "head": total - pre_encoder}


def _parity_summary(figures: dict[str, Any]) -> str:
    steps, stream = figures["per_step_vs_nemo"]["overall"], figures["streaming_vs_nemo"]
    text = (
        f"per step: max |dp| {steps['max_abs_prob_error']:.1e}, decisions {steps['decision_agreement']:.2%}, "
        f"argmax {steps['argmax_agreement']:.2%}; streaming {stream['chunks']} chunks: max |dp| "
        f"{stream['max_abs_prob_error']:.1e}, decisions {stream['decision_agreement']:.2%}"
    )
    if "per_step_vs_fp16" in figures:
        twin = figures["per_step_vs_fp16"]["overall"]
        agree, argmax = twin["decision_agreement"], twin["argmax_agreement"]
        text += f"; vs fp16 twin: decisions {agree:.2%}, argmax {argmax:.2%}"
    return text


def _manifest(
    config: BuildConfig,
    checkpoint: Checkpoint,
    versions: dict[str, str],
    job_key: dict[str, Any],
    package: Path,
    programs: Entry,
    steps: StepLog,
) -> dict[str, Any]:
    geometry = config.variant.geometry
    return {
        "format": MANIFEST_FORMAT,
        "artifact": {
            "file": package.name,
            "content_sha256": package_digest(package),
            "bytes": package_size(package),
            "release_path": f"{config.compression.folder}/{config.variant.file_name}.mlmodelc",
        },
        "config": config_dict(config),
        "geometry": {
            **geometry.metadata(),
            "chunk_mel_frames": geometry.chunk_mel_frames,
            "prediction_frames": geometry.prediction_frames,
            "latency_seconds": geometry.latency_seconds,
            "effective_update_period": geometry.effective_update_period,
        },
        "checkpoint": {
            "source": checkpoint.source,
            "origin": checkpoint.origin,
            "file": str(checkpoint.path),
            "sha256": checkpoint.sha256,
        },
        "parameters": programs.facts["parameters"],
        "versions": {"python": platform.python_version(), **versions},
        "steps": steps.as_dicts(),
        "seconds": steps.seconds(),
        "job_digest": digest_of(job_key),
    }


def _publish(staging: Path, folder: Path, name: str, record: dict[str, Any]) -> None:
    """Move the package (and compiled model) into place, then the manifest that vouches for them;
    under a lock, so two jobs writing the same artifact leave one consistent pair."""
    record["steps"].append({"name": "publish", "status": "built", "seconds": 0.0, "detail": str(folder)})
    with atomic.lock(folder / name):
        for suffix in (".mlpackage", ".mlmodelc"):
            staged = staging / f"{name}{suffix}"
            if staged.exists():
                atomic.replace(staged, folder / staged.name)
        atomic.write_text(folder / f"{name}.json", json.dumps(record, indent=2) + "\n")
