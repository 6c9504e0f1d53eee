"""What a new user meets in the first hour, through the console script: nothing silently ignored,
bad input caught before any work, one line per mistake, messages that name the real problem,
evaluations kept side by side, progress on long steps, no leftovers, words that match."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import soundfile

from sortformer_build import progress
from sortformer_build.coreml.package import package_digest
from sortformer_build.evaluate.audio import load_audio
from sortformer_build.evaluate.conversation import DATA_DIR
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.steps import StepStatus
from sortformer_build.verify.reference import SAMPLE_RATE

from .conftest import run_cli
from .forked import run_build

HEAVY = ("torch", "coremltools", "nemo")


def _errors(run_output: str) -> list[str]:
    return [line for line in run_output.splitlines() if line.strip()]


# 1. Options silently ignored.


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+compresion=palettized4", "unknown key 'compresion' (did you mean 'compression'?)"),
        ("+variant.fifo_lenn=80", "unknown key 'variant.fifo_lenn' (did you mean 'variant.fifo_len'?)"),
        ("compresion=palettized4", "unknown key 'compresion' (did you mean 'compression'?)"),
    ],
)
def test_a_misspelt_key_is_refused_even_with_a_plus(tmp_path: Path, override: str, expected: str) -> None:
    run = run_cli(override, "checkpoint=synthetic", "dry_run=true", cwd=tmp_path)
    assert run.returncode == 2, run.output
    assert _errors(run.stderr)[0] == f"sortformer-build: error: {expected}"
    assert not (tmp_path / "outputs").exists()


def test_a_checkpoint_path_without_checkpoint_local_is_refused(tmp_path: Path) -> None:
    run = run_cli("checkpoint=synthetic", "checkpoint.path=model.nemo", "dry_run=true", cwd=tmp_path)
    assert run.returncode == 1, run.output
    assert _errors(run.stderr) == [
        "sortformer-build: error: checkpoint.path is read only with checkpoint=local, not "
        "checkpoint=synthetic: add checkpoint=local to build from the file"
    ]


# 2. Every input checked before any work.


def test_unreadable_audio_stops_the_job_before_the_checkpoint_is_made(tmp_path: Path) -> None:
    dataset = tmp_path / "set"
    dataset.mkdir()
    (dataset / "meeting.wav").write_bytes(b"RIFF, but no audio after it")
    shutil.copy(DATA_DIR / "conversation.rttm", dataset / "meeting.rttm")
    cache = tmp_path / "cache"
    run = run_cli(
        "checkpoint=tiny", f"cache_dir={cache}", "evaluate=folder", f"evaluate.path={dataset}", cwd=tmp_path
    )
    assert run.returncode == 1, run.output
    (error,) = [line for line in run.stderr.splitlines() if line.startswith("sortformer-build: error:")]
    assert f"cannot read audio file {dataset / 'meeting.wav'}" in error
    assert not list(cache.rglob("*.nemo")) and not (cache / "build").exists()


# 3. Configuration mistakes in one line (and at most one line of hint).


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("variant=nvidia_hgh", "unknown variant option 'nvidia_hgh' (did you mean 'nvidia_high'?)"),
        ("variant.fifo_len=abc", "invalid configuration: variant.fifo_len: Value 'abc' of type 'str'"),
        ("verify.precision=fp16", "invalid configuration: verify.precision: Invalid value 'fp16'"),
        ("evaluate=conversatio", "unknown evaluate option 'conversatio' (did you mean 'conversation'?)"),
    ],
)
def test_configuration_mistakes_are_one_line(tmp_path: Path, override: str, expected: str) -> None:
    run = run_cli(override, "checkpoint=tiny", "dry_run=true", cwd=tmp_path)
    assert run.returncode == 2, run.output
    lines = _errors(run.output)
    assert 1 <= len(lines) <= 2 and lines[0].startswith(f"sortformer-build: error: {expected}"), lines


def test_a_sweep_with_an_unknown_option_is_refused_before_it_starts(tmp_path: Path) -> None:
    run = run_cli(
        "--multirun", "variant=glob(*)", "compression=fp16,palettised6", "checkpoint=tiny", cwd=tmp_path
    )
    assert run.returncode == 2, run.output
    assert _errors(run.output) == [
        "sortformer-build: error: unknown compression option 'palettised6' (did you mean 'palettized6'?)",
        "  compression options: fp16, mixed, palettized4, palettized6, palettized8",
    ]


def test_hydra_full_error_still_gives_hydras_report(tmp_path: Path) -> None:
    run = run_cli("variant=nvidia_hgh", "checkpoint=tiny", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert run.returncode != 0 and "Could not find 'variant/nvidia_hgh'" in run.output
    assert "Traceback" in run.output


# 4. Messages that name the real problem.


def test_a_folder_given_as_checkpoint_path_is_called_a_folder(tmp_path: Path, shared_cache: Path) -> None:
    run = run_cli(
        "checkpoint=local", f"checkpoint.path={tmp_path}", f"cache_dir={shared_cache}", cwd=tmp_path
    )
    assert run.returncode == 1
    assert _errors(run.stderr) == [
        f"sortformer-build: error: checkpoint.path {tmp_path} is a folder: give the .nemo file itself"
    ]


def test_verify_answers_a_missing_path_without_loading_libraries(tmp_path: Path) -> None:
    missing = tmp_path / "absent.mlpackage"
    code = (
        "import sys\nfrom sortformer_build.cli.verify import main\n"
        f"status = main([{str(missing)!r}])\n"
        f"print(status, sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.stdout.strip() == "2 []", completed.stderr
    assert completed.stderr.strip() == f"sortformer-build-verify: error: {missing} does not exist"


def test_an_unwritable_cache_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    run = run_cli("checkpoint=tiny", "cache_dir=blocker/cache", cwd=tmp_path)
    assert run.returncode == 1
    (error,) = _errors(run.stderr)
    assert error.startswith("sortformer-build: error: cache folder blocker/cache is not writable:"), error


# 6. Evaluations side by side.


def _folder(root: Path, name: str, seconds: float) -> Path:
    folder = root / name
    folder.mkdir()
    audio = load_audio(DATA_DIR / "conversation.flac", duration=seconds)
    soundfile.write(folder / f"{name}.wav", audio, SAMPLE_RATE)
    shutil.copy(DATA_DIR / "conversation.rttm", folder / f"{name}.rttm")
    return folder


def test_a_second_dataset_is_evaluated_beside_the_first_without_touching_the_package(
    tmp_path: Path, shared_cache: Path
) -> None:
    first, second = _folder(tmp_path, "opening", 8.0), _folder(tmp_path, "longer", 10.0)
    job = ("variant=nvidia_high", "checkpoint=tiny", "verify.parity=false", f"cache_dir={shared_cache}")
    built = run_build(*job, "evaluate=folder", f"evaluate.path={first}", cwd=tmp_path)
    assert built.returncode == 0, built.output[-3000:]
    release = tmp_path / "outputs" / "tiny" / "fp16"
    package = release / "SortformerNvidiaHigh_v2.1.mlpackage"
    before = package_digest(package), package.stat().st_mtime_ns

    evaluated = run_build(*job, "evaluate=folder", f"evaluate.path={second}", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.output[-3000:]
    assert f"Evaluated: outputs/tiny/fp16/{package.name}" in evaluated.stdout
    assert (package_digest(package), package.stat().st_mtime_ns) == before
    job_log = sorted((tmp_path / "outputs" / ".hydra-runs").glob("*/sortformer-build.log"))[-1].read_text()
    assert "Converting" not in job_log and "Assembling" not in job_log and "Checking the I/O" not in job_log
    manifest = Manifest.read(release / "SortformerNvidiaHigh_v2.1.json")
    assert [evaluation.dataset for evaluation in manifest.evaluations] == ["opening", "longer"]
    rttms = release / "SortformerNvidiaHigh_v2.1.evaluation"
    assert sorted(path.relative_to(rttms).as_posix() for path in rttms.rglob("*.rttm")) == [
        "longer/artifact/longer.rttm",
        "longer/nemo/longer.rttm",
        "longer/truth/longer.rttm",
        "opening/artifact/opening.rttm",
        "opening/nemo/opening.rttm",
        "opening/truth/opening.rttm",
    ]
    again = run_build(*job, "evaluate=folder", f"evaluate.path={first}", cwd=tmp_path)
    assert again.returncode == 0 and "Up to date:" in again.stdout


# 8. Progress on long steps.


def test_long_loops_log_what_is_done_and_what_remains(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(progress, "INTERVAL_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="sortformer_build"):
        assert list(progress.counted(range(3), 3, "streaming chunk by chunk", "chunks")) == [0, 1, 2]
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("  streaming chunk by chunk: 1 of 3 chunks after") and "s left" in lines[0]
    assert len(lines) == 2  # none once the last chunk is done


def test_uncountable_work_says_it_still_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(progress, "INTERVAL_SECONDS", 0.001)
    caplog.set_level(logging.INFO, logger="sortformer_build")
    said = threading.Event()

    class Listener(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "programs: still running after" in record.getMessage():
                said.set()

    listener = Listener()
    progress.log.addHandler(listener)
    try:
        with progress.heartbeat("programs"):
            assert said.wait(timeout=30)
    finally:
        progress.log.removeHandler(listener)


# 9. No leftovers after a failed job.


def _leftovers(root: Path) -> list[str]:
    """Empty folders outside the job logs and the cache folder, and lock files in the cache for
    entries that do not exist."""
    found = []
    for path in root.rglob("*"):
        if ".hydra-runs" in path.parts:
            continue
        if path.is_dir() and not any(path.iterdir()) and "cache" not in path.relative_to(root).parts:
            found.append(f"empty folder {path.relative_to(root)}")
        if path.name.endswith(".lock") and path.name.startswith("."):
            entry = path.with_name(path.name[1:].removesuffix(".lock"))
            if not entry.exists():
                found.append(f"lock without its entry {path.relative_to(root)}")
    return found


@pytest.mark.parametrize("case", ["missing checkpoint", "corrupt checkpoint", "bad dataset"])
def test_a_failed_job_leaves_nothing_behind(tmp_path: Path, case: str) -> None:
    corrupt = tmp_path / "corrupt.nemo"
    corrupt.write_bytes(os.urandom(4096))
    dataset = tmp_path / "set"
    dataset.mkdir()
    (dataset / "x.wav").write_bytes(b"not audio")
    shutil.copy(DATA_DIR / "conversation.rttm", dataset / "x.rttm")
    overrides = {
        "missing checkpoint": ("checkpoint=local", f"checkpoint.path={tmp_path}/absent.nemo"),
        "corrupt checkpoint": ("checkpoint=local", f"checkpoint.path={corrupt}"),
        "bad dataset": ("checkpoint=tiny", "evaluate=folder", f"evaluate.path={dataset}"),
    }[case]
    work = tmp_path / "work"
    work.mkdir()
    run = run_cli(*overrides, f"cache_dir={work / 'cache'}", cwd=work)
    assert run.returncode == 1, run.output[-2000:]
    assert _leftovers(work) == []
    assert not (work / "outputs" / "local").exists() and not (work / "outputs" / "tiny").exists()


# 10. Figures and words that match what a user sees.


def test_an_up_to_date_line_says_what_the_manifest_vouches_for(tmp_path: Path, shared_cache: Path) -> None:
    job = ("checkpoint=tiny", "verify.parity=false", f"cache_dir={shared_cache}")
    assert run_build(*job, cwd=tmp_path).returncode == 0
    again = run_build(*job, cwd=tmp_path)
    assert again.returncode == 0
    line = next(line for line in again.stdout.splitlines() if line.startswith("Up to date:"))
    assert line.endswith("[verified: lint; skipped: parity, on-device]"), line
    manifest = Manifest.read(tmp_path / "outputs" / "tiny" / "fp16" / "Sortformer_v2.1.json")
    lint = manifest.step("lint")
    assert lint is not None and lint.status is StepStatus.verified


def test_an_rttm_naming_another_recording_is_warned_about(tmp_path: Path) -> None:
    from sortformer_build.config import DatasetKind, EvaluateConfig
    from sortformer_build.evaluate.datasets import load_dataset

    folder = _folder(tmp_path, "opening", 4.0)
    caught = []

    class Listener(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record.getMessage())

    listener = Listener()
    logging.getLogger("sortformer_build").addHandler(listener)
    try:
        load_dataset(EvaluateConfig(dataset=DatasetKind.folder, path=str(folder)))
    finally:
        logging.getLogger("sortformer_build").removeHandler(listener)
    (warning,) = caught
    assert "RTTM opening.rttm names recording conversation, not opening" in warning


def test_help_names_the_clamped_period_once(tmp_path: Path) -> None:
    run = run_cli("--help", cwd=tmp_path)
    assert run.returncode == 0
    assert run.stdout.count("300 runs as 340") == 1 and "runs as" not in run.stdout.replace(
        "300 runs as 340", ""
    )
    assert json.dumps(run.stdout).count("period 300*") == 2
