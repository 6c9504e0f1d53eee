"""Bad input through the console script: a clear message, a non-zero exit, no artifact."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import artifacts, mounted_tmpfs, run_cli


def _fails(tmp_path: Path, cache: Path, *overrides: str, env: dict[str, str] | None = None) -> str:
    run = run_cli(*overrides, f"cache_dir={cache}", "output_dir=out", cwd=tmp_path, env=env)
    assert run.returncode != 0, run.output[-2000:]
    assert artifacts(tmp_path / "out") == []
    return run.output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # One of each kind end to end; tests/test_config.py covers the rest in process.
        (["variant=nope"], "unknown variant option 'nope'"),
        (
            ["verify.precision=fp16"],
            "verify.precision: Invalid value 'fp16', expected one of [float16, float32]",
        ),
        (["variant.chunk_len=0"], "chunk_len must be at least 1"),
    ],
)
def test_bad_configuration_fails_before_any_work(
    tmp_path: Path, shared_cache: Path, overrides: list[str], message: str
) -> None:
    output = _fails(tmp_path, shared_cache, "checkpoint=tiny", *overrides)
    assert any(message in line for line in output.splitlines()), output[-2000:]
    assert "Traceback" not in output


def test_missing_nemo_file(tmp_path: Path, shared_cache: Path) -> None:
    output = _fails(tmp_path, shared_cache, "checkpoint=local", f"checkpoint.path={tmp_path}/absent.nemo")
    assert f"checkpoint file {tmp_path}/absent.nemo does not exist" in output


def test_corrupt_nemo_file(tmp_path: Path, shared_cache: Path) -> None:
    corrupt = tmp_path / "corrupt.nemo"
    corrupt.write_bytes(b"this is not a tar archive" * 100)
    output = _fails(tmp_path, shared_cache, "checkpoint=local", f"checkpoint.path={corrupt}")
    assert "is not a .nemo archive (corrupt or truncated?)" in output


def test_truncated_nemo_file(tmp_path: Path, shared_cache: Path, tiny_checkpoint: Path) -> None:
    truncated = tmp_path / "truncated.nemo"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    output = _fails(tmp_path, shared_cache, "checkpoint=local", f"checkpoint.path={truncated}", "cache=false")
    assert "cannot restore" in output and "as a Sortformer model" in output


def test_unwritable_output_dir(tmp_path: Path, shared_cache: Path) -> None:
    # A file where a folder should be: unwritable even for root, which ignores permissions.
    (tmp_path / "blocker").write_text("")
    run = run_cli("checkpoint=tiny", f"cache_dir={shared_cache}", "output_dir=blocker/out", cwd=tmp_path)
    assert run.returncode != 0
    assert "output folder blocker/out/fp16 is not writable" in run.output
    assert artifacts(tmp_path) == []


def test_offline_hub_without_cache_points_at_alternatives(tmp_path: Path, shared_cache: Path) -> None:
    output = _fails(tmp_path, shared_cache, "checkpoint=hub", env={"HF_HOME": str(tmp_path / "hf")})
    assert "nvidia/diar_streaming_sortformer_4spk-v2.1" in output
    assert "checkpoint=synthetic" in output and "checkpoint=local" in output


def test_errors_are_one_line(tmp_path: Path, shared_cache: Path) -> None:
    run = run_cli(
        "checkpoint=local", "checkpoint.path=/absent.nemo", f"cache_dir={shared_cache}", cwd=tmp_path
    )
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert errors == ["sortformer-build: error: checkpoint file /absent.nemo does not exist"]
    assert "Traceback" not in run.output


def test_hub_checkpoint_is_read_from_the_hugging_face_cache(
    tmp_path: Path, shared_cache: Path, tiny_checkpoint: Path
) -> None:
    """The real hub path, offline: huggingface_hub finds the snapshot in its cache."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--nvidia--diar_streaming_sortformer_4spk-v2.1"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, snapshot / "diar_streaming_sortformer_4spk-v2.1.nemo")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    run = run_cli(
        "checkpoint=hub",
        f"cache_dir={shared_cache}",
        "output_dir=out",
        cwd=tmp_path,
        env={"HF_HOME": str(tmp_path / "hf")},
    )
    assert run.returncode == 0, run.output[-2000:]
    manifest = (tmp_path / "out" / "fp16" / "Sortformer_v2.1.json").read_text()
    assert f"huggingface nvidia/diar_streaming_sortformer_4spk-v2.1 revision {revision}" in manifest


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 300 kB filesystem: too small for any package (needs root to mount)."""
    with mounted_tmpfs(tmp_path / "small", "300k") as mount_point:
        yield mount_point


def test_full_disk_leaves_no_half_written_artifact(
    tmp_path: Path, shared_cache: Path, full_disk: Path
) -> None:
    run = run_cli("checkpoint=tiny", f"cache_dir={shared_cache}", f"output_dir={full_disk}", cwd=tmp_path)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("sortformer-build: error:")]
    assert len(errors) == 1, run.output[-2000:]
    # The folder that filled, how much was free there, and how much the package had taken.
    assert f"no space left in {full_disk}/fp16 for the artifact" in errors[0], errors
    assert " free, it needs more than the " in errors[0] and " it had written" in errors[0], errors
    assert artifacts(full_disk) == []


def test_help_through_the_console_script(tmp_path: Path) -> None:
    run = run_cli("--help", cwd=tmp_path)
    assert run.returncode == 0, run.output[-2000:]
    assert "== Variants" in run.stdout and "== Compressions (release folder) ==" in run.stdout
    assert "SortformerNvidiaHigh_v2.1" in run.stdout and "Traceback" not in run.output
