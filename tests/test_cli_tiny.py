"""Every variant option x both release compressions, built from the tiny checkpoint through the
console script, then inspected on disk with protobuf alone (not with the code under test)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from coremltools.proto import Model_pb2

from sortformer_build.coreml.package import package_digest
from sortformer_build.records.manifest import Manifest, StreamingShapes
from sortformer_build.records.matrix import ReleaseMatrix
from sortformer_build.records.schemas import schema_path
from sortformer_build.records.steps import SkipReason, StepStatus

from .conftest import ALL_VARIANTS, OFFLINE, RELEASE, TINY_D_MODEL, run_cli, sweep_statuses
from .forked import run_build

FOLDERS = {"fp16": "fp16", "palettized6": "palettized"}
FLOAT32, FLOAT16, INT32 = 65568, 65552, 131104
RELEASE_SWEEP = ("--multirun", "variant=glob(*)", "compression=fp16,palettized6", "checkpoint=tiny")


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    work = tmp_path_factory.mktemp("tiny-release")
    # Serial, so that the parallel sweep below has a reference built by one process.
    run = run_cli(*RELEASE_SWEEP, f"cache_dir={shared_cache}", "hydra/launcher=basic", cwd=work)
    assert run.returncode == 0, run.output[-3000:]
    return work / "outputs" / "tiny"


def _spec(package: Path) -> Model_pb2.Model:
    spec = Model_pb2.Model()
    spec.ParseFromString((package / "Data/com.apple.CoreML/model.mlmodel").read_bytes())
    return spec


def _features(features) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {f.name: (f.type.multiArrayType.dataType, tuple(f.type.multiArrayType.shape)) for f in features}


def _main_block(model: Model_pb2.Model):
    function = model.mlProgram.functions["main"]
    return function, function.block_specializations[function.opset]


@pytest.mark.parametrize("compression", sorted(FOLDERS))
@pytest.mark.parametrize("variant", sorted(RELEASE))
def test_artifact_meets_the_runtime_contract(tiny_release: Path, variant: str, compression: str) -> None:
    file_name, chunk, left, right, fifo, spkcache, period = RELEASE[variant]
    package = tiny_release / FOLDERS[compression] / f"{file_name}.mlpackage"
    assert package.is_dir(), sorted(p.name for p in tiny_release.rglob("*.mlpackage"))
    spec = _spec(package)
    chunk_frames = chunk + left + right
    d = TINY_D_MODEL
    assert _features(spec.description.input) == {
        "chunk": (FLOAT32, (1, chunk_frames * 8, 128)),
        "chunk_lengths": (INT32, (1,)),
        "spkcache": (FLOAT32, (1, spkcache, d)),
        "spkcache_lengths": (INT32, (1,)),
        "fifo": (FLOAT32, (1, fifo, d)),
        "fifo_lengths": (INT32, (1,)),
    }
    assert _features(spec.description.output) == {
        "speaker_preds_out": (FLOAT32, (1, spkcache + fifo + chunk_frames, 4)),
        "chunk_pre_encoder_embs_out": (FLOAT32, (1, chunk_frames, d)),
        "chunk_pre_encoder_lengths_out": (INT32, (1,)),
    }
    metadata = dict(spec.description.metadata.userDefined)
    assert {key: metadata.get(key) for key in RELEASE_KEYS} == dict(
        zip(RELEASE_KEYS, map(str, (chunk, left, right, fifo, spkcache, period)), strict=True)
    )


RELEASE_KEYS = (
    "chunk_len",
    "chunk_left_context",
    "chunk_right_context",
    "fifo_len",
    "spkcache_len",
    "spkcache_update_period",
)


@pytest.mark.parametrize("compression", sorted(FOLDERS))
@pytest.mark.parametrize("variant", ["default", "nvidia_high"])
def test_no_tensor_is_both_input_and_output(tiny_release: Path, variant: str, compression: str) -> None:
    spec = _spec(tiny_release / FOLDERS[compression] / f"{RELEASE[variant][0]}.mlpackage")
    assert spec.WhichOneof("Type") == "pipeline"
    assert [m.WhichOneof("Type") for m in spec.pipeline.models] == ["mlProgram", "mlProgram"]
    for model in spec.pipeline.models:
        function, block = _main_block(model)
        inputs = {value.name for value in function.inputs}
        produced = {output.name for op in block.operations for output in op.outputs}
        assert not inputs & set(block.outputs)
        assert set(block.outputs) <= produced


@pytest.mark.parametrize("variant", ["default", "efficient", "nvidia_high_v2"])
def test_palettized_head_uses_six_bit_lookup_tables(tiny_release: Path, variant: str) -> None:
    spec = _spec(tiny_release / "palettized" / f"{RELEASE[variant][0]}.mlpackage")
    pre_encoder, head = spec.pipeline.models
    head_ops = [op for op in _main_block(head)[1].operations if op.type == "constexpr_lut_to_dense"]
    assert head_ops, "the head has no palettized weights"
    assert {op.attributes["lut"].type.tensorType.dimensions[-1].constant.size for op in head_ops} == {64}
    all_ops = {op.type for model in (pre_encoder, head) for op in _main_block(model)[1].operations}
    assert "constexpr_lut_to_dense" not in {op.type for op in _main_block(pre_encoder)[1].operations}
    assert not all_ops & {"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"}


def test_fp16_artifact_has_no_palettized_weights(tiny_release: Path) -> None:
    spec = _spec(tiny_release / "fp16" / "Sortformer_v2.1.mlpackage")
    assert all(
        op.type != "constexpr_lut_to_dense"
        for m in spec.pipeline.models
        for op in _main_block(m)[1].operations
    )


def test_manifest_says_what_was_built_from_what(tiny_release: Path, tiny_checkpoint: Path) -> None:
    package = tiny_release / "palettized" / "SortformerNvidiaHigh_v2.1.mlpackage"
    record = Manifest.read(package.with_suffix(".json"))
    assert record.artifact.content_sha256 == package_digest(package)
    assert record.artifact.bytes == sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
    assert record.checkpoint.sha256 == _sha256(tiny_checkpoint)
    assert record.config.variant.name == "nvidia_high"
    assert record.config.compression.nbits == 6
    assert record.versions.torch and record.versions.coremltools and record.versions.nemo_toolkit
    assert record.parameters.total == record.parameters.pre_encoder + record.parameters.head
    statuses = {step.name: step for step in record.steps}
    assert statuses["lint"].status == statuses["parity"].status == StepStatus.verified
    assert statuses["checkpoint"].status == StepStatus.cached  # the sweep's first v2.1 job made it
    assert (
        statuses["on-device"].status == StepStatus.skipped and "needs macOS" in statuses["on-device"].detail
    )
    assert record.skipped() == {"on-device": SkipReason.not_macos}
    assert statuses["palettize"].status in (StepStatus.built, StepStatus.cached)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_release_summary_lists_every_artifact(tiny_release: Path) -> None:
    matrix = ReleaseMatrix.read(tiny_release / "matrix.json")
    assert (len(matrix.rows), matrix.failed) == (16, 0)
    rows = {(row.status.variant, row.status.compression): row for row in matrix.rows}
    assert set(rows) == {(variant, compression) for variant in ALL_VARIANTS for compression in FOLDERS}
    for (variant, compression), row in rows.items():
        assert variant is not None and compression is not None
        file_name = ALL_VARIANTS[variant][0]
        manifest = row.manifest
        assert manifest is not None and row.package == f"{FOLDERS[compression]}/{file_name}.mlpackage"
        if variant in OFFLINE:
            assert manifest.shapes.latency_seconds == round(OFFLINE[variant][1] / 8 * 0.08, 2)
        else:
            _, chunk, _, right, *_ = RELEASE[variant]
            assert manifest.shapes.latency_seconds == round((chunk + right) * 0.08, 2)
        assert manifest.artifact.bytes == sum(
            p.stat().st_size for p in (tiny_release / row.package).rglob("*") if p.is_file()
        )
        assert row.ratio_to_fp16 == (1.0 if compression == "fp16" else pytest.approx(0.6, abs=0.25))
        lint = manifest.step("lint")
        assert lint is not None and lint.status == StepStatus.verified
    table = markdown_rows((tiny_release / "matrix.md").read_text())
    packages = [row.package for row in rows.values() if row.package is not None]
    assert sorted(row["artifact"] for row in table) == sorted(packages)


def test_what_the_sweep_writes_matches_the_checked_in_schemas(tiny_release: Path) -> None:
    """Checked with an independent validator against the schema files, not with the records."""

    def validate(name: str, path: Path) -> None:
        jsonschema.validate(json.loads(path.read_text()), json.loads(schema_path(name).read_text()))

    manifests = sorted(tiny_release.glob("*/*.json"))
    statuses = sorted((tiny_release.parent / ".hydra-runs").rglob("job_status.json"))
    assert len(manifests) == 16 and len(statuses) >= 16
    for path in manifests:
        validate("manifest", path)
    for path in statuses:
        validate("job-status", path)
    validate("matrix", tiny_release / "matrix.json")
    spoilt = json.loads(manifests[0].read_text())
    spoilt["artifact"]["bytes"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spoilt, json.loads(schema_path("manifest").read_text()))


def markdown_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in `text`, by column name."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]

    def cells(line: str) -> list[str]:
        return [cell.strip().replace("\\|", "|") for cell in line.strip("|").split(" | ")]

    header = cells(lines[0])
    return [dict(zip(header, cells(line), strict=True)) for line in lines[2:]]


def test_unchanged_sweep_is_served_from_the_cache(tiny_release: Path, shared_cache: Path) -> None:
    work = tiny_release.parent.parent
    run = run_cli(*RELEASE_SWEEP, f"cache_dir={shared_cache}", cwd=work)
    assert run.returncode == 0, run.output[-3000:]
    statuses = sweep_statuses(work)
    assert len(statuses) == 16 and all(status["up_to_date"] for status in statuses)
    matrix = ReleaseMatrix.read(tiny_release / "matrix.json")
    assert all(row.status.up_to_date for row in matrix.rows)
    printed = markdown_rows(run.stdout[run.stdout.index("| artifact |") :])
    assert len(printed) == 16 and {row["cache"] for row in printed} == {"up to date"}


def test_dry_run_says_the_release_is_up_to_date(tiny_release: Path, shared_cache: Path) -> None:
    work = tiny_release.parent.parent
    before = sorted(p.stat().st_mtime_ns for p in tiny_release.rglob("*"))
    run = run_cli(*RELEASE_SWEEP, "dry_run=true", f"cache_dir={shared_cache}", cwd=work)
    assert run.returncode == 0, run.output[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("Dry run: ")]
    assert len(lines) == 16 and all("up to date, nothing to build" in line for line in lines)
    assert sorted(p.stat().st_mtime_ns for p in tiny_release.rglob("*")) == before


def test_parallel_joblib_sweep_builds_what_the_serial_sweep_built(
    tiny_release: Path, fresh_build_cache: Path, tmp_path: Path
) -> None:
    """Two worker processes, an empty build cache: both twins of a model race for its programs,
    which are converted once and shared."""
    run = run_cli(
        "--multirun",
        "variant=default,nvidia_high",
        "compression=fp16,palettized6",
        "checkpoint=tiny",
        "verify.parity=false",
        f"cache_dir={fresh_build_cache}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.output[-3000:]
    parallel = tmp_path / "outputs" / "tiny"
    for variant in ("default", "nvidia_high"):
        for folder in FOLDERS.values():
            name = f"{folder}/{RELEASE[variant][0]}.mlpackage"
            assert package_digest(parallel / name) == package_digest(tiny_release / name), name
    programs = fresh_build_cache / "build" / "programs"
    assert len([entry for entry in programs.iterdir() if (entry / "entry.json").is_file()]) == 2
    for variant in ("default", "nvidia_high"):
        converts = []
        for folder in FOLDERS.values():
            record = Manifest.read(parallel / folder / f"{RELEASE[variant][0]}.json")
            converts += [step.status.value for step in record.steps if step.name == "programs"]
        assert sorted(converts) == ["built", "cached"], (variant, converts)
    assert len(ReleaseMatrix.read(parallel / "matrix.json").rows) == 4


def test_cache_off_builds_from_scratch(tiny_release: Path, shared_cache: Path, tmp_path: Path) -> None:
    entries = sorted((shared_cache / "build").rglob("entry.json"))
    run = run_build(
        "variant=default",
        "compression=palettized6",
        "checkpoint=tiny",
        "verify.parity=false",
        "cache=false",
        f"cache_dir={shared_cache}",
        "output_dir=out",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.output[-3000:]
    record = Manifest.read(tmp_path / "out" / "palettized" / "Sortformer_v2.1.json")
    statuses = {step.name: step.status for step in record.steps}
    assert [statuses[name] for name in ("programs", "palettize")] == [StepStatus.built] * 2
    assert {"restore", "trace", "convert", "palettize"} <= set(record.seconds)
    assert record.artifact.content_sha256 == package_digest(
        tiny_release / "palettized" / "Sortformer_v2.1.mlpackage"
    )
    assert sorted((shared_cache / "build").rglob("entry.json")) == entries


def test_a_custom_geometry_never_lands_on_a_release_path(tiny_release: Path, shared_cache: Path) -> None:
    work = tiny_release.parent.parent
    released = tiny_release / "fp16" / "Sortformer_v2.1.mlpackage"
    before = package_digest(released)
    run = run_build(
        "variant.chunk_len=12",
        "checkpoint=tiny",
        "verify.parity=false",
        f"cache_dir={shared_cache}",
        cwd=work,
    )
    assert run.returncode == 0, run.output[-3000:]
    custom = tiny_release / "fp16" / "Sortformer_v2.1_c12-1-7_f40_s188_p31.json"
    record = Manifest.read(custom)
    assert isinstance(record.shapes, StreamingShapes)
    assert record.variant.released is False and record.shapes.chunk_mel_frames == (12 + 1 + 7) * 8
    assert package_digest(released) == before
    assert Manifest.read(released.with_suffix(".json")).variant.released is True


def test_the_published_nvidia_high_preset_builds_without_a_warning(
    tiny_release: Path, shared_cache: Path
) -> None:
    run = run_cli(
        "variant=nvidia_high", "checkpoint=tiny", f"cache_dir={shared_cache}", cwd=tiny_release.parent.parent
    )
    assert run.returncode == 0, run.output[-3000:]
    assert "WARNING" not in run.output and "lies outside" not in run.output
    changed = run_cli(
        "variant=nvidia_high",
        "variant.spkcache_update_period=100",
        "checkpoint=tiny",
        "dry_run=true",
        f"cache_dir={shared_cache}",
        cwd=tiny_release.parent.parent,
    )
    assert "spkcache_update_period 100 lies outside" in changed.output and "= [340, 380]" in changed.output
