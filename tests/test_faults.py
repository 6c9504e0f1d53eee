"""The fault matrix: a build, a two-worker joblib sweep and a publish killed (SIGKILL, no cleanup)
at every named fault point (`sortformer_build.faults`), each followed by the same command again.

Every killed run is checked at once: it exits on the signal (a build, a publish, a sweep killed
in its launcher) or lists the job as failed (a sweep whose worker died); the fault point was
reached; nothing at a final path differs from what a clean run leaves there; no cache entry a
reader would accept differs from the clean run's. After the last run of each chain: it succeeds,
its packages, manifests and RTTMs are the clean run's, and nothing stays in the temporary folder,
the scratch folder, beside the artifacts, or held.

A build's points are killed in pipeline order in one folder, each run being both the rerun of the
previous kill (it must get past that point, rebuilding what was left unfinished) and the run
killed at the next point; the last run has no fault and must succeed. A kill at point N therefore
also meets whatever kills 1..N-1 left behind. A sweep's points are each killed in a folder of
their own, then rerun there: a kill stops only the worker that reaches the point, and the other
job goes on past it, building what the later points of a chain would have written. Builds and
publishes run forked from a process that has imported the libraries already (`tests.forked`);
sweeps through the console script.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from hydra_plugins.sortformer_build_launcher.parallel_launcher import LOST
from sortformer_build import faults

from .conftest import Run
from .outcomes import cache_problems, final_problems, final_state, held_locks, leftovers
from .reference import (
    BUILD,
    PUBLISH,
    SWEEP,
    Clean,
    Folders,
    Runner,
    again,
    build,
    folders_in,
    publish,
    staged_packages,
    sweep,
)

PIPELINE = (
    "cache.programs",
    "cache.luts",
    "cache.mixed-analysis",
    "cache.palettize",
    "cache.nemo-reference",
    "cache.fp16-outputs",
    "rttm.write",
    "cache.nemo-diarization",
    "cache.diarization",
    "deliver.between-files",
    "deliver.before-manifest",
)
BUILD_CHAIN = PIPELINE
# The sweep's jobs are fp16 and uniform 6 bits: no mixed-bit analysis.
SWEEP_CHAIN = (*(point for point in PIPELINE if point != "cache.mixed-analysis"), "matrix.write")
AGAIN_CHAIN = ("deliver-evaluation.before-manifest",)
PUBLISH_CHAIN = ("hub.tree",)
MODES = ("build", "sweep", "publish")


def test_every_fault_point_is_reachable_and_in_the_matrix(clean: Clean) -> None:
    assert clean.reached == set(faults.POINTS)
    chains = {*BUILD_CHAIN, *SWEEP_CHAIN, *AGAIN_CHAIN, *PUBLISH_CHAIN}
    assert chains == set(faults.POINTS)
    cached = {faults.cache_point(stage) for stage in faults.CACHED_STAGES}
    assert cached <= set(BUILD_CHAIN) and cached - {"cache.mixed-analysis"} <= set(SWEEP_CHAIN)


@dataclass
class Case:
    mode: str
    point: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Chain:
    """One command killed at each point in turn in a folder, then run to the end there."""

    mode: str
    runner: Runner
    args: tuple[str, ...]
    killed: Callable[[Run, str], str | None]  # why the run does not look killed at the point, or None
    reference: Path  # the clean run's cache

    def __call__(self, folders: Folders, points: tuple[str, ...], clean_state: dict[str, str]) -> list[Case]:
        cases = []
        trace = folders.work / "trace"
        for point in points:
            trace.unlink(missing_ok=True)
            started = time.monotonic()
            run = self.runner(
                folders,
                *self.args,
                env=folders.env(**{faults.FAULT_VARIABLE: point, faults.TRACE_VARIABLE: str(trace)}),
            )
            case = Case(self.mode, point, seconds=time.monotonic() - started)
            why = self.killed(run, point)
            if why is not None:
                case.problems.append(f"{why}: {run.output[-1500:]}")
            if point not in (trace.read_text().split() if trace.exists() else []):
                case.problems.append("the point was not reached")
            case.problems += final_problems(folders.output, clean_state)
            case.problems += cache_problems(folders.cache, self.reference)
            cases.append(case)
        trace.unlink(missing_ok=True)
        started = time.monotonic()
        last = self.runner(folders, *self.args, env=folders.env())
        case = Case(self.mode, "(rerun)", seconds=time.monotonic() - started)
        if last.returncode != 0:
            case.problems.append(f"the rerun failed: {last.output[-2000:]}")
        state = final_state(folders.output)
        if {k: v for k, v in state.items() if "matrix" not in k} != {
            k: v for k, v in clean_state.items() if "matrix" not in k
        }:
            case.problems.append(
                f"the rerun's artifacts differ from the clean run's: {state} != {clean_state}"
            )
        case.problems += cache_problems(folders.cache, self.reference)
        case.problems += leftovers(folders.work / "outputs", folders.cache, folders.temp)
        case.problems += held_locks(folders.work / "outputs", folders.cache)
        cases.append(case)
        return cases


def _exits_on_the_signal(run: Run, point: str) -> str | None:
    return None if run.returncode == -9 else f"exit {run.returncode}, not killed"


def _sweep_lists_the_job_as_failed(run: Run, point: str) -> str | None:
    if point == "matrix.write":  # the launcher itself is killed
        return _exits_on_the_signal(run, point)
    if run.returncode != 1 or LOST not in run.stderr or "jobs failed" not in run.stderr:
        return f"exit {run.returncode} without the killed job listed as failed"
    return None


def _command_chains(
    chain: Chain,
    chains: Sequence[tuple[Folders, tuple[str, ...]]],
    states: tuple[dict[str, str], dict[str, str]],
) -> list[Case]:
    """`chain`'s command killed at each point of each (folders, points) pair in turn; then, in the
    last folders, again on a second dataset (only the evaluation is delivered) killed at the
    evaluation-only points."""
    cases = [case for folders, points in chains for case in chain(folders, points, states[0])]
    last = chains[-1][0]
    return cases + replace(chain, args=(*chain.args, *again(last)))(last, AGAIN_CHAIN, states[1])


def _build_chains(clean: Clean, root: Path, checkpoints: Path) -> list[Case]:
    folders = folders_in(root, checkpoints)
    chain = Chain("build", build, BUILD, _exits_on_the_signal, clean.build.cache)
    return _command_chains(chain, [(folders, BUILD_CHAIN)], (clean.build_state, clean.build_again_state))


def _sweep_chains(clean: Clean, root: Path, checkpoints: Path) -> list[Case]:
    chains = [(folders_in(root / point, checkpoints), (point,)) for point in SWEEP_CHAIN]
    chain = Chain("sweep", sweep, SWEEP, _sweep_lists_the_job_as_failed, clean.sweep.cache)
    return _command_chains(chain, chains, (clean.sweep_state, clean.sweep_again_state))


def _publish_chain(clean: Clean, folders: Folders) -> list[Case]:
    """Publishing a finished sweep's release (a copy of the clean sweep's output folder): its
    staged tree is a final path too."""
    shutil.copytree(clean.sweep.output, folders.output, ignore=shutil.ignore_patterns(".publish"))
    publishing = Chain("publish", publish, PUBLISH, _exits_on_the_signal, clean.sweep.cache)
    cases = publishing(folders, PUBLISH_CHAIN, clean.sweep_again_state)
    # The staged tree holds the same packages, byte for byte, as a clean publish of the same models.
    if staged_packages(folders) != clean.published:
        cases[-1].problems.append("the staged packages differ from a clean publish's")
    return cases


def _judge(cases: list[Case], capsys: pytest.CaptureFixture[str]) -> None:
    kills = [case for case in cases if case.point != "(rerun)"]
    summary = [
        f"fault matrix: {len(kills)} kills at {len({case.point for case in kills})} points "
        f"({', '.join(f'{mode} {sum(c.mode == mode for c in kills)}' for mode in MODES)}), "
        f"{sum(not case.problems for case in cases)} of {len(cases)} runs without a problem",
        *(f"  {case.mode} {case.point}: {case.seconds:.0f} s" for case in cases),
        *(
            f"  PROBLEM {case.mode} {case.point}: {problem[:400]}"
            for case in cases
            for problem in case.problems
        ),
    ]
    with capsys.disabled():
        print("\n" + "\n".join(summary), file=sys.stderr)
    assert [(case.mode, case.point, case.problems) for case in cases if case.problems] == []


def test_a_build_and_a_publish_killed_at_every_point_and_run_again(
    clean: Clean, tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every point but the sweep's own (`matrix.write`, in the exhaustive tier)."""
    built = _build_chains(clean, tmp_path / "build", tiny_checkpoint.parent)
    _judge(built + _publish_chain(clean, folders_in(tmp_path / "publish", tiny_checkpoint.parent)), capsys)


@pytest.mark.exhaustive
def test_a_two_worker_sweep_killed_at_every_point_and_run_again(
    clean: Clean, tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _judge(_sweep_chains(clean, tmp_path, tiny_checkpoint.parent), capsys)
