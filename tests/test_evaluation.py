"""Diarization-level evaluation: NeMo's own diarization as the oracle, real packages run by the
executor, real files for every dataset kind and every bad input."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from sortformer_build import contract
from sortformer_build.checkpoint.sources import Checkpoint, load_model
from sortformer_build.checkpoint.synthetic import center_speaker_logits
from sortformer_build.config import (
    BuildConfig,
    CheckpointConfig,
    CompressionConfig,
    ConfigError,
    DatasetKind,
    EvaluateConfig,
    EvaluationBackend,
    ExecutorPrecision,
    PostProcessingConfig,
    VariantConfig,
    VerifyConfig,
)
from sortformer_build.coreml import host
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.cores import THREAD_LIMIT_VARIABLES, available_memory, usable_cores
from sortformer_build.evaluate.annotations import DatasetError, read_rttm, write_rttm
from sortformer_build.evaluate.audio import load_audio
from sortformer_build.evaluate.backends import Backend, nemo_backend, package_backend
from sortformer_build.evaluate.conversation import DATA_DIR
from sortformer_build.evaluate.datasets import Dataset, Recording, dataset_digest, load_dataset
from sortformer_build.evaluate.diarize import Diarization, diarize
from sortformer_build.evaluate.parallel import WORKER_BYTES, recording_workers
from sortformer_build.evaluate.scoring import compare
from sortformer_build.evaluate.segments import resolve_postprocessing, speaker_labels
from sortformer_build.geometry import OfflineGeometry, StreamingGeometry
from sortformer_build.job.build import build
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.steps import StepStatus
from sortformer_build.release.matrix import read_matrix
from sortformer_build.store.digests import file_sha256
from sortformer_build.verify.offline import OFFLINE_OVERLAP_FRAMES, tile_windows
from sortformer_build.verify.reference import SAMPLE_RATE, mel_features

from .conftest import artifacts, run_cli
from .forked import run_build
from .test_verification import swapped_weights_copy

DEFAULT = StreamingGeometry(6, 1, 7, 40, 188, 31)
CONVERSATION_AUDIO = DATA_DIR / "conversation.flac"
CONVERSATION_RTTM = DATA_DIR / "conversation.rttm"
SETTINGS = EvaluateConfig(dataset=DatasetKind.conversation)
two_workers = pytest.mark.skipif(
    usable_cores() < 2 or available_memory() < 2 * WORKER_BYTES,
    reason="needs two cores and two workers' memory",
)
NEMO_DEFAULTS = resolve_postprocessing(PostProcessingConfig())
CORE_ML = host.for_target(DeploymentTarget.iOS17)


def _diarize(backend: Backend, dataset: Dataset, model, folder: Path) -> Diarization:
    return diarize(backend, dataset, lambda audio: mel_features(model, audio), NEMO_DEFAULTS, folder)


def _executor(package: Path) -> Backend:
    return package_backend(
        package, DEFAULT, 64, EvaluationBackend.executor, ExecutorPrecision.float16, DeploymentTarget.iOS17
    )


@pytest.fixture(scope="module")
def lively_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The tiny checkpoint with its speaker logits centred (and sharpened) on the conversation."""
    model = load_model(Checkpoint(tiny_checkpoint, "", "tiny", "test"))
    preds = nemo_backend(model, DEFAULT).predict(mel_features(model, load_audio(CONVERSATION_AUDIO)))
    center_speaker_logits(model, preds)
    path = tmp_path_factory.mktemp("lively") / "lively.nemo"
    model.save_to(str(path))
    return path


@pytest.fixture(scope="module")
def model(lively_checkpoint: Path, shared_cache: Path):
    # Under its real digest, so that the package build below reuses this restored model.
    sha256 = file_sha256(lively_checkpoint, shared_cache)
    return load_model(Checkpoint(lively_checkpoint, sha256, "local", "test"))


@pytest.fixture(scope="module")
def package(lively_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """A real fp16 conversion of the lively checkpoint (parity is not this module's business)."""
    config = BuildConfig(
        variant=VariantConfig(name="test", version="v2.1", file_name="Sortformer_test", **DEFAULT.__dict__),
        compression=CompressionConfig(name="fp16", folder="fp16"),
        checkpoint=CheckpointConfig(source="local", path=str(lively_checkpoint)),
        output_dir=str(tmp_path_factory.mktemp("packages")),
        cache_dir=str(shared_cache),
        verify=VerifyConfig(parity=False),
    )
    return build(config).package


def _opening(seconds: float) -> Dataset:
    recording = Recording(name="opening", audio=CONVERSATION_AUDIO, duration=seconds, rttm=CONVERSATION_RTTM)
    return Dataset("opening", (recording,))


def test_nemo_backend_reproduces_nemos_own_diarization(model, tmp_path: Path) -> None:
    """Our loop, features, post-processing and RTTM against NeMo's `diarize` (its own
    streaming forward and post-processing) on the same audio: identical segments, DER 0."""
    seconds = 8.0
    ours = _diarize(nemo_backend(model, DEFAULT), _opening(seconds), model, tmp_path / "ours")
    modules = model.sortformer_modules
    for key, value in DEFAULT.__dict__.items():
        setattr(modules, key, value)
    model.async_streaming = True
    audio = load_audio(CONVERSATION_AUDIO, duration=seconds)
    nemo_lines = model.diarize(audio=[audio], sample_rate=SAMPLE_RATE, batch_size=1)[0]
    assert len(nemo_lines) > 4, "the checkpoint gives too few segments to compare anything"
    theirs = tmp_path / "nemo" / "opening.rttm"
    write_rttm(theirs, nemo_lines, "opening")
    assert read_rttm(ours.rttms["opening"]) == read_rttm(theirs)
    comparison = compare(ours.rttms, {"opening": theirs}, 0.0, False, ours.regions, "nemo")
    assert comparison.overall.der == 0.0
    assert comparison.overall.scored > 1.0


def test_swapped_head_weights_score_worse_against_nemo(package: Path, model, tmp_path: Path) -> None:
    """Agreement with NeMo's diarization, strictly (collar 0): the good package matches it, the
    package with two head weights swapped clearly does not."""
    dataset = _opening(12.0)
    nemo = _diarize(nemo_backend(model, DEFAULT), dataset, model, tmp_path / "nemo")
    good = _diarize(_executor(package), dataset, model, tmp_path / "good")
    broken = _diarize(_executor(swapped_weights_copy(package, tmp_path)), dataset, model, tmp_path / "broken")
    good_vs_nemo = compare(good.rttms, nemo.rttms, 0.0, False, good.regions).overall
    broken_vs_nemo = compare(broken.rttms, nemo.rttms, 0.0, False, broken.regions).overall
    print(f"DER vs NeMo: good {good_vs_nemo.der:.2%}, swapped weights {broken_vs_nemo.der:.2%}")
    assert good_vs_nemo.scored > 5.0, "NeMo found too little speech to compare"
    assert good_vs_nemo.der < 0.05, good_vs_nemo
    assert broken_vs_nemo.der - good_vs_nemo.der > 0.1, (broken_vs_nemo, good_vs_nemo)


def test_rttm_written_and_read_back(tmp_path: Path) -> None:
    preds = np.zeros((50, 4), dtype=np.float32)
    preds[5:20, 0] = 0.9
    preds[15:40, 2] = 0.8
    path = tmp_path / "rttm" / "meeting.rttm"
    write_rttm(path, speaker_labels(preds, NEMO_DEFAULTS, offset=10.0), "meeting")
    turns = read_rttm(path)
    assert [(turn.speaker, round(turn.start, 2), round(turn.end, 2)) for turn in turns] == [
        ("speaker_0", 10.4, 11.6),
        ("speaker_2", 11.2, 13.2),
    ]
    assert not list(tmp_path.rglob(".partial-*"))


def test_tuned_postprocessing_file_applies(tmp_path: Path) -> None:
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text("parameters:\n  onset: 0.7\n  offset: 0.4\n  min_duration_on: 0.5\n")
    values = resolve_postprocessing(PostProcessingConfig(onset=0.1, yaml=str(tuned)))
    assert (values.onset, values.offset, values.min_duration_on, values.pad_onset) == (0.7, 0.4, 0.5, 0.0)
    preds = np.zeros((50, 4), dtype=np.float32)
    preds[5:8, 1] = 0.9  # 0.24 s: shorter than min_duration_on
    preds[20:40, 1] = 0.9
    assert speaker_labels(preds, values) == ["1.600 3.200 speaker_1"]
    tuned.write_text("onset: 0.7\n")
    with pytest.raises(ConfigError, match="not in NeMo's format"):
        resolve_postprocessing(PostProcessingConfig(yaml=str(tuned)))


def test_manifest_dataset_with_offsets_and_uem(model, tmp_path: Path) -> None:
    audio_copy = tmp_path / "audio" / "meeting.flac"
    audio_copy.parent.mkdir()
    shutil.copy(CONVERSATION_AUDIO, audio_copy)
    (tmp_path / "meeting.uem").write_text("meeting 1 20.000 24.000\n")
    lines = [
        {
            "audio_filepath": "audio/meeting.flac",
            "offset": 2.0,
            "duration": 4.0,
            "rttm_filepath": str(CONVERSATION_RTTM),
        },
        {
            "audio_filepath": str(audio_copy),
            "offset": 20.0,
            "duration": 5.0,
            "rttm_filepath": str(CONVERSATION_RTTM),
            "uem_filepath": "meeting.uem",
        },
    ]
    manifest = tmp_path / "set.json"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    dataset = load_dataset(EvaluateConfig(dataset=DatasetKind.manifest, path=str(manifest)))
    assert [recording.name for recording in dataset.recordings] == ["meeting-2", "meeting-20"]
    result = _diarize(nemo_backend(model, DEFAULT), dataset, model, tmp_path / "out")
    assert result.regions == {"meeting-2": ((2.0, 6.0),), "meeting-20": ((20.0, 24.0),)}
    starts = [turn.start for turn in read_rttm(result.rttms["meeting-20"])]
    assert starts and min(starts) >= 20.0, "hypothesis times are not shifted by the offset"
    truth = {recording.name: CONVERSATION_RTTM for recording in dataset.recordings}
    assert 0 < compare(result.rttms, truth, 0.25, False, result.regions).overall.scored <= 8.0


def test_folder_dataset_resamples_and_downmixes(model, tmp_path: Path) -> None:
    """A 44.1 kHz stereo file diarizes like the 16 kHz mono original."""
    from scipy.signal import resample_poly

    original = load_audio(CONVERSATION_AUDIO, duration=6.0)
    high = resample_poly(original, 441, 160)
    stereo = np.stack([high * 1.5, high * 0.5], axis=1)  # channel mean == the original
    folder = tmp_path / "set"
    folder.mkdir()
    soundfile.write(folder / "stereo.wav", stereo, 44100, subtype="FLOAT")
    shutil.copy(CONVERSATION_RTTM, folder / "stereo.rttm")
    loaded = load_audio(folder / "stereo.wav")
    assert abs(loaded.size - original.size) <= 1
    assert np.corrcoef(loaded[: original.size], original[: loaded.size])[0, 1] > 0.999
    dataset = load_dataset(EvaluateConfig(dataset=DatasetKind.folder, path=str(folder)))
    result = _diarize(nemo_backend(model, DEFAULT), dataset, model, tmp_path / "out")
    reference = _diarize(nemo_backend(model, DEFAULT), _opening(6.0), model, tmp_path / "ref")
    ours = compare({"x": result.rttms["stereo"]}, {"x": reference.rttms["opening"]}, 0.25, False)
    assert ours.overall.der < 0.05, ours.overall


def test_silent_recording_is_diarized(model, tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    soundfile.write(folder / "silence.wav", np.zeros(3 * SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    (folder / "silence.rttm").write_text("")
    dataset = load_dataset(EvaluateConfig(dataset=DatasetKind.folder, path=str(folder)))
    result = _diarize(nemo_backend(model, DEFAULT), dataset, model, tmp_path / "out")
    assert result.recordings[0].audio_seconds == 3.0 and result.rttms["silence"].is_file()
    truth = {"silence": folder / "silence.rttm"}
    assert compare(result.rttms, truth, 0.25, False, result.regions).overall.scored == 0.0


def _manifest(tmp_path: Path, *lines: str) -> EvaluateConfig:
    path = tmp_path / "bad.json"
    path.write_text("\n".join(lines) + "\n")
    return EvaluateConfig(dataset=DatasetKind.manifest, path=str(path))


SECONDS = r"must be a number of seconds \(at least 0\)"


def _good_line(**changes) -> str:
    line = {"audio_filepath": str(CONVERSATION_AUDIO), "rttm_filepath": str(CONVERSATION_RTTM), **changes}
    return json.dumps({key: value for key, value in line.items() if value != "drop"})


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((_good_line(), _good_line(audio_filepath="drop")), r"bad\.json:2: missing field audio_filepath"),
        ((_good_line(rttm_filepath="drop"),), r"bad\.json:1: missing field rttm_filepath"),
        ((_good_line(), "{not json"), r"bad\.json:2: not a JSON object"),
        (
            (_good_line(audio_filepath="nowhere.wav"),),
            r"bad\.json:1: audio file .*nowhere\.wav does not exist",
        ),
        (
            (_good_line(rttm_filepath="nowhere.rttm"),),
            r"bad\.json:1: RTTM file .*nowhere\.rttm does not exist",
        ),
        (
            (_good_line(offset="soon"),),
            r"bad\.json:1: offset must be a number of seconds \(at least 0\), got 'soon'",
        ),
        (
            (_good_line(duration=True),),
            r"bad\.json:1: duration must be a number of seconds \(at least 0\), got True",
        ),
        (
            (_good_line(offset=-1.0),),
            r"bad\.json:1: offset must be a number of seconds \(at least 0\), got -1\.0",
        ),
    ],
)
def test_bad_manifest_names_file_and_line(tmp_path: Path, lines: tuple[str, ...], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(_manifest(tmp_path, *lines))


def test_bad_rttm_names_file_and_line(tmp_path: Path) -> None:
    rttm = tmp_path / "bad.rttm"
    rttm.write_text(
        "SPEAKER a 1 0.0 1.0 <NA> <NA> s1 <NA> <NA>\nSPEAKER a 1 zero 1.0 <NA> <NA> s1 <NA> <NA>\n"
    )
    with pytest.raises(DatasetError, match=r"bad\.rttm:2: onset 'zero' is not a number"):
        load_dataset(_manifest(tmp_path, _good_line(rttm_filepath=str(rttm))))
    rttm.write_text("SPEAKER a 1 0.0\n")
    with pytest.raises(DatasetError, match=r"bad\.rttm:1: an RTTM SPEAKER line needs at least 8 fields"):
        read_rttm(rttm)


def test_folder_without_rttm_or_audio_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    settings = EvaluateConfig(dataset=DatasetKind.folder, path=str(folder))
    with pytest.raises(DatasetError, match="holds no audio file"):
        load_dataset(settings)
    soundfile.write(folder / "talk.wav", np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(DatasetError, match=r"talk\.wav: RTTM file .*talk\.rttm does not exist"):
        load_dataset(settings)


def test_empty_audio_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(DatasetError, match=r"empty\.wav has no samples"):
        load_audio(empty)
    with pytest.raises(DatasetError, match=r"has no samples from 60 s"):
        load_audio(CONVERSATION_AUDIO, offset=60.0)


@two_workers
def test_recordings_diarized_side_by_side_give_the_serial_results(
    package: Path, model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three recordings by two worker processes of one thread each, against one after another on
    one thread in this process: the same RTTMs, bit for bit, in the dataset's order."""
    parts = tuple(
        Recording(name=f"part{i}", audio=CONVERSATION_AUDIO, offset=offset, duration=7.0)
        for i, offset in enumerate((0.0, 14.0, 30.0))
    )
    dataset = Dataset("parts", parts)
    for name in THREAD_LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a job with one core: one recording after another
    assert recording_workers(len(parts)) == 1
    serial = _diarize(_executor(package), dataset, model, tmp_path / "serial")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # two cores: two workers, one thread each
    assert recording_workers(len(parts)) == 2
    side_by_side = _diarize(_executor(package), dataset, model, tmp_path / "side-by-side")
    assert (
        [r.name for r in side_by_side.recordings]
        == [r.name for r in serial.recordings]
        == ["part0", "part1", "part2"]
    )
    assert side_by_side.regions == serial.regions
    assert any(read_rttm(path) for path in serial.rttms.values()), "nothing diarized to compare"
    for name, path in serial.rttms.items():
        assert side_by_side.rttms[name].read_bytes() == path.read_bytes(), name


@pytest.mark.skipif(CORE_ML.skip is None, reason="Core ML runs here")
def test_coreml_backend_says_it_needs_macos(package: Path) -> None:
    backend = package_backend(
        package, DEFAULT, 64, EvaluationBackend.coreml, ExecutorPrecision.float16, DeploymentTarget.iOS17
    )
    assert backend.step is None and backend.unavailable == CORE_ML.detail
    with pytest.raises(RuntimeError, match="needs macOS"):
        backend.predict(np.zeros((1, 128, 100), dtype=np.float32))


def test_offline_tiling_recovers_the_timeline() -> None:
    """A fake offline model that sees the true timeline but numbers speakers its own way in
    every window: tiling undoes each window's permutation and stitches the windows."""
    geometry = OfflineGeometry(window_frames=3072)
    window_frames, frames = geometry.output_frames, 1000
    truth = (np.random.default_rng(0).random((frames, 4)) > 0.6).astype(np.float32)
    orders = iter([[0, 1, 2, 3], [2, 0, 3, 1], [3, 2, 1, 0], [1, 3, 0, 2], [0, 2, 1, 3]])
    starts = []

    def window(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = int(inputs[contract.MEL][0, 0, 0])  # the fake mel carries its output frame index
        starts.append(start)
        preds = np.zeros((1, window_frames, 4), dtype=np.float32)
        chunk = truth[start : start + window_frames]
        preds[0, : chunk.shape[0]] = chunk[:, next(orders)]
        assert int(inputs[contract.MEL_LENGTH][0]) == min(window_frames, frames - start) * 8
        return {contract.OFFLINE_PREDS: preds}

    mel = np.repeat(np.arange(frames, dtype=np.float32), 8)[None, None, :].repeat(2, axis=1)
    tiled = tile_windows(mel, geometry, window)
    stride = window_frames - OFFLINE_OVERLAP_FRAMES
    assert starts == list(range(0, frames - OFFLINE_OVERLAP_FRAMES, stride))
    np.testing.assert_array_equal(tiled, truth)


def test_dataset_digest_follows_the_content(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    soundfile.write(folder / "talk.wav", np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    rttm = folder / "talk.rttm"
    rttm.write_text("SPEAKER talk 1 0.0 0.5 <NA> <NA> a <NA> <NA>\n")
    settings = EvaluateConfig(dataset=DatasetKind.folder, path=str(folder))
    memo = tmp_path / "memo"
    first = dataset_digest(load_dataset(settings), memo)
    assert dataset_digest(load_dataset(settings), memo) == first
    rttm.write_text("SPEAKER talk 1 0.0 0.6 <NA> <NA> a <NA> <NA>\n")
    assert dataset_digest(load_dataset(settings), memo) != first


def _silence_outside_speech(audio: np.ndarray, rttm: Path) -> float:
    """RMS of the audio outside every reference turn, relative to the RMS inside."""
    speech = np.zeros(audio.size, dtype=bool)
    for turn in read_rttm(rttm):
        speech[round(turn.start * SAMPLE_RATE) : round(turn.end * SAMPLE_RATE)] = True
    return float(np.sqrt(np.mean(audio[~speech] ** 2)) / np.sqrt(np.mean(audio[speech] ** 2)))


def test_shipped_conversation_has_exact_truth() -> None:
    """Four voices, some overlap, and no sound where the ground truth says nobody speaks."""
    audio = load_audio(CONVERSATION_AUDIO)
    turns = read_rttm(CONVERSATION_RTTM)
    assert 30.0 <= audio.size / SAMPLE_RATE <= 60.0
    assert len({turn.speaker for turn in turns}) == 4
    overlaps = [a for a, b in itertools.pairwise(turns) if b.start < a.end]
    assert len(overlaps) >= 3
    assert _silence_outside_speech(audio, CONVERSATION_RTTM) < 0.02


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")
def test_conversation_script_makes_audio_and_truth(tmp_path: Path) -> None:
    from sortformer_build.evaluate.conversation import main

    main([str(tmp_path)])
    audio = load_audio(tmp_path / "conversation.flac")
    assert soundfile.info(str(tmp_path / "conversation.flac")).samplerate == SAMPLE_RATE
    assert _silence_outside_speech(audio, tmp_path / "conversation.rttm") < 0.02
    assert len(read_rttm(tmp_path / "conversation.rttm")) == len(read_rttm(CONVERSATION_RTTM))


def _rttm(path: Path, *turns: tuple[float, float, str]) -> Path:
    path.write_text(
        "".join(f"SPEAKER r 1 {a:.3f} {b - a:.3f} <NA> <NA> {who} <NA> <NA>\n" for a, b, who in turns)
    )
    return path


def test_der_parts_match_a_hand_count(tmp_path: Path) -> None:
    reference = {"r": _rttm(tmp_path / "ref.rttm", (0, 4, "A"), (4, 8, "B"))}
    missing_and_extra = {"r": _rttm(tmp_path / "one.rttm", (0, 4, "x"), (4, 7, "y"), (9, 10, "z"))}
    one_voice = {"r": _rttm(tmp_path / "two.rttm", (0, 8, "x"))}
    regions = {"r": ((0.0, 10.0),)}
    first = compare(missing_and_extra, reference, 0.0, False, regions).overall
    assert (first.scored, first.missed, first.false_alarm, first.confusion) == (8.0, 1.0, 1.0, 0.0)
    assert first.der == 0.25
    assert compare(one_voice, reference, 0.0, False, regions).overall.confusion_rate == 0.5
    # A 1 s collar (0.5 s each side) forgives the boundary at 4 s and the edges at 0 and 8.
    assert compare(missing_and_extra, reference, 1.0, False, regions).overall.scored == 6.0


def _tiny(*overrides: str, cache: Path) -> tuple[str, ...]:
    return ("checkpoint=tiny", "evaluate=conversation", f"cache_dir={cache}", *overrides)


def test_job_evaluates_prints_der_and_keeps_rttms(tmp_path: Path, shared_cache: Path) -> None:
    """A palettized job through the console script (NvidiaHigh: few chunks to stream): the DER
    table, the RTTMs beside the package, the manifest's evaluation section; a rerun is up to date
    and shows the table again; the fp16 job then finds its own diarization in the cache (the
    palettized job's twin)."""
    run = run_build(
        "variant=nvidia_high", "compression=palettized6", *_tiny(cache=shared_cache), cwd=tmp_path
    )
    assert run.returncode == 0, run.output
    assert "DER of executor-float16 on conversation (collar 0.25 s, overlap scored)" in run.output
    assert "change against the fp16 twin" in run.output
    release = tmp_path / "outputs" / "tiny"
    rttms = release / "palettized" / "SortformerNvidiaHigh_v2.1.evaluation"
    # The package's, NeMo's, the fp16 twin's and the ground truth: what the report draws.
    delivered = {path.parent.name: path.name for path in rttms.rglob("*.rttm")}
    assert delivered == dict.fromkeys(("artifact", "nemo", "fp16", "truth"), "conversation.rttm")
    report = release / "palettized" / "SortformerNvidiaHigh_v2.1.report.html"
    assert f"{report.name} (" in run.output and "<img" in report.read_text()
    manifest = Manifest.read(release / "palettized" / "SortformerNvidiaHigh_v2.1.json")
    (record,) = manifest.evaluations
    assert record.dataset == "conversation" and record.der_vs_truth is not None
    assert record.der_change_vs_fp16_pp is not None and record.real_time_factor and record.audio_seconds
    assert tmp_path / str(record.rttm_dir) == rttms / "conversation"
    statuses = {step.name: step.status for step in manifest.steps}
    assert statuses["nemo-diarization"] == statuses["diarization"] == statuses["fp16-diarization"]
    assert statuses["diarization"] is StepStatus.built

    again = run_build(
        "variant=nvidia_high", "compression=palettized6", *_tiny(cache=shared_cache), cwd=tmp_path
    )
    assert again.returncode == 0 and "is up to date" in again.output and "DER of" in again.output

    fp16 = run_build("variant=nvidia_high", "compression=fp16", *_tiny(cache=shared_cache), cwd=tmp_path)
    assert fp16.returncode == 0, fp16.output
    steps = {
        step.name: step.status
        for step in Manifest.read(release / "fp16" / "SortformerNvidiaHigh_v2.1.json").steps
    }
    assert steps["diarization"] == steps["nemo-diarization"] == "cached"
    assert "fp16-diarization" not in steps


def test_sweep_puts_der_columns_in_the_matrix(evaluated_sweep: Path) -> None:
    """A streaming and the offline model, each at two precisions, evaluated in one sweep."""
    release = evaluated_sweep
    assert "| DER | DER vs NeMo | DER vs fp16 |" in (release / "matrix.md").read_text()
    rows = read_matrix(release).rows
    assert len(rows) == 4 and all(
        row.manifest is not None and len(row.manifest.evaluations) == 1 for row in rows
    )
    changes = {
        (row.status.variant, row.status.compression): row.manifest.evaluations[0].der_change_vs_fp16_pp
        for row in rows
        if row.manifest is not None
    }
    assert changes[("default", "fp16")] is None and changes[("offline", "fp16")] is None
    assert changes[("default", "palettized6")] is not None and changes[("offline", "palettized6")] is not None


@two_workers
def test_a_sweep_worker_with_cores_to_spare_diarizes_recordings_side_by_side(
    tmp_path: Path, shared_cache: Path
) -> None:
    """One joblib worker has every core: its job diarizes a folder of three recordings with two
    worker processes of its own, started from inside the sweep's worker."""
    folder = tmp_path / "three"
    folder.mkdir()
    for index, offset in enumerate((0.0, 14.0, 30.0)):
        audio = load_audio(CONVERSATION_AUDIO, offset=offset, duration=6.0)
        soundfile.write(folder / f"part{index}.wav", audio, SAMPLE_RATE)
        (folder / f"part{index}.rttm").write_text("")
    run = run_cli(
        "--multirun",
        "variant=default",
        "compression=fp16",
        "hydra.launcher.n_jobs=1",
        *_tiny("evaluate=folder", f"evaluate.path={folder}", "verify.parity=false", cache=shared_cache),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.output
    (log,) = (tmp_path / "outputs" / ".hydra-runs").glob("multirun-*/*/sortformer-build.log")
    assert "3 recordings side by side in 2 worker processes" in log.read_text()
    (evaluation,) = Manifest.read(tmp_path / "outputs" / "tiny" / "fp16" / "Sortformer_v2.1.json").evaluations
    assert [row.recording for row in evaluation.recordings] == ["part0", "part1", "part2"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("evaluate=manifest", "evaluate.path=nowhere.json"), "manifest nowhere.json does not exist"),
        (("evaluate=folder",), "evaluate.path"),
    ],
)
def test_bad_dataset_stops_the_job_before_it_builds(
    tmp_path: Path, fresh_build_cache: Path, overrides: tuple[str, ...], message: str
) -> None:
    run = run_cli("checkpoint=tiny", f"cache_dir={fresh_build_cache}", *overrides, cwd=tmp_path)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and message in errors[0], run.output
    assert artifacts(tmp_path / "outputs") == []
    assert not (fresh_build_cache / "build" / "programs").exists()
