"""The command line checked before Hydra runs a job: an unknown option of a group, an unknown key
(with or without `+`), a value of the wrong type or an enum typo each become one line naming
what was wrong, with at most one line of hint, instead of Hydra's report (which
HYDRA_FULL_ERROR=1 still gives)."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sortformer_build.config import BuildConfig

CONFIG_MODULE = "sortformer_build.conf"
PRIMARY_CONFIG = "build"
GROUPS = ("variant", "compression", "checkpoint", "evaluate", "trace")
OPTIONAL_GROUPS = ("evaluate", "trace")
# Flags after which Hydra does something other than run jobs (help, printing the config, shell
# completion); they get Hydra's own handling.
_RUNS_JOBS = ("--multirun", "-m")


@dataclass(frozen=True)
class Problem:
    message: str
    hint: str | None = None


def check_command_line(args: list[str]) -> Problem | None:
    """The first mistake in `args`, or None (also when Hydra should report it in full)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    if any(arg.startswith("-") and arg not in _RUNS_JOBS for arg in args):
        return None
    overrides = [arg for arg in args if arg not in _RUNS_JOBS]
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        try:
            parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)
        except HydraException as error:
            return Problem(f"cannot read the override: {_first_line(error)}")
        first: list[str] = []
        for override in parsed:
            problem = _check_override(override, loader)
            if problem is not None:
                return problem
            if not override.key_or_group.startswith("hydra"):
                first.append(_first_value(override))
        try:
            OmegaConf.to_object(compose(config_name=PRIMARY_CONFIG, overrides=first))
        except (HydraException, OmegaConfBaseException) as error:
            return Problem(f"invalid configuration: {describe_config_error(error)}")
    return None


def _check_override(override: Override, loader: Any) -> Problem | None:
    key = override.key_or_group
    if key.startswith("hydra") or override.is_delete():
        return None
    if key in GROUPS and override.package is None:
        options = loader.get_group_options(key)
        for value in _values(override):
            if value not in options and not (key in OPTIONAL_GROUPS and value == "null"):
                return Problem(
                    f"unknown {key} option '{value}'{_closest(value, options)}",
                    f"{key} options: {', '.join(options)}",
                )
        return None
    known = set(_paths(BuildConfig))
    if key not in known:
        return Problem(
            f"unknown key '{key}'{_closest(key, sorted(known))}", "sortformer-build --help lists the options"
        )
    return None


def _values(override: Override) -> list[str]:
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [str(override.value())]


def _first_value(override: Override) -> str:
    """The override with its first value: enough to compose one job and check its types."""
    if not override.is_sweep_override():
        return override.input_line or ""
    prefix = "+" if override.is_add() else "++" if override.is_force_add() else ""
    return f"{prefix}{override.key_or_group}={next(iter(override.sweep_string_iterator()))}"


def _paths(schema: type, prefix: str = "") -> Iterator[str]:
    """Every key a config of `schema` has, dotted: `variant.fifo_len`, `verify.parity`..."""
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        path = f"{prefix}{field.name}"
        yield path
        nested = _dataclass_of(hints[field.name])
        if nested is not None:
            yield from _paths(nested, f"{path}.")


def _dataclass_of(annotation: Any) -> type | None:
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next((found for arg in typing.get_args(annotation) if (found := _dataclass_of(arg))), None)
    return None


def _closest(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def describe_config_error(error: BaseException) -> str:
    """OmegaConf's own words on the value it refused, with the key, in one line (Hydra wraps them
    in "Error merging override ...")."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            return f"{cause.full_key}: {_first_line(cause)}"
        cause = cause.__cause__
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
