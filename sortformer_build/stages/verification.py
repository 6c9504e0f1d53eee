"""The verification stages: static checks, NeMo's reference outputs, the fp16 twin's outputs,
parity with gates, and Core ML itself on macOS. What they measure and judge lives in `verify`;
these declare when each runs and what it caches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sortformer_build.config import BuildConfig
from sortformer_build.coreml import macos
from sortformer_build.stages.assemble import fp16_twin
from sortformer_build.stages.base import CachedStage, JobContext, KeyFacts, Stage, need
from sortformer_build.stages.kinds import model_kind
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.stages.steps import VERIFIED, StepFailed
from sortformer_build.store.cache import Entry
from sortformer_build.verify.compare import OUTPUTS_FILE, REFERENCE_FILE

PARITY_OFF = "verify.parity=false"


class LintStage(Stage):
    name = "lint"

    def description(self, config: BuildConfig) -> str:
        return "Checking the I/O contract, metadata, aliasing, target ops and compression"

    def execute(self, job: JobContext) -> None:
        from sortformer_build.verify.lint import Expectation, lint_package

        config = job.config
        expected = Expectation(
            geometry=config.variant.geometry,
            d_model=need(job.programs, "converted programs").d_model,
            nbits=config.compression.nbits,
            deployment_target=config.deployment_target,
        )
        with self.step(job) as step:
            findings = lint_package(need(job.package, "staged package"), expected)
            if findings:
                raise StepFailed(f"the package fails {len(findings)} static check(s): " + "; ".join(findings))
            step.status = VERIFIED
        job.verification.lint = "passed"


class NemoReferenceStage(CachedStage):
    name = "nemo-reference"

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return (REFERENCE_FILE,)

    def applies(self, config: BuildConfig) -> bool:
        return config.verify.parity

    def description(self, config: BuildConfig) -> str:
        cases = model_kind(config.variant.geometry).reference_description()
        return f"Computing NeMo's reference outputs ({cases})"

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        """Weights, geometry, inputs and tools: every compression of a model shares it."""
        geometry, settings = facts.config.variant.geometry, facts.config.verify
        return {
            "checkpoint": facts.checkpoint_sha256,
            "geometry": geometry.metadata(),
            "seed": settings.seed,
            **model_kind(geometry).reference_key(geometry, settings),
            "versions": facts.versions,
        }

    def build(self, job: JobContext, folder: Path) -> dict[str, Any]:
        from sortformer_build.verify.compare import save_reference

        geometry = job.config.variant.geometry
        d_model = need(job.programs, "converted programs").d_model
        data = model_kind(geometry).reference(job.nemo(), geometry, d_model, job.config.verify)
        save_reference(data, folder)
        return {"chunks": data.chunks}

    def accept(self, job: JobContext, entry: Entry) -> None:
        from sortformer_build.verify.compare import load_reference

        chunks = entry.facts["chunks"]
        job.reference = load_reference(entry.path, None if chunks is None else int(chunks))


class Fp16OutputsStage(CachedStage):
    """The fp16 package's outputs on the reference cases. An fp16 build computes them on its own
    staged package; a compressed build reuses them, or assembles the fp16 twin from the cached
    conversion to compute them."""

    name = "fp16-outputs"

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return (OUTPUTS_FILE,)

    def applies(self, config: BuildConfig) -> bool:
        return config.verify.parity

    def description(self, config: BuildConfig) -> str:
        return f"Running the fp16 package on the reference cases ({config.verify.precision.value} executor)"

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        return {
            "programs": facts.entries[ProgramsStage.name],
            "reference": facts.entries[NemoReferenceStage.name],
            "precision": facts.config.verify.precision.value,
        }

    def build(self, job: JobContext, folder: Path) -> dict[str, Any]:
        from sortformer_build.verify.compare import package_step, save_outputs
        from sortformer_build.verify.parity import run_cases

        cases = need(job.reference, "NeMo reference").cases
        precision = job.config.verify.precision
        if job.config.compression.is_fp16:
            outputs = run_cases(job.package_step(), cases)
        else:
            with fp16_twin(job, folder) as twin:
                outputs = run_cases(package_step(twin, precision), cases)
        save_outputs(outputs, cases, folder)
        return {}

    def accept(self, job: JobContext, entry: Entry) -> None:
        from sortformer_build.verify.compare import load_outputs

        job.fp16_outputs = load_outputs(entry.path)


class ParityStage(Stage):
    name = "parity"

    def skip_reason(self, config: BuildConfig) -> str | None:
        return None if config.verify.parity else PARITY_OFF

    def description(self, config: BuildConfig) -> str:
        precision = config.verify.precision.value
        cases = model_kind(config.variant.geometry).reference_description()
        return f"Comparing the package with NeMo ({precision} executor, {cases})"

    def execute(self, job: JobContext) -> None:
        from sortformer_build.verify.gates import gate

        config = job.config
        fp16 = config.compression.is_fp16
        outputs = need(job.fp16_outputs, "fp16 outputs")
        with self.step(job) as step:
            figures = model_kind(config.variant.geometry).figures(
                job.package_step(),
                need(job.reference, "NeMo reference"),
                config.variant.geometry,
                need(job.programs, "converted programs").d_model,
                config.verify.precision,
                outputs=outputs if fp16 else None,
                twin=None if fp16 else outputs,
            )
            step.detail = figures.summary()
            failures = gate(figures, config.compression.gates, config.verify.max_emb_error_ratio)
            if failures:
                raise StepFailed(f"parity with NeMo fails: {'; '.join(failures)} [{step.detail}]")
            step.status = VERIFIED
        job.verification.parity = figures


class OnDeviceStage(Stage):
    """Core ML itself, where it exists: compile to .mlmodelc, load with all compute units, and
    (with parity on) predict the per-step cases and compare with NeMo."""

    name = "on-device"

    def skip_reason(self, config: BuildConfig) -> str | None:
        return None if macos.available() else macos.NEEDS_MACOS

    def description(self, config: BuildConfig) -> str:
        return "Compiling, loading with all compute units and predicting with Core ML"

    def execute(self, job: JobContext) -> None:
        from sortformer_build.verify.gates import gate

        config = job.config
        package = need(job.package, "staged package")
        compiled = package.with_suffix(".mlmodelc")
        with self.step(job) as step:
            macos.compile_package(package, compiled)
            loaded = macos.load_compiled(compiled)
            step.detail = "compiled and loaded"
            if job.reference is not None:
                figures = model_kind(config.variant.geometry).device_figures(loaded.predict, job.reference)
                step.detail = figures.summary()
                failures = gate(figures, config.compression.gates, config.verify.max_emb_error_ratio)
                if failures:
                    raise StepFailed(f"Core ML predictions differ from NeMo: {'; '.join(failures)}")
                job.verification.on_device = figures
            step.status = VERIFIED
