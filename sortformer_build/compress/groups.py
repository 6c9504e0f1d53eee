"""Groups of head weights, and which NeMo tensors each Core ML const stands for.

A group is what a person chooses bits for: each FastConformer layer (`fastconformer.3`), each
Transformer layer (`transformer.11`) and the output projections (`output`: the encoder
projection and the speaker layers); with `Granularity.block`, each layer's blocks apart
(`fastconformer.3.attention`, `transformer.11.feed_forward`). Names come from NeMo's module
paths, so they are the same for every geometry and checkpoint of the architecture.

The converter does not keep every weight as NeMo holds it, so consts are matched to NeMo by
content, never by name alone:
- a parameter becomes a const of the same fp16 values, named after its module path, or after
  another parameter of identical content (the converter keeps one const for equal tensors:
  the synthetic checkpoint's Transformer layers are copies of one layer);
- a depthwise convolution followed by batch norm becomes one const, the weight times the
  norm's per-channel scale (`const_N`);
- `linear_pos(pos_emb)` of each attention layer does not depend on the input at a fixed length,
  so it is folded into a const (`op_N`, laid out per head).
Each NeMo-side tensor is a `Site`: its fp16 value as the program holds it, computed in torch,
and a way to make NeMo compute with another value in its place. A const matches the sites
whose fp16 values form the same multiset (layout-blind: palettization maps values, not
positions, and a folded const may be laid out per head), narrowed to those holding them in the
const's order when some do (so tensors whose values are permutations of each other are told
apart); a folded const, computed by the converter in another order, matches the one site of
its size whose sorted values lie within a few fp16 steps.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.errors import BuildError
from sortformer_build.records.mixed import Granularity, HeadTensor, SiteKind, TensorGroups


class GroupingError(BuildError):
    """A const of the head that no NeMo tensor accounts for."""


# Sorted values of a folded const and its site differ by rounding in the converter's order of
# operations: a few fp16 steps at the tensor's largest magnitude.
FOLDED_TOLERANCE = 4e-3
OUTPUT_GROUP = "output"

_OUTPUT_PREFIX = "sortformer_modules."
# Execution stages: the FastConformer layers, then (from the encoder projection on) the rest.
_ENCODER, _AFTER_ENCODER = 0, 1


@dataclass(frozen=True)
class _LayerKind:
    pattern: re.Pattern[str]  # a NeMo tensor name of this kind: its layer index and block
    group: str
    blocks: dict[str, str]  # NeMo's block names, as the groups name them
    stage: int  # execution stage
    rank: int  # place in reading order


_LAYER_KINDS = (
    _LayerKind(
        re.compile(r"encoder\.layers\.(\d+)\.([^.]+)"),
        "fastconformer",
        {"self_attn": "attention", "conv": "convolution"},
        _ENCODER,
        0,
    ),
    _LayerKind(
        re.compile(r"transformer_encoder\.layers\.(\d+)\.([^.]+)"),
        "transformer",
        {"first_sub_layer": "attention", "second_sub_layer": "feed_forward"},
        _AFTER_ENCODER,
        1,
    ),
)


@dataclass(frozen=True)
class Place:
    """Where a NeMo tensor sits: its group, and the first layer a change to it affects
    (`(0, i)`: FastConformer layer i; `(1, j)`: Transformer layer j, `(1, 0)` also for the
    encoder projection)."""

    group: str
    depth: tuple[int, int]
    order: tuple[int, int, int]  # sorts groups in reading order: FastConformer, Transformer, output


def place_of(nemo_name: str, granularity: Granularity) -> Place | None:
    """The group of a NeMo tensor; None for what is never compressed (the subsampling)."""
    for kind in _LAYER_KINDS:
        if found := kind.pattern.match(nemo_name):
            layer, block = int(found[1]), found[2]
            group = f"{kind.group}.{layer}"
            if granularity is Granularity.block:
                group += f".{kind.blocks.get(block, block)}"
            return Place(group, (kind.stage, layer), (kind.rank, layer, _block_order(block)))
    if nemo_name.startswith(_OUTPUT_PREFIX):
        return Place(OUTPUT_GROUP, (_AFTER_ENCODER, 0), (2, 0, 0))
    return None


def _block_order(block: str) -> int:
    order = ("feed_forward1", "self_attn", "conv", "feed_forward2", "first_sub_layer", "second_sub_layer")
    return order.index(block) if block in order else len(order)


@dataclass
class Site:
    """A tensor NeMo computes with, as the converted program holds it."""

    nemo: str  # parameter name, or what the folded tensor is made of
    kind: SiteKind
    place: Place
    value: np.ndarray  # fp16, computed in torch
    # Makes NeMo compute with the given fp16 array (the value's layout) in this tensor's place.
    use: Callable[[np.ndarray], None]


@contextmanager
def nemo_sites(model: Any, run_head: Callable[[], object], granularity: Granularity) -> Iterator[list[Site]]:
    """Every tensor of the head that a const may stand for, with fp16 values.

    `run_head` runs the head once at the program's length, so the positional projections can
    be captured. On exit the model computes with its own weights again (it is shared with
    later stages): every parameter a site changed is restored and the hooks are removed.
    """
    import torch

    originals: dict[str, torch.Tensor] = {}
    hooks = []
    try:
        sites = list(_parameter_sites(model, granularity, originals))
        sites += list(_folded_sites(model, granularity, originals))
        positional = _positional_sites(model, granularity)
        hooks = [module.register_forward_hook(override) for module, override, _ in positional]
        with torch.no_grad():
            run_head()
        sites += [site_of(override) for _, override, site_of in positional]
        yield sites
    finally:
        for hook in hooks:
            hook.remove()
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, original in originals.items():
                parameters[name].copy_(original)


def _parameter_sites(model: Any, granularity: Granularity, originals: dict[str, Any]) -> Iterator[Site]:
    from sortformer_build.coreml.palettize import WEIGHT_THRESHOLD

    for name, parameter in model.named_parameters():
        place = place_of(name, granularity)
        if place is None or not parameter.is_floating_point() or parameter.numel() <= WEIGHT_THRESHOLD:
            continue
        originals.setdefault(name, parameter.detach().clone())
        yield Site(name, SiteKind.parameter, place, _fp16(parameter), _setter(parameter))


def _folded_sites(model: Any, granularity: Granularity, originals: dict[str, Any]) -> Iterator[Site]:
    """Depthwise convolutions followed by batch norm: the converter folds the norm's scale
    gamma / sqrt(var + eps) into the weight; setting the folded value divides it out again."""
    import torch

    for name, module in model.named_modules():
        conv, norm = getattr(module, "depthwise_conv", None), getattr(module, "batch_norm", None)
        if not isinstance(norm, torch.nn.BatchNorm1d) or not isinstance(conv, torch.nn.Conv1d):
            continue
        place = place_of(f"{name}.depthwise_conv.weight", granularity)
        if place is None:
            continue
        weight = conv.weight
        originals.setdefault(f"{name}.depthwise_conv.weight", weight.detach().clone())
        with torch.no_grad():
            scale = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).reshape(-1, 1, 1)
            folded = weight * scale

        def use(value: np.ndarray, weight: Any = weight, scale: Any = scale) -> None:
            with torch.no_grad():
                weight.copy_(torch.from_numpy(value.astype(np.float32)).reshape(weight.shape) / scale)

        yield Site(
            f"{name}.depthwise_conv.weight x {name}.batch_norm scale",
            SiteKind.folded_batch_norm,
            place,
            _fp16(folded),
            use,
        )


class _Override:
    """Forward hook of a positional projection: records its output, or returns a set value."""

    def __init__(self) -> None:
        self.captured: Any = None
        self.value: Any = None

    def __call__(self, module: Any, inputs: Any, output: Any) -> Any:
        if self.value is None:
            self.captured = output.detach().clone()
            return None
        return self.value


def _positional_sites(
    model: Any, granularity: Granularity
) -> list[tuple[Any, _Override, Callable[[_Override], Site]]]:
    import torch

    found: list[tuple[Any, _Override, Callable[[_Override], Site]]] = []
    for name, module in model.named_modules():
        if not name.endswith(".linear_pos"):
            continue
        place = place_of(name, granularity)
        if place is None:
            continue

        def site_of(override: _Override, name: str = name, place: Place = place) -> Site:
            if override.captured is None:
                raise GroupingError(
                    f"{name} did not run when the head ran; its folded const cannot be placed: "
                    "build this checkpoint with uniform bits (compression=palettized6)"
                )
            shape = override.captured.shape

            def use(value: np.ndarray) -> None:
                override.value = torch.from_numpy(value.astype(np.float32)).reshape(shape)

            return Site(
                f"{name}(pos_emb)", SiteKind.positional_projection, place, _fp16(override.captured), use
            )

        found.append((module, _Override(), site_of))
    return found


def _fp16(tensor: Any) -> np.ndarray:
    return tensor.detach().numpy().astype(np.float16)


def _setter(parameter: Any) -> Callable[[np.ndarray], None]:
    import torch

    def use(value: np.ndarray) -> None:
        with torch.no_grad():
            parameter.copy_(torch.from_numpy(value.astype(np.float32)).reshape(parameter.shape))

    return use


def match_consts(
    consts: Mapping[str, np.ndarray], sites: Sequence[Site], granularity: Granularity
) -> tuple[TensorGroups, dict[str, list[Site]]]:
    """Each const's sites and group; a const shared by several groups belongs to the first in
    reading order (coremltools names it after that one) and lists the others."""
    by_content: dict[str, list[Site]] = {}
    for site in sites:
        by_content.setdefault(_content_key(site.value), []).append(site)
    exact = {name: _same_layout(value, by_content.get(_content_key(value))) for name, value in consts.items()}
    taken = {id(site) for found in exact.values() if found for site in found}
    sizes = {consts[name].size for name, found in exact.items() if not found}
    loose = [
        (site, _sorted(site.value)) for site in sites if id(site) not in taken and site.value.size in sizes
    ]
    matched = {
        name: found if found else [_nearest(name, consts[name], loose)] for name, found in exact.items()
    }
    claimed: dict[int, str] = {}
    for name, found in matched.items():
        for site in found:
            other = claimed.setdefault(id(site), name)
            if other != name:
                raise GroupingError(
                    f"head consts {other} and {name} both match {site.nemo} by content and cannot be "
                    "told apart, so mixed-bit compression cannot place them: build this checkpoint with "
                    "uniform bits (compression=palettized6)"
                )
    tensors = []
    for name, found in matched.items():
        ordered = sorted(found, key=lambda site: site.place.order)
        groups = list(dict.fromkeys(site.place.group for site in ordered))
        tensors.append(
            HeadTensor(
                const=name,
                group=groups[0],
                elements=int(consts[name].size),
                kind=ordered[0].kind,
                nemo=tuple(site.nemo for site in ordered),
                shared_with=tuple(groups[1:]),
            )
        )
    order = {site.place.group: site.place.order for found in matched.values() for site in found}
    names = sorted({tensor.group for tensor in tensors}, key=lambda group: order[group])
    tensors.sort(key=lambda tensor: order[tensor.group])
    return TensorGroups(granularity=granularity, groups=tuple(names), tensors=tuple(tensors)), matched


def _same_layout(value: np.ndarray, found: list[Site] | None) -> list[Site] | None:
    """Of the sites holding a const's values, those holding them in its order too, if any:
    tensors whose values are permutations of each other (a shuffled copy) are told apart."""
    if not found:
        return found
    flat = value.reshape(-1)
    same = [site for site in found if np.array_equal(site.value.reshape(-1), flat)]
    return same or found


def _content_key(value: np.ndarray) -> str:
    """Equal for tensors holding the same fp16 values in any layout."""
    from sortformer_build.coreml.palettizer import fp16_histogram

    values, counts = fp16_histogram(value)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(values.tobytes())
    digest.update(counts.tobytes())
    return digest.hexdigest()


def _sorted(value: np.ndarray) -> np.ndarray:
    return np.sort(value.astype(np.float32), axis=None)


def _nearest(name: str, value: np.ndarray, candidates: Sequence[tuple[Site, np.ndarray]]) -> Site:
    ours = _sorted(value)
    scale = max(float(np.abs(ours).max()), float(np.finfo(np.float16).tiny))
    close = [
        site
        for site, theirs in candidates
        if theirs.size == ours.size and float(np.abs(theirs - ours).max()) <= FOLDED_TOLERANCE * scale
    ]
    if len(close) != 1:
        what = (
            "no NeMo tensor"
            if not close
            else f"{len(close)} NeMo tensors ({', '.join(s.nemo for s in close)})"
        )
        raise GroupingError(
            f"head const {name} {tuple(value.shape)} matches {what} by content; "
            "its group is unknown, so mixed-bit compression cannot place it: build this checkpoint "
            "with uniform bits (compression=palettized6)"
        )
    return close[0]


def tensor_groups(
    model: Any, head: Path, frames: int, granularity: Granularity, keep_prefix: str | None = None
) -> TensorGroups:
    """The head program's groups without measuring anything (applying a given recipe needs only
    these): NeMo's head runs once on `frames` zero frames, the program's input length."""
    import torch

    from sortformer_build.coreml.export import Head
    from sortformer_build.coreml.palettize import compressible_weights

    module = Head(model).eval()
    embs = torch.zeros(1, frames, int(model.encoder.d_model))
    with nemo_sites(model, lambda: module(embs, torch.tensor([frames])), granularity) as sites:
        return match_consts(compressible_weights(head, keep_prefix), sites, granularity)[0]
