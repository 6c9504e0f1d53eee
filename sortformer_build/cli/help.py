"""The option lists of `--help`, composed by Hydra itself from each option of each group."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sortformer_build.config import BuildConfig, CheckpointSource, DatasetKind, TraceRecording
from sortformer_build.kinds import KINDS, kind_of

CONFIG_MODULE = "sortformer_build.conf"
PRIMARY_CONFIG = "build"

_SOURCES = {
    CheckpointSource.hub: "released weights from the Hugging Face Hub, through huggingface_hub's cache",
    CheckpointSource.local: "a .nemo file on disk: checkpoint.path=/path/model.nemo",
    CheckpointSource.synthetic: "random weights, published architecture (no download, made once, cached)",
    CheckpointSource.tiny: "random weights, same family at toy size (tests)",
}


_DATASETS = {
    DatasetKind.conversation: "a short meeting of four synthesized voices with exact ground truth (shipped)",
    DatasetKind.manifest: "NeMo's diarization manifest (JSON lines): evaluate.path=/path/manifest.json",
    DatasetKind.folder: "audio files with same-named .rttm (and .uem) files: evaluate.path=/path/folder",
}
_EVALUATION_NOTES = [
    "  evaluate.collar is pyannote.metrics' total collar width (default 0.25 s); NVIDIA's AMI and",
    "  DIHARD figures use 0 (evaluate.collar=0). The package runs in the executor by default, for",
    "  short sets (minutes of audio); for whole corpora run it with evaluate.backend=coreml on a",
    "  Mac. NeMo's own diarization (always run, cached) is the checkpoint's DER at torch speed.",
]


_TRACES = {
    TraceRecording.conversation: "the shipped conversation",
    TraceRecording.file: "an audio file of yours: trace.path=/path/audio.flac",
}
_TRACE_NOTES = [
    "  NeMo's own loop, recorded chunk by chunk into <output_dir>/traces/ for host runtimes to test",
    "  against (sortformer-build-trace compare, docs/traces.md); the package's loop is compared with it.",
]


def groups_help() -> str:
    with hydra_loader() as loader:
        variants = [_composed("variant", option) for option in loader.get_group_options("variant")]
        compressions = [
            _composed("compression", option) for option in loader.get_group_options("compression")
        ]
        checkpoints = loader.get_group_options("checkpoint")
        datasets = loader.get_group_options("evaluate")
        recordings = loader.get_group_options("trace")
    lines = ["== Variants: file name, latency, geometry =="]
    lines += [kind_of(config.variant.geometry).help_line(config.variant) for config in variants]
    for kind in KINDS:
        ours = [config.variant for config in variants if kind_of(config.variant.geometry) is kind]
        lines += [f"  {note}" for note in kind.help_notes(ours)]
        lines.append(f"  {kind.name} latency: {kind.latency_rule}")
    lines.append("== Compressions (release folder) ==")
    lines += [_compression_line(config) for config in compressions]
    lines.append("== Checkpoints (weight sources) ==")
    lines += [f"  {option:<15} {_SOURCES[CheckpointSource(option)]}" for option in checkpoints]
    lines.append(
        "== Evaluation datasets (evaluate=<option>: DER against the ground truth, NeMo, the fp16 twin) =="
    )
    lines += [f"  {option:<15} {_DATASETS[DatasetKind(option)]}" for option in datasets]
    lines += _EVALUATION_NOTES
    lines.append("== Reference traces (trace=<option>: the recording) ==")
    lines += [f"  {option:<15} {_TRACES[TraceRecording(option)]}" for option in recordings]
    lines += _TRACE_NOTES
    return "\n".join(lines)


def _compression_line(config: BuildConfig) -> str:
    compression = config.compression
    if compression.mixed:
        what = "palettized head, bits per layer measured (budget_mb=MB, budget_ratio= or recipe=FILE)"
    elif compression.is_fp16:
        what = "fp16 weights"
    else:
        what = f"{compression.nbits}-bit palettized head"
    release = "release" if compression.release else "not for release"
    return f"  {compression.name:<15} -> {compression.folder + '/':<13} {what}, {release}"


def _composed(group: str, option: str) -> BuildConfig:
    cfg = compose(config_name=PRIMARY_CONFIG, overrides=[f"{group}={option}", "checkpoint=synthetic"])
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, BuildConfig)
    return config


@contextmanager
def hydra_loader() -> Iterator:
    """Hydra's config loader: the running app's when `--help` renders, else a fresh one."""
    if GlobalHydra.instance().is_initialized():
        yield GlobalHydra.instance().config_loader()
        return
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        yield GlobalHydra.instance().config_loader()
