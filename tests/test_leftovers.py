"""Nothing left behind: no temporary files outside the cache, and a cache within its budget."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sortformer_build.cli.cache import main as cache_main
from sortformer_build.job.scratch import job_scratch
from sortformer_build.store.budget import entries, shrink_to
from sortformer_build.store.cache import BuildCache
from sortformer_build.store.usage import Uses, use_lock_path

from .conftest import run_cli
from .forked import run_build


@pytest.fixture
def empty_tmpdir(tmp_path: Path) -> Path:
    folder = tmp_path / "system-temp"
    folder.mkdir()
    return folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_builds_and_parallel_sweeps_write_nothing_to_the_temp_folder(
    tmp_path: Path, fresh_build_cache: Path, empty_tmpdir: Path
) -> None:
    env = {"TMPDIR": str(empty_tmpdir)}
    common = ("checkpoint=tiny", f"cache_dir={fresh_build_cache}")
    run = run_cli("compression=palettized6", *common, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.output[-3000:]
    sweep = run_cli(
        "--multirun",
        "variant=default,efficient",
        "compression=fp16",
        *common,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        cwd=tmp_path,
        env=env,
    )
    assert sweep.returncode == 0, sweep.output[-3000:]
    assert _leftovers(empty_tmpdir) == []
    assert list((fresh_build_cache / "scratch").iterdir()) == []


def test_processes_a_job_starts_use_its_scratch_folder_too(tmp_path: Path) -> None:
    """Worker processes (a dataset's recordings, a first Core ML prediction) write their temporary
    files where the job's go, so a worker killed mid-way leaves them for the next job to sweep."""
    before = os.environ.get("TMPDIR")
    ask = [sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"]
    with job_scratch(tmp_path / "scratch") as folder:
        assert subprocess.run(ask, capture_output=True, text=True, check=True).stdout.strip() == str(folder)
    assert os.environ.get("TMPDIR") == before
    assert not folder.exists()


def test_a_build_failing_after_conversion_leaves_nothing_behind(
    tmp_path: Path, fresh_build_cache: Path, empty_tmpdir: Path
) -> None:
    run = run_build(
        "checkpoint=tiny",
        f"cache_dir={fresh_build_cache}",
        "compression.gates.max_prob_error=0",  # no package meets it: parity fails after conversion
        cwd=tmp_path,
        env={"TMPDIR": str(empty_tmpdir)},
    )
    assert run.returncode == 1 and "parity with NeMo fails" in run.stderr, run.output[-3000:]
    assert _leftovers(empty_tmpdir) == []
    assert list((fresh_build_cache / "scratch").iterdir()) == []
    assert not list((tmp_path / "outputs").rglob("*.mlpackage"))


KB = 1000


def _fill(root: Path, count: int) -> list[Path]:
    """`count` entries of 100 kB, used one second apart (the first is the least recent)."""
    uses = Uses()
    cache = BuildCache(root, uses=uses)
    made = []
    for index in range(count):

        def build(folder: Path) -> dict[str, int]:
            (folder / "payload.bin").write_bytes(b"x" * 100 * KB)
            return {}

        entry = cache.fetch("stage", {"index": index}, build)
        os.utime(entry.path / "entry.json", (time.time() - 100 + index,) * 2)
        made.append(entry.path)
    uses.release()  # the job that made them has ended
    return made


def test_the_oldest_unused_entries_go_and_entries_in_use_stay(tmp_path: Path) -> None:
    root = tmp_path / "build"
    made = _fill(root, 5)
    # Another job is using the oldest entry: it holds a shared lock until it ends.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from sortformer_build.store.usage import Uses; "
            "uses = Uses(); assert uses.hold(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()",
            str(made[0]),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        os.utime(made[0] / "entry.json", (time.time() - 200,) * 2)  # a long job on an old entry
        removed = shrink_to(root, 250 * KB)
    finally:
        holder.communicate("")
    # Oldest first, skipping the one in use, until the rest fits.
    assert [entry.path for entry in removed] == made[1:4]
    assert [entry.path for entry in entries(root)] == [made[0], made[4]]
    assert use_lock_path(made[0]).exists()


def test_a_warm_build_after_eviction_rebuilds_what_went(tmp_path: Path, fresh_build_cache: Path) -> None:
    common = ("checkpoint=tiny", "verify.parity=false", f"cache_dir={fresh_build_cache}")
    first = run_build(*common, "cache_max_gb=0.000001", cwd=tmp_path)  # 1 kB: every entry goes after the job
    assert first.returncode == 0, first.output[-3000:]
    assert "Cache over its" in first.output and entries(fresh_build_cache / "build") == []
    twin = run_build(*common, "compression=palettized6", cwd=tmp_path)
    assert twin.returncode == 0, twin.output[-3000:]
    assert "programs built" in twin.stdout  # evicted, so converted again
    assert (tmp_path / "outputs" / "tiny" / "fp16" / "Sortformer_v2.1.mlpackage").is_dir()  # never touched


def test_the_cache_command_shows_and_prunes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path / "build", 3)
    assert cache_main(["--cache-dir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "stage" in shown and "0.3 MB" in shown
    assert cache_main(["--cache-dir", str(tmp_path), "prune", "--all"]) == 0
    assert "Removed 3 entries" in capsys.readouterr().out and entries(tmp_path / "build") == []
    assert cache_main(["--cache-dir", str(tmp_path), "prune", "--older-than", "yesterday"]) == 2
