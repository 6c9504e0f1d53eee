"""report.html: one self-contained page about a release (or one artifact), made from the matrix's
rows, the manifests and what the jobs delivered beside them; never by running a model. Images
are PNGs inside the page (data URIs) and the style is a few inline rules: it reads offline, from
a copy, in any browser, without scripts."""

from __future__ import annotations

import base64
import html
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from sortformer_build import text
from sortformer_build.records.evaluation import DatasetEvaluation, RecordingDer, RttmSet
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.matrix import MatrixRow
from sortformer_build.records.parity import TraceSource
from sortformer_build.records.steps import StepStatus
from sortformer_build.release.report.glance import glance
from sortformer_build.release.report.timeline import (
    TRACK_NAMES,
    RecordingTimeline,
    ReportInputError,
    recording_der,
    recording_timeline,
    reference_set,
)
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.store import atomic
from sortformer_build.verify.probabilities import ProbabilitiesError, load_probabilities

REPORT_FILE = "report.html"
# Timelines drawn per artifact and dataset: the recordings with the highest DER; the RTTMs of
# every recording are beside the package.
MAX_TIMELINES = 3

log = logging.getLogger("sortformer_build")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; padding: 0 1em;
  color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.75em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.4em; text-align: left; vertical-align: top; }
td:first-child { overflow-wrap: anywhere; min-width: 11em; }
th { background: #f2f2f2; }
tr.failed td { background: #fde0dc; color: #8b0000; }
.warning { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.5em 0.8em; }
.absent { color: #666; font-style: italic; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #444; }
img { max-width: 100%; height: auto; }
code { font-size: 0.9em; }
"""


@dataclass(frozen=True)
class Image:
    png: bytes
    alt: str
    caption: str

    @property
    def size(self) -> tuple[int, int]:
        """Width and height in pixels, from the PNG's header."""
        width, height = struct.unpack(">II", self.png[16:24])
        return int(width), int(height)

    def html(self) -> str:
        width, height = self.size
        source = base64.b64encode(self.png).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{source}" alt="{_e(self.alt)}" '
            f'width="{width}" height="{height}"><figcaption>{_e(self.caption)}</figcaption></figure>'
        )


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def write_report(path: Path, output_dir: Path, rows: list[MatrixRow], title: str, command: str | None) -> int:
    """Write the page (replaced in one rename); return its size in bytes."""
    page = render(output_dir, rows, title, command)
    atomic.write_text(path, page)
    return len(page.encode())


def render(output_dir: Path, rows: list[MatrixRow], title: str, command: str | None) -> str:
    built = [row for row in rows if row.manifest is not None and row.package is not None]
    sections = [
        f"<h1>{_e(title)}</h1>",
        _introduction(rows, command),
        "<h2>The release at a glance</h2>",
        _glance_table(rows),
        "<h2>What was not checked, and why</h2>",
        _not_checked(rows),
        "<h2>Size against error</h2>",
        _tradeoff(built),
        "<h2>Each artifact</h2>",
        *(_artifact(output_dir, row) for row in built),
    ]
    body = "\n".join(section for section in sections if section)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _introduction(rows: list[MatrixRow], command: str | None) -> str:
    failed = sum(not row.status.ok or row.manifest is None for row in rows)
    parts = [f"<p>{len(rows)} job{'s' if len(rows) != 1 else ''}, {failed} failed."]
    if command:
        parts.append(f" Command: <code>{_e(command)}</code>.")
    parts.append("</p>")
    sources = sorted(
        {
            row.manifest.checkpoint.source
            for row in rows
            if row.manifest and row.manifest.checkpoint.random_weights
        }
    )
    if sources:
        parts.append(
            f'<p class="warning">Built from {_e(", ".join(sources))} random weights: parity with NeMo is '
            "meaningful, DER against the ground truth is not (timelines mark errors against NeMo's).</p>"
        )
    return "".join(parts)


def _glance_table(rows: list[MatrixRow]) -> str:
    table = glance(rows)
    head = "".join(f"<th>{_e(column)}</th>" for column in table.columns)
    body = []
    for row, cells in zip(table.rows, table.cells(), strict=True):
        if row.error is None:
            body.append("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in cells) + "</tr>")
            continue
        lead = "".join(f"<td>{_e(row.cells[column])}</td>" for column in ("artifact", "status"))
        body.append(
            f'<tr class="failed">{lead}<td colspan="{len(table.columns) - 2}">{_e(row.error)}</td></tr>'
        )
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def _not_checked(rows: list[MatrixRow]) -> str:
    """Every skipped check, grouped by what the manifest says about it; what was not evaluated;
    the jobs that failed before anything was checked."""
    manifests = [(row.label, row.manifest) for row in rows if row.manifest is not None]
    groups: dict[tuple[str, str], list[str]] = {}
    for label, manifest in manifests:
        for name, reason in manifest.skipped().items():
            step = manifest.step(name)
            detail = step.detail if step is not None and step.detail else ""
            said = f"{detail} [{reason.value}]" if reason is not None else detail
            groups.setdefault((name, said), []).append(label)
    items = [
        f"<li><b>{_e(name)}</b> skipped on {_count(labels, len(manifests))}: {_e(said)}</li>"
        for (name, said), labels in groups.items()
    ]
    unevaluated = [label for label, manifest in manifests if not manifest.evaluations]
    if unevaluated:
        items.append(
            f"<li><b>evaluation</b> (DER) not run on {_count(unevaluated, len(manifests))}: "
            "the build had no <code>evaluate=&lt;dataset&gt;</code>.</li>"
        )
    failed = [row.label for row in rows if row.manifest is None]
    if failed:
        items.append(
            f"<li><b>nothing</b> was checked on the failed job{'s' if len(failed) != 1 else ''} "
            f"{_e(', '.join(failed))}: the table above holds the error.</li>"
        )
    if not items:
        return "<p>Every check ran on every artifact.</p>"
    return "<ul>\n" + "\n".join(items) + "\n</ul>"


def _count(labels: list[str], total: int) -> str:
    if len(labels) == total and total > 1:
        return f"all {total} artifacts"
    return f"{len(labels)} of {total} artifact{'s' if total != 1 else ''} ({_e(', '.join(labels))})"


def _tradeoff(built: list[MatrixRow]) -> str:
    from sortformer_build.release.report.figures import TradeoffPoint, png, tradeoff_figure

    if not built:
        return '<p class="absent">No artifact was built.</p>'
    points = []
    for row in built:
        manifest = row.manifest
        assert manifest is not None
        parity = manifest.verification.parity
        stream = None if parity is None else parity.streaming_vs_nemo
        windows = parity is not None and stream is None
        error = (
            None
            if parity is None
            else (
                stream.agreement if stream is not None else parity.per_call_vs_nemo.overall
            ).max_abs_prob_error
        )
        evaluation = manifest.evaluations[0] if manifest.evaluations else None
        points.append(
            TradeoffPoint(
                name=manifest.variant.file_name,
                compression=manifest.compression.name,
                megabytes=manifest.artifact.bytes / text.MB,
                max_abs_error=error,
                from_windows=windows,
                der_vs_nemo=None if evaluation is None else 100 * evaluation.der_vs_nemo.der,
            )
        )
    described = "; ".join(
        f"{point.name} {point.compression}: {point.megabytes:.1f} MB, max |dp| "
        f"{text.scientific(point.max_abs_error)}"
        + ("" if point.der_vs_nemo is None else f", DER vs NeMo {point.der_vs_nemo:.2f} %")
        for point in points
    )
    image = Image(
        png(tradeoff_figure(points)),
        f"Package size against error, one point per artifact: {described}",
        "Each artifact's package size against its largest speaker-probability difference from NeMo over "
        "the verification stream (offline models: over the reference windows) and, when evaluated, its DER "
        "against NeMo's own diarization (first dataset); twins of one geometry are joined. Artifacts "
        "without parity figures are not drawn.",
    )
    return image.html()


def _artifact(output_dir: Path, row: MatrixRow) -> str:
    manifest = row.manifest
    assert manifest is not None and row.package is not None
    paths = ArtifactPaths.beside(output_dir / row.package)
    parts = [
        f'<h3 id="{_e(manifest.release_stem)}">{_e(row.label)}</h3>',
        f"<p>{_e(manifest.geometry.describe())}; latency {_e(manifest.geometry.latency)}; "
        f"{_e(text.megabytes(manifest.artifact.bytes))}; {_e(_steps(manifest))}.</p>",
        _probabilities(paths, manifest, row.label),
    ]
    for evaluation in manifest.evaluations:
        parts.append(_evaluation(paths, manifest, evaluation, row.label))
    return "\n".join(parts)


def _steps(manifest: Manifest) -> str:
    groups = {
        status: [step.name for step in manifest.steps_with(status)]
        for status in (StepStatus.verified, StepStatus.scored, StepStatus.skipped)
    }
    return "; ".join(f"{status.value}: {', '.join(names)}" for status, names in groups.items() if names)


def _probabilities(paths: ArtifactPaths, manifest: Manifest, label: str) -> str:
    from sortformer_build.release.report.figures import png, probability_figure

    parity = manifest.verification.parity
    if parity is None:
        step = manifest.step("parity")
        why = step.detail if step is not None and step.detail else "the parity check did not run"
        return f'<p class="absent">Probabilities against NeMo: not measured ({_e(why)}).</p>'
    if parity.trace is None:
        return (
            '<p class="absent">Probabilities against NeMo: not kept by the build that made this artifact.</p>'
        )
    try:
        probabilities = load_probabilities(paths.folder, parity.trace)
    except ProbabilitiesError as error:
        return f'<p class="absent">Probabilities against NeMo: unavailable: {_e(str(error))}.</p>'
    gates = manifest.config.compression.gates
    gate = gates.max_prob_error
    if gate is not None:
        gate_words = f"gate: |dp| <= {gate:g} per call ({manifest.compression.name})"
    else:
        gate_words = (
            f"no |dp| gate for {manifest.compression.name}: decisions at 0.5 are gated "
            f"(>= {gates.min_streaming_decision_agreement:.0%} over the stream)"
        )
    deviation = probabilities.error
    stretches = ", ".join(stretch.name for stretch in probabilities.stretches)
    decisions = (
        parity.streaming_vs_nemo.agreement.decision_agreement
        if parity.streaming_vs_nemo is not None
        else parity.per_call_vs_nemo.overall.decision_agreement
    )
    over = (
        "the verification stream" if probabilities.source is TraceSource.stream else "the reference windows"
    )
    title = f"{label}: {over}"
    image = Image(
        png(probability_figure(probabilities, gate, gate_words, title)),
        f"Speaker probabilities of {label} against NeMo's over {stretches} ({probabilities.nemo.shape[0]} "
        f"frames): max |p - p_nemo| {deviation.max(initial=0.0):.1e}, mean {deviation.mean():.1e}, "
        f"decisions at 0.5 agreeing {decisions:.2%}; {gate_words}",
        f"Above: each speaker slot's probability from the package (solid) and NeMo (dashed), red ticks where "
        f"a decision at 0.5 differs. Below: |p - p_nemo| per slot; {gate_words}.",
    )
    return image.html()


def ranked_recordings(evaluation: DatasetEvaluation, reference: RttmSet) -> list[RecordingDer]:
    """Highest DER against the timeline's reference first."""
    return sorted(evaluation.recordings, key=lambda recording: -(recording_der(recording, reference) or 0.0))


def timeline_image(
    folder: Path, manifest: Manifest, evaluation: DatasetEvaluation, recording: RecordingDer, label: str
) -> Image:
    """One recording's timeline from the RTTMs in `folder`; ReportInputError when they are missing."""
    from sortformer_build.release.report.figures import png, timeline_figure

    random_weights = manifest.checkpoint.random_weights
    view = recording_timeline(folder, evaluation, recording, random_weights)
    return Image(
        png(timeline_figure(view, f"{label} on {recording.recording}")),
        timeline_alt(view, label),
        timeline_caption(view, recording_der(recording, view.reference)),
    )


def _evaluation(paths: ArtifactPaths, manifest: Manifest, evaluation: DatasetEvaluation, label: str) -> str:
    random_weights = manifest.checkpoint.random_weights
    reference = reference_set(evaluation, random_weights)
    ranked = ranked_recordings(evaluation, reference)
    shown = ranked[:MAX_TIMELINES]
    folder = paths.evaluation(evaluation.dataset)
    intro = (
        f"<p>On <b>{_e(evaluation.dataset)}</b> ({_e(evaluation.scoring.describe())}, "
        f"{evaluation.audio_seconds:.1f} s of audio, {_e(evaluation.backend)}): {_e(evaluation.summary())}. "
        f"Timelines mark errors against {_e(TRACK_NAMES[reference])}"
        + (" (random weights)" if random_weights and evaluation.der_vs_truth is not None else "")
        + "."
    )
    if len(ranked) > len(shown):
        intro += (
            f" Shown: the {len(shown)} of {len(ranked)} recordings with the highest DER; every recording's "
            f"RTTMs are in <code>{_e(str(folder))}</code>."
        )
    parts = [intro + "</p>"]
    for recording in shown:
        try:
            parts.append(timeline_image(folder, manifest, evaluation, recording, label).html())
        except ReportInputError as error:
            parts.append(
                f'<p class="absent">{_e(recording.recording)}: timeline unavailable: {_e(str(error))}.</p>'
            )
    return "\n".join(parts)


def timeline_alt(view: RecordingTimeline, label: str) -> str:
    rows = ", ".join(track.name for track in view.tracks)
    errors = "; ".join(
        f"{track.name}: missed {m:.1f} s, false alarm {f:.1f} s, confusion {c:.1f} s"
        for track in view.tracks
        if track.errors is not None
        for m, f, c in (track.errors.seconds,)
    )
    return (
        f"Diarization timeline of {view.recording} by {label}: rows {rows}; speakers mapped onto "
        f"{TRACK_NAMES[view.reference]}'s; errors against it over {view.scored_seconds:.1f} s of scored "
        f"speech: {errors or 'none scored'}"
    )


def timeline_caption(view: RecordingTimeline, der: float | None) -> str:
    package = view.track(RttmSet.artifact)
    figures = ""
    if package is not None and package.errors is not None and view.scored_seconds:
        missed, false_alarm, confusion = package.errors.seconds
        figures = (
            f" The package against {TRACK_NAMES[view.reference]}: DER {text.percent(der)} = missed "
            f"{missed / view.scored_seconds:.2%} + false alarm {false_alarm / view.scored_seconds:.2%} "
            f"+ confusion {confusion / view.scored_seconds:.2%} of {view.scored_seconds:.1f} s."
        )
    return (
        f"Who speaks when, one lane per speaker, each diarization's speakers coloured as the optimal DER "
        f"mapping pairs them with {TRACK_NAMES[view.reference]}'s; beneath each scored row its missed "
        f"speech, false alarm and confusion; grey: not scored.{figures}"
    )
