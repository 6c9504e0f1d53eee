"""The release at a glance: one row per artifact (status, size and ratio to fp16, parity figures,
DER when evaluated, cache state), or a failed job and its error, as cells that the report renders
in HTML and the model card in Markdown."""

from __future__ import annotations

from dataclasses import dataclass

from sortformer_build import text
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.matrix import MatrixRow
from sortformer_build.release.matrix import DER_COLUMNS, cache_state

LEAD = ("artifact", "status", "precision", "latency", "size", "vs fp16")
PARITY = (
    "max |dp| per call",
    "decisions per call",
    "stream max |dp|",
    "stream decisions",
    "decisions vs fp16",
)
TAIL = ("cache", "wall")
# What a published release's card leaves out: every job there was built, and how is the build's affair.
BUILD_ONLY = ("status", "cache", "wall")


@dataclass(frozen=True)
class GlanceRow:
    cells: dict[str, str]
    error: str | None  # a failed job's: it has no figures, the error stands in their place

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class Glance:
    columns: tuple[str, ...]
    rows: tuple[GlanceRow, ...]

    def cells(self) -> list[list[str]]:
        return [[row.cells.get(column, "") for column in self.columns] for row in self.rows]

    def markdown(self) -> str:
        return text.markdown_table(self.columns, self.cells())


def glance(rows: list[MatrixRow], for_card: bool = False) -> Glance:
    evaluated = any(row.manifest is not None and row.manifest.evaluations for row in rows)
    columns = (*LEAD, *PARITY, *(DER_COLUMNS if evaluated else ()), *TAIL)
    if for_card:
        columns = tuple(column for column in columns if column not in BUILD_ONLY)
    return Glance(columns, tuple(_row(row, for_card) for row in rows))


def status_word(row: MatrixRow) -> str:
    if not row.status.ok:
        return "failed"
    if row.manifest is None:
        return "failed: manifest unreadable"
    return "up to date" if row.status.up_to_date else "built"


def _row(row: MatrixRow, for_card: bool) -> GlanceRow:
    manifest = row.manifest
    # A card names models as the runtime downloads them, whatever the format.
    label = manifest.release_stem if for_card and manifest is not None else row.label
    cells = {"artifact": label, "status": status_word(row), "wall": text.seconds(row.status.seconds)}
    if manifest is None:
        return GlanceRow(cells, row.status.error or "its manifest is missing or unreadable")
    parity = manifest.verification.parity
    calls = None if parity is None else parity.per_call_vs_nemo.overall
    stream = (
        None if parity is None or parity.streaming_vs_nemo is None else parity.streaming_vs_nemo.agreement
    )
    twin = None if parity is None or parity.per_call_vs_fp16 is None else parity.per_call_vs_fp16.overall
    cells |= {
        "precision": manifest.compression.name,
        "latency": manifest.geometry.latency,
        "size": text.megabytes(manifest.artifact.bytes),
        "vs fp16": text.ratio(row.ratio_to_fp16),
        "max |dp| per call": text.scientific(None if calls is None else calls.max_abs_prob_error),
        "decisions per call": text.percent(None if calls is None else calls.decision_agreement),
        "stream max |dp|": text.scientific(None if stream is None else stream.max_abs_prob_error),
        "stream decisions": text.percent(None if stream is None else stream.decision_agreement),
        "decisions vs fp16": text.percent(None if twin is None else twin.decision_agreement),
        "cache": cache_state(row.status, manifest),
        **_der(manifest),
    }
    return GlanceRow(cells, None)


def _der(manifest: Manifest) -> dict[str, str]:
    """DER against the ground truth, NeMo and the fp16 twin, per dataset (named when several)."""
    evaluations = manifest.evaluations
    if not evaluations:
        return dict.fromkeys(DER_COLUMNS, text.NOT_MEASURED)
    named = len(evaluations) > 1

    def joined(values: list[str]) -> str:
        return "; ".join(
            f"{value} ({evaluation.dataset})" if named else value
            for value, evaluation in zip(values, evaluations, strict=True)
        )

    return dict(
        zip(
            DER_COLUMNS,
            (
                joined(
                    [
                        text.percent(None if e.der_vs_truth is None else e.der_vs_truth.der)
                        for e in evaluations
                    ]
                ),
                joined([text.percent(e.der_vs_nemo.der) for e in evaluations]),
                joined([text.points(e.der_change_vs_fp16_pp) for e in evaluations]),
            ),
            strict=True,
        )
    )
