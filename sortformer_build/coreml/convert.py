"""Conversion: traced programs to Core ML ML programs, the two streaming programs to one
pipeline, and the offline program described for the runtime."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build import contract
from sortformer_build.coreml.export import TracedModels, TracedProgram
from sortformer_build.coreml.layout import ProgramFiles
from sortformer_build.coreml.package import PackageError, make_spec_deterministic, read_package
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.geometry import OfflineGeometry, StreamingGeometry
from sortformer_build.store import atomic

log = logging.getLogger(__name__)

# coremltools writes this into every model; dropping it keeps a rebuild byte-identical.
_VOLATILE_METADATA = ("com.github.apple.coremltools.conversion_date",)
# Where an ML program's constants point: `@model_path/weights/weight.bin` in a saved program.
_WEIGHTS_PREFIX = "@model_path/weights/"
_WEIGHTS_FILE = "weight.bin"

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


@contextmanager
def one_thread() -> Iterator[None]:
    """Trace and convert on one thread. The constants the converter folds (batch norms into
    convolutions, scales into weights) are computed with BLAS and torch's kernels, whose summation
    order, and so the last bit of some fp16 weights, follows the thread count: with one thread a
    package is the same from a serial build, a parallel sweep or a cluster node."""
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)


def convert_programs(traced: TracedModels, target: DeploymentTarget, folder: Path) -> ProgramFiles:
    """Convert the pre-encoder and the head with fp16 weights and compute into `folder`."""
    files = ProgramFiles.in_folder(folder)
    pre_outputs: dict[str, type[np.generic]] = {
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
    output_dtypes: Mapping[str, type[np.generic]],
    target: DeploymentTarget,
    input_dtypes: Mapping[str, type[np.generic]],
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
    make_spec_deterministic(destination)
    atomic.remove(converted)


def assemble_pipeline(
    programs: ProgramFiles, geometry: StreamingGeometry, metadata: dict[str, str], destination: Path
) -> None:
    """The runtime's streaming model: pre-encoder then head, with the geometry in its metadata."""
    pipeline = unloaded_pipeline((programs.pre_encoder, programs.head))
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


def unloaded_pipeline(paths: tuple[Path, ...]) -> Any:
    """The pipeline `ct.utils.make_pipeline` makes of these saved programs, as an MLModel that
    Core ML never compiles or loads: make_pipeline has no `skip_model_load`, so on macOS it
    compiles and loads the whole pipeline (Neural Engine included) and only warns when that
    fails. Pipeline inputs are the inputs no earlier program produces, outputs those no later
    program reads (last program first), and each program's weights file gets its index."""
    import coremltools as ct

    specs = [read_package(path).spec for path in paths]
    pipeline = ct.proto.Model_pb2.Model()
    pipeline.specificationVersion = max(spec.specificationVersion for spec in specs)
    produced: set[str] = set()
    for spec in specs:
        for feature in spec.description.input:
            if feature.name not in produced:
                pipeline.description.input.add().CopyFrom(feature)
                produced.add(feature.name)
        produced.update(feature.name for feature in spec.description.output)
    consumed: set[str] = set()
    for spec in reversed(specs):
        for feature in spec.description.output:
            if feature.name not in consumed:
                pipeline.description.output.add().CopyFrom(feature)
        consumed.update(feature.name for feature in spec.description.input)
    with tempfile.TemporaryDirectory(prefix="pipeline-weights-") as weights:
        for index, (path, spec) in enumerate(zip(paths, specs, strict=True)):
            _point_weights_at(spec, f"{_WEIGHTS_PREFIX}{index}-{_WEIGHTS_FILE}")
            pipeline.pipeline.models.append(spec)
            weights_file = read_package(path).weights_dir / _WEIGHTS_FILE
            if weights_file.exists():
                shutil.copyfile(weights_file, Path(weights) / f"{index}-{_WEIGHTS_FILE}")
        # MLModel copies the weights into a package of its own before the folder goes.
        return ct.models.MLModel(pipeline, weights_dir=weights, skip_model_load=True)


def _point_weights_at(spec: Any, file_name: str) -> None:
    """Rename the weights file every constant of an ML program reads from."""
    if spec.WhichOneof("Type") != "mlProgram":
        return
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            _point_block_weights_at(block, file_name)


def _point_block_weights_at(block: Any, file_name: str) -> None:
    for operation in block.operations:
        values = [*operation.attributes.values()]
        values += [
            binding.value
            for argument in operation.inputs.values()
            for binding in argument.arguments
            if binding.HasField("value")
        ]
        for value in values:
            if value.WhichOneof("value") == "blobFileValue":
                if value.blobFileValue.fileName != f"{_WEIGHTS_PREFIX}{_WEIGHTS_FILE}":
                    raise PackageError(f"a program reads weights from {value.blobFileValue.fileName}")
                value.blobFileValue.fileName = file_name
        for nested in operation.blocks:
            _point_block_weights_at(nested, file_name)


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
