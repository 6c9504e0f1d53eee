"""Shared fixtures: the console script, isolated caches and the tiny checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `exhaustive` run only when `-m` names them (`pytest -m exhaustive`): the plain
    `pytest`, `-m "not slow"` and `-m slow` leave them out."""
    if "exhaustive" in (config.option.markexpr or ""):
        return
    left_out = [item for item in items if item.get_closest_marker("exhaustive")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("exhaustive")]


# The script installed beside this interpreter: CI runs .venv/bin/pytest without activating the venv.
SCRIPT = str(Path(sys.executable).with_name("sortformer-build"))

# The released geometries (NVIDIA's presets as the runtime names them), written out independently
# of the package's configs.
RELEASE = {
    "default": ("Sortformer_v2.1", 6, 1, 7, 40, 188, 31),
    "nvidia_low": ("SortformerNvidiaLow_v2.1", 6, 1, 7, 188, 188, 144),
    "nvidia_high": ("SortformerNvidiaHigh_v2.1", 340, 1, 40, 40, 188, 300),
    "efficient": ("SortformerEfficient_v2.1", 25, 1, 7, 40, 188, 31),
    "default_v2": ("Sortformer_v2", 6, 1, 7, 40, 188, 31),
    "nvidia_low_v2": ("SortformerNvidiaLow_v2", 6, 1, 7, 188, 188, 144),
    "nvidia_high_v2": ("SortformerNvidiaHigh_v2", 340, 1, 40, 40, 188, 300),
}
# The offline model: file name and window (mel frames), written out independently of sortformer_build/conf/.
OFFLINE = {"offline": ("SortformerOffline_v2.1", 3072)}
# Every variant option: what `variant=glob(*)` sweeps.
ALL_VARIANTS = {**RELEASE, **OFFLINE}
TINY_D_MODEL = 64


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 1800) -> Run:
    """Run the installed console script, as a user would."""
    assert os.access(SCRIPT, os.X_OK), f"{SCRIPT} is not installed (pip install -e .)"
    completed = subprocess.run(
        [SCRIPT, *args],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(completed.returncode, completed.stdout, completed.stderr)


def start_cli(*args: str, cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The console script started as `run_cli` runs it, in the background, its output to `log`."""
    with log.open("wb") as stream:
        return subprocess.Popen(
            [SCRIPT, *args],
            cwd=cwd,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
            stdout=stream,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture(scope="session", autouse=True)
def library_temp_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that call coremltools directly (not through a job, which has its own scratch folder)
    get their temporary packages, which coremltools keeps until the interpreter exits, under
    pytest's folder instead of the system temp folder."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("library-temp"))
    yield
    tempfile.tempdir = previous


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session: checkpoints and converted programs are made once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_checkpoint(shared_cache: Path) -> Path:
    from sortformer_build.checkpoint.sources import synthetic_checkpoint

    return synthetic_checkpoint(shared_cache / "checkpoints", "tiny", 0, "v2.1", 25.0)


def artifacts(folder: Path) -> list[Path]:
    """Everything a failed job must not leave behind: packages and half-written leftovers."""
    if not folder.exists():
        return []
    return [
        p
        for p in folder.rglob("*")
        if p.suffix in (".mlpackage", ".mlmodelc") or p.name.startswith(".partial-")
    ]


@pytest.fixture
def fresh_build_cache(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    """A cache holding the session's checkpoints but no build entries: jobs convert from scratch."""
    cache = tmp_path / "fresh-cache"
    cache.mkdir()
    (cache / "checkpoints").symlink_to(tiny_checkpoint.parent, target_is_directory=True)
    return cache


def sweep_statuses(work: Path) -> list[dict]:
    """The job_status.json records of the latest sweep run in `work`."""
    sweep = sorted((work / "outputs" / ".hydra-runs").glob("multirun-*"))[-1]
    return [json.loads(path.read_text()) for path in sorted(sweep.rglob("job_status.json"))]


@pytest.fixture(scope="session")
def clean(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path):
    """The session's reference runs, made once (see `tests.reference`)."""
    from .reference import make_clean

    return make_clean(tmp_path_factory.mktemp("clean"), tiny_checkpoint.parent)


@contextmanager
def mounted_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's syntax: 300k, 16m) at `mount_point`; skips without root."""
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture(scope="session")
def short_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped conversation's first 12 s as a folder dataset: a sweep evaluates it many times."""
    import soundfile

    from sortformer_build.evaluate.audio import load_audio
    from sortformer_build.evaluate.conversation import DATA_DIR, NAME
    from sortformer_build.verify.reference import SAMPLE_RATE

    folder = tmp_path_factory.mktemp("short")
    soundfile.write(folder / "opening.wav", load_audio(DATA_DIR / f"{NAME}.flac", duration=12.0), SAMPLE_RATE)
    shutil.copy(DATA_DIR / f"{NAME}.rttm", folder / "opening.rttm")
    return folder


@pytest.fixture(scope="session")
def evaluated_sweep(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path, short_folder: Path) -> Path:
    """A streaming and the offline model, each at two precisions, verified and evaluated in one
    sweep through the console script; its output folder."""
    work = tmp_path_factory.mktemp("evaluated-sweep")
    run = run_cli(
        "--multirun",
        "variant=default,offline",
        "compression=fp16,palettized6",
        "checkpoint=tiny",
        "evaluate=folder",
        f"evaluate.path={short_folder}",
        f"cache_dir={shared_cache}",
        cwd=work,
    )
    assert run.returncode == 0 and "report.html (" in run.stdout, run.output[-3000:]
    return work / "outputs" / "tiny"


@pytest.fixture(scope="session")
def unfinished(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """A sweep with a failed job and a job built without parity checks."""
    work = tmp_path_factory.mktemp("unfinished")
    overrides = ("variant=default", "variant.chunk_len=6,0", "checkpoint=tiny", "verify.parity=false")
    run = run_cli("--multirun", *overrides, f"cache_dir={shared_cache}", cwd=work)
    assert run.returncode == 1, run.output[-3000:]
    return work / "outputs" / "tiny"
