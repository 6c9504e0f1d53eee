"""`sortformer-build-verify PATH...`: the static checks of a build, on any saved package.

The geometry comes from the package's metadata; the compression and deployment target from
the manifest beside it (`<name>.json`) when there is one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sortformer_build.cli.logs import quiet_third_party
from sortformer_build.verify.lint import TARGETS, Expectation, lint_package


def expectation_for(package: Path, target: str | None) -> tuple[Expectation, bool]:
    """What to hold `package` to, and whether a manifest said what its compression is."""
    manifest = package.with_suffix(".json")
    try:
        config = json.loads(manifest.read_text())["config"]
    except (FileNotFoundError, ValueError, KeyError):
        return Expectation(deployment_target=target or "iOS17"), False
    return (
        Expectation(
            nbits=config["compression"]["nbits"], deployment_target=target or config["deployment_target"]
        ),
        True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sortformer-build-verify",
        description="Check saved Sortformer packages: I/O contract for the geometry in their metadata, "
        "no tensor that is both input and output, ops valid for the deployment target, no linear "
        "int8 weights, compression as the manifest says.",
    )
    parser.add_argument("packages", nargs="+", type=Path, metavar="PATH", help=".mlpackage folders")
    parser.add_argument(
        "--target", choices=sorted(TARGETS), help="deployment target (default: manifest, else iOS17)"
    )
    arguments = parser.parse_args(argv)
    quiet_third_party()
    failed = False
    for package in arguments.packages:
        expected, has_manifest = expectation_for(package, arguments.target)
        findings = lint_package(package, expected, check_compression=has_manifest)
        for finding in findings:
            print(f"{package}: {finding}")
        if not findings:
            note = "" if has_manifest else " (no manifest beside it: compression not checked)"
            print(f"{package}: ok{note}")
        failed |= bool(findings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
