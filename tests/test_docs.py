"""The README and docs/ hold only what exists: files, modules, commands, config groups, options and
fields named there are real, command-line examples compose, links resolve, and the configuration
reference is the config schema's."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import itertools
import re
import shlex
import tomllib
import typing
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sortformer_build.cli.app import register_schemas
from sortformer_build.cli.preflight import CONFIG_MODULE, GROUPS, check_command_line
from sortformer_build.cli.publish import register_schema as register_publish_schema
from sortformer_build.config import BuildConfig
from sortformer_build.release.hub.config import PublishConfig

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGURATION = ROOT / "docs" / "configuration.md"
# Backticked paths under these folders name files of this repository.
REPO_FOLDERS = ("sortformer_build/", "hydra_plugins/", "tests/", "benchmarks/", "docs/", "schemas/", ".ci/")
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.fixture(autouse=True, scope="module")
def _schemas() -> None:
    register_schemas()
    register_publish_schema()


def _ids(pages: list[Path]) -> list[str]:
    return [str(page.relative_to(ROOT)) for page in pages]


def _code_spans(text: str) -> Iterator[str]:
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    yield from re.findall(r"`([^`\n]+)`", prose)


def _command_lines(text: str) -> Iterator[list[str]]:
    """Each shell command of the page's bash blocks as words: continuation lines and quoted
    newlines joined, comments dropped, `&&` chains split."""
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:
                continue
            pending = ""
            while words:
                command = list(itertools.takewhile(lambda word: word != "&&", words))
                words = words[len(command) + 1 :]
                if command:
                    yield command


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_named_files_and_modules_exist(page: Path) -> None:
    missing = []
    for span in _code_spans(page.read_text()):
        for token in span.split():
            token = token.rstrip(".,:;)")
            if token.startswith(REPO_FOLDERS) and not re.search(r"[<>*{$]", token):
                exists = (ROOT / token).exists()
            elif re.fullmatch(r"sortformer_build(\.\w+)+", token):
                exists = _names_something(token)
            else:
                continue
            if not exists:
                missing.append(token)
    assert not missing, f"{page.name} names what does not exist: {missing}"


def _names_something(dotted: str) -> bool:
    """A module of this package, or a name defined in one (`sortformer_build.cores.job_cores`)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module = ".".join(parts[:split])
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            value: object = importlib.import_module(module)
            for attribute in parts[split:]:
                if not hasattr(value, attribute):
                    return False
                value = getattr(value, attribute)
            return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_links_resolve(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)
            if anchor not in {_slug(heading) for heading in headings}:
                broken.append(target)
    assert not broken, f"{page.name} links to what does not exist: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_command_examples_compose(page: Path) -> None:
    """Every console command is one of ours, and every example of the build or publish command is
    an override set Hydra's compose API accepts (sweeps by their first value)."""
    for words in _command_lines(page.read_text()):
        command = " ".join(words)
        name = Path(words[0]).name
        if not name.startswith("sortformer-build"):
            continue
        assert name in SCRIPTS, f"{page.name}: no console script {name}: {command}"
        arguments = words[1:]
        if name == "sortformer-build":
            problem = check_command_line(arguments)
            assert problem is None, f"{page.name}: {command}: {problem}"
        elif name == "sortformer-build-publish":
            _compose_publish([word for word in arguments if not word.startswith("-")])


def _compose_publish(overrides: list[str]) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        compose(config_name="publish", overrides=overrides)


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_group_options_exist(page: Path) -> None:
    options = _group_options()
    unknown = []
    for span in _code_spans(page.read_text()):
        for group, option in re.findall(r"\b(" + "|".join(GROUPS) + r")=([\w.]+)", span):
            if option not in options[group] and not option.startswith("glob"):
                unknown.append(f"{group}={option}")
    assert not unknown, f"{page.name} names options that do not exist: {unknown}"


def _group_options() -> dict[str, list[str]]:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return {group: loader.get_group_options(group) for group in GROUPS}


def test_configuration_lists_every_group_option() -> None:
    table = _table(CONFIGURATION.read_text(), "## Groups")
    for group, options in _group_options().items():
        row = next(row for row in table if row[0] == f"`{group}`")
        listed = re.findall(r"`(\w+)`", row[1])
        assert sorted(listed) == sorted(options), group


@pytest.mark.parametrize(
    ("section", "schema", "primary"),
    [("## Build fields", BuildConfig, "build"), ("## Publish fields", PublishConfig, "publish")],
)
def test_configuration_is_the_schema(section: str, schema: type, primary: str) -> None:
    """Every field of the schema, with its type and (outside the groups) its default, and no other."""
    table = _table(CONFIGURATION.read_text(), section)
    documented = {row[0].strip("`"): (row[1], row[2]) for row in table}
    defaults = _composed_defaults(primary)
    expected = {}
    for path, annotation in _fields(schema):
        in_group = path.split(".")[0] in GROUPS
        default = "per option" if in_group else _render_value(_lookup(defaults, path))
        expected[path] = (_render_type(annotation), default)
    assert sorted(documented) == sorted(expected)
    wrong = {path: (documented[path], want) for path, want in expected.items() if documented[path] != want}
    assert not wrong, f"documented vs schema: {wrong}"


def _table(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[1:]]


def _fields(schema: type, prefix: str = "") -> Iterator[tuple[str, typing.Any]]:
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        annotation = hints[field.name]
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        nested = inner[0] if len(inner) == 1 and dataclasses.is_dataclass(inner[0]) else annotation
        if dataclasses.is_dataclass(nested):
            yield from _fields(typing.cast(type, nested), f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", annotation


def _render_type(annotation: typing.Any) -> str:
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) is list:
        return f"list of {_render_type(arguments[0])}"
    if type(None) in arguments:
        (inner,) = [arg for arg in arguments if arg is not type(None)]
        return f"{_render_type(inner)} or null"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(member.value for member in annotation)
    return {str: "string", int: "integer", float: "number", bool: "boolean"}[annotation]


def _composed_defaults(primary: str) -> dict[str, typing.Any]:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        overrides = ["checkpoint=synthetic"] if primary == "build" else []
        config = compose(config_name=primary, overrides=overrides)
    plain = OmegaConf.to_container(config, resolve=False)
    assert isinstance(plain, dict)
    return typing.cast(dict[str, typing.Any], plain)


def _lookup(values: dict[str, typing.Any], path: str) -> typing.Any:
    for key in path.split("."):
        values = values[key]
    return values


def _render_value(value: typing.Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`[{', '.join(map(str, value))}]`"
    return f"`{value}`"
