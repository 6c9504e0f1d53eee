"""The verification stages: static checks, NeMo's reference outputs, the fp16 twin's outputs,
parity with gates, and Core ML itself on macOS. What they measure and judge lives in `verify`;
these declare when each runs and what it caches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sortformer_build.config import BuildConfig
from sortformer_build.coreml import host, macos
from sortformer_build.kinds import kind_of
from sortformer_build.records.device import ComputeUnits
from sortformer_build.records.facts import NoFacts, ReferenceFacts
from sortformer_build.records.steps import Skip, SkipReason, StepStatus
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.stages.assemble import fp16_twin
from sortformer_build.stages.base import CachedStage, Job, KeyFacts, UncachedStage
from sortformer_build.stages.programs import ProgramsStage
from sortformer_build.stages.slots import (
    DEVICE_REPORT,
    FP16_OUTPUTS,
    NEMO,
    ON_DEVICE,
    PACKAGE,
    PARITY,
    PROGRAMS,
    RECIPE,
    REFERENCE,
)
from sortformer_build.stages.steps import StepFailed
from sortformer_build.verify.compare import OUTPUTS_FILE, REFERENCE_FILE


class LintStage(UncachedStage):
    name = "lint"
    reads = (PROGRAMS, PACKAGE)
    reads_if_present = (RECIPE,)

    def description(self, config: BuildConfig) -> str:
        return "Checking the I/O contract, metadata, aliasing, target ops and compression"

    def execute(self, job: Job) -> None:
        from sortformer_build.verify.lint import Expectation, lint_package

        config = job.config
        expected = Expectation(
            geometry=config.variant.geometry,
            d_model=job.get(PROGRAMS).d_model,
            nbits=config.compression.nbits,
            tensor_bits=None if (applied := job.find(RECIPE)) is None else applied.tensor_bits,
            max_bytes=None if applied is None else applied.recipe.budget_bytes,
            deployment_target=config.deployment_target,
        )
        with self.step(job) as step:
            findings = lint_package(job.get(PACKAGE).path, expected)
            if findings:
                raise StepFailed(f"the package fails {len(findings)} static check(s): " + "; ".join(findings))
            step.status = StepStatus.verified


class NemoReferenceStage(CachedStage[ReferenceFacts]):
    name = "nemo-reference"
    facts_type = ReferenceFacts
    reads = (NEMO, PROGRAMS)
    provides = (REFERENCE,)

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return (REFERENCE_FILE,)

    def applies(self, config: BuildConfig) -> bool:
        return config.verify.parity

    def description(self, config: BuildConfig) -> str:
        cases = kind_of(config.variant.geometry).reference_description()
        return f"Computing NeMo's reference outputs ({cases})"

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        """Weights, geometry and inputs: every compression of a model shares it."""
        geometry, settings = facts.config.variant.geometry, facts.config.verify
        return {
            "checkpoint": facts.checkpoint_sha256,
            "geometry": geometry.metadata(),
            "seed": settings.seed,
            **kind_of(geometry).reference_key(geometry, settings),
        }

    def build(self, job: Job, folder: Path) -> ReferenceFacts:
        from sortformer_build.verify.compare import save_reference

        geometry = job.config.variant.geometry
        d_model = job.get(PROGRAMS).d_model
        data = kind_of(geometry).reference(job.get(NEMO).get(), geometry, d_model, job.config.verify)
        save_reference(data, folder)
        return ReferenceFacts(chunks=data.chunks)

    def accept(self, job: Job, folder: Path, facts: ReferenceFacts) -> None:
        from sortformer_build.verify.compare import load_reference

        job.put(REFERENCE, load_reference(folder, facts.chunks))


class Fp16OutputsStage(CachedStage[NoFacts]):
    """The fp16 package's outputs on the reference cases. An fp16 build computes them on its own
    staged package; a compressed build reuses them, or assembles the fp16 twin from the cached
    conversion to compute them."""

    name = "fp16-outputs"
    facts_type = NoFacts
    upstream = (ProgramsStage.name, NemoReferenceStage.name)
    reads = (PROGRAMS, PACKAGE, REFERENCE)
    provides = (FP16_OUTPUTS,)

    def outputs(self, config: BuildConfig) -> tuple[str, ...]:
        return (OUTPUTS_FILE,)

    def applies(self, config: BuildConfig) -> bool:
        return config.verify.parity

    def description(self, config: BuildConfig) -> str:
        return f"Running the fp16 package on the reference cases ({config.verify.precision.value} executor)"

    def key(self, facts: KeyFacts) -> dict[str, Any]:
        return {
            "programs": facts.entry(ProgramsStage.name),
            "reference": facts.entry(NemoReferenceStage.name),
            "precision": facts.config.verify.precision.value,
        }

    def build(self, job: Job, folder: Path) -> NoFacts:
        from sortformer_build.executor.step import package_step
        from sortformer_build.verify.compare import save_outputs
        from sortformer_build.verify.parity import run_cases

        cases = job.get(REFERENCE).cases
        if job.config.compression.is_fp16:
            outputs = run_cases(job.get(PACKAGE).step(), cases)
        else:
            with fp16_twin(job, folder) as twin:
                outputs = run_cases(package_step(twin, job.config.verify.precision), cases)
        save_outputs(outputs, cases, folder)
        return NoFacts()

    def accept(self, job: Job, folder: Path, facts: NoFacts) -> None:
        from sortformer_build.verify.compare import load_outputs

        job.put(FP16_OUTPUTS, load_outputs(folder))


class ParityStage(UncachedStage):
    name = "parity"
    reads = (PROGRAMS, PACKAGE, REFERENCE, FP16_OUTPUTS)
    provides = (PARITY,)

    def skip(self, config: BuildConfig) -> Skip | None:
        return (
            None if config.verify.parity else Skip(reason=SkipReason.parity_off, detail="verify.parity=false")
        )

    def description(self, config: BuildConfig) -> str:
        precision = config.verify.precision.value
        cases = kind_of(config.variant.geometry).reference_description()
        return f"Comparing the package with NeMo ({precision} executor, {cases})"

    def execute(self, job: Job) -> None:
        from sortformer_build.verify.gates import gate

        config = job.config
        fp16 = config.compression.is_fp16
        outputs = job.get(FP16_OUTPUTS)
        package = job.get(PACKAGE)
        with self.step(job) as step:
            run = kind_of(config.variant.geometry).figures(
                package.step(),
                job.get(REFERENCE),
                config.variant.geometry,
                job.get(PROGRAMS).d_model,
                config.verify.precision,
                outputs=outputs if fp16 else None,
                twin=None if fp16 else outputs,
            )
            figures = run.figures
            step.detail = figures.summary()
            failures = gate(figures, config.compression.gates, config.verify.max_emb_error_ratio)
            if failures:
                raise StepFailed(f"parity with NeMo fails: {'; '.join(failures)} [{step.detail}]")
            step.status = StepStatus.verified
        # Staged beside the package: the deliver stage moves both into place.
        trace = run.probabilities.save(ArtifactPaths.beside(package.path).probabilities)
        job.put(PARITY, figures.model_copy(update={"trace": trace}))


class OnDeviceStage(UncachedStage):
    """Core ML itself, where it runs: compile to .mlmodelc, a first prediction in a fresh process
    (a model that kills its process fails the check, not the build), the device report (load,
    latency, memory, where the ops run), and, with parity on, Core ML's predictions of the
    per-call cases against NeMo under the compression's on-device gates."""

    name = "on-device"
    reads = (PACKAGE,)
    reads_if_present = (REFERENCE,)
    provides = (ON_DEVICE, DEVICE_REPORT)

    def skip(self, config: BuildConfig) -> Skip | None:
        return host.for_target(config.deployment_target).skipped()

    def description(self, config: BuildConfig) -> str:
        return "Compiling, loading with all compute units and predicting with Core ML"

    def execute(self, job: Job) -> None:
        from sortformer_build.verify.gates import gate

        config = job.config
        package = job.get(PACKAGE).path
        compiled = ArtifactPaths.beside(package).compiled
        reference = job.find(REFERENCE)
        with self.step(job) as step:
            report = macos.measure_device(package, compiled, ComputeUnits.all)
            job.put(DEVICE_REPORT, report)
            step.detail = report.one_line()
            if reference is not None:
                loaded = macos.load_compiled(compiled)
                figures = kind_of(config.variant.geometry).device_figures(loaded.predict, reference)
                step.detail += f"; {figures.summary()}"
                gates = config.compression.on_device_gates
                failures = gate(figures, gates, config.verify.max_emb_error_ratio)
                if failures:
                    raise StepFailed(f"Core ML predictions differ from NeMo: {'; '.join(failures)}")
                job.put(ON_DEVICE, figures)
            step.status = StepStatus.verified
