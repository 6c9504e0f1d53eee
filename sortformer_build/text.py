"""Figures and tables as users read them, in one place: a figure that was not measured prints as
a dash, never as 0."""

from __future__ import annotations

from collections.abc import Iterable

NOT_MEASURED = "—"
MB = 1e6


def percent(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.2%}"


def scientific(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.1e}"


def points(value: float | None) -> str:
    """A change in percentage points."""
    return NOT_MEASURED if value is None else f"{value:+.2f} pp"


def ratio(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.2f}"


def megabytes(value: int | None) -> str:
    return NOT_MEASURED if value is None else f"{value / MB:.1f} MB"


def seconds(value: float | None) -> str:
    if value is None:
        return NOT_MEASURED
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def markdown_table(columns: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = list(columns)
    lines = [header, ["---"] * len(header), *(list(row) for row in rows)]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)
