"""Diarization quality and speed of the release's evaluation, on the full-size synthetic
checkpoint, in one run:

1. Default and NvidiaHigh at fp16, palettized6 and palettized4 (`--compressions`), each
   diarizing the shipped conversation through NeMo's streaming loop, scored against the ground
   truth, NeMo and the fp16 twin: `sortformer-build --multirun ... evaluate=conversation
   hydra/launcher=basic` runs one job at a time, so each evaluation has the machine's cores, as a
   single job does. Prints, from the manifests, the DER figures and the real-time factor
   (processing seconds per audio second, audio loading to RTTM; below 1 is faster than real time)
   of NeMo and of the executor (float16 mode) on the same recording in the same job.
2. A folder of several recordings (slices of the conversation) diarized by the Default fp16
   package from step 1, one recording after another in this process, then side by side by worker
   processes (as a job does when it has the cores): wall seconds of each and the speed-up.

    .venv/bin/python benchmarks/evaluate.py [--work DIR] [--compressions fp16] [-- extra overrides]

The checkpoint is the full-size synthetic v2.1 one with its speaker logits centred on the
conversation (made here first, not timed): raw random weights keep every speaker on throughout,
which any package matches. Parity checks are off: this measures the diarization. Random weights
diarize nothing real: their DER against the ground truth is no property of the conversion; the
DER against NeMo is.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

from results import Results

from sortformer_build import text
from sortformer_build.records.manifest import Manifest

SCRIPT = str(Path(sys.executable).with_name("sortformer-build"))
VARIANTS = "default,nvidia_high"
COMPRESSIONS = "fp16,palettized6,palettized4"
# The folder of step 2: (start, seconds) slices of the 46.8 s conversation.
SLICES = ((0.0, 24.0), (8.0, 24.0), (16.0, 24.0), (22.8, 24.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("outputs/benchmark-evaluate"))
    parser.add_argument("--compressions", default=COMPRESSIONS, help=f"of step 1 (default {COMPRESSIONS})")
    parser.add_argument("overrides", nargs="*", help="extra overrides, e.g. evaluate.collar=0")
    arguments = parser.parse_args()
    results = Results("evaluate")
    work = arguments.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = lively_checkpoint(work)
    command = [
        SCRIPT,
        "--multirun",
        f"variant={VARIANTS}",
        f"compression={arguments.compressions}",
        "checkpoint=local",
        f"checkpoint.path={checkpoint}",
        "evaluate=conversation",
        # Centred logits put many of the parity cases' probabilities near 0.5, where fp16 error
        # flips decisions and the release gates (made for NVIDIA's weights) refuse the package.
        "verify.parity=false",
        "hydra/launcher=basic",
        f"cache_dir={work / 'cache'}",
        f"output_dir={work / 'release'}",
        *arguments.overrides,
    ]
    print(" ".join(command), flush=True)
    started = time.perf_counter()
    with (work / "sweep.log").open("w") as log:
        returncode = subprocess.run(command, cwd=work, stdout=log, stderr=subprocess.STDOUT).returncode
    if returncode != 0:
        sys.exit(f"the sweep failed (exit {returncode}); see {work / 'sweep.log'}")
    results.table(
        f"DER and real-time factors on the conversation (sweep: {time.perf_counter() - started:.0f} s)",
        ["artifact", "DER vs ground truth", "DER vs NeMo", "vs fp16 twin", "RTF package", "RTF NeMo"],
        [_row(path.parent.name, Manifest.read(path)) for path in sorted((work / "release").glob("*/*.json"))],
    )
    side_by_side(work, checkpoint, results)
    results.write()


def side_by_side(work: Path, checkpoint: Path, results: Results) -> None:
    """Step 2: the folder serially in this process, then by worker processes."""
    import soundfile

    from sortformer_build.checkpoint.sources import Checkpoint, load_model
    from sortformer_build.config import EvaluationBackend, ExecutorPrecision, PostProcessingConfig
    from sortformer_build.coreml.targets import DeploymentTarget
    from sortformer_build.cores import usable_cores
    from sortformer_build.evaluate.audio import load_audio
    from sortformer_build.evaluate.backends import package_backend
    from sortformer_build.evaluate.conversation import DATA_DIR, NAME
    from sortformer_build.evaluate.datasets import Dataset, Recording
    from sortformer_build.evaluate.diarize import diarize
    from sortformer_build.evaluate.parallel import recording_workers
    from sortformer_build.evaluate.scoring import compare
    from sortformer_build.evaluate.segments import resolve_postprocessing
    from sortformer_build.executor import load_package
    from sortformer_build.geometry import StreamingGeometry
    from sortformer_build.verify.reference import SAMPLE_RATE, mel_features

    folder = work / "folder"
    folder.mkdir(exist_ok=True)
    audio = load_audio(DATA_DIR / f"{NAME}.flac")
    recordings = []
    for index, (start, seconds) in enumerate(SLICES):
        path = folder / f"slice{index}.wav"
        soundfile.write(
            path, audio[round(start * SAMPLE_RATE) :][: round(seconds * SAMPLE_RATE)], SAMPLE_RATE
        )
        recordings.append(Recording(name=path.stem, audio=path))
    dataset = Dataset("slices", tuple(recordings))
    package = work / "release" / "fp16" / "Sortformer_v2.1.mlpackage"
    geometry = StreamingGeometry.from_metadata(load_package(package).metadata)
    model = load_model(Checkpoint(checkpoint, "", "local", str(checkpoint)))
    features = lambda samples: mel_features(model, samples)  # noqa: E731
    postprocessing = resolve_postprocessing(PostProcessingConfig())
    backend = package_backend(
        package, geometry, 512, EvaluationBackend.executor, ExecutorPrecision.float16, DeploymentTarget.iOS17
    )
    total = sum(seconds for _, seconds in SLICES)
    workers = recording_workers(len(recordings))
    title = f"{len(recordings)} recordings, {total:.0f} s of audio, Default fp16 package, float16 executor"
    alone = dataclasses.replace(backend, recipe=None)  # no recipe: diarized in this process
    started = time.perf_counter()
    serial = diarize(alone, dataset, features, postprocessing, work / "serial")
    serial_seconds = time.perf_counter() - started
    started = time.perf_counter()
    parallel = diarize(backend, dataset, features, postprocessing, work / "side-by-side")
    parallel_seconds = time.perf_counter() - started
    agreement = compare(parallel.rttms, serial.rttms, 0.0, False, parallel.regions).overall.der
    runs = (
        (f"one after another, {usable_cores()} threads", serial_seconds),
        (f"side by side, {workers} workers", parallel_seconds),
    )
    results.table(
        title,
        ["run", "wall", "real-time factor (wall)"],
        [[run, f"{seconds:.1f} s", f"{seconds / total:.3f}"] for run, seconds in runs],
    )
    speed_up = serial_seconds / parallel_seconds
    results.note(f"Speed-up {speed_up:.2f}x; DER of one run against the other {agreement:.2%}.")


def lively_checkpoint(work: Path) -> Path:
    from sortformer_build.checkpoint.sources import load_model, resolve_checkpoint
    from sortformer_build.checkpoint.synthetic import center_speaker_logits
    from sortformer_build.config import CheckpointConfig, CheckpointSource
    from sortformer_build.evaluate.audio import load_audio
    from sortformer_build.evaluate.backends import nemo_backend
    from sortformer_build.evaluate.conversation import DATA_DIR, NAME
    from sortformer_build.geometry import StreamingGeometry
    from sortformer_build.store.layout import CacheLayout
    from sortformer_build.verify.reference import mel_features

    path = work / "lively-v2.1.nemo"
    if path.exists():
        return path
    print("Centring the synthetic checkpoint's speaker logits on the conversation (not timed)", flush=True)
    synthetic = CheckpointConfig(source=CheckpointSource.synthetic)
    model = load_model(resolve_checkpoint(synthetic, "v2.1", CacheLayout(work / "cache")))
    default = StreamingGeometry(6, 1, 7, 40, 188, 31)
    audio = load_audio(DATA_DIR / f"{NAME}.flac")
    # Centred only: the synthetic checkpoint's speaker layer is already scaled to decisive outputs.
    preds = nemo_backend(model, default).predict(mel_features(model, audio))
    center_speaker_logits(model, preds, sharpen=1.0)
    model.save_to(str(path))
    return path


def _row(folder: str, manifest: Manifest) -> list[str]:
    (record,) = manifest.evaluations
    cells = [
        f"{folder}/{manifest.variant.file_name}",
        text.percent(None if record.der_vs_truth is None else record.der_vs_truth.der),
        text.percent(record.der_vs_nemo.der),
        text.points(record.der_change_vs_fp16_pp),
        f"{record.real_time_factor:.3f}",
        f"{record.nemo_real_time_factor:.3f}",
    ]
    return cells


if __name__ == "__main__":
    main()
