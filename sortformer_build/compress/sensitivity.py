"""How much each group of head weights matters: palettize that group alone, at each bit width,
and measure how far the speaker probabilities move from the fp16 head's.

The head runs in torch (NeMo's own modules, in fp32, with the compressible weights rounded to
fp16 as the converted program holds them), on realistic inputs: the speaker cache, FIFO and
chunk that NeMo's own streaming loop holds at several points of a conversation (offline: whole
windows of it). Buffers of random values would flip decisions real states never flip. Each
group's weights are replaced by their look-up-table values (the tables the build will use,
from the same LUT store), the rest stays fp16. A group's change reaches the output only through
the layers after it, so the activations before it are replayed from the fp16 run instead of
recomputed: a FastConformer layer's group costs the layers from it on, a Transformer layer's
group only the Transformer from it on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.compress.allocate import tensor_bytes
from sortformer_build.compress.groups import match_consts, nemo_sites
from sortformer_build.coreml.targets import KEEP_FP16, TARGET_FACTS, DeploymentTarget
from sortformer_build.errors import BuildError
from sortformer_build.geometry import FRAME_SECONDS, OfflineGeometry, StreamingGeometry
from sortformer_build.records.mixed import (
    AnalysisCost,
    AnalysisSettings,
    Effect,
    GroupSensitivity,
    PackageSizes,
    Sensitivity,
    TensorGroups,
)
from sortformer_build.store.cache import ArrayStore

log = logging.getLogger(__name__)

DECISION_THRESHOLD = 0.5


class AnalysisError(BuildError):
    """Analysis settings the deployment target or the model cannot serve."""


@dataclass(frozen=True)
class HeadInputs:
    """What the head runs on: its input as the pre-encoder makes it, one state per row."""

    embs: np.ndarray  # (states, frames, d_model) float32
    lengths: np.ndarray  # (states,) valid frames
    description: str
    seconds: float = 0.0  # what making them cost, wall clock
    cpu_seconds: float = 0.0  # and in CPU time of this process (every thread)


def check_settings(settings: AnalysisSettings, target: DeploymentTarget) -> None:
    allowed = TARGET_FACTS[target].palette_nbits
    wrong = [bits for bits in settings.nbits if bits not in allowed]
    if wrong or not settings.nbits:
        raise AnalysisError(
            f"cannot analyse {wrong or 'no'} bits: {target.value} look-up tables take "
            f"{', '.join(map(str, allowed))} bits"
        )


def streaming_inputs(model: Any, geometry: StreamingGeometry, settings: AnalysisSettings) -> HeadInputs:
    """States NeMo's own streaming loop (`verify.reference.stream`) holds on a synthetic
    conversation, packed as the pre-encoder packs them: evenly spaced calls from the first
    (empty cache) to the last (full, compressed cache)."""
    import torch

    from sortformer_build import contract
    from sortformer_build.coreml.export import PreEncoder
    from sortformer_build.verify import reference

    started, cpu_started = time.perf_counter(), time.process_time()
    fill = geometry.spkcache_len + geometry.fifo_len + 3 * geometry.chunk_len
    seconds = max(settings.seconds, fill * FRAME_SECONDS)
    mel = reference.mel_features(model, reference.synthetic_conversation(seconds, settings.seed))
    calls: list[dict[str, np.ndarray]] = []
    nemo = reference.nemo_step(model)

    def step(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(inputs)
        return nemo(inputs)

    log.info("Streaming a %.0f s conversation through NeMo for realistic head inputs", seconds)
    reference.stream(reference.streaming_modules(geometry, int(model.encoder.d_model)), geometry, mel, step)
    chosen = _spread(len(calls), settings.frames // geometry.prediction_frames)
    pre_encoder = PreEncoder(model).eval()
    embs, lengths = [], []
    with torch.no_grad():
        for index in chosen:
            tensors = [torch.from_numpy(calls[index][name]) for name in contract.INPUT_NAMES]
            _, _, packed, total = pre_encoder(*tensors)
            embs.append(packed[0].numpy())
            lengths.append(int(total[0]))
    description = (
        f"{len(chosen)} of the {len(calls)} states NeMo's streaming loop held on a {seconds:.0f} s "
        f"synthetic conversation (seed {settings.seed})"
    )
    return _inputs(embs, lengths, description, started, cpu_started)


def window_inputs(model: Any, geometry: OfflineGeometry, settings: AnalysisSettings) -> HeadInputs:
    """Whole windows of NeMo's mel features of a synthetic conversation, at evenly spaced
    offsets, subsampled as the offline model subsamples them."""
    import torch

    from sortformer_build.coreml.export import PreEncoder
    from sortformer_build.verify import reference
    from sortformer_build.verify.offline import MEL_FRAMES_PER_SECOND

    started, cpu_started = time.perf_counter(), time.process_time()
    window_seconds = geometry.window_frames / MEL_FRAMES_PER_SECOND
    seconds = max(settings.seconds, 2 * window_seconds)
    mel = reference.mel_features(model, reference.synthetic_conversation(seconds, settings.seed))
    last_start = mel.shape[2] - geometry.window_frames
    count = max(2, settings.frames // geometry.output_frames)
    starts = np.linspace(0, last_start, count).round().astype(int)
    pre_encoder = PreEncoder(model).eval()
    length = torch.tensor([geometry.window_frames], dtype=torch.int32)
    embs, lengths = [], []
    with torch.no_grad():
        for start in starts:
            window = torch.from_numpy(np.ascontiguousarray(mel[:, :, start : start + geometry.window_frames]))
            subsampled, valid = pre_encoder.subsample(window.transpose(1, 2), length)
            embs.append(subsampled[0].numpy())
            lengths.append(int(valid[0]))
    description = f"{count} windows of a {seconds:.0f} s synthetic conversation (seed {settings.seed})"
    return _inputs(embs, lengths, description, started, cpu_started)


def _inputs(
    embs: list[np.ndarray], lengths: list[int], description: str, started: float, cpu_started: float
) -> HeadInputs:
    return HeadInputs(
        np.stack(embs),
        np.array(lengths),
        description,
        round(time.perf_counter() - started, 1),
        round(time.process_time() - cpu_started, 1),
    )


def _spread(available: int, wanted: int) -> list[int]:
    count = min(available, max(2, wanted))
    return sorted({int(i) for i in np.linspace(0, available - 1, count).round()})


def analyse(
    model: Any,
    head: Path,
    sizes: PackageSizes,
    inputs: HeadInputs,
    target: DeploymentTarget,
    settings: AnalysisSettings,
    luts: ArrayStore,
    keep_prefix: str | None = None,
) -> tuple[TensorGroups, Sensitivity, AnalysisCost]:
    """Group the head program's compressible consts (`head`, the converted fp16 program) and
    measure each group alone at each of `settings.nbits`. `model` is restored as it was."""
    import torch

    from sortformer_build.coreml.export import Head
    from sortformer_build.coreml.palettize import compressible_weights, tensor_luts

    check_settings(settings, target)
    started, cpu_started = time.perf_counter(), time.process_time()
    consts = compressible_weights(head, keep_prefix)
    module = Head(model).eval()
    embs = torch.from_numpy(inputs.embs)
    lengths = torch.from_numpy(inputs.lengths).long()
    valid = np.arange(inputs.embs.shape[1])[None, :] < inputs.lengths[:, None]

    def run() -> np.ndarray:
        with torch.no_grad():
            return module(embs, lengths).numpy()

    original = run()
    with nemo_sites(model, lambda: module(embs[:1], lengths[:1]), settings.granularity) as sites:
        groups, matched = match_consts(consts, sites, settings.granularity)
        for found in matched.values():
            for site in found:
                site.use(site.value)
        with _recording(model) as activations:
            fp16 = run()
        baseline = time.perf_counter() - started
        luts_started = time.perf_counter()
        tables = {bits: tensor_luts(list(consts.values()), bits, luts)[0] for bits in settings.nbits}
        luts_seconds = time.perf_counter() - luts_started
        measured_started = time.perf_counter()
        results = []
        for group, members in _progress(groups.members()):
            group_sites = [(site, const.const) for const in members for site in matched[const.const]]
            depth = min(site.place.depth for site, _ in group_sites)
            effects = {}
            for bits in settings.nbits:
                for site, const in group_sites:
                    lut = tables[bits].find(consts[const], bits)
                    assert lut is not None  # every const's table was just computed or read
                    site.use(_palettized(site.value, lut))
                with _replay(model, depth, activations):
                    effects[bits] = effect(run(), fp16, valid)
                for site, _ in group_sites:
                    site.use(site.value)
            results.append(_group(group, members, effects, settings.nbits))
            log.info("  %s: mean |dp| %s", group, _by_width(effects))
        measured = time.perf_counter() - measured_started
    cost = AnalysisCost(
        inputs_seconds=inputs.seconds,
        baseline_seconds=round(baseline, 1),
        luts_seconds=round(luts_seconds, 1),
        measure_seconds=round(measured, 1),
        total_seconds=round(inputs.seconds + time.perf_counter() - started, 1),
        cpu_seconds=round(inputs.cpu_seconds + time.process_time() - cpu_started, 1),
    )
    return (
        groups,
        Sensitivity(
            target=target,
            settings=settings,
            inputs=inputs.description,
            decisions=int(valid.sum()) * original.shape[-1],
            fp16_vs_fp32=effect(fp16, original, valid),
            sizes=sizes,
            groups=tuple(results),
        ),
        cost,
    )


def _progress(members: Mapping[str, Sequence[Any]]) -> Iterator[tuple[str, Sequence[Any]]]:
    from tqdm import tqdm

    # Shown on a terminal only (disable=None); a log gets one line per group.
    yield from tqdm(members.items(), desc="  measuring groups", unit=" groups", leave=False, disable=None)


def _by_width(effects: Mapping[int, Effect]) -> str:
    return ", ".join(f"{bits} bits {found.mean_dp:.2e}" for bits, found in effects.items())


def _group(
    name: str, members: Sequence[Any], effects: dict[int, Effect], nbits: Sequence[int]
) -> GroupSensitivity:
    shared = tuple(dict.fromkeys(other for tensor in members for other in tensor.shared_with))
    return GroupSensitivity(
        name=name,
        tensors=len(members),
        elements=sum(tensor.elements for tensor in members),
        shared_with=shared,
        bytes={
            bits: sum(tensor_bytes(tensor.elements, bits) for tensor in members)
            for bits in (*nbits, KEEP_FP16)
        },
        effects=effects,
    )


def _palettized(value: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Every value replaced by its nearest table entry, as `constexpr_lut_to_dense` decodes it."""
    from sortformer_build.coreml.palettizer import assign_indices

    return lut.astype(np.float16)[assign_indices(value, lut)]


def effect(preds: np.ndarray, reference: np.ndarray, valid: np.ndarray) -> Effect:
    """`preds` against `reference` (states, frames, speakers) over the valid frames."""
    ours, theirs = preds[valid].astype(np.float64), reference[valid].astype(np.float64)
    difference = np.abs(ours - theirs)
    flipped = (ours > DECISION_THRESHOLD) != (theirs > DECISION_THRESHOLD)
    return Effect(
        max_dp=float(difference.max()), mean_dp=float(difference.mean()), flipped=int(flipped.sum())
    )


@dataclass
class _Activations:
    """Each layer's output in the fp16 run, in execution order."""

    encoder: list[Any] = field(default_factory=list)
    transformer: list[Any] = field(default_factory=list)


@contextmanager
def _recording(model: Any) -> Iterator[_Activations]:
    activations = _Activations()
    hooks = [
        layer.register_forward_hook(lambda module, inputs, output, kept=kept: kept.append(output))
        for layers, kept in (
            (model.encoder.layers, activations.encoder),
            (model.transformer_encoder.layers, activations.transformer),
        )
        for layer in layers
    ]
    try:
        yield activations
    finally:
        for hook in hooks:
            hook.remove()


def _replayed(output: Any) -> Any:
    import torch

    class Replayed(torch.nn.Module):
        """Stands in for a layer whose output cannot have changed: returns the recorded one."""

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return output

    return Replayed()


@contextmanager
def _replay(model: Any, depth: tuple[int, int], activations: _Activations) -> Iterator[None]:
    """Layers before `depth` (see `groups.Place`) return their fp16-run outputs."""
    stage, index = depth
    encoder, transformer = model.encoder.layers, model.transformer_encoder.layers
    replaced = [
        (encoder, layer, activations.encoder[layer]) for layer in range(len(encoder) if stage else index)
    ]
    replaced += [
        (transformer, layer, activations.transformer[layer]) for layer in range(index if stage else 0)
    ]
    originals = [(layers, layer, layers[layer]) for layers, layer, _ in replaced]
    try:
        for layers, layer, output in replaced:
            layers[layer] = _replayed(output)
        yield
    finally:
        for layers, layer, module in originals:
            layers[layer] = module
