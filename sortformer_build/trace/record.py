"""Recording traces: NeMo's own loop on one recording (the reference a release ships), and the
same loop with a package run by the executor (for the comparison evaluation reports).

The model kind drives the recording (`ModelKind.record_trace`): a streaming model through
`verify.reference.stream` (NeMo's chunk loader and `streaming_update_async`), observed chunk by
chunk; an offline model through `verify.offline.tile_windows`, observed window by window.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build import contract
from sortformer_build.config import ExecutorPrecision
from sortformer_build.evaluate.segments import PostProcessing
from sortformer_build.geometry import Geometry
from sortformer_build.kinds import kind_of
from sortformer_build.records.trace import (
    ChunkEntry,
    FeatureFacts,
    RecordingFacts,
    Segment,
    TraceComparison,
    TraceHeader,
    TraceIndex,
    WindowEntry,
)
from sortformer_build.trace import format as trace_format
from sortformer_build.trace.compare import compare_traces
from sortformer_build.trace.format import Trace, TraceWriter, read_trace, trace_files
from sortformer_build.verify.reference import SAMPLE_RATE, ChunkStep

# Pre-encoder embeddings (the chunk's, and the speaker cache and FIFO made of them) are stored in
# float16: the contract lets a model return them in float16, and a correct fp16 model already
# differs from NeMo's by far more than float16 rounding (about 5e-4 of their magnitude).
# Probabilities, features, lengths and the silence profile stay exact.
EMBEDDINGS = np.float16
EMBEDDING_TENSORS = (
    contract.SPKCACHE,
    contract.FIFO,
    contract.CHUNK_EMBS,
    trace_format.STATE_SPKCACHE,
    trace_format.STATE_FIFO,
)
NEMO = "nemo"
COMPARISON_FILE = "comparison.json"


class Recorder:
    """Writes what a model kind's loop shows it (`ModelKind.record_trace`) into a trace: each
    chunk after NeMo's state update, or each window."""

    def __init__(self, writer: TraceWriter) -> None:
        self.writer = writer

    def chunk(self, step: ChunkStep, prediction_frames: int) -> None:
        state = step.state
        valid = int(step.outputs[contract.CHUNK_EMB_LENGTHS][0]) - step.left_context - step.right_context
        tensors = {
            **{name: np.asarray(value) for name, value in step.inputs.items()},
            contract.SPEAKER_PREDS: _contract_preds(step.outputs[contract.SPEAKER_PREDS], prediction_frames),
            contract.CHUNK_EMBS: step.outputs[contract.CHUNK_EMBS],
            contract.CHUNK_EMB_LENGTHS: step.outputs[contract.CHUNK_EMB_LENGTHS].astype(np.int32),
            trace_format.CHUNK_PREDS: step.chunk_preds.astype(np.float32),
            trace_format.STATE_SPKCACHE: state.spkcache.numpy(),
            trace_format.STATE_SPKCACHE_LENGTHS: state.spkcache_lengths.numpy().astype(np.int32),
            trace_format.STATE_SPKCACHE_PREDS: state.spkcache_preds.numpy().astype(np.float32),
            trace_format.STATE_FIFO: state.fifo.numpy(),
            trace_format.STATE_FIFO_LENGTHS: state.fifo_lengths.numpy().astype(np.int32),
            trace_format.STATE_FIFO_PREDS: state.fifo_preds.numpy().astype(np.float32),
            trace_format.STATE_MEAN_SIL_EMB: state.mean_sil_emb.numpy().astype(np.float32),
            trace_format.STATE_N_SIL_FRAMES: state.n_sil_frames.numpy().astype(np.int32),
        }
        for name in EMBEDDING_TENSORS:
            tensors[name] = tensors[name].astype(EMBEDDINGS)
        # NeMo does not say when it compressed; the cache and FIFO only lose frames when it does.
        frames_in = int(step.inputs[contract.SPKCACHE_LENGTHS][0] + step.inputs[contract.FIFO_LENGTHS][0])
        frames_out = int(state.spkcache_lengths[0] + state.fifo_lengths[0])
        tensors[trace_format.STATE_COMPRESSED] = np.array([frames_in + max(valid, 0) > frames_out])
        entry = ChunkEntry(
            index=step.index,
            mel_start=step.mel_start,
            mel_frames=step.mel_frames,
            left_context=step.left_context,
            right_context=step.right_context,
            tensors=(),
        )
        self.writer.add_chunk(entry, tensors)

    def window(
        self, index: int, mel_start: int, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
    ) -> None:
        preds = np.asarray(outputs[contract.OFFLINE_PREDS], dtype=np.float32)
        entry = WindowEntry(
            index=index, mel_start=mel_start, mel_frames=int(inputs[contract.MEL_LENGTH][0]), tensors=()
        )
        self.writer.add_window(entry, {**inputs, contract.OFFLINE_PREDS: preds})


def _contract_preds(preds: np.ndarray, prediction_frames: int) -> np.ndarray:
    """NeMo's step predicts over the valid packed frames only; a Core ML model returns all
    `prediction_frames`: zeros stand for the rest, which no comparison reads."""
    padded = np.zeros((1, prediction_frames, preds.shape[2]), dtype=np.float32)
    padded[:, : preds.shape[1]] = preds
    return padded


def nemo_trace(
    model: Any,
    geometry: Geometry,
    audio_path: Path,
    folder: Path,
    name: str,
    checkpoint_sha256: str,
    postprocessing: PostProcessing,
) -> TraceIndex:
    """NeMo's own loop for `geometry` on the recording at `audio_path`, written to
    `<folder>/<name>.safetensors` and `.json`: the audio, NeMo's features with no dither, every
    chunk (or window), the final probabilities and NeMo's segments. `name`: the model's file name."""
    from sortformer_build.evaluate.audio import load_audio
    from sortformer_build.store.provenance import tool_versions
    from sortformer_build.verify.reference import mel_features

    if model.preprocessor.training:
        raise trace_format.TraceError("the model is in training mode: its features would be dithered")
    audio = load_audio(audio_path)
    mel = mel_features(model, audio)
    writer = TraceWriter()
    writer.add_recording(trace_format.AUDIO, audio)
    writer.add_recording(trace_format.MEL, mel)
    kind = kind_of(geometry)
    preds = kind.record_trace(
        geometry, int(model.encoder.d_model), mel, kind.nemo_call(model), Recorder(writer)
    )
    writer.add_recording(trace_format.PREDS, preds.astype(np.float32))
    segments, rttm = _segments(preds, postprocessing, audio_path.stem, folder)
    header = TraceHeader(
        kind=kind.name,
        name=name,
        producer=NEMO,
        geometry=geometry,
        checkpoint_sha256=checkpoint_sha256,
        tools=tool_versions().model_dump(),
        recording=RecordingFacts(
            name=audio_path.stem,
            sha256=trace_format.file_sha256(audio_path),
            sample_rate=SAMPLE_RATE,
            samples=int(audio.size),
        ),
        features=_features(model, mel),
        postprocessing=asdict(postprocessing),
        segments=segments,
        rttm=rttm,
    )
    return writer.write(folder, header)


def package_trace(
    reference: Trace,
    package: Path,
    precision: ExecutorPrecision,
    folder: Path,
    package_sha256: str | None,
) -> TraceIndex:
    """The same loop on the reference trace's features with the package run by the executor in
    `precision` (on the job's share of the cores), written as a trace of the package into `folder`
    under the reference's name."""
    from sortformer_build.executor.step import package_step
    from sortformer_build.store.provenance import tool_versions

    index = reference.index
    mel = reference.tensor(trace_format.MEL)
    writer = TraceWriter()
    writer.add_recording(trace_format.MEL, mel)
    step = package_step(package, precision)
    kind = kind_of(index.geometry)
    preds = kind.record_trace(index.geometry, _d_model(index), mel, step, Recorder(writer))
    writer.add_recording(trace_format.PREDS, preds.astype(np.float32))
    segments, rttm = None, None
    if index.postprocessing is not None:
        postprocessing = PostProcessing(**index.postprocessing)
        segments, rttm = _segments(preds, postprocessing, index.recording.name, folder)
    header = index.header().model_copy(
        update={
            "producer": f"executor-{precision.value}",
            "package_sha256": package_sha256,
            "tools": tool_versions().model_dump(),
            "segments": segments,
            "rttm": rttm,
        }
    )
    return writer.write(folder, header)


def package_against_nemo(
    reference_path: Path,
    package: Path,
    precision: ExecutorPrecision,
    folder: Path,
    package_sha256: str | None,
) -> TraceComparison:
    """The package's trace (written into `folder`) against NeMo's at `reference_path`: the
    figures evaluation records, also written to `folder`/COMPARISON_FILE."""

    reference = read_trace(reference_path)
    index = package_trace(reference, package, precision, folder, package_sha256)
    comparison = compare_traces(reference, read_trace(trace_files(folder, index.name)[1]))
    comparison.write(folder / COMPARISON_FILE)
    return comparison


def _d_model(index: TraceIndex) -> int:
    """The embedding width, from the speaker cache's shape (offline traces have none)."""
    spec = index.chunk_tensors.get(contract.SPKCACHE)
    return 0 if spec is None or spec.shape[-1] is None else spec.shape[-1]


def _segments(
    preds: np.ndarray, postprocessing: PostProcessing, recording: str, scratch_parent: Path
) -> tuple[tuple[Segment, ...], str]:
    """NeMo's post-processing of `preds`: the segments, and the RTTM NeMo's writer makes."""
    from sortformer_build.evaluate.annotations import write_rttm
    from sortformer_build.evaluate.segments import speaker_labels
    from sortformer_build.store import atomic

    labels = speaker_labels(preds, postprocessing)
    segments = tuple(
        Segment(start=float(start), end=float(end), speaker=speaker)
        for start, end, speaker in (line.split() for line in labels)
    )
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with atomic.scratch_folder(scratch_parent) as scratch:
        path = scratch / f"{recording}.rttm"
        write_rttm(path, labels, recording)
        return segments, path.read_text()


def _features(model: Any, mel: np.ndarray) -> FeatureFacts:
    featurizer = model.preprocessor.featurizer
    return FeatureFacts(
        n_mels=int(featurizer.nfilt),
        n_fft=int(featurizer.n_fft),
        win_length=int(featurizer.win_length),
        hop_length=int(featurizer.hop_length),
        window=str(model.cfg.preprocessor.get("window", "hann")),
        normalize=str(featurizer.normalize),
        preemph=None if featurizer.preemph is None else float(featurizer.preemph),
        mag_power=float(featurizer.mag_power),
        log_zero_guard_value=float(featurizer.log_zero_guard_value),
        dither=0.0,
        training_dither=float(featurizer.dither),
        frames=int(mel.shape[2]),
    )
