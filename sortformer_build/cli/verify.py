"""`sortformer-build-verify PATH...`: the static checks of a build, on any saved package.

The geometry comes from the package's metadata; the compression and deployment target from
the manifest beside it (`<name>.json`) when there is one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sortformer_build.coreml.targets import DEFAULT_TARGET, DeploymentTarget

if TYPE_CHECKING:
    from sortformer_build.verify.lint import Expectation


def expectation_for(package: Path, target: DeploymentTarget | None) -> tuple[Expectation, bool]:
    """What to hold `package` to, and whether a manifest said what its compression is."""
    from sortformer_build.records.base import RecordError
    from sortformer_build.records.manifest import Manifest
    from sortformer_build.stages.artifact import ArtifactPaths
    from sortformer_build.verify.lint import Expectation

    try:
        manifest = Manifest.read(ArtifactPaths.beside(package).manifest)
    except RecordError:
        return Expectation(deployment_target=target or DEFAULT_TARGET), False
    recipe = manifest.compression.recipe
    return Expectation(
        nbits=manifest.compression.nbits,
        tensor_bits=None if recipe is None else recipe.tensor_bits,
        max_bytes=None if recipe is None else recipe.recipe.budget_bytes,
        deployment_target=target or manifest.deployment_target,
    ), True


def not_a_package(path: Path) -> str | None:
    """Why `path` cannot be checked at all, found without loading any library."""
    if not path.exists():
        return f"{path} does not exist"
    if not (path / "Manifest.json").is_file():
        return f"{path} is not an .mlpackage folder (it holds no Manifest.json)"
    return None


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
    missing = [problem for problem in map(not_a_package, arguments.packages) if problem]
    if missing:
        for problem in missing:
            print(f"sortformer-build-verify: error: {problem}", file=sys.stderr)
        return 2
    from sortformer_build.cli.logs import quiet_third_party
    from sortformer_build.verify.lint import lint_package

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
