"""The parity stage of a build: NeMo reference (computed once per checkpoint and geometry,
cached), the package run in the executor, figures, and the gates that decide publication."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.config import VerifyConfig
from sortformer_build.geometry import FRAME_SECONDS, StreamingGeometry
from sortformer_build.store import atomic
from sortformer_build.store.cache import BuildCache, Entry
from sortformer_build.verify import reference
from sortformer_build.verify.parity import compare_steps, compare_streams, run_cases
from sortformer_build.verify.reference import StreamResult

log = logging.getLogger(__name__)


@dataclass
class ReferenceData:
    cases: list[dict[str, np.ndarray]]
    outputs: list[dict[str, np.ndarray]]
    mel: np.ndarray
    stream: StreamResult


@dataclass
class ParityJob:
    """What the parity stage needs to know about the build it checks."""

    package: Path
    geometry: StreamingGeometry
    d_model: int
    nbits: int | None
    checkpoint_sha256: str
    programs: Entry  # the cached fp16 programs: the palettized build's fp16 twin
    versions: dict[str, str]


REFERENCE_STAGE = "nemo-reference"
TWIN_STAGE = "fp16-outputs"


def reference_key(
    checkpoint_sha256: str, geometry: StreamingGeometry, settings: VerifyConfig, versions: dict[str, str]
) -> dict[str, Any]:
    """What NeMo's reference outputs depend on: weights, geometry, inputs, tools."""
    return {
        "checkpoint": checkpoint_sha256,
        "geometry": geometry.metadata(),
        "seed": settings.seed,
        "streaming_seconds": streaming_seconds(geometry, settings),
        "versions": versions,
    }


def _reference_key(job: ParityJob, settings: VerifyConfig) -> dict[str, Any]:
    return reference_key(job.checkpoint_sha256, job.geometry, settings, job.versions)


def nemo_reference(
    job: ParityJob, settings: VerifyConfig, cache: BuildCache, model: Callable[[], Any]
) -> ReferenceData:
    """NeMo's outputs for the per-step cases and for the stream; shared by every job that
    builds this (checkpoint, geometry), whatever its compression."""

    def compute(folder: Path) -> dict[str, Any]:
        nemo = model()
        cases = reference.chunk_cases(nemo, job.geometry, settings.seed)
        step = reference.nemo_step(nemo)
        outputs = run_cases(step, cases)
        audio = reference.synthetic_conversation(streaming_seconds(job.geometry, settings), settings.seed)
        mel = reference.mel_features(nemo, audio)
        modules = reference.streaming_modules(job.geometry, job.d_model)
        stream = reference.stream(modules, job.geometry, mel, step)
        _save(folder / "reference.npz", cases, outputs, {"mel": mel, **_stream_arrays(stream)})
        return {"chunks": stream.chunks}

    entry = cache.fetch(REFERENCE_STAGE, _reference_key(job, settings), compute)
    cases, outputs, extra = _load(entry.path / "reference.npz")
    stream = StreamResult(extra["preds"], extra["spkcache"], extra["fifo"], int(entry.facts["chunks"]))
    return ReferenceData(cases, outputs, extra["mel"], stream)


def streaming_seconds(geometry: StreamingGeometry, settings: VerifyConfig) -> float:
    """The configured length, stretched to hold `streaming_min_chunks` chunks."""
    return max(settings.streaming_seconds, settings.streaming_min_chunks * geometry.chunk_len * FRAME_SECONDS)


def package_step(package: Path, precision: str) -> reference.StepFunction:
    """The package as a step function, run by the executor on one BLAS thread: parallelism
    comes from running jobs side by side, and two threads per job on two busy cores made each
    matmul several times slower."""
    from threadpoolctl import ThreadpoolController

    from sortformer_build.executor import load_package

    model = load_package(package)
    blas = ThreadpoolController()  # scans the loaded libraries once, not on every step

    def step(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with blas.limit(limits=1, user_api="blas"):
            return model.predict(inputs, precision=precision)

    return step


def run_parity(
    job: ParityJob, settings: VerifyConfig, cache: BuildCache, model: Callable[[], Any]
) -> tuple[dict[str, Any], list[str]]:
    """Figures for the manifest and the gates that failed (empty: publishable)."""
    data = nemo_reference(job, settings, cache, model)
    step = package_step(job.package, settings.precision)
    ours = run_cases(step, data.cases)
    figures: dict[str, Any] = {
        "precision": settings.precision,
        "per_step_vs_nemo": compare_steps(ours, data.outputs, data.cases),
    }
    twin = _fp16_twin_outputs(job, settings, cache, data, ours)
    if job.nbits is not None:
        figures["per_step_vs_fp16"] = compare_steps(ours, twin, data.cases)
    modules = reference.streaming_modules(job.geometry, job.d_model)
    figures["streaming_vs_nemo"] = compare_streams(
        reference.stream(modules, job.geometry, data.mel, step), data.stream
    )
    return figures, gate(figures, settings, job.nbits)


def _fp16_twin_outputs(
    job: ParityJob,
    settings: VerifyConfig,
    cache: BuildCache,
    data: ReferenceData,
    ours: list[dict[str, np.ndarray]],
) -> list[dict[str, np.ndarray]]:
    """The fp16 package's step outputs: the fp16 job's own, or rebuilt from the cached programs."""

    def compute(folder: Path) -> dict[str, Any]:
        outputs = ours
        if job.nbits is not None:
            from sortformer_build.coreml.convert import assemble_pipeline

            twin = folder / "fp16.mlpackage"
            pre, head = job.programs.path / "pre_encoder.mlpackage", job.programs.path / "head.mlpackage"
            assemble_pipeline(pre, head, job.geometry, {}, twin)
            outputs = run_cases(package_step(twin, settings.precision), data.cases)
            atomic.remove(twin)
        _save(folder / "outputs.npz", data.cases, outputs, {})
        return {}

    key = {
        "programs": job.programs.path.name,
        **_reference_key(job, settings),
        "precision": settings.precision,
    }
    entry = cache.fetch(TWIN_STAGE, key, compute)
    if job.nbits is None:  # an fp16 job only stores its outputs, for its palettized twins
        return ours
    return _load(entry.path / "outputs.npz")[1]


def run_device_parity(
    job: ParityJob, settings: VerifyConfig, cache: BuildCache, model: Callable[[], Any], predict: Callable
) -> tuple[dict[str, Any], list[str]]:
    """Core ML's own predictions (macOS) for the per-step inputs, against NeMo."""
    data = nemo_reference(job, settings, cache, model)
    ours = [{name: np.asarray(value) for name, value in predict(case).items()} for case in data.cases]
    figures = compare_steps(ours, data.outputs, data.cases)
    failures = _step_gates(figures, settings)
    if job.nbits is None:
        failures += _fp16_gates(figures["overall"], settings)
    else:
        failures += _agreement_gate(figures["overall"], settings.palettized_min_decision_agreement, "NeMo")
    return figures, failures


def gate(figures: dict[str, Any], settings: VerifyConfig, nbits: int | None) -> list[str]:
    steps = figures["per_step_vs_nemo"]
    failures = _step_gates(steps, settings)
    if nbits is None:
        failures += _fp16_gates(steps["overall"], settings)
        minimum = settings.streaming_min_decision_agreement
    else:
        twin = figures["per_step_vs_fp16"]["overall"]
        failures += _agreement_gate(twin, settings.palettized_min_decision_agreement, "the fp16 twin")
        minimum = settings.palettized_min_streaming_agreement
    stream = figures["streaming_vs_nemo"]
    if stream["decision_agreement"] < minimum:
        failures.append(
            f"streaming decisions agree with NeMo on {stream['decision_agreement']:.4%} < {minimum:.2%}"
        )
    return failures


def _step_gates(steps: dict[str, Any], settings: VerifyConfig) -> list[str]:
    failures = []
    if not steps["lengths_equal"]:
        failures.append("chunk embedding lengths differ from NeMo's")
    if steps["emb_error_ratio"] > settings.max_emb_error_ratio:
        failures.append(
            f"chunk embeddings differ from NeMo's by up to {steps['emb_error_ratio']:.1%} of their largest "
            f"magnitude > {settings.max_emb_error_ratio:.1%} (a frame masked or shifted?)"
        )
    return failures


def _fp16_gates(overall: dict[str, Any], settings: VerifyConfig) -> list[str]:
    failures = []
    if overall["max_abs_prob_error"] > settings.fp16_max_prob_error:
        failures.append(
            f"max |p - p_nemo| {overall['max_abs_prob_error']:.2e} > {settings.fp16_max_prob_error:g} "
            f"(reference spread {overall['prob_spread']:.3f})"
        )
    return failures + _agreement_gate(overall, settings.fp16_min_decision_agreement, "NeMo")


def _agreement_gate(overall: dict[str, Any], minimum: float, against: str) -> list[str]:
    if overall["decision_agreement"] >= minimum:
        return []
    return [f"decisions at 0.5 agree with {against} on {overall['decision_agreement']:.4%} < {minimum:.2%}"]


def _stream_arrays(stream: StreamResult) -> dict[str, np.ndarray]:
    return {key: value for key, value in asdict(stream).items() if isinstance(value, np.ndarray)}


def _save(path: Path, cases: list[dict], outputs: list[dict], extra: dict[str, np.ndarray]) -> None:
    arrays = {f"case{i}/{name}": value for i, case in enumerate(cases) for name, value in case.items()}
    arrays |= {
        f"output{i}/{name}": value for i, output in enumerate(outputs) for name, value in output.items()
    }
    arrays |= {f"extra/{name}": value for name, value in extra.items()}
    np.savez(path, **arrays)


def _load(path: Path) -> tuple[list[dict], list[dict], dict[str, np.ndarray]]:
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for name, value in arrays.items():
        group, key = name.split("/", 1)
        grouped.setdefault(group, {})[key] = value
    count = sum(1 for group in grouped if group.startswith("case"))
    cases = [grouped[f"case{i}"] for i in range(count)]
    outputs = [grouped.get(f"output{i}", {}) for i in range(count)]
    return cases, outputs, grouped.get("extra", {})
