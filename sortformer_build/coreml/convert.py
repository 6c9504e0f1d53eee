"""Conversion: traced programs to Core ML ML programs, the two streaming programs to one
pipeline, and the offline program described for the runtime."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build import contract
from sortformer_build.coreml.export import TracedModels, TracedProgram
from sortformer_build.coreml.layout import ProgramFiles
from sortformer_build.coreml.package import make_spec_deterministic
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.geometry import OfflineGeometry, StreamingGeometry
from sortformer_build.store import atomic

log = logging.getLogger(__name__)

# coremltools writes this into every model; dropping it keeps a rebuild byte-identical.
_VOLATILE_METADATA = ("com.github.apple.coremltools.conversion_date",)

_INPUT_DESCRIPTIONS = {
    contract.CHUNK: "Log-mel features of one chunk with its left and right context, time-major",
    contract.CHUNK_LENGTHS: "Valid mel frames in chunk",
    contract.SPKCACHE: "Speaker cache of pre-encoded embeddings, zero-padded",
    contract.SPKCACHE_LENGTHS: "Valid frames in spkcache (0 at stream start)",
    contract.FIFO: "FIFO of the latest pre-encoded embeddings, zero-padded",
    contract.FIFO_LENGTHS: "Valid frames in fifo (0 at stream start)",
}
_OUTPUT_DESCRIPTIONS = {
    contract.SPEAKER_PREDS: "Speaker activity probabilities over spkcache | fifo | chunk frames",
    contract.CHUNK_EMBS: "Pre-encoded embeddings of the chunk, to append to the FIFO",
    contract.CHUNK_EMB_LENGTHS: "Valid frames in chunk_pre_encoder_embs_out",
}


def convert_programs(traced: TracedModels, target: DeploymentTarget, folder: Path) -> ProgramFiles:
    """Convert the pre-encoder and the head with fp16 weights and compute into `folder`."""
    files = ProgramFiles.in_folder(folder)
    pre_outputs = {
        contract.CHUNK_EMBS: np.float32,
        contract.CHUNK_EMB_LENGTHS: np.int32,
        contract.PACKED_EMBS: np.float16,
        contract.PACKED_LENGTHS: np.int32,
    }
    log.info("Converting the pre-encoder (subsampling and packing) to an ML program")
    convert_program(traced.pre_encoder, pre_outputs, target, {}, files.pre_encoder)
    log.info("Converting the head (FastConformer, Transformer, speaker sigmoids) to an ML program")
    head_inputs = {contract.PACKED_EMBS: np.float16}
    convert_program(traced.head, {contract.SPEAKER_PREDS: np.float32}, target, head_inputs, files.head)
    return files


def convert_program(
    traced: TracedProgram,
    output_dtypes: dict[str, type],
    target: DeploymentTarget,
    input_dtypes: dict[str, type],
    destination: Path,
) -> None:
    """Save one fp16 ML program with the contract's names and explicitly typed inputs and outputs
    (undeclared float inputs would become fp16 under fp16 compute). coremltools first writes a
    package of its own: beside `destination`, not in a temporary folder it would keep until the
    process exits."""
    import coremltools as ct

    from sortformer_build.coreml.fixes import torch_frontend_fixes

    inputs = [
        ct.TensorType(
            name=name,
            shape=tuple(example.shape),
            dtype=input_dtypes.get(name, np.int32 if not example.is_floating_point() else np.float32),
        )
        for name, example in zip(traced.input_names, traced.examples, strict=True)
    ]
    outputs = [ct.TensorType(name=name, dtype=output_dtypes[name]) for name in traced.output_names]
    converted = destination.with_name(f"converted-{destination.name}")
    with torch_frontend_fixes():
        model = ct.convert(
            traced.module,
            inputs=inputs,
            outputs=outputs,
            convert_to="mlprogram",
            minimum_deployment_target=getattr(ct.target, target.value),
            compute_precision=ct.precision.FLOAT16,
            skip_model_load=True,
            package_dir=str(converted),
        )
    drop_volatile_metadata(model)
    model.save(str(destination))
    atomic.remove(converted)


def assemble_pipeline(
    programs: ProgramFiles, geometry: StreamingGeometry, metadata: dict[str, str], destination: Path
) -> None:
    """The runtime's streaming model: pre-encoder then head, with the geometry in its metadata."""
    import coremltools as ct

    paths = (programs.pre_encoder, programs.head)
    models = [ct.models.MLModel(str(path), skip_model_load=True) for path in paths]
    pipeline = ct.utils.make_pipeline(*models)
    drop_volatile_metadata(pipeline)
    pipeline.short_description = (
        f"NVIDIA Streaming Sortformer 4-speaker diarizer, chunk {geometry.chunk_len} frames, "
        f"{geometry.latency_seconds:g} s latency"
    )
    pipeline.user_defined_metadata.update({**geometry.metadata(), **metadata})
    for name, text in _INPUT_DESCRIPTIONS.items():
        pipeline.input_description[name] = text
    for name, text in _OUTPUT_DESCRIPTIONS.items():
        pipeline.output_description[name] = text
    pipeline.save(str(destination))
    make_spec_deterministic(destination)


def describe_offline(
    program: Path, geometry: OfflineGeometry, version: str, metadata: dict[str, str], destination: Path
) -> None:
    """The runtime's offline model: the one program, saved with what it is in its metadata."""
    import coremltools as ct

    model = ct.models.MLModel(str(program), skip_model_load=True)
    drop_volatile_metadata(model)
    model.short_description = (
        f"NVIDIA Sortformer 4-speaker diarizer ({version}), offline over a whole "
        f"{geometry.latency_seconds:g} s window"
    )
    model.user_defined_metadata.update(
        {**geometry.metadata(), contract.CHECKPOINT_VERSION: version, **metadata}
    )
    model.input_description[contract.MEL] = (
        "Log-mel features of one window, channels-first, zero past mel_length"
    )
    model.input_description[contract.MEL_LENGTH] = "Valid mel frames in mel"
    model.output_description[contract.OFFLINE_PREDS] = (
        "Speaker activity probabilities per 80 ms frame, zero past the valid frames"
    )
    model.save(str(destination))
    make_spec_deterministic(destination)


def drop_volatile_metadata(model: Any) -> None:
    for key in _VOLATILE_METADATA:
        model.user_defined_metadata.pop(key, None)
