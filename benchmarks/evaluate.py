"""Diarization quality and speed of the release's evaluation, on the full-size synthetic
checkpoint: Default and NvidiaHigh at fp16, palettized6 and palettized4, each diarizing the
shipped conversation through NeMo's streaming loop, scored against the ground truth, NeMo and
the fp16 twin.

    .venv/bin/python benchmarks/evaluate.py [--work DIR] [-- extra overrides]

The checkpoint is the full-size synthetic v2.1 one with its speaker logits centred on the
conversation (made here first, not timed): raw random weights keep every speaker on throughout,
which any package matches. Parity checks are off: this measures the diarization. Then
`sortformer-build --multirun ... evaluate=conversation hydra/launcher=basic` runs one job at a
time, so each evaluation has the machine's cores, as a single job does. Prints, from the
manifests, the DER figures and the real-time factor (processing seconds per audio second, audio
loading to RTTM; below 1 is faster than real time) of NeMo and of the executor (float16 mode).
Random weights diarize nothing real: their DER against the ground truth is no property of the
conversion; the DER against NeMo is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from sortformer_build import text
from sortformer_build.records.manifest import Manifest

SCRIPT = str(Path(sys.executable).with_name("sortformer-build"))
VARIANTS = "default,nvidia_high"
COMPRESSIONS = "fp16,palettized6,palettized4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("outputs/benchmark-evaluate"))
    parser.add_argument("overrides", nargs="*", help="extra overrides, e.g. evaluate.collar=0")
    arguments = parser.parse_args()
    work = arguments.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = lively_checkpoint(work)
    command = [
        SCRIPT,
        "--multirun",
        f"variant={VARIANTS}",
        f"compression={COMPRESSIONS}",
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
    print(f"sweep: {time.perf_counter() - started:.0f} s\n")
    print("| artifact | DER vs ground truth | DER vs NeMo | vs fp16 twin | RTF package | RTF NeMo |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in sorted((work / "release").glob("*/*.json")):
        print(_row(path.parent.name, Manifest.read(path)))


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


def _row(folder: str, manifest: Manifest) -> str:
    (record,) = manifest.evaluations
    cells = [
        f"{folder}/{manifest.variant.file_name}",
        text.percent(None if record.der_vs_truth is None else record.der_vs_truth.der),
        text.percent(record.der_vs_nemo.der),
        text.points(record.der_change_vs_fp16_pp),
        f"{record.real_time_factor:.3f}",
        f"{record.nemo_real_time_factor:.3f}",
    ]
    return f"| {' | '.join(cells)} |"


if __name__ == "__main__":
    main()
