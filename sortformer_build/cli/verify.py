"""`sortformer-build-verify PATH...`: the static checks of a build, on any saved package.

The geometry comes from the package's metadata; the compression and deployment target from
the manifest beside it (`<name>.json`) when there is one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sortformer_build.cli.logs import quiet_third_party
from sortformer_build.coreml.targets import DEFAULT_TARGET, DeploymentTarget
from sortformer_build.records.base import RecordError
from sortformer_build.records.manifest import Manifest
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.verify.lint import Expectation, lint_package


def expectation_for(package: Path, target: DeploymentTarget | None) -> tuple[Expectation, bool]:
    """What to hold `package` to, and whether a manifest said what its compression is."""
    try:
        manifest = Manifest.read(ArtifactPaths.beside(package).manifest)
    except RecordError:
        return Expectation(deployment_target=target or DEFAULT_TARGET), False
    return Expectation(
        nbits=manifest.compression.nbits, deployment_target=target or manifest.deployment_target
    ), True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sortformer-build-verify",
        description="Check saved Sortformer packages: I/O contract for the geometry in their metadata, "
        "no tensor that is both input and output, ops valid for the deployment target, no linear "
        "int8 weights, compression as the manifest says.",
    )
    parser.add_argument("packages", nargs="+", type=Path, metavar="PATH", help=".mlpackage folders")
    parser.add_argument(
        "--target",
        choices=[target.value for target in DeploymentTarget],
        help=f"deployment target (default: the manifest's, else {DEFAULT_TARGET.value})",
    )
    arguments = parser.parse_args(argv)
    quiet_third_party()
    failed = False
    for package in arguments.packages:
        target = DeploymentTarget(arguments.target) if arguments.target else None
        expected, has_manifest = expectation_for(package, target)
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
