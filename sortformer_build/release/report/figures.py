"""The report's plots, drawn with matplotlib's object API (no pyplot: no global state, no
display) and returned as PNG bytes: a diarization timeline, a package's probabilities against
NeMo's, and the release's size against error."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from sortformer_build.geometry import FRAME_SECONDS
from sortformer_build.records.parity import TraceSource
from sortformer_build.release.report.timeline import RecordingTimeline, Span, Track
from sortformer_build.verify.parity import DECISION_THRESHOLD
from sortformer_build.verify.probabilities import Probabilities

DPI = 110
# Speakers and model slots; the error colours are kept out of this palette.
SPEAKER_COLOURS = ("#1f77b4", "#2ca02c", "#17becf", "#bcbd22", "#8c564b", "#e377c2", "#393b79", "#637939")
UNMATCHED = "#9e9e9e"
ERROR_COLOURS = {"missed speech": "#ff7f0e", "false alarm": "#d62728", "confusion": "#9467bd"}
UNSCORED = "#e8e8e8"
GATE = "#d62728"
STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@contextmanager
def _style() -> Iterator[None]:
    with mpl.rc_context(STYLE):
        yield


def png(figure: Figure) -> bytes:
    """The figure as PNG, without the writer's version in its metadata (same input, same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


# A timeline: rows of lanes, one lane per speaker of each diarization, and an error lane beneath
# each diarization scored against the reference.
LANE = 1.0
GAP = 0.6


def timeline_figure(view: RecordingTimeline, title: str) -> Figure:
    colours = {speaker: SPEAKER_COLOURS[i % len(SPEAKER_COLOURS)] for i, speaker in enumerate(view.speakers)}
    rows = [_track_rows(track, view) for track in view.tracks]
    height_units = sum(len(lanes) for lanes in rows) * LANE + GAP * len(rows)
    with _style():
        figure = Figure(figsize=(10, 1.1 + 0.19 * height_units), layout="constrained")
        axes = figure.add_subplot()
        for start, end in view.unscored:
            axes.axvspan(start, end, color=UNSCORED, zorder=0, linewidth=0)
        y, ticks, labels = 0.0, [], []
        for track, lanes in zip(view.tracks, rows, strict=True):
            top = y
            for lane in lanes:
                y -= LANE
                _draw_lane(axes, track, lane, y, colours)
            ticks.append((top + y) / 2)
            labels.append(track.name + (" (reference)" if track.set is view.reference else ""))
            y -= GAP
            axes.axhline(y + GAP / 2, color="#bbbbbb", linewidth=0.5)
        axes.set_yticks(ticks, labels)
        axes.tick_params(axis="y", length=0)
        axes.set_ylim(y + GAP / 2, 0.1)
        axes.set_xlim(*view.extent)
        axes.set_xlabel("seconds")
        axes.set_title(title, loc="left")
        for side in ("left", "right"):
            axes.spines[side].set_visible(False)
        figure.legend(
            handles=_timeline_legend(view, colours),
            loc="outside lower center",
            ncols=min(8, len(colours) + 5),
            frameon=False,
        )
    return figure


def _track_rows(track: Track, view: RecordingTimeline) -> list[str | None]:
    """A track's lanes: the reference speakers, its unmatched speakers, then (None) its errors."""
    lanes: list[str | None] = [*view.speakers, *sorted(track.unmatched)]
    return [*lanes, None] if track.errors is not None else lanes


def _draw_lane(axes: Axes, track: Track, lane: str | None, y: float, colours: dict[str, str]) -> None:
    height = LANE * 0.8
    if lane is None:
        assert track.errors is not None
        for kind, spans in zip(
            ERROR_COLOURS,
            (track.errors.missed, track.errors.false_alarm, track.errors.confusion),
            strict=True,
        ):
            axes.broken_barh(_widths(spans), (y, height), facecolors=ERROR_COLOURS[kind], linewidth=0)
        return
    spans = track.lanes.get(lane, ())
    if lane in track.unmatched:
        axes.broken_barh(
            _widths(spans), (y, height), facecolors="none", edgecolor=UNMATCHED, hatch="////", linewidth=0.5
        )
    else:
        axes.broken_barh(_widths(spans), (y, height), facecolors=colours.get(lane, UNMATCHED), linewidth=0)


def _widths(spans: Sequence[Span]) -> list[tuple[float, float]]:
    return [(start, end - start) for start, end in spans]


def _timeline_legend(view: RecordingTimeline, colours: dict[str, str]) -> list[Patch]:
    handles = [Patch(facecolor=colour, label=speaker) for speaker, colour in colours.items()]
    if any(track.unmatched for track in view.tracks):
        handles.append(Patch(facecolor="none", edgecolor=UNMATCHED, hatch="////", label="unmatched speaker"))
    handles += [Patch(facecolor=colour, label=kind) for kind, colour in ERROR_COLOURS.items()]
    if view.unscored:
        handles.append(Patch(facecolor=UNSCORED, label="not scored (collar, outside regions)"))
    return handles


def probability_figure(
    probabilities: Probabilities, gate: float | None, gate_words: str, title: str
) -> Figure:
    """The package's probabilities (solid) over NeMo's (dashed) per speaker slot, the frames whose
    decision at 0.5 differs, and |p - p_nemo| beneath with the |dp| gate as a line when the
    compression has one."""
    seconds = np.arange(probabilities.nemo.shape[0]) * FRAME_SECONDS
    error = probabilities.error
    differs = np.flatnonzero(
        ((probabilities.package > DECISION_THRESHOLD) != (probabilities.nemo > DECISION_THRESHOLD)).any(
            axis=1
        )
    )
    with _style():
        figure = Figure(figsize=(10, 4.2), layout="constrained")
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        for slot in range(probabilities.nemo.shape[1]):
            colour = SPEAKER_COLOURS[slot % len(SPEAKER_COLOURS)]
            top.plot(
                seconds, probabilities.package[:, slot], color=colour, linewidth=1.1, label=f"slot {slot}"
            )
            top.plot(
                seconds, probabilities.nemo[:, slot], color=colour, linewidth=0.9, linestyle="--", alpha=0.8
            )
            bottom.plot(seconds, error[:, slot], color=colour, linewidth=0.8)
        top.axhline(
            DECISION_THRESHOLD, color="#666666", linewidth=0.7, linestyle=":", label="decision at 0.5"
        )
        if differs.size:
            top.plot(
                seconds[differs],
                np.full(differs.size, 1.04),
                "|",
                color=GATE,
                markersize=6,
                label="decision differs",
            )
        top.plot([], [], color="#444444", linestyle="--", linewidth=0.9, label="NeMo (dashed)")
        top.set_ylim(-0.02, 1.08)
        top.set_ylabel("speaker probability")
        top.set_title(title, loc="left")
        top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        peak = float(error.max(initial=0.0))
        if gate is not None:
            bottom.axhline(gate, color=GATE, linewidth=1.0, linestyle="--", label="gate")
        bottom.set_title(gate_words, loc="left", fontsize=7.5, color=GATE if gate is not None else "#444444")
        bottom.set_ylim(0, max(peak, gate or 0.0) * 1.15 or 1e-3)
        bottom.set_ylabel("|p - p_nemo|")
        bottom.set_xlabel(_x_label(probabilities))
        _stretch_marks(top, bottom, probabilities)
    return figure


def _x_label(probabilities: Probabilities) -> str:
    if probabilities.source is TraceSource.windows:
        return "seconds, the reference windows one after the other"
    return "seconds into the verification stream"


def _stretch_marks(top: Axes, bottom: Axes, probabilities: Probabilities) -> None:
    """Where one window ends and the next begins, and what each is."""
    if len(probabilities.stretches) < 2:
        return
    start = 0
    for stretch in probabilities.stretches:
        if start:
            for axes in (top, bottom):
                axes.axvline(start * FRAME_SECONDS, color="#444444", linewidth=0.8)
        top.text(
            (start + stretch.frames / 2) * FRAME_SECONDS,
            0.62,
            textwrap.fill(stretch.name, 28),
            fontsize=6.5,
            ha="center",
            color="#444444",
            bbox={"facecolor": "white", "alpha": 0.75, "linewidth": 0},
        )
        start += stretch.frames


@dataclass(frozen=True)
class TradeoffPoint:
    """One artifact on the size-against-error plot."""

    name: str  # the file name: twins share it
    compression: str
    megabytes: float
    max_abs_error: float | None  # over the verification stream (offline: the windows)
    from_windows: bool
    der_vs_nemo: float | None  # percent, the first evaluation's


def tradeoff_figure(points: Sequence[TradeoffPoint]) -> Figure:
    """Size against stream max |dp| (and DER against NeMo when evaluated): one point per artifact,
    twins (same file name) joined."""
    evaluated = any(point.der_vs_nemo is not None for point in points)
    compressions = list(dict.fromkeys(point.compression for point in points))
    colours = {name: SPEAKER_COLOURS[i % len(SPEAKER_COLOURS)] for i, name in enumerate(compressions)}
    with _style():
        figure = Figure(figsize=(10 if evaluated else 6, 4.2), layout="constrained")
        panels = figure.subplots(1, 2 if evaluated else 1, squeeze=False)[0]
        _tradeoff_panel(panels[0], points, colours, lambda p: p.max_abs_error, "max |p - p_nemo| (log)")
        panels[0].set_yscale("log")
        if evaluated:
            _tradeoff_panel(panels[1], points, colours, lambda p: p.der_vs_nemo, "DER against NeMo (%)")
            top = max(1.0, *(p.der_vs_nemo or 0.0 for p in points)) * 1.1
            panels[1].set_ylim(-0.03 * top, top)
        handles: list[Artist] = [Patch(facecolor=colour, label=name) for name, colour in colours.items()]
        if any(point.from_windows for point in points):
            handles.append(
                Line2D([], [], marker="s", linestyle="", color="#555555", label="offline: windows, no stream")
            )
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    return figure


def _tradeoff_panel(
    axes: Axes,
    points: Sequence[TradeoffPoint],
    colours: dict[str, str],
    value: Callable[[TradeoffPoint], float | None],
    label: str,
) -> None:
    measured = {id(point): figure for point in points if (figure := value(point)) is not None}
    shown = [point for point in points if id(point) in measured]
    by_name: dict[str, list[TradeoffPoint]] = {}
    for point in shown:
        by_name.setdefault(point.name, []).append(point)
    for twins in by_name.values():
        if len(twins) > 1:
            ordered = sorted(twins, key=lambda point: point.megabytes)
            axes.plot(
                [p.megabytes for p in ordered],
                [measured[id(p)] for p in ordered],
                color="#aaaaaa",
                linewidth=0.8,
                zorder=1,
            )
    for point in shown:
        axes.scatter(
            point.megabytes,
            measured[id(point)],
            color=colours[point.compression],
            marker="s" if point.from_windows else "o",
            zorder=2,
            s=28,
        )
    # One label per geometry, at its largest package: its twins hang from it by the line.
    for twins in by_name.values():
        largest = max(twins, key=lambda point: point.megabytes)
        axes.annotate(
            largest.name,
            (largest.megabytes, measured[id(largest)]),
            fontsize=6,
            xytext=(4, 3),
            textcoords="offset points",
        )
    axes.set_xlabel("package size (MB)")
    axes.set_ylabel(label)
    if not shown:
        axes.text(0.5, 0.5, "not measured", transform=axes.transAxes, ha="center", color="#666666")
