"""Mixed-bit compression: groups matched to NeMo, the sensitivity analysis on NeMo's own streaming
states, the recipe file, the choice under a budget, and the recipe applied tensor by tensor."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sortformer_build.checkpoint.sources import Checkpoint, load_model
from sortformer_build.compress import sensitivity
from sortformer_build.compress.allocate import (
    ASSEMBLY_BYTES,
    GRID_CELLS,
    BudgetError,
    allocate,
    check_budget,
    floor_bytes,
    package_bytes,
    package_sizes,
    tensor_bytes,
)
from sortformer_build.compress.groups import match_consts, nemo_sites
from sortformer_build.compress.recipe import (
    RecipeError,
    choose_recipe,
    read_recipe,
    recipe_of,
    tensor_bits,
    write_recipe,
)
from sortformer_build.compress.sensitivity import AnalysisError, analyse, streaming_inputs
from sortformer_build.config import PalettizerEngine
from sortformer_build.coreml.layout import ProgramFiles
from sortformer_build.coreml.package import (
    make_spec_deterministic,
    operation_name,
    package_digest,
    package_size,
    read_package,
)
from sortformer_build.coreml.palettize import (
    compressible_weights,
    load_program,
    palettize_program,
)
from sortformer_build.coreml.targets import KEEP_FP16, DeploymentTarget
from sortformer_build.geometry import StreamingGeometry
from sortformer_build.records.mixed import AnalysisSettings, Granularity, SiteKind
from sortformer_build.store.cache import ArrayStore
from sortformer_build.verify.lint import check_tensor_bits

# Default's chunk with a small speaker cache and FIFO: a few seconds of conversation fill and
# compress them.
GEOMETRY = StreamingGeometry(6, 1, 7, 8, 24, 8)
TARGET = DeploymentTarget.iOS17
# Blocks apart: the tiny head's Transformer and output weights are below the palettization
# threshold, so its two FastConformer layers make eight groups.
SETTINGS = AnalysisSettings(granularity=Granularity.block, seconds=6.0, frames=200)


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path):
    return load_model(Checkpoint(tiny_checkpoint, "", "tiny", "test"))


@pytest.fixture(scope="module")
def programs(model, tmp_path_factory: pytest.TempPathFactory) -> ProgramFiles:
    from sortformer_build.coreml.convert import convert_programs
    from sortformer_build.coreml.export import trace

    return convert_programs(trace(model, GEOMETRY), TARGET, tmp_path_factory.mktemp("programs"))


@pytest.fixture(scope="module")
def luts(tmp_path_factory: pytest.TempPathFactory) -> ArrayStore:
    return ArrayStore(tmp_path_factory.mktemp("luts"))


@pytest.fixture(scope="module")
def analysed(model, programs: ProgramFiles, luts: ArrayStore):
    before = {name: value.clone() for name, value in model.state_dict().items()}
    sizes = package_sizes([programs.pre_encoder, programs.head], programs.head, None)
    inputs = streaming_inputs(model, GEOMETRY, SETTINGS)
    groups, found, _ = analyse(model, programs.head, sizes, inputs, TARGET, SETTINGS, luts)
    return groups, found, before, inputs


def test_analysis_measures_every_group_at_every_width_and_ranks_them(analysed, programs, model) -> None:
    groups, found, before, inputs = analysed
    assert [group.name for group in found.groups] == [
        f"fastconformer.{layer}.{block}"
        for layer in (0, 1)
        for block in ("feed_forward1", "attention", "convolution", "feed_forward2")
    ]
    assert {tensor.const for tensor in groups.tensors} == set(compressible_weights(programs.head))
    for group in found.groups:
        assert set(group.effects) == set(SETTINGS.nbits)
        # Two bits move the probabilities far more than eight.
        assert group.effects[2].mean_dp > 4 * group.effects[8].mean_dp > 0
        assert group.bytes[2] < group.bytes[4] < group.bytes[6] < group.bytes[8] < group.bytes[KEEP_FP16]
    ranked = found.ranked(4)
    assert [group.effects[4].mean_dp for group in ranked] == sorted(
        (group.effects[4].mean_dp for group in found.groups), reverse=True
    )
    assert found.fp16_vs_fp32.max_dp < 1e-3 and found.fp16_vs_fp32.flipped == 0
    assert "NeMo's streaming loop" in found.inputs and found.decisions == 4 * inputs.lengths.sum()
    # The folded positional projections belong to their layer's attention block.
    positional = [tensor for tensor in groups.tensors if tensor.kind is SiteKind.positional_projection]
    assert [tensor.group for tensor in positional] == [
        "fastconformer.0.attention",
        "fastconformer.1.attention",
    ]
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_states_are_what_nemo_streaming_held(analysed) -> None:
    """The first state is the stream's start (empty cache and FIFO: the first chunk alone, which
    has no left context); later ones hold speaker cache and FIFO frames."""
    inputs = analysed[3]
    first = GEOMETRY.chunk_len + GEOMETRY.chunk_right_context
    assert len(inputs.lengths) == 200 // GEOMETRY.prediction_frames
    assert inputs.lengths[0] == first and np.all(inputs.embs[0, first:] == 0)
    assert inputs.lengths.max() > GEOMETRY.spkcache_len


def test_folded_batch_norm_const_matches_its_convolution(model, programs: ProgramFiles) -> None:
    """The converter folds each depthwise convolution's batch norm into its weight (`const_N`);
    matched by content to the folded value computed in torch."""
    program = load_program(programs.head)
    consts = program.functions["main"].find_ops(op_type="const")
    folded = {
        op.name: op.outputs[0].val
        for op in consts
        if op.name.startswith("const_") and np.shape(op.outputs[0].val) == (64, 1, 9)
    }
    assert len(folded) == 2
    head = _head(model)
    with nemo_sites(model, head, Granularity.layer) as sites:
        groups, matched = match_consts(folded, sites, Granularity.layer)
    assert [tensor.kind for tensor in groups.tensors] == [SiteKind.folded_batch_norm] * 2
    assert [tensor.group for tensor in groups.tensors] == ["fastconformer.0", "fastconformer.1"]
    assert all(len(found) == 1 for found in matched.values())


def _head(model):
    from sortformer_build.coreml.export import Head

    embs = torch.zeros(1, GEOMETRY.prediction_frames, 64)
    return lambda: Head(model).eval()(embs, torch.tensor([GEOMETRY.prediction_frames]))


def test_replayed_layers_give_the_full_run(model) -> None:
    """A weight changed in the first layer not replayed reaches the output as a full run with the
    change gives it: the replayed layers before it are the ones it cannot have changed."""
    from sortformer_build.coreml.export import Head

    generator = torch.Generator().manual_seed(0)
    embs = torch.randn(2, GEOMETRY.prediction_frames, 64, generator=generator)
    lengths = torch.tensor([GEOMETRY.prediction_frames, 30])
    head = Head(model).eval()
    with torch.no_grad(), sensitivity._recording(model) as activations:
        full = head(embs, lengths)
    for stage, index in ((0, 1), (1, 0), (1, 1)):
        layers = model.transformer_encoder.layers if stage else model.encoder.layers
        weight = next(parameter for parameter in layers[index].parameters() if parameter.dim() > 1)
        kept = weight.detach().clone()
        with torch.no_grad():
            weight.add_(0.05 * torch.randn(weight.shape, generator=generator))
            try:
                changed = head(embs, lengths)
                with sensitivity._replay(model, (stage, index), activations):
                    replayed = head(embs, lengths)
            finally:
                weight.copy_(kept)
        assert not torch.equal(changed, full)
        assert torch.equal(replayed, changed)


def test_recipe_file_round_trips_and_reads_as_yaml(analysed, tmp_path: Path) -> None:
    found = analysed[1]
    recipe = choose_recipe(found, _uniform_bytes(found, 6))
    path = tmp_path / "recipe.yaml"
    write_recipe(recipe, path)
    assert read_recipe(path) == recipe
    text = path.read_text()
    assert text.startswith("# Mixed-bit recipe")
    assert "fastconformer.1.attention:\n    bits: " in text


def test_recipe_widths_are_refused_in_one_line(analysed, tmp_path: Path) -> None:
    groups, found = analysed[:2]
    recipe = recipe_of(found, dict.fromkeys((group.name for group in found.groups), 6))
    cases = {
        "groups the head does not have: fastconformer.7.attention": {
            **recipe.groups,
            "fastconformer.7.attention": recipe.groups["fastconformer.0.attention"],
        },
        "asks for 3 bits; iOS17 look-up tables take 1, 2, 4, 6, 8 bits": {
            **recipe.groups,
            "fastconformer.0.attention": recipe.groups["fastconformer.0.attention"].model_copy(
                update={"bits": 3}
            ),
        },
        "no bits for groups fastconformer.1.feed_forward2": {
            name: choice for name, choice in recipe.groups.items() if name != "fastconformer.1.feed_forward2"
        },
    }
    for expected, choices in cases.items():
        path = tmp_path / "edited.yaml"
        write_recipe(recipe.model_copy(update={"groups": choices}), path)
        with pytest.raises(RecipeError) as raised:
            tensor_bits(read_recipe(path), groups, TARGET)
        assert expected in str(raised.value) and "\n" not in str(raised.value)
    path.write_text("target: iOS17\ngroups:\n  fastconformer.0.attention: {bits: six}\n")
    with pytest.raises(RecipeError, match=r"^recipe .*edited.yaml: groups.fastconformer.0.attention.bits: "):
        read_recipe(path)
    with pytest.raises(AnalysisError, match="cannot analyse \\[3\\] bits: iOS17 look-up tables take"):
        sensitivity.check_settings(AnalysisSettings(nbits=(3, 4)), TARGET)


def test_impossible_budget_is_refused_before_any_work(programs: ProgramFiles) -> None:
    """From the converted programs' specifications alone: no model, no measurement."""
    sizes = package_sizes([programs.pre_encoder, programs.head], programs.head, None)
    floor = floor_bytes(sizes, SETTINGS.nbits)
    check_budget(floor, sizes, SETTINGS.nbits)
    with pytest.raises(BudgetError) as raised:
        check_budget(floor - 10_000, sizes, SETTINGS.nbits)
    message = str(raised.value)
    assert (
        "below the smallest package" in message
        and "every weight at 2 bits" in message
        and "\n" not in message
    )


def test_recipe_is_applied_tensor_by_tensor(analysed, programs: ProgramFiles, luts, tmp_path: Path) -> None:
    groups, found = analysed[:2]
    widths = dict(zip((group.name for group in found.groups), itertools.cycle((2, 4, 6, 8, KEEP_FP16))))
    recipe = recipe_of(found, widths)
    bits = tensor_bits(recipe, groups, TARGET)
    assert set(bits.values()) == {2, 4, 6, 8, KEEP_FP16}
    head = tmp_path / "head.mlpackage"
    facts = palettize_program(programs.head, bits, PalettizerEngine.fast, head, luts)
    # The analysis computed every table the build needs.
    assert facts.lut_cache_misses == 0 and facts.lut_cache_hits == sum(b != KEEP_FP16 for b in bits.values())
    saved = read_package(head).programs
    assert list(check_tensor_bits(saved, bits)) == []
    tables = {
        operation_name(op).removesuffix("_palettized"): int(
            op.attributes["lut"].type.tensorType.dimensions[-1].constant.size
        )
        for op in saved[0].operations
        if op.type == "constexpr_lut_to_dense"
    }
    assert tables == {name: 1 << width for name, width in bits.items() if width != KEEP_FP16}
    name = next(name for name, width in bits.items() if width == 4)
    findings = list(check_tensor_bits(saved, {**bits, name: 6}))
    assert findings == [f"compression: {name} has a 16-entry table; its recipe says 6 bits"]
    # The predicted size is an upper bound within a fraction of a per cent, and the reserve for
    # what assembly adds.
    sizes = package_sizes([programs.head], programs.head, None)
    predicted, actual = package_bytes(sizes, bits), package_size(head)
    assert actual + ASSEMBLY_BYTES <= predicted < actual * 1.005 + ASSEMBLY_BYTES


def test_uniform_recipe_writes_what_uniform_palettization_writes(
    programs: ProgramFiles, tmp_path: Path
) -> None:
    store = ArrayStore(None)
    uniform, mapped = tmp_path / "uniform.mlpackage", tmp_path / "mapped.mlpackage"
    palettize_program(programs.head, 6, PalettizerEngine.fast, uniform, store)
    names = compressible_weights(programs.head)
    palettize_program(programs.head, dict.fromkeys(names, 6), PalettizerEngine.fast, mapped, store)
    for package in (uniform, mapped):
        make_spec_deterministic(package)
    assert package_digest(uniform) == package_digest(mapped)


def _optimum(options: dict[str, dict[int, tuple[int, float]]], capacity: int) -> float:
    """The least summed effect within `capacity` bytes, by trying every combination."""
    return min(
        (
            sum(options[g][b][1] for g, b in zip(options, combo, strict=True))
            for combo in itertools.product(*(widths.keys() for widths in options.values()))
            if sum(options[g][b][0] for g, b in zip(options, combo, strict=True)) <= capacity
        ),
        default=math.inf,
    )


@pytest.mark.parametrize("largest", [100_000, 100_000_000], ids=["fine grid", "coarse grid"])
def test_budget_choice_fits_and_is_the_optimum_but_for_a_cell_per_group(largest: int) -> None:
    generator = np.random.default_rng(0)
    for _ in range(20):
        options = {
            f"group{index}": {
                bits: (int(elements * bits / 8) + 100, float(generator.uniform(0.5, 2.0) * 2.0**-bits))
                for bits in (2, 4, 6, 8, 16)
            }
            for index, elements in enumerate(generator.integers(1_000, largest, size=5))
        }
        lowest = sum(min(size for size, _ in widths.values()) for widths in options.values())
        highest = sum(max(size for size, _ in widths.values()) for widths in options.values())
        for capacity in (lowest, int(generator.uniform(lowest, highest))):
            picked = allocate(options, capacity)
            effect = sum(options[group][bits][1] for group, bits in picked.items())
            assert sum(options[group][bits][0] for group, bits in picked.items()) <= capacity
            slack = len(options) * math.ceil(capacity / GRID_CELLS)
            assert _optimum(options, capacity) <= effect + 1e-12
            assert effect <= _optimum(options, capacity - slack) + 1e-12
    with pytest.raises(BudgetError, match="raise the budget"):
        allocate(options, lowest - 1)


def test_budget_of_a_uniform_size_can_choose_that_uniform(analysed) -> None:
    """The mixed choice at the size of uniform 6 bits is never predicted worse than uniform 6 bits."""
    found = analysed[1]
    recipe = choose_recipe(found, _uniform_bytes(found, 6))
    uniform = sum(group.effects[6].mean_dp for group in found.groups)
    assert recipe.predicted_mean_dp is not None and recipe.predicted_mean_dp <= uniform
    assert recipe.package_bytes is not None and recipe.package_bytes <= _uniform_bytes(found, 6)


def _uniform_bytes(found: sensitivity.Sensitivity, bits: int) -> int:
    return found.sizes.fixed_bytes + sum(group.bytes[bits] for group in found.groups)


def test_tensor_bytes_follow_the_weight_file_layout() -> None:
    # 64-byte blob header, data padded to 64 bytes; a 4-entry table (2 bits) is stored inline.
    assert tensor_bytes(4096, KEEP_FP16) == 64 + 8192
    assert tensor_bytes(4096, 8) == (64 + 4096) + (64 + 512) + 160
    assert tensor_bytes(4097, 2) == (64 + 1088) + 8 + 160


def test_copied_recipe_keeps_its_widths(analysed, tmp_path: Path) -> None:
    """A person edits a recipe by hand: only the widths matter when it is applied."""
    groups, found = analysed[:2]
    recipe = recipe_of(found, dict.fromkeys((group.name for group in found.groups), 8))
    path = tmp_path / "recipe.yaml"
    write_recipe(recipe, path)
    edited = path.read_text().replace("bits: 8", "bits: 4", 1)
    copy = tmp_path / "copy.yaml"
    copy.write_text(edited)
    widths = tensor_bits(read_recipe(copy), groups, TARGET)
    first = found.groups[0].name
    assert {widths[t.const] for t in groups.tensors if t.group == first} == {4}
    assert {widths[t.const] for t in groups.tensors if t.group != first} == {8}


def test_offline_model_is_analysed_on_whole_windows_without_its_subsampling(
    model, tmp_path: Path, luts
) -> None:
    """The offline program holds the subsampling too: its weights stay fp16 and in no group."""
    from sortformer_build import contract
    from sortformer_build.coreml.convert import convert_program
    from sortformer_build.coreml.export import trace_window
    from sortformer_build.coreml.layout import OFFLINE_PROGRAM, SUBSAMPLING_WEIGHTS
    from sortformer_build.geometry import OfflineGeometry

    geometry = OfflineGeometry(window_frames=3072)
    program = tmp_path / OFFLINE_PROGRAM
    convert_program(trace_window(model, geometry), {contract.OFFLINE_PREDS: np.float32}, TARGET, {}, program)
    settings = AnalysisSettings(seconds=1.0, frames=400)
    inputs = sensitivity.window_inputs(model, geometry, settings)
    assert inputs.embs.shape[:2] == (2, geometry.output_frames) and list(inputs.lengths) == [384, 384]
    sizes = package_sizes([program], program, SUBSAMPLING_WEIGHTS)
    groups, found, _ = analyse(model, program, sizes, inputs, TARGET, settings, luts, SUBSAMPLING_WEIGHTS)
    assert groups.groups == ("fastconformer.0", "fastconformer.1")
    assert set(sizes.tensors) == {tensor.const for tensor in groups.tensors}
    assert not any(tensor.const.startswith(SUBSAMPLING_WEIGHTS) for tensor in groups.tensors)
    assert all(group.effects[2].mean_dp > group.effects[8].mean_dp for group in found.groups)


def test_groups_alone_are_those_the_analysis_found(analysed, model, programs: ProgramFiles) -> None:
    """Applying a given recipe needs the groups only: found without measuring, the same."""
    from sortformer_build.compress.groups import tensor_groups

    groups = tensor_groups(model, programs.head, GEOMETRY.prediction_frames, Granularity.block)
    assert groups == analysed[0]


def test_consts_are_told_apart_by_layout_and_shared_by_copies() -> None:
    """Shuffled copies hold the same values in another order: each const matches its own; a
    const the converter keeps for two equal tensors stands for both; a const no order settles
    is refused."""
    from sortformer_build.compress.groups import GroupingError, Site, place_of

    generator = np.random.default_rng(0)
    values = generator.standard_normal((64, 48)).astype(np.float16)
    shuffled = generator.permutation(values.reshape(-1)).reshape(values.shape)
    shared = generator.standard_normal((32, 96)).astype(np.float16)

    def site(name: str, value: np.ndarray) -> Site:
        place = place_of(name, Granularity.layer)
        assert place is not None
        return Site(name, SiteKind.parameter, place, value, lambda _: None)

    sites = [
        site("transformer_encoder.layers.0.second_sub_layer.dense_in.weight", values),
        site("transformer_encoder.layers.1.second_sub_layer.dense_in.weight", shuffled),
        site("encoder.layers.0.feed_forward1.linear1.weight", shared),
        site("encoder.layers.1.feed_forward1.linear1.weight", shared.copy()),
    ]
    groups, matched = match_consts({"a": values, "b": shuffled, "c": shared}, sites, Granularity.layer)
    assert [len(matched[name]) for name in "abc"] == [1, 1, 2]
    assert groups.group_of() == {"a": "transformer.0", "b": "transformer.1", "c": "fastconformer.0"}
    assert groups.tensors[0].shared_with == ("fastconformer.1",)
    other_order = values.T.copy()
    with pytest.raises(GroupingError, match=r"both match transformer_encoder\.layers\.0"):
        match_consts({"a": values, "d": other_order}, sites, Granularity.layer)
