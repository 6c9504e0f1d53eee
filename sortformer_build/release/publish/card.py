"""The model card (`README.md` at the repo root): Hugging Face metadata (license and base model
per source checkpoint, tags, library) and, per model, what it is, how it checks out and how it
was built; generated from the release, written and read back with huggingface_hub."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from sortformer_build.release.publish.config import CardConfig
from sortformer_build.release.publish.errors import PublishError
from sortformer_build.release.publish.release import Manifest, Model, Release
from sortformer_build.store import atomic
from sortformer_build.store.provenance import Provenance

MB = 1e6
# Deployment target -> the oldest systems that run the model.
MINIMUM_OS = {"iOS16": "iOS 16 / macOS 13", "iOS17": "iOS 17 / macOS 14"}
TOOLS = ("python", "torch", "coremltools", "nemo_toolkit", "numpy", "sortformer-build")
SYNTHETIC_SOURCES = ("synthetic", "tiny")


@dataclass(frozen=True)
class SourceLicense:
    base_model: str
    license: str
    license_name: str | None = None
    license_link: str | None = None

    def describe(self) -> str:
        return self.license_name or self.license


NVIDIA_OPEN_MODEL_LICENSE = (
    "https://www.nvidia.com/en-us/agreements/enterprise-software/nvidia-open-model-license/"
)
# The licenses NVIDIA publishes each checkpoint under; derived models keep them.
LICENSES = {
    "v2": SourceLicense("nvidia/diar_streaming_sortformer_4spk-v2", "cc-by-4.0"),
    "v2.1": SourceLicense(
        "nvidia/diar_streaming_sortformer_4spk-v2.1",
        "other",
        "nvidia-open-model-license",
        NVIDIA_OPEN_MODEL_LICENSE,
    ),
}


@dataclass(frozen=True)
class CardFacts:
    """What the card says that is not in the release itself."""

    repo_id: str
    path_in_repo: str
    formats: list[str]
    # How the compiled models were checked at publish time, in words.
    core_ml_check: str
    provenance: Provenance


def write_card(path: Path, release: Release, facts: CardFacts, settings: CardConfig) -> ModelCardData:
    """Write the card and read it back; return the metadata it holds."""
    models = _built(release)
    data = card_data(models, facts, settings)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_body(release, models, facts)}")
    atomic.write_text(path, str(card))
    if ModelCard.load(path).data.to_dict() != data.to_dict():
        raise PublishError(f"{path}: the model card's metadata does not read back as written")
    return data


def _built(release: Release) -> list[tuple[Model, Manifest]]:
    return [(model, model.manifest) for model in release.models if model.manifest is not None]


def card_data(models: list[tuple[Model, Manifest]], facts: CardFacts, settings: CardConfig) -> ModelCardData:
    licenses = [_license(manifest.checkpoint.version) for _, manifest in models]
    unique = list(dict.fromkeys(licenses))
    if len(unique) == 1:
        license, name, link = unique[0].license, unique[0].license_name, unique[0].license_link
    else:
        # One license field for files under different licenses: the card body says which is which.
        license, link = "other", NVIDIA_OPEN_MODEL_LICENSE
        name = "-and-".join(sorted({item.describe() for item in unique}, reverse=True))
    evaluations = _eval_results(models)
    return ModelCardData(
        base_model=sorted({item.base_model for item in unique}),
        license=license,
        license_name=name,
        license_link=link,
        library_name=settings.library_name,
        pipeline_tag=settings.pipeline_tag,
        tags=list(settings.tags),
        model_name=facts.repo_id.split("/")[-1] if evaluations else None,
        eval_results=evaluations or None,
    )


def _license(version: str) -> SourceLicense:
    try:
        return LICENSES[version]
    except KeyError:
        raise PublishError(
            f"no license is known for checkpoint version {version!r} (known: {', '.join(LICENSES)})"
        ) from None


def _eval_results(models: list[tuple[Model, Manifest]]) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="speaker-diarization",
            dataset_type=figure.dataset,
            dataset_name=figure.dataset,
            metric_type="der",
            metric_value=round(figure.der * 100, 2),
            metric_name=f"DER {manifest.release_stem}",
            metric_config=_scoring(figure.collar, figure.scored_overlap),
        )
        for _, manifest in models
        for figure in manifest.evaluation
    ]


def _scoring(collar: float, scored_overlap: bool) -> str:
    return f"collar {collar:g} s, overlap {'scored' if scored_overlap else 'ignored'}"


def card_body(release: Release, models: list[tuple[Model, Manifest]], facts: CardFacts) -> str:
    sections = [
        _introduction(models, facts),
        _models_table(models),
        _parity_table(models),
        _der_section(models),
        _sources_table(models),
        _files_section(models, facts),
        _build_section(release, models, facts),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _introduction(models: list[tuple[Model, Manifest]], facts: CardFacts) -> str:
    text = (
        "# Streaming Sortformer for Core ML\n\n"
        "Core ML conversions of NVIDIA's Streaming Sortformer 4-speaker diarizer (NeMo "
        "`SortformerEncLabelModel`), one model per streaming geometry and weight precision, built "
        "and verified against NeMo by sortformer-build. The Swift runtime downloads "
        f"`{facts.path_in_repo}/<precision>/<file name>.mlmodelc`."
    )
    synthetic = sorted({m.checkpoint.source for _, m in models} & set(SYNTHETIC_SOURCES))
    if synthetic:
        text += (
            f"\n\n**Warning: built from {', '.join(synthetic)} random weights, not NVIDIA's "
            "checkpoints. These models only exercise the pipeline; they do not diarize.**"
        )
    return text


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def _models_table(models: list[tuple[Model, Manifest]]) -> str:
    rows = []
    for model, manifest in models:
        ratio = model.job.ratio_to_fp16
        rows.append(
            [
                f"`{manifest.release_stem}`",
                manifest.compression,
                manifest.geometry.describe(),
                f"{manifest.geometry.latency_seconds:.2f} s",
                f"{manifest.bytes / MB:.1f} MB",
                f"{ratio:.2f}" if ratio else "",
                MINIMUM_OS.get(manifest.deployment_target, manifest.deployment_target),
            ]
        )
    header = ["model", "precision", "geometry", "latency", "package size", "vs fp16", "minimum OS"]
    return (
        "## Models\n\n"
        + _table(header, rows)
        + ("\n\nLatency is the output latency of one streaming step: (chunk + right context) x 80 ms.")
    )


def _parity_table(models: list[tuple[Model, Manifest]]) -> str:
    rows = []
    for _, manifest in models:
        parity = manifest.parity
        if parity is None:
            continue
        twin = parity.twin_decision_agreement
        rows.append(
            [
                f"`{manifest.release_stem}`",
                parity.precision,
                f"{parity.step_max_abs_error:.1e}",
                f"{parity.step_decision_agreement:.2%}",
                f"{parity.step_argmax_agreement:.2%}",
                f"{parity.stream_max_abs_error:.1e} ({parity.stream_chunks} chunks)",
                f"{parity.stream_decision_agreement:.2%}",
                f"{twin:.2%}" if twin is not None else "",
            ]
        )
    header = [
        "model",
        "executor",
        "per step max |dp|",
        "decisions",
        "argmax",
        "streaming max |dp|",
        "streaming decisions",
        "decisions vs fp16",
    ]
    return (
        "## Parity with NeMo\n\n"
        "Each package was run by sortformer-build's Core ML program executor on fixed streaming "
        "steps and on a synthetic conversation streamed through NeMo's own state update, and "
        "compared with NeMo: |dp| is the largest speaker-probability difference, decisions the "
        "agreement at 0.5.\n\n" + _table(header, rows)
    )


def _der_section(models: list[tuple[Model, Manifest]]) -> str:
    rows = [
        [
            f"`{manifest.release_stem}`",
            figure.dataset,
            _scoring(figure.collar, figure.scored_overlap),
            f"{figure.der:.2%}",
            *(
                f"{value:.2%}" if value is not None else ""
                for value in (figure.miss, figure.false_alarm, figure.confusion)
            ),
        ]
        for _, manifest in models
        for figure in manifest.evaluation
    ]
    if not rows:
        return "## Diarization error rate\n\nThis release was not evaluated on a diarization corpus."
    header = ["model", "dataset", "scoring", "DER", "missed", "false alarm", "confusion"]
    return "## Diarization error rate\n\n" + _table(header, rows)


def _sources_table(models: list[tuple[Model, Manifest]]) -> str:
    seen: dict[tuple[str, str], Manifest] = {}
    for _, manifest in models:
        seen.setdefault((manifest.checkpoint.version, manifest.checkpoint.sha256), manifest)
    rows = []
    for (version, sha256), manifest in sorted(seen.items()):
        license = _license(version)
        link = (
            f"[{license.describe()}]({license.license_link})" if license.license_link else license.describe()
        )
        rows.append([version, f"`{license.base_model}`", link, manifest.checkpoint.origin, f"`{sha256}`"])
    header = ["checkpoint", "base model", "license", "origin", "sha256"]
    return (
        "## Sources and licenses\n\nEach model keeps the license of the checkpoint it was converted from.\n\n"
        + _table(header, rows)
    )


def _files_section(models: list[tuple[Model, Manifest]], facts: CardFacts) -> str:
    suffixes = " and ".join(f"`.{value}`" for value in facts.formats)
    folders = ", ".join(
        f"`{facts.path_in_repo}/{folder}/`" for folder in sorted({m.folder for _, m in models})
    )
    return (
        "## Files\n\n"
        f"{folders}: one {suffixes} per model. "
        f"`{facts.path_in_repo}/release.json` lists every file of the release with its size and sha256, "
        f"and each model's build manifest digest. Core ML check at publish: {facts.core_ml_check}."
    )


def _build_section(release: Release, models: list[tuple[Model, Manifest]], facts: CardFacts) -> str:
    toolsets = defaultdict(list)
    for _, manifest in models:
        tools = ", ".join(f"{name} {manifest.versions[name]}" for name in TOOLS if name in manifest.versions)
        toolsets[tools].append(manifest.release_stem)
    lines = ["## How it was built", ""]
    if len(toolsets) == 1:
        lines.append(f"- Tools: {next(iter(toolsets))}.")
    else:
        lines += [f"- Tools for {', '.join(stems)}: {tools}." for tools, stems in toolsets.items()]
    command = release.matrix.command
    if command:
        lines.append(f"- Sweep: `{command}`")
    else:
        options = {
            "variant": sorted({m.variant for _, m in models}),
            "compression": sorted({m.compression for _, m in models}),
            "checkpoint": sorted({m.checkpoint.source for _, m in models}),
        }
        chosen = " ".join(f"{group}={','.join(values)}" for group, values in options.items())
        lines.append(f"- Sweep: the command line was not recorded; its options: `{chosen}`.")
    lines.append(f"- Published by {facts.provenance.describe()}.")
    return "\n".join(lines)
