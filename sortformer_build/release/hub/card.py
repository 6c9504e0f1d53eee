"""The model card (`README.md` at the repo root): Hugging Face metadata (license and base model
per source checkpoint, tags, library) and, per model, what it is, how it checks out and how it
was built; generated from the release, written and read back with huggingface_hub."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from sortformer_build import text
from sortformer_build.coreml.targets import KEEP_FP16, TARGET_FACTS
from sortformer_build.kinds import kind_of
from sortformer_build.records.device import DeviceReport
from sortformer_build.records.evaluation import DerRates
from sortformer_build.records.manifest import RANDOM_WEIGHT_SOURCES, Manifest
from sortformer_build.records.release import Provenance
from sortformer_build.release.hub.config import CardConfig
from sortformer_build.release.hub.errors import PublishError
from sortformer_build.release.hub.release import Model, Release
from sortformer_build.release.report.glance import glance
from sortformer_build.store import atomic
from sortformer_build.text import NOT_MEASURED, markdown_table


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
    # Each compiled model measured on the Mac that publishes, by release stem; empty when only
    # packages are staged (where Core ML cannot compile).
    device_reports: dict[str, DeviceReport]
    provenance: Provenance
    # One diarization timeline per evaluated geometry, staged in the repo beside the models.
    timelines: list[CardImage] = field(default_factory=list)


@dataclass(frozen=True)
class CardImage:
    path_in_repo: str
    alt: str
    caption: str


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


def _ratio(model: Model) -> str:
    return text.ratio(model.row.ratio_to_fp16)


def card_data(models: list[tuple[Model, Manifest]], facts: CardFacts, settings: CardConfig) -> ModelCardData:
    licenses = [_license(manifest.variant.version) for _, manifest in models]
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
    """DER against a ground truth, as Hub results: never for random weights, where it means nothing."""
    return [
        EvalResult(
            task_type="speaker-diarization",
            dataset_type=evaluation.dataset,
            dataset_name=evaluation.dataset,
            metric_type="der",
            metric_value=round(evaluation.der_vs_truth.der * 100, 2),
            metric_name=f"DER {manifest.release_stem}",
            metric_config=evaluation.scoring.describe(),
        )
        for _, manifest in models
        if not manifest.checkpoint.random_weights
        for evaluation in manifest.evaluations
        if evaluation.der_vs_truth is not None
    ]


def card_body(release: Release, models: list[tuple[Model, Manifest]], facts: CardFacts) -> str:
    sections = [
        _introduction(models, facts),
        _glance_section(models),
        _models_table(models),
        _parity_table(models),
        _recipes_section(models),
        _der_section(models),
        _timelines_section(facts),
        _device_section(models, facts),
        _sources_table(models),
        _files_section(models, facts),
        _traces_section(models, facts),
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
    synthetic = sorted({m.checkpoint.source for _, m in models} & set(RANDOM_WEIGHT_SOURCES))
    if synthetic:
        text += (
            f"\n\n**Warning: built from {', '.join(synthetic)} random weights, not NVIDIA's "
            "checkpoints. These models only exercise the pipeline; they do not diarize.**"
        )
    return text


def _glance_section(models: list[tuple[Model, Manifest]]) -> str:
    """The release report's table, from the manifests as published."""
    rows = [model.row.model_copy(update={"manifest": manifest}) for model, manifest in models]
    return "## The release at a glance\n\n" + glance(rows, for_card=True).markdown()


def _timelines_section(facts: CardFacts) -> str:
    if not facts.timelines:
        return ""
    images = "\n\n".join(
        f"![{_markdown_text(image.alt)}]({image.path_in_repo})\n\n{image.caption}"
        for image in facts.timelines
    )
    return (
        "## Diarization timelines\n\nOne recording per evaluated geometry: who speaks when according to "
        "each diarization, speakers mapped as DER maps them.\n\n" + images
    )


def _markdown_text(value: str) -> str:
    """Text safe inside a Markdown image's brackets."""
    return value.replace("[", "(").replace("]", ")").replace("\n", " ")


def _models_table(models: list[tuple[Model, Manifest]]) -> str:
    rows = [
        [
            f"`{manifest.release_stem}`",
            manifest.compression.name,
            manifest.geometry.describe(),
            manifest.geometry.latency,
            text.megabytes(manifest.artifact.bytes),
            _ratio(model),
            TARGET_FACTS[manifest.deployment_target].os_versions,
        ]
        for model, manifest in models
    ]
    header = ["model", "precision", "geometry", "latency", "package size", "vs fp16", "minimum OS"]
    kinds = list(dict.fromkeys(kind_of(manifest.geometry) for _, manifest in models))
    rules = " ".join(f"{kind.name.capitalize()} models: latency is {kind.latency_rule}." for kind in kinds)
    return f"## Models\n\n{markdown_table(header, rows)}\n\n{rules}"


def _parity_table(models: list[tuple[Model, Manifest]]) -> str:
    rows = []
    for _, manifest in models:
        parity = manifest.verification.parity
        if parity is None:
            continue
        calls, stream, twin = (
            parity.per_call_vs_nemo.overall,
            parity.streaming_vs_nemo,
            parity.per_call_vs_fp16,
        )
        rows.append(
            [
                f"`{manifest.release_stem}`",
                parity.precision,
                text.scientific(calls.max_abs_prob_error),
                text.percent(calls.decision_agreement),
                text.percent(calls.argmax_agreement),
                NOT_MEASURED
                if stream is None
                else f"{stream.agreement.max_abs_prob_error:.1e} ({stream.chunks} chunks)",
                NOT_MEASURED if stream is None else text.percent(stream.agreement.decision_agreement),
                NOT_MEASURED if twin is None else text.percent(twin.overall.decision_agreement),
            ]
        )
    header = [
        "model",
        "executor",
        "per call max |dp|",
        "decisions",
        "argmax",
        "streaming max |dp|",
        "streaming decisions",
        "decisions vs fp16",
    ]
    return (
        "## Parity with NeMo\n\n"
        "Each package was run by sortformer-build's Core ML program executor and compared with NeMo: "
        "a streaming model on fixed streaming steps and on a synthetic conversation streamed through "
        "NeMo's own state update, the offline model on whole windows (it has no stream: "
        f"{NOT_MEASURED}). |dp| is the largest speaker-probability difference, decisions the "
        "agreement at 0.5.\n\n" + markdown_table(header, rows)
    )


def _recipes_section(models: list[tuple[Model, Manifest]]) -> str:
    """Mixed-bit models: the bits each group of head weights got, and what the analysis measured
    for it alone at those bits."""
    parts = []
    for _, manifest in models:
        applied = manifest.compression.recipe
        if applied is None:
            continue
        rows = [
            [
                f"`{group}`",
                "fp16" if choice.bits == KEEP_FP16 else str(choice.bits),
                text.megabytes(choice.bytes),
                text.scientific(choice.max_dp),
                text.scientific(choice.mean_dp),
                NOT_MEASURED if choice.flipped is None else str(choice.flipped),
            ]
            for group, choice in applied.recipe.groups.items()
        ]
        header = ["group", "bits", "size", "alone: max |dp|", "mean |dp|", "decisions flipped"]
        budget = applied.recipe.budget_bytes
        within = "" if budget is None else f" (within a {text.megabytes(budget)} budget)"
        parts.append(f"### `{manifest.release_stem}`{within}\n\n{markdown_table(header, rows)}")
    if not parts:
        return ""
    return (
        "## Mixed-bit recipes\n\n"
        "Bits per group of head weights, chosen to least change the speaker probabilities within a "
        "size budget: each group was palettized alone and run on the states NeMo's own loop held "
        f"({NOT_MEASURED}: a recipe given by hand).\n\n" + "\n\n".join(parts)
    )


def _der_section(models: list[tuple[Model, Manifest]]) -> str:
    rows = [
        [
            f"`{manifest.release_stem}`",
            evaluation.dataset,
            evaluation.scoring.describe(),
            _truth(evaluation.der_vs_truth, manifest.checkpoint.random_weights),
            *(
                text.percent(
                    None if evaluation.der_vs_truth is None else getattr(evaluation.der_vs_truth, part)
                )
                for part in ("missed", "false_alarm", "confusion")
            ),
            text.percent(evaluation.der_vs_nemo.der),
            text.points(evaluation.der_change_vs_fp16_pp),
        ]
        for _, manifest in models
        for evaluation in manifest.evaluations
    ]
    if not rows:
        return "## Diarization error rate\n\nThis release was not evaluated on a diarization corpus."
    header = [
        "model",
        "dataset",
        "scoring",
        "DER",
        "missed",
        "false alarm",
        "confusion",
        "DER vs NeMo",
        "vs fp16",
    ]
    return "## Diarization error rate\n\n" + markdown_table(header, rows)


def _truth(rates: DerRates | None, random_weights: bool) -> str:
    if rates is None:
        return NOT_MEASURED
    return f"{rates.der:.2%}" + (" (random weights: not meaningful)" if random_weights else "")


def _sources_table(models: list[tuple[Model, Manifest]]) -> str:
    seen: dict[tuple[str, str], Manifest] = {}
    for _, manifest in models:
        seen.setdefault((manifest.variant.version, manifest.checkpoint.sha256), manifest)
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
        + markdown_table(header, rows)
    )


def _files_section(models: list[tuple[Model, Manifest]], facts: CardFacts) -> str:
    suffixes = " and ".join(f"`.{value}`" for value in facts.formats)
    folders = ", ".join(
        f"`{facts.path_in_repo}/{folder}/`" for folder in sorted({m.compression.folder for _, m in models})
    )
    return (
        "## Files\n\n"
        f"{folders}: one {suffixes} per model. "
        f"`{facts.path_in_repo}/release.json` lists every file of the release with its size and sha256, "
        "and each model's build manifest digest."
    )


def _traces_section(models: list[tuple[Model, Manifest]], facts: CardFacts) -> str:
    """NeMo's reference traces, and how each model's own loop compared with its trace."""
    header = ["model", "reference trace", "recording", "the package's loop (executor) against it"]
    rows = [
        [
            manifest.release_stem,
            f"`{facts.path_in_repo}/{trace.index}`",
            trace.recording,
            NOT_MEASURED if trace.comparison is None else trace.comparison.summary(),
        ]
        for _, manifest in models
        if (trace := manifest.trace) is not None
    ]
    if not rows:
        return ""
    return (
        "## Reference traces\n\n"
        "Each model comes with NeMo's own streaming loop on a reference recording, recorded chunk by "
        "chunk (inputs under the Core ML names, outputs, the speaker cache, FIFO and silence profile "
        "after each update; for the offline model, its windows): a host runtime writes the same trace "
        "from its own loop and `sortformer-build-trace compare` names the first chunk and tensor where it "
        "leaves NeMo's. The `.json` index describes the `.safetensors` arrays beside it; the format is "
        "documented in sortformer-build's docs/traces.md.\n\n" + markdown_table(header, rows)
    )


def _device_section(models: list[tuple[Model, Manifest]], facts: CardFacts) -> str:
    """What each compiled model did on the Mac that published it, or that nothing ran there."""
    if not facts.device_reports:
        return (
            "## On device\n\nNot measured: only packages were staged, where Core ML cannot compile; "
            "compile and check them on a Mac."
        )
    rows = []
    for _, manifest in models:
        report = facts.device_reports.get(manifest.release_stem)
        if report is None:
            continue
        latency, plan = report.latency, report.compute_plan
        rows.append(
            [
                f"`{manifest.release_stem}`",
                report.machine.describe(),
                report.compute_units.value,
                text.seconds(report.compile_seconds),
                text.seconds(report.load_seconds),
                text.seconds(report.first_predict_seconds),
                NOT_MEASURED if latency is None else f"{latency.median_ms:.2f} / {latency.p95_ms:.2f} ms",
                text.megabytes(report.peak_rss_bytes),
                NOT_MEASURED
                if plan is None or not report.neural_engine_in_play
                else text.percent(plan.op_share.neural_engine),
            ]
        )
    header = [
        "model",
        "machine",
        "compute units",
        "compile",
        "load",
        "first prediction",
        "per call median / p95",
        "peak memory",
        "ops on the Neural Engine",
    ]
    notes = sorted({note for report in facts.device_reports.values() for note in report.notes()})
    return (
        "## On device\n\nEach `.mlmodelc` was compiled from its verified package on the Mac that "
        "published it; its first prediction ran in a fresh process, then calls were timed after a "
        "warm-up.\n\n" + markdown_table(header, rows) + "".join(f"\n- {note}" for note in notes)
    )


def _build_section(release: Release, models: list[tuple[Model, Manifest]], facts: CardFacts) -> str:
    toolsets = defaultdict(list)
    for _, manifest in models:
        toolsets[manifest.versions.describe()].append(manifest.release_stem)
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
            "variant": sorted({m.variant.name for _, m in models}),
            "compression": sorted({m.compression.name for _, m in models}),
            "checkpoint": sorted({m.checkpoint.source for _, m in models}),
        }
        chosen = " ".join(f"{group}={','.join(values)}" for group, values in options.items())
        lines.append(f"- Sweep: the command line was not recorded; its options: `{chosen}`.")
    lines.append(f"- Published by {facts.provenance.describe()}.")
    return "\n".join(lines)
