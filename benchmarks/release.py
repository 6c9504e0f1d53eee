"""The release (every variant option, fp16 and palettized6) from the full-size synthetic
checkpoints, in one run:

- cold: the headline command as a user types it (`sortformer-build --multirun 'variant=glob(*)'
  compression=fp16,palettized6`, no launcher override, verification on), empty build cache;
- warm: the same command again, nothing changed;
- cold without verification (`verify.parity=false`): the reference's work;
- reference-style: one fresh process per model, no cache, each restoring the checkpoint,
  tracing, converting (fp16), saving the fp16 package, palettizing with coremltools' own 6-bit
  k-means and saving that: the project's library functions, not its CLI.

    .venv/bin/python benchmarks/release.py [--work DIR] [-- extra overrides]

Prints and keeps (benchmarks/results/) the release table, where the cold time goes (per-stage
seconds summed over the jobs' manifests), the peak RSS of the largest job process, and where the
cold sweep's last minutes went (the stretch at its end with fewer jobs running than workers, from the jobs'
status files). The synthetic checkpoints are made beforehand and not timed: a real release reads
its weights from the Hugging Face cache. Targets on a 2-core machine: cold >= 3x faster than
reference-style, >= 5x without verification, warm <= 10 s, no job above 4 GB peak RSS.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from results import Results

from sortformer_build.cli.app import register_schemas
from sortformer_build.config import BuildConfig
from sortformer_build.kinds import kind_of
from sortformer_build.records.manifest import Manifest

SCRIPT = str(Path(sys.executable).with_name("sortformer-build"))
GB = 1e9


def release_configs(work: Path) -> list[BuildConfig]:
    """Every variant option, composed by Hydra as the CLI would, with the synthetic checkpoint."""
    register_schemas()
    with initialize_config_module("sortformer_build.conf", version_base="1.3"):
        from hydra.core.global_hydra import GlobalHydra

        variants = GlobalHydra.instance().config_loader().get_group_options("variant")
        overrides = [
            "checkpoint=synthetic",
            f"cache_dir={work / 'cache'}",
            f"output_dir={work / 'reference'}",
        ]
        configs = [
            OmegaConf.to_object(compose("build", [f"variant={name}", *overrides])) for name in variants
        ]
    return [config for config in configs if isinstance(config, BuildConfig)]


class PeakRss:
    """Samples the high-water RSS (VmHWM) of a process tree from /proc, per process."""

    def __init__(self, root: int) -> None:
        self.root, self._stop = root, threading.Event()
        self.peaks: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> dict[int, int]:
        self._stop.set()
        self._thread.join()
        return self.peaks

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pid in self._tree():
                peak = _vm_hwm(pid)
                if peak:
                    self.peaks[pid] = max(peak, self.peaks.get(pid, 0))

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = defaultdict(list)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children[int(fields[1])].append(int(stat.parent.name))
        tree, queue = [], [self.root]
        while queue:
            pid = queue.pop()
            tree.append(pid)
            queue.extend(children[pid])
        return tree


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sweep(work: Path, extra: list[str], log_name: str) -> tuple[float, int]:
    """Run the release sweep; return its wall seconds and the largest process peak RSS."""
    command = [
        SCRIPT,
        "--multirun",
        "variant=glob(*)",
        "compression=fp16,palettized6",
        "checkpoint=synthetic",
        f"cache_dir={work / 'cache'}",
        f"output_dir={work / 'release'}",
        *extra,
    ]
    with (work / log_name).open("w") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        sampler = PeakRss(process.pid)
        returncode = process.wait()
        seconds = time.perf_counter() - started
    peaks = sampler.stop()
    if returncode != 0:
        sys.exit(f"the sweep failed (exit {returncode}); see {work / log_name}")
    return seconds, max(peaks.values(), default=0)


def reference_style(work: Path, configs: list[BuildConfig]) -> tuple[float, int, dict[str, float]]:
    """One fresh process per model, in turn; each child's peak RSS comes from wait4."""
    stages: dict[str, float] = defaultdict(float)
    peak = 0
    started = time.perf_counter()
    for config in configs:
        log = work / f"reference-{config.variant.name}.log"
        with tempfile.NamedTemporaryFile("r", suffix=".json") as report, log.open("w") as output:
            arguments = ["--work", str(work), "--reference-model", config.variant.name, report.name]
            # coremltools keeps its temporary packages until a process exits, and a one-off
            # script's process exits without removing them: keep them in the work folder.
            scratch = work / "reference-tmp"
            scratch.mkdir(exist_ok=True)
            env = {**os.environ, "TMPDIR": str(scratch)}
            child = subprocess.Popen(
                [sys.executable, __file__, *arguments], stdout=output, stderr=output, env=env
            )
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.returncode != 0:
                sys.exit(f"the reference-style build of {config.variant.name} failed")
            for stage, seconds in json.loads(Path(report.name).read_text()).items():
                stages[stage] += seconds
        peak = max(peak, usage.ru_maxrss * 1024)
        shutil.rmtree(work / "reference-tmp", ignore_errors=True)
    return time.perf_counter() - started, peak, dict(stages)


def reference_model(config: BuildConfig, report: Path) -> None:
    """The release's two artifacts of one model, built the way a one-off script would."""
    from sortformer_build.checkpoint.sources import load_model, resolve_checkpoint

    seconds: dict[str, float] = {}

    def timed(stage: str, work: Any) -> Any:
        started = time.perf_counter()
        result = work()
        seconds[stage] = time.perf_counter() - started
        return result

    checkpoint = resolve_checkpoint(config.checkpoint, config.variant.version, config.cache_layout)
    # A one-off script has a code path per kind of model.
    script = {"streaming": reference_streaming, "offline": reference_offline}[
        kind_of(config.variant.geometry).name
    ]
    with tempfile.TemporaryDirectory() as scratch:
        model = timed("restore", lambda: load_model(checkpoint))
        script(model, config, Path(scratch), timed)
    report.write_text(json.dumps(seconds))


def reference_streaming(model: Any, config: BuildConfig, folder: Path, timed: Any) -> None:
    from sortformer_build.coreml.convert import assemble_pipeline, convert_programs
    from sortformer_build.coreml.export import trace
    from sortformer_build.coreml.layout import ProgramFiles
    from sortformer_build.geometry import StreamingGeometry

    geometry, name, out = config.variant.geometry, config.variant.file_name, Path(config.output_dir)
    assert isinstance(geometry, StreamingGeometry), "dispatched by the variant's kind"
    traced = timed("trace", lambda: trace(model, geometry))
    programs = timed("convert", lambda: convert_programs(traced, config.deployment_target, folder))
    timed("save fp16", lambda: assemble_pipeline(programs, geometry, {}, _new(out / "fp16" / name)))
    small = ProgramFiles(programs.pre_encoder, folder / "head-palettized.mlpackage")
    timed("palettize", lambda: coremltools_palettize(programs.head, small.head))
    timed("save palettized", lambda: assemble_pipeline(small, geometry, {}, _new(out / "palettized" / name)))


def reference_offline(model: Any, config: BuildConfig, folder: Path, timed: Any) -> None:
    import numpy as np

    from sortformer_build import contract
    from sortformer_build.coreml.convert import convert_program, describe_offline
    from sortformer_build.coreml.export import trace_window
    from sortformer_build.coreml.layout import SUBSAMPLING_WEIGHTS
    from sortformer_build.geometry import OfflineGeometry

    variant, out = config.variant, Path(config.output_dir)
    geometry = variant.geometry
    assert isinstance(geometry, OfflineGeometry), "dispatched by the variant's kind"
    program, small = folder / "offline.mlpackage", folder / "offline-palettized.mlpackage"
    traced = timed("trace", lambda: trace_window(model, geometry))
    outputs = {contract.OFFLINE_PREDS: np.float32}
    timed("convert", lambda: convert_program(traced, outputs, config.deployment_target, {}, program))
    save = partial(describe_offline, geometry=geometry, version=variant.version, metadata={})
    timed("save fp16", lambda: save(program, destination=_new(out / "fp16" / variant.file_name)))
    timed("palettize", lambda: coremltools_palettize(program, small, keep_prefix=SUBSAMPLING_WEIGHTS))
    timed("save palettized", lambda: save(small, destination=_new(out / "palettized" / variant.file_name)))


def coremltools_palettize(program: Path, destination: Path, keep_prefix: str | None = None) -> None:
    """What a reference script does: coremltools' own 6-bit k-means through its public API
    (the weights named with `keep_prefix` left fp16, as the release does)."""
    import coremltools as ct
    from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig, palettize_weights

    model = ct.models.MLModel(str(program), skip_model_load=True)
    kept = {}
    if keep_prefix is not None:
        from sortformer_build.coreml.palettize import load_program

        consts = load_program(program).functions["main"].find_ops(op_type="const")
        kept = {op.name: None for op in consts if op.name.startswith(keep_prefix)}
    config = OptimizationConfig(
        global_config=OpPalettizerConfig(mode="kmeans", nbits=6, granularity="per_tensor"),
        op_name_configs=kept,
    )
    palettize_weights(model, config).save(str(destination))


def _new(stem: Path) -> Path:
    package = stem.parent / f"{stem.name}.mlpackage"
    package.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(package, ignore_errors=True)
    return package


def cold_stages(release: Path) -> tuple[dict[str, float], set[str]]:
    """Seconds per stage (and stage part) summed over the published manifests, and the
    palettization engines."""
    stages: dict[str, float] = defaultdict(float)
    engines = set()
    for path in release.glob("*/*.json"):
        manifest = Manifest.read(path)
        for stage, seconds in manifest.seconds.items():
            stages[stage] += seconds
        if not manifest.compression.is_fp16:
            engines.add(manifest.config.compression.engine.value)
    return dict(stages), engines


def sweep_timeline(work: Path) -> list[tuple[float, float, str]]:
    """(start, end, job) of the latest sweep run in `work`, in seconds from its first job's start;
    a job's status file is written when it ends, and holds how long it ran."""
    sweep = sorted((work / "outputs" / ".hydra-runs").glob("multirun-*"))[-1]
    from sortformer_build.records.status import JOB_STATUS_FILE, JobStatus

    jobs = []
    for path in sweep.glob(f"*/{JOB_STATUS_FILE}"):
        status = JobStatus.read(path)
        end = path.stat().st_mtime
        jobs.append((end - status.seconds, end, f"{status.compression}/{status.variant}"))
    first = min(start for start, _, _ in jobs)
    return sorted((start - first, end - first, name) for start, end, name in jobs)


def tail_note(timeline: list[tuple[float, float, str]], workers: int) -> str:
    """Where the sweep's last minutes went: the stretch at its end with fewer jobs running than
    workers, the jobs running then, and the worker-seconds left idle."""
    edges = sorted({time for start, end, _ in timeline for time in (start, end)})
    tail_start, idle = edges[-1], 0.0
    for begin, finish in reversed(list(itertools.pairwise(edges))):
        running = sum(1 for start, end, _ in timeline if start < finish and end > begin)
        if running >= workers:
            break
        tail_start, idle = begin, idle + (workers - running) * (finish - begin)
    total = edges[-1]
    late = [
        f"{name} ({end - max(start, tail_start):.0f} s of it)"
        for start, end, name in timeline
        if end > tail_start
    ]
    return (
        f"The sweep took {total:.0f} s; in its last {total - tail_start:.0f} s fewer than {workers} jobs ran "
        f"({idle:.0f} worker-seconds idle): {', '.join(late)}."
    )


def _workers(log: Path) -> int:
    """The worker count the launcher chose, from the line it logs when the sweep starts."""
    found = re.search(r"in (\d+) worker processes", log.read_text())
    if found is None:
        raise SystemExit(f"{log}: no 'Launching N jobs in W worker processes' line; was the sweep parallel?")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sortformer-build-benchmark",
        help="scratch folder, kept for inspection (checkpoints are reused between runs)",
    )
    parser.add_argument("--reference-model", nargs=2, metavar=("VARIANT", "REPORT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "overrides", nargs="*", help="extra overrides for both sweeps, e.g. verify.parity=false"
    )
    arguments = parser.parse_args()
    work = arguments.work.resolve()
    configs = release_configs(work)
    if arguments.reference_model:
        variant, report_path = arguments.reference_model
        reference_model(next(c for c in configs if c.variant.name == variant), Path(report_path))
        return

    results = Results("release")
    print(f"Making the full-size synthetic checkpoints (not timed) in {work / 'cache'}", flush=True)
    from sortformer_build.checkpoint.sources import resolve_checkpoint

    for config in configs:
        resolve_checkpoint(config.checkpoint, config.variant.version, config.cache_layout)
    for folder in ("cache/build", "cache/package-digests", "release", "reference"):
        shutil.rmtree(work / folder, ignore_errors=True)

    extra = arguments.overrides
    print("Cold release sweep, as typed...", flush=True)
    cold, cold_peak = sweep(work, extra, "cold.log")
    workers = _workers(work / "cold.log")
    tail = tail_note(sweep_timeline(work), workers)
    print("Warm release sweep...", flush=True)
    warm, _ = sweep(work, extra, "warm.log")
    stages, engines = cold_stages(work / "release")
    print(
        "Cold release sweep without parity (the reference's work: build, no numerical check)...", flush=True
    )
    for folder in ("cache/build", "cache/package-digests", "release"):
        shutil.rmtree(work / folder, ignore_errors=True)
    unverified, _ = sweep(work, [*extra, "verify.parity=false"], "cold-no-parity.log")
    print(f"Reference-style release ({len(configs)} fresh processes)...", flush=True)
    reference, reference_peak, reference_stages = reference_style(work, configs)
    report(
        results,
        arguments,
        workers,
        len(configs),
        (cold, warm, unverified, reference),
        cold_peak,
        reference_peak,
        stages,
        reference_stages,
        engines,
    )
    results.note(f"The cold sweep's last minutes: {tail}")
    results.write()


def report(
    results: Results,
    arguments: argparse.Namespace,
    workers: int,
    models: int,
    times: tuple[float, float, float, float],
    cold_peak: int,
    reference_peak: int,
    stages: dict[str, float],
    reference_stages: dict[str, float],
    engines: set[str],
) -> None:
    cold, warm, unverified, reference = times
    overrides = " ".join(arguments.overrides) or "none"
    results.note(
        f"Palettization engine of the sweeps: {', '.join(sorted(engines))}; extra overrides: {overrides}"
    )
    rows = [
        (f"cold sweep as typed (empty build cache, {workers} workers)", f"{cold:.1f} s", ""),
        ("warm sweep (unchanged, same command)", f"{warm:.1f} s", "target <= 10 s"),
        (
            f"reference-style ({models} fresh processes, no cache, coremltools k-means)",
            f"{reference:.1f} s",
            "",
        ),
        ("cold speed-up over reference-style", f"{reference / cold:.2f}x", "target >= 3x"),
        ("cold sweep without parity (verify.parity=false)", f"{unverified:.1f} s", ""),
        ("  its speed-up over reference-style (same work)", f"{reference / unverified:.2f}x", "target >= 5x"),
        ("peak RSS, largest sweep process (cold)", f"{cold_peak / GB:.2f} GB", "target <= 4 GB"),
        ("peak RSS, largest reference-style process", f"{reference_peak / GB:.2f} GB", ""),
    ]
    results.table("The release", ["measure", "value", "target"], [list(row) for row in rows])
    names = sorted(
        set(stages) | set(reference_stages), key=lambda n: -max(stages.get(n, 0), reference_stages.get(n, 0))
    )
    results.table(
        "Where the time goes (seconds per step, summed over jobs or processes)",
        ["step", "cold sweep", "reference-style"],
        [[name, f"{stages.get(name, 0):.1f}", f"{reference_stages.get(name, 0):.1f}"] for name in names],
    )


if __name__ == "__main__":
    main()
