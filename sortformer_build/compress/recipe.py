"""The recipe: bits per group of head weights, written as YAML a person can read and edit.

Per group it holds the chosen width (16 keeps the group fp16) and, for reading, the group's bytes
at that width and what palettizing that group alone to it did to the speaker probabilities on
realistic states. Applying a recipe file reads only its target and widths; every group of the
head must be named, at a width the deployment target's look-up tables take.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from sortformer_build.compress.allocate import allocate, check_budget
from sortformer_build.coreml.targets import KEEP_FP16, TARGET_FACTS, DeploymentTarget
from sortformer_build.errors import BuildError
from sortformer_build.records.base import describe_validation
from sortformer_build.records.mixed import GroupChoice, Recipe, Sensitivity, TensorGroups
from sortformer_build.text import MB

_HEADER = """\
# Mixed-bit recipe for the head: bits per group of weights (16 keeps a group fp16).
# Only `target` and `bits` are read when the recipe is applied; the rest is for reading: the
# budget, the group's weights at that width, and what palettizing that group alone to it did to
# the speaker probabilities on realistic states (max and mean |dp|, decisions flipped).
"""


class RecipeError(BuildError):
    """A recipe that does not fit the head or the deployment target."""


def recipe_yaml(recipe: Recipe) -> str:
    import yaml

    return _HEADER + yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, width=110)


def write_recipe(recipe: Recipe, path: Path) -> None:
    from sortformer_build.store import atomic

    atomic.write_text(path, recipe_yaml(recipe))


def read_recipe(path: Path) -> Recipe:
    """The recipe in a YAML file; RecipeError in one line naming the file and what is wrong."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RecipeError(f"recipe {path} cannot be read: {first}") from None
    try:
        return Recipe.model_validate(document)
    except ValidationError as error:
        raise RecipeError(f"recipe {path}: {describe_validation(error)}") from None


def given_recipe(path: Path) -> Recipe:
    """What a recipe file asks for: its target and its widths. Its other fields describe the
    choice it was written from, and would be stale after an edit."""
    recipe = read_recipe(path)
    return Recipe(
        target=recipe.target,
        groups={name: GroupChoice(bits=choice.bits) for name, choice in recipe.groups.items()},
    )


def target_widths(target: DeploymentTarget) -> tuple[int, ...]:
    """Widths a recipe may give a group for `target`: its table sizes, and fp16."""
    return (*TARGET_FACTS[target].palette_nbits, KEEP_FP16)


def tensor_bits(recipe: Recipe, groups: TensorGroups, target: DeploymentTarget) -> dict[str, int]:
    """Width per const of the head, from a recipe checked against the head's groups and the
    target; RecipeError in one line naming what does not fit."""
    if recipe.target is not target:
        raise RecipeError(
            f"the recipe was made for {recipe.target.value}, the build targets {target.value}; "
            "make the recipe for this target"
        )
    known = set(groups.groups)
    unknown = [name for name in recipe.groups if name not in known]
    if unknown:
        raise RecipeError(
            f"the recipe names groups the head does not have: {', '.join(unknown)} "
            f"(it has {_span(groups.groups)})"
        )
    missing = [name for name in groups.groups if name not in recipe.groups]
    if missing:
        raise RecipeError(f"the recipe gives no bits for groups {', '.join(missing)}: name every group")
    allowed = target_widths(target)
    for name, choice in recipe.groups.items():
        if choice.bits not in allowed:
            raise RecipeError(
                f"group {name} asks for {choice.bits} bits; {target.value} look-up tables take "
                f"{', '.join(map(str, allowed[:-1]))} bits, or {KEEP_FP16} to keep fp16"
            )
    by_group = groups.group_of()
    return {const: recipe.groups[group].bits for const, group in by_group.items()}


def _span(names: tuple[str, ...]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, ..., {names[-1]}"


def choose_recipe(sensitivity: Sensitivity, budget: int) -> Recipe:
    """The widths with the least summed mean |dp| whose package fits `budget` bytes."""
    widths = (*sensitivity.settings.nbits, KEEP_FP16)
    check_budget(budget, sensitivity.sizes, widths[:-1])
    options = {
        group.name: {bits: (group.bytes[bits], group.effect(bits).mean_dp) for bits in widths}
        for group in sensitivity.groups
    }
    picked = allocate(options, budget - sensitivity.sizes.fixed_bytes)
    return recipe_of(sensitivity, picked, budget)


def recipe_of(sensitivity: Sensitivity, picked: Mapping[str, int], budget: int | None = None) -> Recipe:
    """A recipe of the given widths per group, with the analysis's bytes and effects."""
    choices = {}
    for group in sensitivity.groups:
        bits = picked[group.name]
        effect = group.effect(bits)
        choices[group.name] = GroupChoice(
            bits=bits,
            bytes=group.bytes[bits],
            max_dp=effect.max_dp,
            mean_dp=effect.mean_dp,
            flipped=effect.flipped,
        )
    return Recipe(
        target=sensitivity.target,
        budget_bytes=budget,
        package_bytes=sensitivity.sizes.fixed_bytes + sum(choice.bytes or 0 for choice in choices.values()),
        predicted_mean_dp=sum(choice.mean_dp or 0.0 for choice in choices.values()),
        groups=choices,
    )


def describe(recipe: Recipe) -> str:
    """One line for a log: the widths used and the predicted size."""
    counts: dict[int, int] = {}
    for choice in recipe.groups.values():
        counts[choice.bits] = counts.get(choice.bits, 0) + 1
    widths = ", ".join(f"{count} x {bits}-bit" for bits, count in sorted(counts.items()))
    size = "" if recipe.package_bytes is None else f", {recipe.package_bytes / MB:.1f} MB predicted"
    return f"{len(recipe.groups)} groups: {widths}{size}"
