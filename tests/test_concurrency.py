"""Sweeps at once on the same output and cache folders: two started together from the same folder,
and a third with the cache off. All end; the packages are a serial sweep's; the matrix left at
the end is one sweep's whole table, its markdown and JSON from the same sweep; no lock is left
held and nothing is left behind."""

from __future__ import annotations

import shlex
from pathlib import Path

from sortformer_build.records.matrix import ReleaseMatrix

from .conftest import run_cli, start_cli
from .outcomes import final_state, held_locks, leftovers

SWEEP = (
    "--multirun",
    "variant=default",
    "compression=fp16,palettized6",
    "checkpoint=tiny",
    "verify.parity=false",
)
PARALLEL = "hydra.launcher.n_jobs=2"


def _packages(output: Path) -> dict[str, str]:
    return {path: digest for path, digest in final_state(output).items() if path.endswith(".mlpackage")}


def test_two_sweeps_and_one_without_cache_at_once(tmp_path: Path, tiny_checkpoint: Path) -> None:
    def cache(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "checkpoints").symlink_to(tiny_checkpoint.parent, target_is_directory=True)
        return folder

    serial_work, work, temp = tmp_path / "serial", tmp_path / "work", tmp_path / "temp"
    for folder in (serial_work, work, temp):
        folder.mkdir()
    serial = run_cli(*SWEEP, "hydra/launcher=basic", f"cache_dir={cache('serial-cache')}", cwd=serial_work)
    assert serial.returncode == 0, serial.output[-3000:]

    shared = cache("cache")
    # A budget no build reaches tells the sweeps apart in the matrix's command line.
    commands = {
        "first": [*SWEEP, PARALLEL, f"cache_dir={shared}", "cache_max_gb=20"],
        "second": [*SWEEP, PARALLEL, f"cache_dir={shared}", "cache_max_gb=21"],
        "uncached": [*SWEEP, PARALLEL, f"cache_dir={shared}", "cache=false"],
    }
    started = {
        name: start_cli(*args, cwd=work, log=work / f"{name}.log", env={"TMPDIR": str(temp)})
        for name, args in commands.items()
    }
    codes = {name: process.wait(timeout=1800) for name, process in started.items()}
    outputs = {name: (work / f"{name}.log").read_text()[-3000:] for name in commands}
    assert codes == dict.fromkeys(commands, 0), outputs

    output = work / "outputs" / "tiny"
    assert _packages(output) == _packages(serial_work / "outputs" / "tiny")
    # Each sweep ran in its own Hydra folder, even started in the same second.
    assert len(list((work / "outputs" / ".hydra-runs").glob("multirun-*"))) == 3
    matrix = ReleaseMatrix.read(output / "matrix.json")
    assert len(matrix.rows) == 2 and all(row.status.ok for row in matrix.rows)
    assert matrix.command in {shlex.join(["sortformer-build", *args]) for args in commands.values()}
    table = (output / "matrix.md").read_text()
    assert all(f"| {row.status.seconds:.1f} s |" in table for row in matrix.rows), table
    assert held_locks(work / "outputs", shared) == []
    assert leftovers(work / "outputs", shared, temp) == []
