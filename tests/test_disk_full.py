"""A disk that fills at each write point: the output folder and the cache folder each on a small
tmpfs of their own (mounting needs root), and the fault point's `full` action filling the file
system the point writes to, so the write that follows fails for want of space. Each run must
fail with one line naming the folder, the space free there and roughly what the write wanted,
leave nothing half-written at a final path nor any cache entry a reader would take, and the
next run, with the filler gone, goes on from there; the last one succeeds and delivers the clean
build's artifacts. The points are filled in pipeline order (as in `test_faults`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortformer_build import faults
from sortformer_build.records.matrix import ReleaseMatrix
from sortformer_build.release.matrix import matrix_path, write_summary
from sortformer_build.store.space import NoSpaceError

from .conftest import mounted_tmpfs
from .outcomes import cache_problems, final_problems, final_state, leftovers
from .reference import BUILD, Clean, Folders, again, build, folders_in
from .test_faults import AGAIN_CHAIN, BUILD_CHAIN

ERROR = re.compile(
    r"^sortformer-build: error: no space left in (?P<folder>\S+) for .+: "
    r"(?P<free>[\d.]+ [kM]B) free, it needs (about|more than the) [\d.]+ [kM]B.*$"
)


@pytest.fixture
def small_disks(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[Folders]:
    """The reference build's folders with the output folder and the cache folder on tmpfs (Hydra's
    run folders, `outputs/.hydra-runs`, stay on the disk that has room)."""
    folders = folders_in(tmp_path, tiny_checkpoint.parent)
    with mounted_tmpfs(folders.output, "16m"), mounted_tmpfs(tmp_path / "cache-disk", "64m") as disk:
        (disk / "checkpoints").symlink_to(tiny_checkpoint.parent, target_is_directory=True)
        yield Folders(folders.work, disk, folders.temp, folders.dataset)


def _remove_fillers(*roots: Path) -> None:
    for root in roots:
        for filler in root.rglob(faults.FILLER):
            filler.unlink()


def test_a_full_disk_at_each_write_point_is_said_in_one_line(clean: Clean, small_disks: Folders) -> None:
    folders = small_disks

    def filled_at(point: str, args: tuple[str, ...]) -> None:
        run = build(folders, *args, env=folders.env(**{faults.FAULT_VARIABLE: f"{point}:full"}))
        errors = [line for line in run.stderr.splitlines() if line.startswith("sortformer-build: error:")]
        assert run.returncode == 1 and len(errors) == 1, (point, run.output[-3000:])
        said = ERROR.match(errors[0])
        assert said is not None, (point, errors[0])
        disk = folders.cache if point.startswith(("cache.", "rttm.")) else folders.output
        # Named as the user gave it: relative to the folder the build ran in.
        assert (folders.work / said["folder"]).resolve().is_relative_to(disk.resolve()), (point, errors[0])
        reference = clean.build_state if args == BUILD else clean.build_again_state
        assert final_problems(folders.output, reference) == [], point
        assert cache_problems(folders.cache, clean.build.cache) == [], point
        _remove_fillers(folders.cache, folders.output)

    for point in BUILD_CHAIN:
        filled_at(point, BUILD)
    # Delivered, so that a build on a second dataset delivers only its evaluation.
    delivered = build(folders, *BUILD, env=folders.env())
    assert delivered.returncode == 0, delivered.output[-3000:]
    for point in AGAIN_CHAIN:
        filled_at(point, (*BUILD, *again(folders)))
    last = build(folders, *BUILD, *again(folders), env=folders.env())
    assert last.returncode == 0, last.output[-3000:]
    assert final_state(folders.output) == clean.build_again_state
    assert leftovers(folders.work / "outputs", folders.cache, folders.temp) == []


def test_a_cache_too_small_for_the_conversion(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """No fault point: a cache folder with room for the checkpoint's scratch copy but not for
    the converted programs."""
    folders = folders_in(tmp_path, tiny_checkpoint.parent)
    with mounted_tmpfs(tmp_path / "cache-disk", "1m") as disk:
        (disk / "checkpoints").symlink_to(tiny_checkpoint.parent, target_is_directory=True)
        run = build(
            Folders(folders.work, disk, folders.temp, folders.dataset), "checkpoint=tiny", env=folders.env()
        )
        errors = [line for line in run.stderr.splitlines() if line.startswith("sortformer-build: error:")]
        assert run.returncode == 1 and len(errors) == 1, run.output[-3000:]
        said = ERROR.match(errors[0])
        assert said is not None and Path(said["folder"]).is_relative_to(disk), errors
        written = [
            path
            for path in disk.rglob("*")
            if path.is_file() and path.parts[len(disk.parts)] != "checkpoints"
        ]
        assert written == []  # empty folders at most


def test_a_full_disk_while_the_matrix_is_written(
    clean: Clean, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = ReleaseMatrix.read(matrix_path(clean.sweep.output)).rows
    with mounted_tmpfs(tmp_path / "out", "1m") as output_dir:
        write_summary(output_dir, rows)
        before = matrix_path(output_dir).read_text()
        monkeypatch.setenv(faults.FAULT_VARIABLE, "matrix.write:full")
        with pytest.raises(
            NoSpaceError, match=rf"^no space left in {output_dir} for the release matrix: .* free"
        ):
            write_summary(output_dir, rows[:1])
        assert matrix_path(output_dir).read_text() == before  # the previous matrix, whole
        (output_dir / faults.FILLER).unlink()
        monkeypatch.delenv(faults.FAULT_VARIABLE)
        write_summary(output_dir, rows[:1])
        assert len(ReleaseMatrix.read(matrix_path(output_dir)).rows) == 1
        assert [path.name for path in output_dir.iterdir() if path.name.startswith(".partial-")] == []
