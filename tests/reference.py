"""The reference runs the fault, integrity and fuzz tests compare with: a tiny NvidiaHigh build
with mixed bits (so that one build runs every cached stage, the mixed-bit analysis included)
evaluated on the shipped conversation, then on a copy of it (only the evaluation is delivered),
and a two-worker joblib sweep of fp16 and uniform 6 bits, the same way, published (dry run,
packages). Each runs once per session without a fault, traced: together they reach every fault
point."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sortformer_build import faults
from sortformer_build.evaluate import conversation
from sortformer_build.release.hub.tree import describe_files

from .conftest import Run, run_cli
from .forked import run_build, run_forked
from .outcomes import final_state

COMMON = ("checkpoint=tiny", "variant=nvidia_high", "evaluate=conversation")
BUILD = (*COMMON, "compression=mixed", "compression.budget_ratio=0.7")
SWEEP = ("--multirun", *COMMON, "compression=fp16,palettized6", "hydra.launcher.n_jobs=2")
# The same artifacts evaluated on a second dataset: only the evaluation is delivered.
AGAIN = ("evaluate=folder",)

PUBLISH = ("formats=[mlpackage]", "dry_run=true", "allow_synthetic=true", "allow_partial=true")


@dataclass
class Folders:
    work: Path
    cache: Path
    temp: Path
    dataset: Path

    @property
    def output(self) -> Path:
        return self.work / "outputs" / "tiny"

    def env(self, **extra: str) -> dict[str, str]:
        return {"TMPDIR": str(self.temp), **extra}


def folders_in(root: Path, checkpoints: Path) -> Folders:
    folders = Folders(root / "work", root / "cache", root / "temp", root / "dataset" / "copy")
    for folder in (folders.work, folders.cache, folders.temp, folders.dataset):
        folder.mkdir(parents=True)
    (folders.cache / "checkpoints").symlink_to(checkpoints, target_is_directory=True)
    for suffix in (".flac", ".rttm"):
        shutil.copy(conversation.DATA_DIR / f"{conversation.NAME}{suffix}", folders.dataset)
    return folders


Runner = Callable[..., Run]


def build(folders: Folders, *args: str, env: dict[str, str]) -> Run:
    return run_build(*args, f"cache_dir={folders.cache}", cwd=folders.work, env=env)


def sweep(folders: Folders, *args: str, env: dict[str, str]) -> Run:
    return run_cli(*args, f"cache_dir={folders.cache}", cwd=folders.work, env=env)


def publish(folders: Folders, *args: str, env: dict[str, str]) -> Run:
    return run_forked(
        "sortformer-build-publish", f"output_dir={folders.output}", *args, cwd=folders.work, env=env
    )


def again(folders: Folders) -> tuple[str, ...]:
    return (*AGAIN, f"evaluate.path={folders.dataset}")


def staged_packages(folders: Folders) -> list[tuple[str, str]]:
    staged = folders.output / ".publish"
    # Each package's Manifest.json holds identifiers coremltools draws at random.
    return [
        (file.path_in_repo, file.sha256)
        for file in describe_files(staged)
        if ".mlpackage/" in file.path_in_repo and not file.path_in_repo.endswith("/Manifest.json")
    ]


@dataclass
class Clean:
    build: Folders
    sweep: Folders
    build_state: dict[str, str]
    build_again_state: dict[str, str]
    sweep_state: dict[str, str]
    sweep_again_state: dict[str, str]
    published: list[tuple[str, str]]
    reached: set[str]


def traced(run: Callable[[dict[str, str]], Run], trace: Path, folders: Folders) -> Run:
    done = run(folders.env(**{faults.TRACE_VARIABLE: str(trace)}))
    assert done.returncode == 0, done.output[-3000:]
    return done


def make_clean(root: Path, checkpoints: Path) -> Clean:
    """Each command once without a fault: the reference for every case (and, traced, the proof
    that every fault point is reachable)."""
    trace = root / "trace"
    single, swept = folders_in(root / "build", checkpoints), folders_in(root / "sweep", checkpoints)
    traced(lambda env: build(single, *BUILD, env=env), trace, single)
    build_state = final_state(single.output)
    traced(lambda env: build(single, *BUILD, *again(single), env=env), trace, single)
    traced(lambda env: sweep(swept, *SWEEP, env=env), trace, swept)
    sweep_state = final_state(swept.output)
    traced(lambda env: sweep(swept, *SWEEP, *again(swept), env=env), trace, swept)
    traced(lambda env: publish(swept, *PUBLISH, env=env), trace, swept)
    return Clean(
        build=single,
        sweep=swept,
        build_state=build_state,
        build_again_state=final_state(single.output),
        sweep_state=sweep_state,
        sweep_again_state=final_state(swept.output),
        published=staged_packages(swept),
        reached=set(trace.read_text().split()),
    )
