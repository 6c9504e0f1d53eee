"""Mixed-bit compression's records: the head's groups of weights, the sensitivity analysis of a
checkpoint and geometry (a cache entry shared by every budget), and the recipe a build applied
(its YAML file, and the manifest's record of it)."""

from __future__ import annotations

from enum import StrEnum

from sortformer_build.coreml.targets import KEEP_FP16, DeploymentTarget
from sortformer_build.records.base import Record


class Granularity(StrEnum):
    layer = "layer"  # one group per FastConformer layer, per Transformer layer, and the output projections
    block = "block"  # each layer's feed-forward, attention and convolution blocks apart


class SiteKind(StrEnum):
    parameter = "parameter"
    folded_batch_norm = "folded_batch_norm"  # depthwise convolution weight x batch-norm scale
    positional_projection = "positional_projection"  # linear_pos(pos_emb) at the program's length


class HeadTensor(Record):
    """One compressible const of the head program and what it stands for."""

    const: str
    group: str
    elements: int
    kind: SiteKind
    nemo: tuple[str, ...]  # every NeMo tensor it stands for (several when the converter shared it)
    shared_with: tuple[str, ...] = ()  # other groups those tensors belong to


class TensorGroups(Record):
    """The head's compressible consts by group, groups in reading order."""

    granularity: Granularity
    groups: tuple[str, ...]
    tensors: tuple[HeadTensor, ...]

    def members(self) -> dict[str, tuple[HeadTensor, ...]]:
        return {group: tuple(t for t in self.tensors if t.group == group) for group in self.groups}

    def group_of(self) -> dict[str, str]:
        """Group by const name."""
        return {tensor.const: tensor.group for tensor in self.tensors}


class PackageSizes(Record):
    """What a package's size is made of: the compressible weights (elements by const name) and
    everything else (`fixed_bytes`), from the fp16 programs."""

    fp16_bytes: int
    fixed_bytes: int
    tensors: dict[str, int]


class AnalysisSettings(Record):
    """What the analysis measures, and on how much."""

    nbits: tuple[int, ...] = (2, 4, 6, 8)
    granularity: Granularity = Granularity.layer
    # The conversation streamed through NeMo is at least this long, and long enough to fill the
    # speaker cache and FIFO and compress the cache (streaming) or to hold two windows (offline).
    seconds: float = 10.0
    # Head frames per measurement: this many frames' worth of states (at least two) is measured.
    frames: int = 1000
    seed: int = 0


class Effect(Record):
    """Speaker probabilities of a changed head against the fp16 head, over every valid frame
    of every measured state."""

    max_dp: float
    mean_dp: float
    flipped: int  # (frame, speaker) decisions at 0.5 that changed


NO_EFFECT = Effect(max_dp=0.0, mean_dp=0.0, flipped=0)


class GroupSensitivity(Record):
    name: str
    tensors: int
    elements: int
    shared_with: tuple[str, ...] = ()  # groups whose weights are these very consts
    bytes: dict[int, int]  # the group's weights in the package, by width (16: fp16)
    effects: dict[int, Effect]  # this group alone palettized, by width

    def effect(self, nbits: int) -> Effect:
        return NO_EFFECT if nbits == KEEP_FP16 else self.effects[nbits]


class Sensitivity(Record):
    target: DeploymentTarget
    settings: AnalysisSettings
    inputs: str  # what the head ran on, in words
    decisions: int  # (frame, speaker) decisions compared in each measurement
    # NeMo's fp32 weights against the fp16 head: the error the fp16 build already has.
    fp16_vs_fp32: Effect
    sizes: PackageSizes
    groups: tuple[GroupSensitivity, ...]

    def ranked(self, nbits: int) -> list[GroupSensitivity]:
        """Groups from the most to the least sensitive at `nbits`."""
        return sorted(self.groups, key=lambda group: -group.effects[nbits].mean_dp)


class AnalysisCost(Record):
    """What one analysis cost. Kept apart from its findings, which are the same on every run."""

    # Wall seconds, by part and in total.
    inputs_seconds: float  # NeMo's streaming loop (offline: windows) for the head's inputs
    baseline_seconds: float  # grouping, and the fp32 and fp16 runs of the head
    luts_seconds: float  # the look-up tables at every width, from the store or computed
    measure_seconds: float  # each group at each width
    total_seconds: float
    cpu_seconds: float  # of every thread of the process


class GroupChoice(Record):
    bits: int
    bytes: int | None = None
    max_dp: float | None = None
    mean_dp: float | None = None
    flipped: int | None = None


class Recipe(Record):
    """Bits per group of head weights (16 keeps a group fp16); the rest is for reading."""

    target: DeploymentTarget
    # How it was chosen: the budget it met and what the analysis predicts (None: written by hand).
    budget_bytes: int | None = None
    package_bytes: int | None = None
    predicted_mean_dp: float | None = None
    groups: dict[str, GroupChoice]


class AppliedRecipe(Record):
    """What a mixed build applied: the recipe, and the width of each const it gave."""

    recipe: Recipe
    tensor_bits: dict[str, int]
