"""The one reader of a saved `.mlpackage`: its specification, the ML programs it holds (one, or
several in a pipeline) and where their weights are; plus the package's content digest and size.
Lint, the executor, palettization and the digests all read packages through here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sortformer_build.errors import BuildError
from sortformer_build.store.digests import file_stamp, remembered_digest

MANIFEST = "Manifest.json"
_DEFAULT_FUNCTION = "main"


class PackageError(BuildError):
    """A folder that is not a readable `.mlpackage`."""


@dataclass(frozen=True)
class SavedProgram:
    """One ML program of a package and the function a prediction runs."""

    index: int
    model: Any  # the Model_pb2.Model that holds the program
    function_name: str
    model_dir: Path  # `@model_path` of its weight references

    @property
    def function(self) -> Any:
        functions = self.model.mlProgram.functions
        if self.function_name not in functions:
            raise PackageError(
                f"program {self.index} has no function '{self.function_name}' (it has {sorted(functions)})"
            )
        return functions[self.function_name]

    @property
    def opset(self) -> str:
        return str(self.function.opset)

    @property
    def block(self) -> Any:
        function = self.function
        return function.block_specializations[function.opset]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(value.name for value in self.function.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.block.outputs)

    @property
    def operations(self) -> tuple[Any, ...]:
        return tuple(self.block.operations)

    def describe(self) -> str:
        outputs = ", ".join(feature.name for feature in self.model.description.output)
        return f"program {self.index} ({outputs})"


@dataclass(frozen=True)
class SavedPackage:
    path: Path
    spec: Any  # Model_pb2.Model
    spec_file: Path
    programs: tuple[SavedProgram, ...]

    @property
    def weights_dir(self) -> Path:
        return self.spec_file.parent / "weights"

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.spec.description.metadata.userDefined)

    @property
    def features(self) -> Any:
        """Where inputs and outputs are declared: per function in multifunction models."""
        description = self.spec.description
        if not description.functions:
            return description
        name = description.defaultFunctionName or _DEFAULT_FUNCTION
        for function in description.functions:
            if function.name == name:
                return function
        raise PackageError(f"the model description of {self.path} has no function '{name}'")


def read_package(path: Path) -> SavedPackage:
    """Parse a saved package without coremltools' model loader (which needs macOS to compile)."""
    from coremltools.proto import Model_pb2

    spec_file = _root_model_file(path)
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(spec_file.read_bytes())
    except (OSError, ValueError) as error:
        raise PackageError(f"cannot read {spec_file}: {error}") from None
    programs: list[SavedProgram] = []
    _collect_programs(spec, spec_file.parent, programs)
    return SavedPackage(path=path, spec=spec, spec_file=spec_file, programs=tuple(programs))


def operation_name(op: Any) -> str:
    """The MIL name of a saved operation, which coremltools' per-op configs refer to (a const's
    output may be named otherwise); its first output's name when it has none."""
    if "name" in op.attributes:
        return str(op.attributes["name"].immediateValue.tensor.strings.values[0])
    return str(op.outputs[0].name)


def write_spec(package: SavedPackage, spec: Any) -> None:
    """Rewrite the specification with map entries (metadata, op attributes) in key order.
    Protobuf writes maps in a per-process hash order, so one model saved by two processes would
    otherwise differ in bytes and in content hash."""
    package.spec_file.write_bytes(spec.SerializeToString(deterministic=True))


def make_spec_deterministic(path: Path) -> None:
    package = read_package(path)
    write_spec(package, package.spec)


def _root_model_file(package: Path) -> Path:
    manifest = package / MANIFEST
    try:
        entries = json.loads(manifest.read_text())
        root = entries["itemInfoEntries"][entries["rootModelIdentifier"]]
        return package / "Data" / root["path"]
    except FileNotFoundError:
        raise PackageError(f"{package} is not an .mlpackage: {MANIFEST} is missing") from None
    except (ValueError, KeyError, TypeError) as error:
        raise PackageError(f"{package}: unreadable {MANIFEST} ({error})") from None


def _collect_programs(model: Any, model_dir: Path, found: list[SavedProgram]) -> None:
    kind = model.WhichOneof("Type")
    if kind == "pipeline":
        for sub_model in model.pipeline.models:
            _collect_programs(sub_model, model_dir, found)
        return
    if kind != "mlProgram":
        raise PackageError(f"model type '{kind}' is not supported (only ML programs and pipelines)")
    name = model.description.defaultFunctionName or _DEFAULT_FUNCTION
    found.append(SavedProgram(len(found), model, name, model_dir))


def package_digest(package: Path, memo_dir: Path | None = None, known: str | None = None) -> str:
    """sha256 of a package's content, blind to the random item identifiers coremltools writes
    into Manifest.json: two packages with the same programs and weights hash the same.

    With `memo_dir` the digest is remembered until a file's size or mtime changes, so a warm
    sweep checks its published packages by their file stamps alone. `known` seeds the memo with
    a digest just computed for the same files.
    """
    if memo_dir is None:
        return _content_digest(package)
    stamp = [[path.relative_to(package).as_posix(), *file_stamp(path)] for path in _files(package)]
    return remembered_digest(memo_dir, package, stamp, lambda: known or _content_digest(package))


def package_size(package: Path) -> int:
    return sum(path.stat().st_size for path in _files(package))


def _files(package: Path) -> list[Path]:
    return sorted(path for path in package.rglob("*") if path.is_file())


def _content_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for path in _files(package):
        relative = path.relative_to(package).as_posix()
        data = _manifest_without_identifiers(path) if relative == MANIFEST else path.read_bytes()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _manifest_without_identifiers(path: Path) -> bytes:
    manifest = json.loads(path.read_text())
    entries = sorted(
        json.dumps(entry, sort_keys=True) for entry in manifest.get("itemInfoEntries", {}).values()
    )
    return json.dumps({"format": manifest.get("fileFormatVersion"), "items": entries}).encode()
