"""`sortformer-build-cache`: what the build cache holds, and pruning it.

    sortformer-build-cache                      per stage: entries, size, last use
    sortformer-build-cache prune --max-gb 5     least recently used entries down to 5 GB
    sortformer-build-cache prune --older-than 2026-11-01
    sortformer-build-cache prune --all

Entries a running job holds are kept; published artifacts are never touched.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

from sortformer_build.store.budget import GB, Selection, everything, older_than, prune, shrink_to, summary
from sortformer_build.store.layout import CacheLayout

MB = 1e6


def show(layout: CacheLayout) -> str:
    rows = summary(layout)
    lines = [f"Build cache {layout.root}"]
    if not rows:
        return lines[0] + ": empty"
    lines.append(f"  {'stage':<16} {'entries':>7} {'size':>12}  last use")
    for row in rows:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.last_use)) if row.last_use else "-"
        lines.append(f"  {row.stage:<16} {row.entries:>7} {row.bytes / MB:>9.1f} MB  {used}")
    total = sum(row.bytes for row in rows) / MB
    lines.append(f"  {'total':<16} {sum(row.entries for row in rows):>7} {total:>9.1f} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sortformer-build-cache", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir", help="the cache (default: $SORTFORMER_BUILD_CACHE, else the user's cache folder)"
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("show", help="what the cache holds (the default)")
    pruning = commands.add_parser("prune", help="remove stage entries no running job holds")
    which = pruning.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every entry")
    which.add_argument("--older-than", metavar="YYYY-MM-DD", help="entries last used before this date")
    which.add_argument("--max-gb", type=float, help="least recently used entries, down to this size")
    arguments = parser.parse_args(argv)
    layout = CacheLayout.at(arguments.cache_dir)
    if arguments.command == "prune":
        try:
            select = _selection(arguments)
        except ValueError as error:
            print(f"sortformer-build-cache: error: {error}", file=sys.stderr)
            return 2
        removed = prune(layout.build, select) if select else shrink_to(layout.build, _max_bytes(arguments))
        print(f"Removed {len(removed)} entries ({sum(entry.bytes for entry in removed) / MB:.1f} MB)")
    print(show(layout))
    return 0


def _selection(arguments: argparse.Namespace) -> Selection | None:
    """What --all or --older-than picks; None for --max-gb, which shrinks instead."""
    if arguments.all:
        return everything
    if arguments.older_than:
        try:
            date = datetime.strptime(arguments.older_than, "%Y-%m-%d")
        except ValueError:
            raise ValueError(
                f"--older-than takes a date as YYYY-MM-DD, got {arguments.older_than!r}"
            ) from None
        return older_than(date.timestamp())
    if arguments.max_gb < 0:
        raise ValueError(f"--max-gb must not be negative, got {arguments.max_gb}")
    return None


def _max_bytes(arguments: argparse.Namespace) -> int:
    return int(arguments.max_gb * GB)


if __name__ == "__main__":
    sys.exit(main())
