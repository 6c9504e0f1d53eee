"""Fuzzed inputs (hypothesis): RTTM and UEM files, NeMo manifest lines, the post-processing YAML,
the matrix.json and manifests that publishing reads, and config override values of every field
type. Whatever the input: never a traceback; a malformed input is refused with one line naming
the file (and line, where the input has lines) or the key; a well-formed one is accepted.

About 50 examples per input by default; `pytest -m exhaustive` runs 1,000 per input (see the
README's Contributing section).
"""

from __future__ import annotations

import json
import math
import shutil
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sortformer_build.cli.app import register_schemas
from sortformer_build.cli.preflight import check_command_line
from sortformer_build.config import ConfigError, PostProcessingConfig
from sortformer_build.evaluate import conversation
from sortformer_build.evaluate.annotations import DatasetError, read_rttm, read_uem
from sortformer_build.evaluate.datasets import manifest_dataset
from sortformer_build.evaluate.segments import resolve_postprocessing
from sortformer_build.records.base import RecordError
from sortformer_build.records.manifest import Manifest
from sortformer_build.release.hub.checks import release_problems
from sortformer_build.release.hub.errors import PublishError
from sortformer_build.release.hub.release import read_release

from .reference import Clean

EXAMPLES = [50, pytest.param(1000, marks=pytest.mark.exhaustive)]


def _run(examples: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    """`check` on `examples` inputs drawn from `strategy` (no deadline: file reads vary under load)."""
    checked = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(given(strategy)(check))
    checked()


def _one_line_naming(error: Exception, path: Path) -> None:
    """One line, naming `path`, and a line of it that exists when it names one."""
    message = str(error)
    assert "\n" not in message, message
    assert str(path) in message, message
    found = message.split(f"{path}:", 1)
    if len(found) == 2 and found[1].split(":", 1)[0].isdigit():
        lines = path.read_bytes().count(b"\n") + 1
        assert 1 <= int(found[1].split(":", 1)[0]) <= lines, message


# Text as a file could hold it: printable words, numbers of every kind, and any character.
WORD = st.text(string.ascii_letters + string.digits + "_-.", min_size=1, max_size=12)
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["nan", "inf", "-0", "1e999", "0x10", "1_0", "", "٣"]),
)
FIELD = st.one_of(WORD, NUMBER, st.text(max_size=8))
FINITE = st.floats(0, 10_000, allow_nan=False, allow_infinity=False)


def _written(path: Path, lines: list[str] | bytes) -> Path:
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n")
    return path


# ---- RTTM -----------------------------------------------------------------------------------

SPEAKER_LINE = st.builds(
    lambda file, onset, duration, speaker: (
        f"SPEAKER {file} 1 {onset:.3f} {duration:.3f} <NA> <NA> {speaker} <NA> <NA>"
    ),
    WORD,
    FINITE,
    FINITE,
    WORD,
)
OTHER_LINE = st.sampled_from(["", ";; a comment", "SPKR-INFO meeting 1 <NA> <NA> <NA> unknown spk1 <NA>"])
BAD_LINE = st.one_of(
    st.lists(FIELD, max_size=12).map(lambda fields: " ".join(["SPEAKER", *fields])),
    st.lists(FIELD, max_size=12).map(" ".join),
    st.text(),
)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_rttm(tmp_path: Path, examples: int) -> None:
    path = tmp_path / "fuzzed.rttm"

    def well_formed(lines: list[str]) -> None:
        turns = read_rttm(_written(path, lines))
        assert len(turns) == sum(line.startswith("SPEAKER") for line in lines)
        assert all(math.isfinite(turn.start) and turn.end >= turn.start >= 0 for turn in turns)

    def anything(content: list[str] | bytes) -> None:
        try:
            turns = read_rttm(_written(path, content))
        except DatasetError as error:
            _one_line_naming(error, path)
        else:
            assert all(math.isfinite(turn.start) and math.isfinite(turn.end) for turn in turns)

    _run(examples, st.lists(st.one_of(SPEAKER_LINE, OTHER_LINE), max_size=20), well_formed)
    lines = st.lists(st.one_of(SPEAKER_LINE, OTHER_LINE, BAD_LINE), max_size=20)
    _run(examples, st.one_of(lines, st.binary(max_size=200)), anything)


# ---- UEM ------------------------------------------------------------------------------------

UEM_LINE = st.builds(
    lambda file, start, length: f"{file} 1 {start:.3f} {start + length + 0.001:.3f}",
    WORD,
    FINITE,
    FINITE,
)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_uem(tmp_path: Path, examples: int) -> None:
    path = tmp_path / "fuzzed.uem"

    def well_formed(lines: list[str]) -> None:
        regions = read_uem(_written(path, lines))
        assert len(regions) == len(lines) and all(end > start for start, end in regions)

    def anything(content: list[str] | bytes) -> None:
        try:
            regions = read_uem(_written(path, content))
        except DatasetError as error:
            _one_line_naming(error, path)
        else:
            assert all(math.isfinite(start) and math.isfinite(end) and end > start for start, end in regions)

    _run(examples, st.lists(UEM_LINE, min_size=1, max_size=20), well_formed)
    lines = st.lists(st.one_of(UEM_LINE, BAD_LINE), max_size=20)
    _run(examples, st.one_of(lines, st.binary(max_size=200)), anything)


# ---- NeMo manifest lines --------------------------------------------------------------------

JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def _recording(audio: str, rttm: str | None, offset: float | None, duration: float | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"audio_filepath": audio, "rttm_filepath": rttm}
    if offset is not None:
        entry["offset"] = offset
    if duration is not None:
        entry["duration"] = duration
    return entry


@pytest.mark.parametrize("examples", EXAMPLES)
def test_manifest_lines(tmp_path: Path, examples: int) -> None:
    for suffix in (".flac", ".rttm"):
        shutil.copy(conversation.DATA_DIR / f"{conversation.NAME}{suffix}", tmp_path)
    audio, rttm = f"{conversation.NAME}.flac", f"{conversation.NAME}.rttm"
    path = tmp_path / "manifest.json"
    good = st.builds(
        _recording,
        st.just(audio),
        st.sampled_from([rttm, None]),
        st.sampled_from([None, 0.0, 1.5, 10.0, 40.0]),
        st.one_of(st.none(), st.floats(0.5, 100, allow_nan=False)),
    )

    def well_formed(entries: list[dict[str, Any]]) -> None:
        # Distinct spans name distinct recordings; one recording per offset.
        unique = list({(entry.get("offset") or 0.0): entry for entry in entries}.values())
        dataset = manifest_dataset(_written(path, [json.dumps(entry) for entry in unique]))
        assert len(dataset.recordings) == len(unique)

    def mutate(entry: dict[str, Any], field: str, value: Any) -> str:
        return json.dumps({**entry, field: value})

    bad = st.one_of(
        st.builds(
            mutate,
            good,
            st.sampled_from(["audio_filepath", "rttm_filepath", "offset", "duration", "uem_filepath"]),
            JSON_VALUE,
        ),
        JSON_VALUE.map(json.dumps),
        st.text(max_size=30),
    )

    def anything(content: list[str] | bytes) -> None:
        try:
            manifest_dataset(_written(path, content))
        except DatasetError as error:
            _one_line_naming(error, path)

    _run(examples, st.lists(good, min_size=1, max_size=4), well_formed)
    lines = st.lists(st.one_of(good.map(json.dumps), bad), min_size=1, max_size=4)
    _run(examples, st.one_of(lines, st.binary(max_size=200)), anything)


# ---- The post-processing YAML ---------------------------------------------------------------

PARAMETERS = ("onset", "offset", "pad_onset", "pad_offset", "min_duration_on", "min_duration_off")


@pytest.mark.parametrize("examples", EXAMPLES)
def test_postprocessing_yaml(tmp_path: Path, examples: int) -> None:
    import yaml

    path = tmp_path / "postprocessing.yaml"
    values = st.dictionaries(st.sampled_from(PARAMETERS), st.floats(0, 5, allow_nan=False), max_size=6)

    def well_formed(parameters: dict[str, float]) -> None:
        path.write_text(yaml.safe_dump({"parameters": parameters}))
        resolved = resolve_postprocessing(PostProcessingConfig(yaml=str(path)))
        assert all(getattr(resolved, name) == value for name, value in parameters.items())

    documents = st.one_of(
        st.dictionaries(st.sampled_from(PARAMETERS), JSON_VALUE, max_size=6).map(lambda p: {"parameters": p}),
        JSON_VALUE,
        st.dictionaries(st.text(max_size=8), JSON_VALUE, max_size=3),
    )

    def anything(content: Any) -> None:
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(yaml.safe_dump(content))
        try:
            resolved = resolve_postprocessing(PostProcessingConfig(yaml=str(path)))
        except ConfigError as error:
            _one_line_naming(error, path)
        else:
            assert all(math.isfinite(getattr(resolved, name)) for name in PARAMETERS)

    _run(examples, values, well_formed)
    _run(examples, st.one_of(documents, st.text(max_size=60), st.binary(max_size=60)), anything)


# ---- matrix.json and manifests, as publishing reads them ------------------------------------


def _manifest_parses(path: Path) -> bool:
    try:
        Manifest.read(path)
    except RecordError:
        return False
    return True


def _damaged(text: str, position: float, replacement: str, cut: bool) -> str:
    """`text` cut at, or with a character replaced at, a relative position."""
    at = int(position * len(text))
    return text[:at] if cut else text[:at] + replacement + text[at + 1 :]


@pytest.mark.parametrize("examples", EXAMPLES)
def test_matrix_and_manifests_read_by_publish(clean: Clean, tmp_path: Path, examples: int) -> None:
    folder = tmp_path / "release"
    shutil.copytree(clean.sweep.output, folder, ignore=shutil.ignore_patterns(".publish", "*.lock"))
    files = [folder / "matrix.json", *sorted(folder.glob("*/*.json"))]
    originals = {path: path.read_text() for path in files}
    damage = st.tuples(
        st.sampled_from(files),
        st.floats(0, 1),
        st.sampled_from([*'"{}[],:0a \\', "\x00", "é"]),
        st.booleans(),
    )

    def anything(change: tuple[Path, float, str, bool]) -> None:
        path, position, replacement, cut = change
        path.write_text(_damaged(originals[path], position, replacement, cut))
        try:
            release = read_release(folder)
            problems = release_problems(release)
        except PublishError as error:
            _one_line_naming(error, path)
        else:
            assert all("\n" not in problem for problem in problems)
            listed = {model.paths.manifest for model in release.models}
            if path in listed and not _manifest_parses(path):
                assert any(str(path) in problem for problem in problems), problems
        finally:
            path.write_text(originals[path])

    assert release_problems(read_release(folder)) == []  # well-formed: accepted
    _run(examples, damage, anything)


# ---- Config override values of every field type ---------------------------------------------

# One key of each field type of the build config, and values of the right type.
TYPED = {
    "variant.chunk_len": st.integers(1, 400).map(str),  # int
    "compression.gates.max_prob_error": st.floats(0, 1, allow_nan=False).map(repr),  # float
    "verify.parity": st.sampled_from(["true", "false"]),  # bool
    # str ("null" in any case is Hydra's null, which a str field refuses)
    "variant.file_name": st.text(string.ascii_letters + "_", min_size=1, max_size=12).filter(
        lambda name: name.lower() != "null"
    ),
    "verify.precision": st.sampled_from(["float16", "float32"]),  # enum
    "cache_dir": st.one_of(
        st.just("null"), st.text(string.ascii_letters + "/", min_size=1, max_size=12)
    ),  # optional
    "evaluate.postprocessing.yaml": st.just("null"),  # optional, nested under an optional group
}
VALUE = st.one_of(
    NUMBER,
    st.text(max_size=12),
    st.sampled_from(
        ["${oc.env:NOPE}", "${nope}", "[1,2", "{a:", "'", '"', "\\", "null", "[]", "{}", "a=b", "1,2,"]
    ),
)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_config_override_values(examples: int) -> None:
    register_schemas()  # as the command line does before it checks anything

    def well_formed(override: tuple[str, str]) -> None:
        key, value = override
        extra = ["evaluate=conversation"] if key.startswith("evaluate.") else []
        assert check_command_line(["checkpoint=tiny", *extra, f"{key}={value}"]) is None

    def anything(override: tuple[str, str]) -> None:
        key, value = override
        extra = ["evaluate=conversation"] if key.startswith("evaluate.") else []
        problem = check_command_line(["checkpoint=tiny", *extra, f"{key}={value}"])
        if problem is not None:
            assert "\n" not in problem.message and (problem.hint is None or "\n" not in problem.hint)

    keys = st.sampled_from(sorted(TYPED))
    _run(examples, keys.flatmap(lambda key: st.tuples(st.just(key), TYPED[key])), well_formed)
    _run(examples, st.tuples(keys, VALUE), anything)


# ---- Trace files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trace_index(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """NeMo's trace of the tiny checkpoint, Efficient geometry, on the conversation's first 6 s."""
    import soundfile

    from sortformer_build.checkpoint.sources import Checkpoint, load_model
    from sortformer_build.evaluate.audio import load_audio
    from sortformer_build.geometry import StreamingGeometry
    from sortformer_build.store.digests import file_sha256
    from sortformer_build.trace.format import trace_files
    from sortformer_build.trace.record import nemo_trace
    from sortformer_build.verify.reference import SAMPLE_RATE

    folder = tmp_path_factory.mktemp("trace")
    recording = folder / "opening.wav"
    audio = load_audio(conversation.DATA_DIR / f"{conversation.NAME}.flac", duration=6.0)
    soundfile.write(recording, audio, SAMPLE_RATE)
    model = load_model(Checkpoint(tiny_checkpoint, "", "tiny", "test"))
    sha256 = file_sha256(tiny_checkpoint, folder / "memo")
    geometry = StreamingGeometry(25, 1, 7, 40, 188, 31)
    postprocessing = resolve_postprocessing(PostProcessingConfig())
    nemo_trace(model, geometry, recording, folder, "Fuzzed_v2.1", sha256, postprocessing)
    return trace_files(folder, "Fuzzed_v2.1")[1]


@pytest.mark.parametrize("examples", EXAMPLES)
def test_trace_files(
    trace_index: Path, tmp_path: Path, examples: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sortformer-build-trace show` and `compare` on a damaged index or arrays file: exit 2 with
    one line naming the file, or, when the damage leaves a readable trace, an answer."""
    from sortformer_build.trace.cli import main as trace_main

    folder = tmp_path / "damaged"
    shutil.copytree(trace_index.parent, folder, ignore=shutil.ignore_patterns("memo", "*.wav"))
    index = folder / trace_index.name
    arrays = next(folder.glob("*.safetensors"))
    originals = {index: index.read_bytes(), arrays: arrays.read_bytes()}
    damage = st.tuples(
        st.sampled_from([index, arrays]),
        st.floats(0, 1),
        st.sampled_from([*b'"{}[],:0a \\', 0, 0xFF]),
        st.booleans(),
    )

    def anything(change: tuple[Path, float, int, bool]) -> None:
        path, position, replacement, cut = change
        original = originals[path]
        at = min(int(position * len(original)), len(original) - 1)
        path.write_bytes(original[:at] if cut else original[:at] + bytes([replacement]) + original[at + 1 :])
        try:
            for arguments in (["show", str(index)], ["compare", str(trace_index), str(index)]):
                capsys.readouterr()
                code = trace_main(arguments)
                error = capsys.readouterr().err
                if code == 2:
                    assert error.count("\n") == 1 and (str(index) in error or str(arrays) in error), error
                else:
                    assert code in (0, 1) and error == "", (code, error)
        finally:
            path.write_bytes(original)

    assert trace_main(["show", str(index)]) == 0  # well-formed: accepted
    _run(examples, damage, anything)
