"""Mixed-bit recipes against uniform bits, on the full-size synthetic checkpoint.

For Default and NvidiaHigh: the head's sensitivity analysis (timed; a second run reuses the one
saved in the work folder, as the build cache would), then packages at uniform 4, 6 and 8 bits
and mixed recipes under three budgets (the uniform 6-bit size, the size of every weight at 5
bits, the uniform 4-bit size). Each package is streamed by the executor (float16) through
NeMo's own loop over the shipped conversation and compared with NeMo on it: package size, max
and mean |dp|, decisions at 0.5 agreeing, and the DER of its diarization against NeMo's (collar
0.25 s, overlap scored). The output ends by saying, at equal size, whether the measured recipe
beats uniform bits here.

The checkpoint is the full-size synthetic one with two changes, made here first (not timed): its
Transformer layers, which NeMo initialises as copies of one layer (the converter then keeps one
set of weights for all 18, so no layer could get bits of its own), get weights of their own
(each layer's weights shuffled), and its speaker logits are centred on the conversation so that
decisions differ along it. Random weights are not NVIDIA's: which layers matter, and how much,
is a property of trained weights. These figures show whether measuring beats guessing on this
stand-in, not what the released models gain.

    .venv/bin/python benchmarks/compression.py [--work DIR] [--variants default nvidia_high]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from results import Results

from sortformer_build.compress.allocate import package_bytes, package_sizes
from sortformer_build.compress.recipe import choose_recipe, describe, tensor_bits, write_recipe
from sortformer_build.compress.sensitivity import analyse, streaming_inputs
from sortformer_build.coreml.layout import ProgramFiles
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.geometry import StreamingGeometry
from sortformer_build.records.mixed import (
    AnalysisCost,
    AnalysisSettings,
    PackageSizes,
    Sensitivity,
    TensorGroups,
)
from sortformer_build.store.cache import ArrayStore
from sortformer_build.text import MB

VARIANTS = {
    "default": StreamingGeometry(6, 1, 7, 40, 188, 31),
    "nvidia_high": StreamingGeometry(340, 1, 40, 40, 188, 300),
}
TARGET = DeploymentTarget.iOS17
UNIFORM = (8, 6, 4)
# (what the budget is, the uniform width whose package size it is)
BUDGETS = (("6-bit size", 6), ("5-bit size", 5), ("4-bit size", 4))
COLLAR = 0.25
SHUFFLE_SEED = 1


@dataclass(frozen=True)
class Row:
    name: str
    bytes: int
    predicted_mean_dp: float | None  # the analysis's sum over groups
    max_dp: float
    mean_dp: float
    agreement: float
    der_vs_nemo: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("outputs/benchmark-compression"))
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    arguments = parser.parse_args()
    # The analysis logs one line per group measured.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("coremltools", "nemo_logger", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    work = arguments.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = benchmark_model(work)
    mel = conversation_mel(model)
    luts = ArrayStore(work / "luts")
    results = Results("compression")
    results.note("Random weights are not NVIDIA's: these figures test the method, not the release.")
    for variant in arguments.variants:
        run_variant(model, variant, VARIANTS[variant], mel, luts, work / variant, results)
    results.write()


def run_variant(
    model: Any,
    variant: str,
    geometry: StreamingGeometry,
    mel: np.ndarray,
    luts: ArrayStore,
    folder: Path,
    results: Results,
) -> None:
    folder.mkdir(exist_ok=True)
    programs = converted(model, geometry, folder / "programs")
    sizes = package_sizes([programs.pre_encoder, programs.head], programs.head, None)
    groups, found = analysis(model, variant, geometry, programs, sizes, luts, folder, results)
    nemo = nemo_preds(model, geometry, mel, folder)
    d_model = int(model.encoder.d_model)
    rows = [judge("fp16", None, programs, geometry, d_model, mel, nemo, folder)]
    for bits in UNIFORM:
        row = judge(f"uniform {bits}-bit", bits, programs, geometry, d_model, mel, nemo, folder)
        rows.append(
            replace(row, predicted_mean_dp=sum(group.effects[bits].mean_dp for group in found.groups))
        )
    for label, bits in BUDGETS:
        budget = package_bytes(sizes, dict.fromkeys(sizes.tensors, bits))
        recipe = choose_recipe(found, budget)
        write_recipe(recipe, folder / f"recipe-{bits}bit-size.yaml")
        results.note(f"{variant}: mixed at the {label} ({budget / MB:.1f} MB): {describe(recipe)}")
        widths = tensor_bits(recipe, groups, TARGET)
        row = judge(f"mixed, {label}", widths, programs, geometry, d_model, mel, nemo, folder)
        rows.append(replace(row, predicted_mean_dp=recipe.predicted_mean_dp))
    print_table(variant, geometry, rows, results)
    print_verdict(variant, rows, results)


def benchmark_model(work: Path) -> Any:
    """The full-size synthetic checkpoint with Transformer layers of their own and centred speaker
    logits, made once and saved in the work folder."""
    from sortformer_build.checkpoint.sources import Checkpoint, load_model, resolve_checkpoint
    from sortformer_build.checkpoint.synthetic import center_speaker_logits
    from sortformer_build.config import CheckpointConfig, CheckpointSource
    from sortformer_build.evaluate.backends import nemo_backend
    from sortformer_build.store.layout import CacheLayout

    path = work / "benchmark-v2.1.nemo"
    if path.exists():
        return load_model(Checkpoint(path, "", "local", f"file {path}"))
    print("Making the benchmark checkpoint (not timed)", flush=True)
    synthetic = CheckpointConfig(source=CheckpointSource.synthetic)
    model = load_model(resolve_checkpoint(synthetic, "v2.1", CacheLayout(work / "cache")))
    shuffle_transformer_layers(model)
    preds = nemo_backend(model, VARIANTS["default"]).predict(conversation_mel(model))
    center_speaker_logits(model, preds, sharpen=1.0)
    model.save_to(str(path))
    return model


def shuffle_transformer_layers(model: Any) -> None:
    """Every Transformer layer after the first gets its matrices' values in a new order: the same
    distribution as NeMo's initialisation, no longer the same tensor as the first layer's."""
    import torch

    generator = torch.Generator().manual_seed(SHUFFLE_SEED)
    with torch.no_grad():
        for layer in list(model.transformer_encoder.layers)[1:]:
            for parameter in layer.parameters():
                if parameter.dim() > 1:
                    order = torch.randperm(parameter.numel(), generator=generator)
                    parameter.copy_(parameter.flatten()[order].view_as(parameter))


def conversation_mel(model: Any) -> np.ndarray:
    from sortformer_build.evaluate.audio import load_audio
    from sortformer_build.evaluate.conversation import DATA_DIR, NAME
    from sortformer_build.verify.reference import mel_features

    return mel_features(model, load_audio(DATA_DIR / f"{NAME}.flac"))


def converted(model: Any, geometry: StreamingGeometry, folder: Path) -> ProgramFiles:
    from sortformer_build.coreml.convert import convert_programs
    from sortformer_build.coreml.export import trace

    files = ProgramFiles.in_folder(folder)
    if not files.head.exists():
        folder.mkdir(parents=True, exist_ok=True)
        convert_programs(trace(model, geometry), TARGET, folder)
    return files


def analysis(
    model: Any,
    variant: str,
    geometry: StreamingGeometry,
    programs: ProgramFiles,
    sizes: PackageSizes,
    luts: ArrayStore,
    folder: Path,
    results: Results,
) -> tuple[TensorGroups, Sensitivity]:
    groups_file, sensitivity_file = folder / "groups.json", folder / "sensitivity.json"
    cost_file = folder / "cost.json"
    if groups_file.exists() and sensitivity_file.exists() and cost_file.exists():
        found, cost = Sensitivity.read(sensitivity_file), AnalysisCost.read(cost_file)
        results.note(f"{variant}: analysis reused from {sensitivity_file} (it took {_cost(cost)} when made)")
        return TensorGroups.read(groups_file), found
    settings = AnalysisSettings()
    inputs = streaming_inputs(model, geometry, settings)
    groups, found, cost = analyse(model, programs.head, sizes, inputs, TARGET, settings, luts)
    groups.write(groups_file)
    found.write(sensitivity_file)
    cost.write(cost_file)
    results.note(
        f"{variant}: analysis of {len(found.groups)} groups x {len(settings.nbits)} widths in {_cost(cost)}"
    )
    print(f"  on {found.inputs}; fp16 weights alone: max |dp| {found.fp16_vs_fp32.max_dp:.1e}")
    ranked = found.ranked(4)
    print(f"  most sensitive at 4 bits: {', '.join(g.name for g in ranked[:4])}")
    print(f"  least sensitive at 4 bits: {', '.join(g.name for g in ranked[-4:])}")
    return groups, found


def _cost(cost: AnalysisCost) -> str:
    return (
        f"{cost.total_seconds:.0f} s wall (inputs {cost.inputs_seconds:.0f} s, baseline "
        f"{cost.baseline_seconds:.0f} s, luts {cost.luts_seconds:.0f} s, measure "
        f"{cost.measure_seconds:.0f} s), {cost.cpu_seconds:.0f} s CPU"
    )


def nemo_preds(model: Any, geometry: StreamingGeometry, mel: np.ndarray, folder: Path) -> np.ndarray:
    from sortformer_build.evaluate.backends import nemo_backend

    path = folder / "nemo-preds.npy"
    if not path.exists():
        np.save(path, nemo_backend(model, geometry).predict(mel))
    return np.load(path)


def judge(
    name: str,
    widths: int | dict[str, int] | None,
    programs: ProgramFiles,
    geometry: StreamingGeometry,
    d_model: int,
    mel: np.ndarray,
    nemo: np.ndarray,
    folder: Path,
) -> Row:
    """The package with its head palettized to `widths` (None: fp16), streamed against NeMo."""
    from sortformer_build.config import ExecutorPrecision, PalettizerEngine
    from sortformer_build.coreml.convert import assemble_pipeline
    from sortformer_build.coreml.package import package_size
    from sortformer_build.coreml.palettize import palettize_program
    from sortformer_build.executor.step import package_step
    from sortformer_build.verify.reference import stream, streaming_modules

    slug = name.replace(" ", "-").replace(",", "")
    judged = folder / f"{slug}.json"
    if judged.exists():
        return Row(**json.loads(judged.read_text()))
    package, head = folder / f"{slug}.mlpackage", programs.head
    if widths is not None:
        head = folder / f"{slug}-head.mlpackage"
        palettize_program(
            programs.head, widths, PalettizerEngine.fast, head, ArrayStore(folder.parent / "luts")
        )
    assemble_pipeline(ProgramFiles(programs.pre_encoder, head), geometry, {}, package)
    started = time.perf_counter()
    step = package_step(package, ExecutorPrecision.float16)
    preds = stream(streaming_modules(geometry, d_model), geometry, mel, step).preds
    print(f"  {name}: streamed in {time.perf_counter() - started:.0f} s", flush=True)
    difference = np.abs(preds - nemo)
    row = Row(
        name=name,
        bytes=package_size(package),
        predicted_mean_dp=None,
        max_dp=float(difference.max()),
        mean_dp=float(difference.mean()),
        agreement=float(np.mean((preds > 0.5) == (nemo > 0.5))),
        der_vs_nemo=der_against(preds, nemo, folder / slug),
    )
    judged.write_text(json.dumps(asdict(row)))
    return row


def der_against(preds: np.ndarray, nemo: np.ndarray, folder: Path) -> float:
    """DER of the diarization of `preds` against NeMo's, both by NeMo's post-processing."""
    from sortformer_build.config import PostProcessingConfig
    from sortformer_build.evaluate.annotations import write_rttm
    from sortformer_build.evaluate.conversation import NAME
    from sortformer_build.evaluate.scoring import compare
    from sortformer_build.evaluate.segments import resolve_postprocessing, speaker_labels

    postprocessing = resolve_postprocessing(PostProcessingConfig())
    folder.mkdir(exist_ok=True)
    rttms = {}
    for who, probabilities in (("ours", preds), ("nemo", nemo)):
        rttms[who] = folder / f"{who}.rttm"
        write_rttm(rttms[who], speaker_labels(probabilities, postprocessing), NAME)
    return compare({NAME: rttms["ours"]}, {NAME: rttms["nemo"]}, COLLAR, False).overall.der


def print_table(variant: str, geometry: StreamingGeometry, rows: list[Row], results: Results) -> None:
    fp16 = rows[0].bytes
    header = [
        "package",
        "MB",
        "ratio",
        "predicted Σ mean |dp|",
        "max |dp|",
        "mean |dp|",
        "decisions agree",
        f"DER vs NeMo (collar {COLLAR:g} s)",
    ]
    results.table(
        f"{variant} ({geometry.describe()}), the shipped conversation against NeMo",
        header,
        [
            [
                row.name,
                f"{row.bytes / MB:.1f}",
                f"{row.bytes / fp16:.3f}",
                "" if row.predicted_mean_dp is None else f"{row.predicted_mean_dp:.2e}",
                f"{row.max_dp:.3f}",
                f"{row.mean_dp:.2e}",
                f"{row.agreement:.2%}",
                f"{row.der_vs_nemo:.2%}",
            ]
            for row in rows
        ],
    )


def print_verdict(variant: str, rows: list[Row], results: Results) -> None:
    by_name = {row.name: row for row in rows}
    for label, bits in BUDGETS:
        mixed = by_name[f"mixed, {label}"]
        uniform = by_name.get(f"uniform {bits}-bit")
        if uniform is None:
            results.note(
                f"{variant}: mixed at the {label} ({mixed.bytes / MB:.1f} MB, no uniform {bits}-bit twin: "
                f"{bits} bits is not a look-up table width): mean |dp| {mixed.mean_dp:.2e}, DER vs NeMo "
                f"{mixed.der_vs_nemo:.2%}"
            )
            continue
        better = mixed.mean_dp < uniform.mean_dp and mixed.der_vs_nemo <= uniform.der_vs_nemo
        results.note(
            f"{variant} at the {label}: mixed {mixed.bytes / MB:.1f} MB, mean |dp| {mixed.mean_dp:.2e}, "
            f"DER vs NeMo {mixed.der_vs_nemo:.2%}; uniform {uniform.bytes / MB:.1f} MB, "
            f"{uniform.mean_dp:.2e}, {uniform.der_vs_nemo:.2%}: the measured recipe "
            f"{'beats' if better else 'does not beat'} uniform bits here"
        )
    results.note("Random weights are not NVIDIA's: judge a recipe on NVIDIA's weights before shipping it.")


if __name__ == "__main__":
    main()
