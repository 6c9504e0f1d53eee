"""Reference traces: NeMo's loop recorded on the shipped conversation, read back and replayed
through NeMo; the package's own trace against it; wrong host loops caught at the chunk and
tensor where they part; bad input refused in one line."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nemo.collections.asr.modules.sortformer_modules import SortformerModules
from torch import Tensor

from sortformer_build import contract
from sortformer_build.checkpoint.sources import Checkpoint, load_model
from sortformer_build.checkpoint.synthetic import center_speaker_logits
from sortformer_build.config import (
    BuildConfig,
    CheckpointConfig,
    CompressionConfig,
    ExecutorPrecision,
    PostProcessingConfig,
    VariantConfig,
    VerifyConfig,
)
from sortformer_build.evaluate.audio import load_audio
from sortformer_build.evaluate.backends import nemo_backend
from sortformer_build.evaluate.conversation import DATA_DIR
from sortformer_build.evaluate.segments import resolve_postprocessing
from sortformer_build.geometry import OfflineGeometry, StreamingGeometry
from sortformer_build.job.build import build
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.release import ReleaseIndex
from sortformer_build.records.steps import StepStatus
from sortformer_build.records.trace import TraceComparison
from sortformer_build.store.digests import file_sha256
from sortformer_build.store.layout import CacheLayout
from sortformer_build.trace import format as trace_format
from sortformer_build.trace.compare import compare_traces
from sortformer_build.trace.format import Trace, TraceWriter, read_trace, trace_files
from sortformer_build.trace.record import (
    COMPARISON_FILE,
    Recorder,
    nemo_trace,
    package_against_nemo,
    package_trace,
)
from sortformer_build.verify.offline import tile_windows
from sortformer_build.verify.reference import mel_features, nemo_step, stream, streaming_modules

from .conftest import RELEASE, TINY_D_MODEL, Run, run_cli
from .test_publish import publish as _publish

DEFAULT, NVIDIA_HIGH, EFFICIENT = (
    StreamingGeometry(*RELEASE[variant][1:]) for variant in ("default", "nvidia_high", "efficient")
)
OFFLINE = OfflineGeometry(3072)
CONVERSATION = DATA_DIR / "conversation.flac"
NEMO_DEFAULTS = resolve_postprocessing(PostProcessingConfig())
NAME = "Sortformer_test_v2.1"  # a dot in the name, as the released names have
TRACE_SCRIPT = "sortformer-build-trace"
PARTED, BAD_INPUT = 1, 2


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """NeMo's small steps on two threads of a busy two-core machine run an order of magnitude
    slower than on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trace_cli(*args: str | Path) -> Run:
    """The installed console script, as a host's test would call it."""
    script = Path(sys.executable).with_name(TRACE_SCRIPT)
    completed = subprocess.run([script, *map(str, args)], capture_output=True, text=True, timeout=300)
    return Run(completed.returncode, completed.stdout, completed.stderr)


def _contract_dtype(array: np.ndarray) -> np.ndarray:
    """A recorded input as the contract types it: float16-stored buffers back to float32."""
    return array.astype(np.float32) if array.dtype == np.float16 else array


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint: Path, shared_cache: Path) -> Any:
    return load_model(Checkpoint(tiny_checkpoint, file_sha256(tiny_checkpoint, shared_cache), "tiny", "test"))


@pytest.fixture(scope="module")
def silent_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The tiny checkpoint with its speaker logits centred on the conversation, then lowered:
    speakers come and go and some frames are silent, so the FIFO pops silent frames into the
    silence profile and the compressed cache holds copies of it (the plain tiny checkpoint keeps
    one speaker on throughout)."""
    model = load_model(Checkpoint(tiny_checkpoint, "", "tiny", "test"))
    mel = mel_features(model, load_audio(CONVERSATION))
    center_speaker_logits(model, nemo_backend(model, DEFAULT).predict(mel))
    with torch.no_grad():
        model.sortformer_modules.single_hidden_to_spks.bias -= 3.0
    path = tmp_path_factory.mktemp("silent") / "silent.nemo"
    model.save_to(str(path))
    return path


@pytest.fixture(scope="module")
def silent_model(silent_checkpoint: Path, shared_cache: Path) -> Any:
    return load_model(
        Checkpoint(silent_checkpoint, file_sha256(silent_checkpoint, shared_cache), "local", "test")
    )


@pytest.fixture(scope="module")
def reference(silent_model: Any, silent_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NeMo's trace of the silent checkpoint, Default geometry, on the conversation: the index."""
    folder = tmp_path_factory.mktemp("reference")
    sha256 = file_sha256(silent_checkpoint, folder / "memo")
    nemo_trace(silent_model, DEFAULT, CONVERSATION, folder, NAME, sha256, NEMO_DEFAULTS)
    return trace_files(folder, NAME)[1]


def _chunks(trace: Trace, name: str) -> list[np.ndarray]:
    return [trace.chunk(entry.index, name) for entry in trace.index.chunks]


def test_reference_trace_holds_the_conversation_chunk_by_chunk(reference: Path) -> None:
    trace = read_trace(reference)
    index = trace.index
    assert index.producer == "nemo" and index.package_sha256 is None
    assert index.features is not None and index.features.dither == 0.0 and index.features.training_dither > 0
    audio = trace.tensor(trace_format.AUDIO)
    assert index.recording.sample_rate == 16000 and audio.size == index.recording.samples
    assert trace.tensor(trace_format.MEL).shape == (1, 128, index.features.frames)
    assert len(index.chunks) == int(np.ceil(index.features.frames / (DEFAULT.chunk_len * 8)))
    assert trace.tensor(trace_format.PREDS).shape == (int(np.ceil(index.features.frames / 8)), 4)
    assert index.segments and index.rttm is not None and index.rttm.count("SPEAKER") == len(index.segments)
    # What the wrong loops below need the reference to go through.
    silent = [int(n[0]) for n in _chunks(trace, trace_format.STATE_N_SIL_FRAMES)]
    assert silent[-1] > 0, "no silent frame ever popped: the silence profile goes untested"
    assert sum(bool(flag[0]) for flag in _chunks(trace, trace_format.STATE_COMPRESSED)) >= 2
    # Every chunk has every tensor; unchanged state is stored once.
    assert all(set(entry.tensors) == set(index.chunk_tensors) for entry in index.chunks)
    assert index.aliases and index.chunk_tensors[contract.SPKCACHE].dtype == "F16"


def test_a_trace_replays_through_nemos_step_and_state_update(reference: Path, silent_model: Any) -> None:
    """What a host test does: each chunk's recorded inputs through the model reproduce its
    recorded outputs, and its recorded outputs through the state update (from the recorded
    state before it) reproduce the recorded state after it."""
    trace = read_trace(reference)
    step, modules = nemo_step(silent_model), streaming_modules(DEFAULT, TINY_D_MODEL)
    state_before = {
        trace_format.STATE_SPKCACHE_PREDS: np.zeros((1, DEFAULT.spkcache_len, 4), np.float32),
        trace_format.STATE_MEAN_SIL_EMB: np.zeros((1, TINY_D_MODEL), np.float32),
        trace_format.STATE_N_SIL_FRAMES: np.zeros(1, np.int32),
    }
    for entry in trace.index.chunks:
        recorded = {name: trace.chunk(entry.index, name) for name in entry.tensors}
        inputs = {name: _contract_dtype(recorded[name]) for name in contract.INPUT_NAMES}
        outputs = step(inputs)
        emb_frames = int(recorded[contract.CHUNK_EMB_LENGTHS][0])
        assert int(outputs[contract.CHUNK_EMB_LENGTHS][0]) == emb_frames
        np.testing.assert_allclose(
            outputs[contract.CHUNK_EMBS][0, :emb_frames],
            recorded[contract.CHUNK_EMBS][0, :emb_frames],
            atol=2e-3,
        )
        valid = int(inputs[contract.SPKCACHE_LENGTHS][0] + inputs[contract.FIFO_LENGTHS][0]) + emb_frames
        # The buffers went through float16: the step on them moves probabilities a little.
        np.testing.assert_allclose(
            outputs[contract.SPEAKER_PREDS][0, :valid], recorded[contract.SPEAKER_PREDS][0, :valid], atol=0.02
        )

        state = modules.init_streaming_state(batch_size=1, async_streaming=True)
        state.spkcache = torch.from_numpy(inputs[contract.SPKCACHE])
        state.spkcache_lengths = torch.from_numpy(inputs[contract.SPKCACHE_LENGTHS]).long()
        state.fifo = torch.from_numpy(inputs[contract.FIFO])
        state.fifo_lengths = torch.from_numpy(inputs[contract.FIFO_LENGTHS]).long()
        state.spkcache_preds = torch.from_numpy(state_before[trace_format.STATE_SPKCACHE_PREDS].copy())
        state.mean_sil_emb = torch.from_numpy(state_before[trace_format.STATE_MEAN_SIL_EMB].copy())
        state.n_sil_frames = torch.from_numpy(state_before[trace_format.STATE_N_SIL_FRAMES]).long()
        embs = recorded[contract.CHUNK_EMBS][:, :emb_frames].astype(np.float32)
        state, chunk_preds = modules.streaming_update_async(
            streaming_state=state,
            chunk=torch.from_numpy(embs),
            chunk_lengths=torch.tensor([emb_frames]),
            preds=torch.from_numpy(recorded[contract.SPEAKER_PREDS][:, :valid]),
            lc=entry.left_context,
            rc=entry.right_context,
        )
        np.testing.assert_array_equal(chunk_preds.numpy(), recorded[trace_format.CHUNK_PREDS])
        for name, value in (
            (trace_format.STATE_SPKCACHE_LENGTHS, state.spkcache_lengths),
            (trace_format.STATE_FIFO_LENGTHS, state.fifo_lengths),
            (trace_format.STATE_N_SIL_FRAMES, state.n_sil_frames),
            (trace_format.STATE_FIFO_PREDS, state.fifo_preds),
            (trace_format.STATE_SPKCACHE_PREDS, state.spkcache_preds),
            (trace_format.STATE_FIFO, state.fifo.half()),
        ):
            np.testing.assert_array_equal(
                value.numpy(), recorded[name], err_msg=f"{name}, chunk {entry.index}"
            )
        # The silence profile averages float16 copies of the embeddings NeMo averaged in float32.
        for name, value in (
            (trace_format.STATE_MEAN_SIL_EMB, state.mean_sil_emb),
            (trace_format.STATE_SPKCACHE, state.spkcache),
        ):
            np.testing.assert_allclose(
                value.numpy(),
                recorded[name].astype(np.float32),
                atol=2e-3,
                err_msg=f"{name}, chunk {entry.index}",
            )
        state_before = {name: recorded[name] for name in state_before}


def _build(
    checkpoint: CheckpointConfig, output: Path, cache: Path, geometry: StreamingGeometry = DEFAULT
) -> Path:
    """A real fp16 conversion (parity is verification's business, not this module's)."""
    config = BuildConfig(
        variant=VariantConfig(name="test", version="v2.1", file_name=NAME, **asdict(geometry)),
        compression=CompressionConfig(name="fp16", folder="fp16"),
        checkpoint=checkpoint,
        output_dir=str(output),
        cache_dir=str(cache),
        verify=VerifyConfig(parity=False),
    )
    return build(config).package


@pytest.fixture(scope="module")
def tiny_reference(tiny_model: Any, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NeMo's trace of the plain tiny checkpoint (decisive, one speaker on throughout)."""
    folder = tmp_path_factory.mktemp("tiny-reference")
    sha256 = file_sha256(tiny_checkpoint, folder / "memo")
    nemo_trace(tiny_model, DEFAULT, CONVERSATION, folder, NAME, sha256, NEMO_DEFAULTS)
    return trace_files(folder, NAME)[1]


def test_the_packages_own_trace_follows_nemos(
    tiny_reference: Path, tmp_path: Path, shared_cache: Path
) -> None:
    package = _build(CheckpointConfig(source="tiny"), tmp_path / "output", shared_cache)
    folder = tmp_path / "package"
    comparison = package_against_nemo(tiny_reference, package, ExecutorPrecision.float16, folder, "content")
    assert not comparison.parted, comparison.summary()
    reference, candidate = read_trace(tiny_reference), read_trace(trace_files(folder, NAME)[1])
    assert candidate.index.producer == "executor-float16" and candidate.index.package_sha256 == "content"
    assert candidate.index.checkpoint_sha256 == reference.index.checkpoint_sha256
    assert comparison.compared_count == len(reference.index.chunks)
    compared = {difference.tensor for difference in comparison.tensors}
    assert {*contract.INPUT_NAMES, contract.SPEAKER_PREDS, trace_format.STATE_SPKCACHE} <= compared
    assert TraceComparison.read(folder / COMPARISON_FILE) == comparison
    run = _trace_cli("compare", tiny_reference, candidate.path)
    assert run.returncode == 0 and "agree: executor-float16 follows nemo" in run.stdout, run.output


@pytest.fixture(scope="module")
def expected(reference: Path) -> dict[str, int]:
    """Where NeMo's loop first does each thing the wrong loops below get wrong."""
    trace = read_trace(reference)

    def first(name: str) -> int:
        return next(i for i, value in enumerate(_chunks(trace, name)) if value[0])

    return {
        "pop": first(trace_format.STATE_SPKCACHE_LENGTHS),
        "compression": first(trace_format.STATE_COMPRESSED),
        "silence": first(trace_format.STATE_N_SIL_FRAMES),
    }


class FifoPopsLate(SortformerModules):
    """The chunk that overflows the FIFO is appended as far as it fits; the pop comes one chunk
    later."""

    popped_late = False

    def streaming_update_async(
        self,
        streaming_state: Any,
        chunk: Tensor,
        chunk_lengths: Tensor,
        preds: Tensor,
        lc: int = 0,
        rc: int = 0,
    ) -> tuple[Any, Tensor]:
        new_frames = chunk.shape[1] - lc - rc
        if self.popped_late or int(streaming_state.fifo_lengths[0]) + new_frames <= self.fifo_len:
            return super().streaming_update_async(streaming_state, chunk, chunk_lengths, preds, lc, rc)
        self.popped_late = True
        fifo = streaming_state.fifo
        streaming_state.fifo = torch.cat([fifo, torch.zeros(1, new_frames, fifo.shape[2])], dim=1)
        state, chunk_preds = super().streaming_update_async(
            streaming_state, chunk, chunk_lengths, preds, lc, rc
        )
        state.fifo, state.fifo_preds = state.fifo[:, : self.fifo_len], state.fifo_preds[:, : self.fifo_len]
        state.fifo_lengths.clamp_(max=self.fifo_len)
        return state, chunk_preds


class CompressionSkipped(SortformerModules):
    """Keeps the oldest frames when the cache overflows."""

    def _compress_spkcache(
        self, emb_seq: Tensor, preds: Tensor, mean_sil_emb: Tensor, permute_spk: bool = False
    ) -> tuple[Tensor, Tensor, None]:
        return emb_seq[:, : self.spkcache_len], preds[:, : self.spkcache_len], None


class SilenceProfileFrozen(SortformerModules):
    def _get_silence_profile(
        self, mean_sil_emb: Tensor, n_sil_frames: Tensor, emb_seq: Tensor, preds: Tensor
    ) -> tuple[Tensor, Tensor]:
        return mean_sil_emb, n_sil_frames


def _off_by_one(step: Any) -> Any:
    """Feeds the model one speaker-cache frame too few (in place: the observer records the
    inputs the model got). Its probabilities come padded to the contract's length, as a Core ML
    model returns them."""

    def wrong(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        lengths = inputs[contract.SPKCACHE_LENGTHS]
        lengths -= lengths > 0
        outputs = step(inputs)
        preds = outputs[contract.SPEAKER_PREDS]
        padded = np.zeros((1, DEFAULT.prediction_frames, preds.shape[2]), dtype=preds.dtype)
        padded[:, : preds.shape[1]] = preds
        return {**outputs, contract.SPEAKER_PREDS: padded}

    return wrong


def _shifted(mel: np.ndarray) -> np.ndarray:
    """Every feature frame one frame late."""
    return np.concatenate([np.zeros_like(mel[:, :, :1]), mel[:, :, :-1]], axis=2)


@dataclass(frozen=True)
class WrongLoop:
    modules: type = SortformerModules
    step: Callable[[Any], Any] = lambda step: step
    mel: Callable[[np.ndarray], np.ndarray] = lambda mel: mel
    parts_at: str = "start"  # the NeMo event it parts at: start, pop, pop + 1, compression, silence
    tensors: frozenset[str] = frozenset()  # those that may show it first
    meaning: str = ""  # a phrase of the diagnosis


WRONG_LOOPS = {
    "mel shifted by one frame": WrongLoop(
        mel=_shifted, tensors=frozenset({trace_format.MEL}), meaning="mel features"
    ),
    "FIFO pops one chunk late": WrongLoop(
        modules=FifoPopsLate,
        parts_at="pop",
        tensors=frozenset({trace_format.STATE_FIFO_LENGTHS}),
        meaning="FIFO pop",
    ),
    "speaker-cache compression skipped": WrongLoop(
        modules=CompressionSkipped,
        parts_at="compression",
        tensors=frozenset({trace_format.STATE_SPKCACHE, trace_format.STATE_SPKCACHE_PREDS}),
        meaning="cache compression",
    ),
    "spkcache_lengths off by one": WrongLoop(
        step=_off_by_one,
        parts_at="pop + 1",
        tensors=frozenset({contract.SPKCACHE_LENGTHS}),
        meaning="speaker-cache length",
    ),
    "silence profile never updated": WrongLoop(
        modules=SilenceProfileFrozen,
        parts_at="silence",
        tensors=frozenset({trace_format.STATE_N_SIL_FRAMES, trace_format.STATE_MEAN_SIL_EMB}),
        meaning="silence profile",
    ),
}


def _host_loop(reference: Path, folder: Path, wrong: WrongLoop, model: Any) -> Path:
    """A host runtime's loop written as a candidate trace: its features, chunks and states."""
    trace = read_trace(reference)
    mel = wrong.mel(trace.tensor(trace_format.MEL))
    modules = wrong.modules(num_spks=4, fc_d_model=TINY_D_MODEL, **asdict(DEFAULT)).eval()
    writer = TraceWriter()
    writer.add_recording(trace_format.MEL, mel)
    record = functools.partial(Recorder(writer).chunk, prediction_frames=DEFAULT.prediction_frames)
    preds = stream(modules, DEFAULT, mel, wrong.step(nemo_step(model)), record).preds
    writer.add_recording(trace_format.PREDS, preds)
    updates: dict[str, object] = {
        "producer": "a host loop",
        "features": None,
        "segments": None,
        "rttm": None,
        "tools": {},
    }
    writer.write(folder, trace.index.header().model_copy(update=updates))
    return trace_files(folder, NAME)[0]


@pytest.mark.parametrize("name", sorted(WRONG_LOOPS))
def test_a_wrong_host_loop_is_caught_where_it_parts(
    name: str, reference: Path, silent_model: Any, expected: dict[str, int], tmp_path: Path
) -> None:
    wrong = WRONG_LOOPS[name]
    candidate = _host_loop(reference, tmp_path, wrong, silent_model)
    figures = tmp_path / "figures.json"
    run = _trace_cli("compare", reference, candidate, "--json", figures)
    print(run.stdout)
    assert run.returncode == PARTED, run.output
    chunk = {"start": 0, "pop + 1": expected["pop"] + 1}.get(wrong.parts_at, expected.get(wrong.parts_at))
    found = json.loads(figures.read_text())
    assert (found["first_chunk"], found["first_tensor"] in wrong.tensors) == (chunk, True), run.stdout
    assert f"PARTED: a host loop parts from nemo at chunk {chunk}" in run.stdout
    assert wrong.meaning in run.stdout


def test_show_summarises_a_trace(reference: Path) -> None:
    run = _trace_cli("show", reference)
    assert run.returncode == 0, run.output
    assert "streaming trace of Sortformer_test_v2.1 by nemo" in run.stdout
    assert "speaker cache compressed in" in run.stdout and "dither 0 (training: 1e-05)" in run.stdout


def _one_line_refusal(run: Run, phrase: str) -> None:
    assert run.returncode == BAD_INPUT, run.output
    assert run.stdout == "" and len(run.stderr.splitlines()) == 1 and phrase in run.stderr, run.output


def test_a_truncated_trace_is_refused(reference: Path, tmp_path: Path) -> None:
    arrays, index = trace_files(reference.parent, NAME)
    for path in (arrays, index):
        shutil.copy(path, tmp_path / path.name)
    copy = tmp_path / arrays.name
    copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
    _one_line_refusal(_trace_cli("compare", reference, copy), "truncated")
    (tmp_path / index.name).write_text((tmp_path / index.name).read_text()[:100])
    _one_line_refusal(_trace_cli("show", copy), "not a trace index")


def test_traces_of_another_geometry_or_checkpoint_are_refused(
    reference: Path, tiny_reference: Path, silent_model: Any, silent_checkpoint: Path, tmp_path: Path
) -> None:
    sha256 = file_sha256(silent_checkpoint, tmp_path / "memo")
    nemo_trace(silent_model, EFFICIENT, CONVERSATION, tmp_path, NAME, sha256, NEMO_DEFAULTS)
    _one_line_refusal(_trace_cli("compare", reference, trace_files(tmp_path, NAME)[0]), "another geometry")
    _one_line_refusal(_trace_cli("compare", reference, tiny_reference), "another checkpoint sha256")


def test_a_candidate_with_no_tensor_in_common_is_refused(reference: Path, tmp_path: Path) -> None:
    index = read_trace(reference).index
    writer = TraceWriter()
    for entry in index.chunks[:3]:
        writer.add_chunk(entry, {"features": np.zeros((1, 112, 128), np.float32)})
    writer.write(tmp_path, index.header().model_copy(update={"producer": "another naming"}))
    _one_line_refusal(_trace_cli("compare", reference, trace_files(tmp_path, NAME)[1]), "shares no tensor")


def test_a_missing_file_is_answered_before_anything_is_imported(reference: Path, tmp_path: Path) -> None:
    _one_line_refusal(_trace_cli("compare", reference, tmp_path / "nothing.json"), "does not exist")


def test_an_offline_trace_holds_its_windows_and_the_stitched_timeline(
    tiny_model: Any, tmp_path: Path
) -> None:
    nemo_trace(tiny_model, OFFLINE, CONVERSATION, tmp_path, NAME, "checkpoint", NEMO_DEFAULTS)
    trace = read_trace(trace_files(tmp_path, NAME)[1])
    mel, windows = trace.tensor(trace_format.MEL), trace.index.windows
    frames = int(np.ceil(mel.shape[2] / 8))
    assert len(windows) == 2 and trace.tensor(trace_format.PREDS).shape == (frames, 4)
    step = nemo_backend(tiny_model, OFFLINE).step
    assert step is not None
    for entry in windows:
        window = trace.window(entry.index, contract.MEL)
        piece = mel[:, :, entry.mel_start : entry.mel_start + OFFLINE.window_frames]
        assert entry.mel_frames == piece.shape[2] == int(trace.window(entry.index, contract.MEL_LENGTH)[0])
        np.testing.assert_array_equal(window[:, :, : entry.mel_frames], piece)
        assert not window[:, :, entry.mel_frames :].any()
        inputs = {name: trace.window(entry.index, name) for name in contract.OFFLINE_INPUTS}
        np.testing.assert_allclose(
            step(inputs)[contract.OFFLINE_PREDS], trace.window(entry.index, contract.OFFLINE_PREDS), atol=1e-6
        )
    recorded = iter(trace.window(entry.index, contract.OFFLINE_PREDS) for entry in windows)
    stitched = tile_windows(mel, OFFLINE, lambda inputs: {contract.OFFLINE_PREDS: next(recorded)})
    np.testing.assert_array_equal(stitched, trace.tensor(trace_format.PREDS))
    comparison = compare_traces(trace, trace)
    assert comparison.unit == "window" and not comparison.parted


@pytest.mark.slow
def test_a_full_size_packages_trace_follows_nemos(tmp_path: Path, shared_cache: Path) -> None:
    """The full-size synthetic checkpoint (117.7 M parameters), NvidiaHigh, fp16, on the whole
    conversation: two chunks of 27 s, the second of which fills the speaker cache and compresses
    it. Default's short chunks would take fifty steps to get there."""
    from sortformer_build.checkpoint.sources import resolve_checkpoint

    source = CheckpointConfig(source="synthetic")
    checkpoint = resolve_checkpoint(source, "v2.1", CacheLayout(shared_cache))
    package = _build(source, tmp_path / "output", shared_cache, NVIDIA_HIGH)
    nemo_trace(
        load_model(checkpoint),
        NVIDIA_HIGH,
        CONVERSATION,
        tmp_path / "nemo",
        NAME,
        checkpoint.sha256,
        NEMO_DEFAULTS,
    )
    reference = read_trace(trace_files(tmp_path / "nemo", NAME)[1])
    assert any(flag[0] for flag in _chunks(reference, trace_format.STATE_COMPRESSED))
    package_trace(reference, package, ExecutorPrecision.float16, tmp_path / "package", None)
    run = _trace_cli("compare", reference.path, trace_files(tmp_path / "package", NAME)[0])
    print(run.stdout)
    assert run.returncode == 0, run.output


TRACED_SWEEP = ("--multirun", "variant=default", "compression=fp16,palettized6", "checkpoint=tiny")


@pytest.fixture(scope="module")
def traced_release(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """Default's fp16 and 6-bit packages, built through the console script with trace=conversation."""
    work = tmp_path_factory.mktemp("traced-release")
    run = run_cli(*TRACED_SWEEP, "trace=conversation", f"cache_dir={shared_cache}", cwd=work)
    assert run.returncode == 0, run.output[-3000:]
    return work / "outputs" / "tiny"


def test_a_build_with_a_trace_delivers_nemos_trace_beside_the_packages(traced_release: Path) -> None:
    name = RELEASE["default"][0]
    index = traced_release / "traces" / f"{name}.json"
    trace = read_trace(index)
    assert trace.index.producer == "nemo" and trace.index.recording.name == "conversation"
    manifests = [Manifest.read(traced_release / folder / f"{name}.json") for folder in ("fp16", "palettized")]
    for manifest in manifests:
        delivered = manifest.trace
        assert delivered is not None and delivered.index == f"traces/{name}.json"
        assert delivered.arrays_sha256 == trace.index.arrays.sha256 == file_sha256(trace.path, index.parent)
        assert delivered.comparison is not None and delivered.comparison.compared_count == len(
            trace.index.chunks
        )
        steps = {step.name: step.status for step in manifest.steps}
        assert steps["nemo-trace"] in (StepStatus.built, StepStatus.cached)
    fp16, palettized = (manifest.trace.comparison for manifest in manifests if manifest.trace is not None)
    assert fp16 is not None
    assert not fp16.parted, fp16.summary()
    assert palettized is not None and palettized.candidate == "executor-float16"


def test_a_publish_dry_run_ships_the_traces(traced_release: Path) -> None:
    name = RELEASE["default"][0]
    run = _publish(
        traced_release, "dry_run=true", "formats=[mlpackage]", "allow_synthetic=true", "allow_partial=true"
    )
    assert run.returncode == 0, run.output
    staged = traced_release / ".publish"
    document = ReleaseIndex.read(staged / "v3" / "release.json")
    files = {entry.path_in_repo: entry.sha256 for entry in document.files}
    for suffix in (".json", ".safetensors"):
        path = f"v3/traces/{name}{suffix}"
        assert files[path] == file_sha256(staged / path, staged.parent / "memo")
        assert (staged / path).read_bytes() == (traced_release / "traces" / f"{name}{suffix}").read_bytes()
    assert {model.trace for model in document.models} == {f"v3/traces/{name}.json"}
    assert len(document.models) == 2
    card = (staged / "README.md").read_text()
    assert "## Reference traces" in card and f"`v3/traces/{name}.json`" in card
    assert "sortformer-build-trace compare" in card
