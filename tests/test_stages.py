"""The stage registry as the build and the dry run read it: what a dry run predicts is what the
build then does, stage by stage; what is published stays what its manifest says."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from sortformer_build.config import BuildConfig, CompressionConfig, GateConfig, VerifyConfig
from sortformer_build.coreml.package import package_digest
from sortformer_build.job.build import BuildResult, build
from sortformer_build.job.plan import plan_job
from sortformer_build.records.status import Prediction
from sortformer_build.stages.registry import STAGES

from .test_verification import FP16, tiny_config

PALETTIZED6 = CompressionConfig(
    name="palettized6",
    folder="palettized",
    nbits=6,
    gates=GateConfig(min_decision_agreement=0.97, min_twin_decision_agreement=0.97),
)
# What the manifest says a stage did, for each prediction.
OUTCOMES = {
    Prediction.present: {"cached"},
    Prediction.obtain: {"built"},
    Prediction.hit: {"cached"},
    Prediction.miss: {"built"},
    Prediction.off: {"built"},
    Prediction.run: {"built", "verified"},
    Prediction.skipped: {"skipped"},
}


def _planned_then_built(config: BuildConfig) -> tuple[list[tuple[str, Prediction]], BuildResult]:
    plan = plan_job(config)
    assert not plan.up_to_date
    return [(stage.name, stage.prediction) for stage in plan.stages], build(config)


def _assert_predicted(predicted: list[tuple[str, Prediction]], result: BuildResult) -> None:
    done = [(step.name, step.status) for step in result.manifest.steps]
    assert [name for name, _ in predicted] == [name for name, _ in done]
    for (name, prediction), (_, status) in zip(predicted, done, strict=True):
        assert status in OUTCOMES[prediction], (name, prediction, status)


def test_stage_names_are_unique() -> None:
    names = [stage.name for stage in STAGES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("cache", [True, False])
def test_dry_run_predicts_the_stages_a_build_runs_cold_then_warm(
    tmp_path: Path, fresh_build_cache: Path, cache: bool
) -> None:
    fp16 = dataclasses.replace(tiny_config(tmp_path, fresh_build_cache), cache=cache)
    palettized = dataclasses.replace(fp16, compression=PALETTIZED6)

    cold, result = _planned_then_built(fp16)
    expected = Prediction.miss if cache else Prediction.off
    assert dict(cold)["programs"] is expected and dict(cold)["checkpoint"] is Prediction.present
    _assert_predicted(cold, result)

    warm, result = _planned_then_built(palettized)  # reuses the fp16 job's conversion and outputs
    expected_reuse = Prediction.hit if cache else Prediction.off
    assert [dict(warm)[name] for name in ("programs", "nemo-reference", "fp16-outputs")] == [
        expected_reuse
    ] * 3
    assert dict(warm)["palettize"] is (Prediction.miss if cache else Prediction.off)
    _assert_predicted(warm, result)

    if cache:
        assert plan_job(palettized).up_to_date and build(palettized).up_to_date


def test_dry_run_without_parity_skips_what_the_build_skips(tmp_path: Path, fresh_build_cache: Path) -> None:
    config = dataclasses.replace(tiny_config(tmp_path, fresh_build_cache), verify=VerifyConfig(parity=False))
    predicted, result = _planned_then_built(config)
    assert ("parity", Prediction.skipped) in predicted and "nemo-reference" not in dict(predicted)
    _assert_predicted(predicted, result)


def test_a_package_tampered_with_after_publication_is_rebuilt(tmp_path: Path, shared_cache: Path) -> None:
    config = dataclasses.replace(
        tiny_config(tmp_path, shared_cache, compression=FP16), verify=VerifyConfig(parity=False)
    )
    published = build(config)
    weights = sorted(published.package.rglob("*weight.bin"))[-1]
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime

    assert not plan_job(config).up_to_date
    rebuilt = build(config)
    assert not rebuilt.up_to_date
    assert package_digest(rebuilt.package) == published.manifest.artifact.content_sha256
