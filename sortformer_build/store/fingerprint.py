"""The code a stage runs, as a digest: the import closure of its module inside this package.

Imports are read from the source (nothing is imported), at module level and inside functions
alike: the heavy libraries are imported lazily, and so are parts of this package, and both run.
Imports under `if TYPE_CHECKING:` do not run and are not followed. A module's digest covers its
bytes; a change anywhere in a closure re-keys every stage whose closure holds it, and a change
outside (the model card, say) re-keys none.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path


class SourceTree:
    """The package's sources under `root` (the folder named after the package)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules = frozenset(self._modules())
        self._imports: dict[str, frozenset[str]] = {}
        self._digests: dict[str, str] = {}

    def fingerprint(self, modules: Iterable[str]) -> str:
        """sha256 of the sources of `modules` and of everything they import from this package."""
        digest = hashlib.sha256()
        for name in sorted(self.closure(modules)):
            digest.update(f"{name}\0{self._digest(name)}\0".encode())
        return digest.hexdigest()

    def closure(self, modules: Iterable[str]) -> set[str]:
        """`modules` and every module of this package they import, directly or not."""
        seen: set[str] = set()
        pending = list(modules)
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            pending.extend(self._imported_by(name))
        return seen

    def _modules(self) -> Iterator[str]:
        for path in self.root.rglob("*.py"):
            parts = path.relative_to(self.root.parent).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def _source(self, name: str) -> Path:
        base = self.root.parent.joinpath(*name.split("."))
        return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")

    def _digest(self, name: str) -> str:
        """Read once: the code a process runs is the code it imported, even if the files change
        while it runs."""
        if name not in self._digests:
            self._digests[name] = hashlib.sha256(self._source(name).read_bytes()).hexdigest()
        return self._digests[name]

    def _imported_by(self, name: str) -> frozenset[str]:
        """The modules of this package that importing `name` (or calling its functions) runs:
        each imported module with the packages above it, whose `__init__` runs first."""
        if name not in self._imports:
            path = self._source(name)
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            found: set[str] = set()
            for target in _targets(ast.parse(path.read_bytes(), str(path)), package):
                parts = target.split(".")
                found.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
            self._imports[name] = frozenset(found & self.modules)
        return self._imports[name]


@functools.cache
def installed() -> SourceTree:
    """The sources this process runs."""
    return SourceTree(Path(__file__).resolve().parents[1])


def fingerprint(modules: Iterable[str]) -> str:
    return installed().fingerprint(modules)


def _targets(tree: ast.AST, package: str) -> Iterator[str]:
    for node in _running(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            yield base
            # `from package import module` imports the module too.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _running(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (child for orelse in node.orelse for child in (orelse, *_running(orelse)))
            continue
        yield node
        yield from _running(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
