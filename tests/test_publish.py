"""`sortformer-build-publish` on a real tiny-checkpoint release built by the console script: the
staged tree against the runtime's layout, the model card read back with huggingface_hub,
release.json's checksums, every refusal, and an offline upload attempt."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, metadata_load
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sortformer_build.cli.publish import UPLOAD_REFUSED, register_schema
from sortformer_build.coreml import host
from sortformer_build.coreml.package import package_digest
from sortformer_build.coreml.targets import DeploymentTarget
from sortformer_build.records.evaluation import DatasetEvaluation, DerRates, Scoring
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.matrix import ReleaseMatrix
from sortformer_build.records.release import ReleaseIndex
from sortformer_build.records.steps import SkipReason
from sortformer_build.release.hub.config import Format, PublishConfig
from sortformer_build.release.hub.tree import StagedRelease, describe_files
from sortformer_build.release.hub.upload import RemoteFile, operations

from .conftest import ALL_VARIANTS, OFFLINE, RELEASE, Run, run_cli
from .test_cli_tiny import markdown_rows

PUBLISH = str(Path(sys.executable).with_name("sortformer-build-publish"))
# The runtime's layout: <set>/<precision folder>/<file name>.mlmodelc: every variant, both precisions.
VARIANTS, FOLDERS = tuple(ALL_VARIANTS), ("fp16", "palettized")
# The tiny release is random weights: these dry runs and uploads are of a test release.
PACKAGES = ("formats=[mlpackage]", "allow_synthetic=true")


def publish(folder: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    """Run the installed publish command on `folder`, offline unless told otherwise."""
    completed = subprocess.run(
        [PUBLISH, f"output_dir={folder}", *args],
        cwd=folder.parent,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Run(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """A finished, verified release: every variant (the offline model included), fp16 and 6-bit,
    parity checks on."""
    work = tmp_path_factory.mktemp("release")
    run = run_cli(
        "--multirun",
        "variant=glob(*)",
        "compression=fp16,palettized6",
        "checkpoint=tiny",
        f"cache_dir={shared_cache}",
        cwd=work,
    )
    assert run.returncode == 0, run.output[-3000:]
    return work / "outputs" / "tiny"


@pytest.fixture
def copy(release: Path, tmp_path: Path) -> Path:
    """The release copied, so a test may spoil it."""
    target = tmp_path / "tiny"
    shutil.copytree(release, target, ignore=shutil.ignore_patterns(".publish"))
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> dict[str, Path]:
    return {path.relative_to(root).as_posix(): path for path in root.rglob("*") if path.is_file()}


def _manifest(folder: Path, precision: str, variant: str) -> Manifest:
    return Manifest.read(folder / precision / f"{ALL_VARIANTS[variant][0]}.json")


def test_config_defaults_compose() -> None:
    register_schema()
    with initialize_config_module("sortformer_build.conf", version_base="1.3"):
        settings = OmegaConf.to_object(compose("publish"))
    assert isinstance(settings, PublishConfig)
    assert (settings.repo_id, settings.path_in_repo) == (
        "FluidInference/diar-streaming-sortformer-coreml",
        "v3",
    )
    assert settings.formats == [Format.mlmodelc] and not settings.dry_run and not settings.create_pr


def test_dry_run_stages_the_runtime_layout_and_lists_the_operations(copy: Path) -> None:
    run = publish(copy, "dry_run=true", *PACKAGES)
    assert run.returncode == 0, run.output
    staged = copy / ".publish"
    models = {
        f"v3/{folder}/{ALL_VARIANTS[variant][0]}.mlpackage" for folder in FOLDERS for variant in VARIANTS
    }
    files = _files(staged)
    assert {path.split(".mlpackage/")[0] + ".mlpackage" for path in files if ".mlpackage/" in path} == models
    assert set(files) - {p for p in files if ".mlpackage/" in p} == {"README.md", "v3/release.json"}
    for model in models:
        folder, name = model.split("/")[1], Path(model).stem
        manifest = Manifest.read(copy / folder / f"{name}.json")
        assert package_digest(staged / model) == manifest.artifact.content_sha256
    listed = [line.split() for line in run.stdout.splitlines() if line.startswith("  add ")]
    assert sorted((words[1], int(words[2]), words[5]) for words in listed) == sorted(
        (path, file.stat().st_size, _sha256(file)) for path, file in files.items()
    )
    assert not list(copy.rglob(".partial-*"))


def test_release_json_checks_every_staged_file(copy: Path) -> None:
    assert publish(copy, "dry_run=true", *PACKAGES).returncode == 0
    staged = copy / ".publish"
    document = ReleaseIndex.read(staged / "v3" / "release.json")
    files = _files(staged)
    del files["v3/release.json"]
    assert {entry.path_in_repo: (entry.bytes, entry.sha256) for entry in document.files} == {
        path: (file.stat().st_size, _sha256(file)) for path, file in files.items()
    }
    assert len(document.models) == 2 * len(VARIANTS)
    for model in document.models:
        folder, name = model.release_path.removesuffix(".mlmodelc").split("/")
        manifest = copy / folder / f"{name}.json"
        assert model.manifest_sha256 == _sha256(manifest)
        assert model.package_content_sha256 == Manifest.read(manifest).artifact.content_sha256
        assert model.staged == [f"v3/{folder}/{name}.mlpackage"]
        assert model.job_digest and model.checkpoint_sha256


def test_model_card_metadata_reads_back(copy: Path) -> None:
    assert publish(copy, "dry_run=true", *PACKAGES).returncode == 0
    card_path = copy / ".publish" / "README.md"
    metadata = metadata_load(card_path)
    assert metadata is not None
    # v2 (cc-by-4.0) and v2.1 (NVIDIA's open model license) in one release: one license field
    # for both, and the card says which model is under which.
    assert metadata["license"] == "other"
    assert metadata["license_name"] == "nvidia-open-model-license-and-cc-by-4.0"
    assert metadata["license_link"].startswith("https://www.nvidia.com/")
    assert metadata["base_model"] == [
        "nvidia/diar_streaming_sortformer_4spk-v2",
        "nvidia/diar_streaming_sortformer_4spk-v2.1",
    ]
    assert metadata["library_name"] == "coreml"
    assert "speaker-diarization" in metadata["tags"]
    card = ModelCard.load(card_path)
    for variant in RELEASE:
        name, chunk, _, right, *_ = RELEASE[variant]
        assert f"{(chunk + right) * 0.08:.2f} s" in card.text
        for folder in FOLDERS:
            assert f"`{folder}/{name}`" in card.text
            parity = _manifest(copy, folder, variant).verification.parity
            assert parity is not None
            assert f"{parity.per_call_vs_nemo.overall.max_abs_prob_error:.1e}" in card.text
    assert "iOS 17 / macOS 14" in card.text
    assert "not evaluated" in card.text and "random weights" in card.text
    assert "coremltools 9.0" in card.text


def _sections(text: str) -> dict[str, str]:
    """The card's `## ` sections by title."""
    parts = text.split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in parts}


def test_card_and_release_json_invent_no_figure(copy: Path) -> None:
    """The offline model has no stream and an fp16 model no twin: those cells say so, never 0;
    the offline model's latency is its whole window."""
    assert publish(copy, "dry_run=true", *PACKAGES).returncode == 0
    card = ModelCard.load(copy / ".publish" / "README.md")
    sections = _sections(card.text)
    models = {row["model"]: row for row in markdown_rows(sections["Models"])}
    parity = {row["model"]: row for row in markdown_rows(sections["Parity with NeMo"])}
    assert len(models) == len(parity) == 2 * len(VARIANTS)
    offline_name, window = OFFLINE["offline"]
    for folder in FOLDERS:
        offline = f"`{folder}/{offline_name}`"
        assert models[offline]["latency"] == f"whole window, {window / 8 * 0.08:.2f} s"
        assert parity[offline]["streaming max |dp|"] == parity[offline]["streaming decisions"] == "—"
    for model, row in parity.items():
        assert (row["decisions vs fp16"] == "—") == model.startswith("`fp16/"), (model, row)
        if offline_name not in model:
            assert (
                row["streaming max |dp|"].endswith("chunks)")
                and "(0 chunks)" not in row["streaming max |dp|"]
            )
    assert "Offline models: latency is the whole window" in card.text
    assert "Streaming models: latency is the output latency" in card.text
    for row in (*models.values(), *parity.values()):
        assert all(cell and cell not in ("0", "0.00%", "0.0e+00") for cell in row.values()), row


def _as_if_from_the_hub(folder: Path) -> None:
    """Every manifest says its weights came from the Hub: the card then treats DER against the
    ground truth as meaningful."""
    for path in folder.glob("*/*.json"):
        manifest = Manifest.read(path)
        checkpoint = manifest.checkpoint.model_copy(update={"source": "hub"})
        manifest.model_copy(update={"checkpoint": checkpoint}).write(path)


def test_der_figures_reach_the_card_when_the_release_was_evaluated(copy: Path) -> None:
    manifest_path = copy / "palettized" / "Sortformer_v2.1.json"
    manifest = Manifest.read(manifest_path)
    rates = DerRates(der=0.2451, missed=0.1, false_alarm=0.05, confusion=0.0951)
    evaluation = DatasetEvaluation(
        dataset="ami-sdm",
        dataset_sha256="0" * 64,
        digest="1" * 64,
        backend="coreml",
        scoring=Scoring(collar=0.25, scored_overlap=True),
        der_vs_truth=rates,
        der_vs_nemo=rates,
        der_change_vs_fp16_pp=0.9,
        recordings=[],
        audio_seconds=3600.0,
        real_time_factor=0.01,
        nemo_real_time_factor=0.02,
        rttm_dir="elsewhere",
    )
    manifest.model_copy(update={"evaluations": [evaluation]}).write(manifest_path)
    _as_if_from_the_hub(copy)
    assert publish(copy, "dry_run=true", *PACKAGES).returncode == 0
    card = ModelCard.load(copy / ".publish" / "README.md")
    (result,) = card.data.eval_results
    assert (result.dataset_name, result.metric_type, result.metric_value) == ("ami-sdm", "der", 24.51)
    (row,) = markdown_rows(_sections(card.text)["Diarization error rate"])
    assert (
        row["model"] == "`palettized/Sortformer_v2.1`" and row["scoring"] == "collar 0.25 s, overlap scored"
    )
    assert (row["DER"], row["missed"], row["vs fp16"]) == ("24.51%", "10.00%", "+0.90 pp")
    assert "not evaluated" not in card.text


def _remove_package(folder: Path) -> None:
    shutil.rmtree(folder / "fp16" / "SortformerEfficient_v2.1.mlpackage")


def _tamper(folder: Path) -> None:
    weights = folder / "palettized" / "Sortformer_v2.1.mlpackage" / "Data" / "com.apple.CoreML" / "weights"
    target = max(weights.iterdir(), key=lambda path: path.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def _other_checkpoint(folder: Path) -> None:
    path = folder / "palettized" / "SortformerEfficient_v2.1.json"
    manifest = Manifest.read(path)
    other = manifest.checkpoint.model_copy(
        update={"sha256": hashlib.sha256(b"another checkpoint").hexdigest()}
    )
    manifest.model_copy(update={"checkpoint": other}).write(path)


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_remove_package, "fp16/SortformerEfficient_v2.1.mlpackage: the package "),
        (_tamper, "palettized/Sortformer_v2.1.mlpackage: content sha256 "),
        (_other_checkpoint, "the v2.1 models come from 2 different checkpoints"),
    ],
    ids=["missing-artifact", "tampered-package", "mixed-checkpoints"],
)
def test_unfit_release_is_refused_one_line_per_problem(
    copy: Path, spoil: Callable[[Path], None], problem: str
) -> None:
    spoil(copy)
    run = publish(copy, "dry_run=true", *PACKAGES)
    assert run.returncode == 1, run.output
    lines = run.stderr.strip().splitlines()
    assert lines[0] == f"sortformer-build-publish: refusing to publish {copy}: 1 problem(s)"
    assert len(lines) == 2 and lines[1].strip().startswith(problem), run.stderr
    assert not (copy / ".publish").exists()


def test_failed_job_is_refused(unfinished: Path) -> None:
    run = publish(unfinished, "dry_run=true", *PACKAGES)
    assert run.returncode == 1
    assert (
        "  Sortformer_v2.1_c0-1-7_f40_s188_p31 (fp16): the job failed: chunk_len must be at least 1, got 0\n"
        in run.stderr
    )


def test_unverified_package_is_refused(unfinished: Path) -> None:
    run = publish(unfinished, "dry_run=true", *PACKAGES)
    assert run.returncode == 1
    expected = "  fp16/Sortformer_v2.1.mlpackage: not verified: parity skipped (verify.parity=false)\n"
    assert expected in run.stderr
    assert run.stderr.count("\n") == 3 and not (unfinished / ".publish").exists()


@pytest.mark.skipif(host.for_target(DeploymentTarget.iOS17).skip is None, reason="Core ML compiles here")
def test_compiled_models_are_refused_where_core_ml_cannot_compile(copy: Path) -> None:
    run = publish(copy, "dry_run=true")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "sortformer-build-publish: error: cannot stage .mlmodelc here: needs macOS (Core ML cannot "
        "compile, load or run models on Linux); publish from a Mac, or pass formats=[mlpackage] to "
        "stage the packages only"
    ]
    assert not (copy / ".publish").exists()


def test_offline_upload_fails_in_one_line_and_keeps_the_staged_tree(copy: Path) -> None:
    assert publish(copy, "dry_run=true", *PACKAGES).returncode == 0
    before = {path: _sha256(file) for path, file in _files(copy / ".publish").items()}
    run = publish(copy, *PACKAGES, "allow_synthetic=true")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "sortformer-build-publish: error: HF_HUB_OFFLINE is set: cannot upload to "
        "FluidInference/diar-streaming-sortformer-coreml; unset it to publish "
        "(dry_run=true stages and lists the operations without the network)"
    ]
    assert {path: _sha256(file) for path, file in _files(copy / ".publish").items()} == before
    assert not list(copy.rglob(".partial-*"))


def test_random_weights_are_not_uploaded(copy: Path) -> None:
    run = publish(copy, "formats=[mlpackage]", env={"HF_HUB_OFFLINE": "0"})
    assert run.returncode == UPLOAD_REFUSED
    assert run.stderr.strip().splitlines() == [
        "sortformer-build-publish: an upload would be refused: 1 reason(s)",
        "  the release was built from tiny random weights, not NVIDIA's (allow_synthetic=true to upload "
        "it anyway, e.g. to a test repo)",
    ]
    assert not (copy / ".publish").exists()


def test_a_dry_run_says_why_an_upload_would_be_refused(copy: Path) -> None:
    """Random weights, a model short of the release set, another folder than the runtime's:
    one line per reason and a distinct exit; the tree is staged for inspection all the same."""
    matrix = ReleaseMatrix.read(copy / "matrix.json")
    kept = [row for row in matrix.rows if row.package != "fp16/SortformerEfficient_v2.1.mlpackage"]
    matrix.model_copy(update={"rows": kept}).write(copy / "matrix.json")
    run = publish(copy, "formats=[mlpackage]", "dry_run=true", "path_in_repo=v4")
    assert run.returncode == UPLOAD_REFUSED, run.output
    lines = run.stderr.strip().splitlines()
    assert lines[0] == "sortformer-build-publish: an upload would be refused: 3 reason(s)"
    assert "tiny random weights" in lines[1]
    assert lines[2].startswith(
        "  1 of the 16 models of the release set are missing (fp16/SortformerEfficient_v2.1)"
    )
    assert "the runtime downloads from FluidInference/diar-streaming-sortformer-coreml v3/, not" in lines[3]
    assert (copy / ".publish" / "v4" / "release.json").is_file()
    allowed = publish(copy, "formats=[mlpackage]", "dry_run=true", "path_in_repo=v4", "allow_partial=true")
    assert allowed.returncode == UPLOAD_REFUSED and "1 reason(s)" in allowed.stderr


def test_a_failure_while_staging_keeps_the_previous_staged_tree(copy: Path) -> None:
    assert publish(copy, "dry_run=true", *PACKAGES).returncode == 0
    before = {path: _sha256(file) for path, file in _files(copy / ".publish").items()}
    # The card is written after the packages are copied: an unknown license fails half-way.
    path = copy / "palettized" / "Sortformer_v2.1.json"
    manifest = Manifest.read(path)
    manifest.model_copy(update={"variant": manifest.variant.model_copy(update={"version": "v9"})}).write(path)
    run = publish(copy, "dry_run=true", *PACKAGES)
    assert run.returncode == 1
    assert "no license is known for checkpoint version 'v9'" in run.stderr
    assert {path: _sha256(file) for path, file in _files(copy / ".publish").items()} == before
    assert not list(copy.rglob(".partial-*"))


def test_only_changed_files_are_uploaded_and_stale_model_files_deleted(copy: Path) -> None:
    assert publish(copy, "dry_run=true", *PACKAGES).returncode == 0
    root = copy / ".publish"
    files = describe_files(root)
    by_path = {file.path_in_repo: file for file in files}
    folders = sorted(
        {path.split(".mlpackage/")[0] + ".mlpackage" for path in by_path if ".mlpackage/" in path}
    )
    staged = StagedRelease(root, files, folders)
    card = (root / "README.md").read_bytes()
    weights = next(path for path in by_path if path.endswith("1-weight.bin"))
    model = next(path for path in by_path if path.endswith("model.mlmodel"))
    remote = {
        # A plain git file: compared by git blob id.
        "README.md": RemoteFile("README.md", None, hashlib.sha1(b"blob %d\0" % len(card) + card).hexdigest()),
        weights: RemoteFile(weights, by_path[weights].sha256, "lfs"),
        model: RemoteFile(model, "0" * 64, "lfs"),
        f"{folders[0]}/Data/old.bin": RemoteFile(f"{folders[0]}/Data/old.bin", "1" * 64, "lfs"),
        "v3/notes.txt": RemoteFile("v3/notes.txt", None, "abc"),
    }
    planned = {(operation.action, operation.path_in_repo) for operation in operations(staged, remote)}
    assert ("add", model) in planned and ("delete", f"{folders[0]}/Data/old.bin") in planned
    assert not {path for _, path in planned} & {"README.md", weights, "v3/notes.txt"}
    assert len(planned) == len(files) - 2 + 1


@pytest.mark.parametrize("reason", list(SkipReason), ids=str)
def test_each_skip_reason_of_the_mac_step_is_judged_by_what_it_means(copy: Path, reason: SkipReason) -> None:
    """A Mac step skipped because this machine could not run it (not macOS, too old a macOS, no
    Core ML library) is what the publishing Mac does itself; any other reason refuses the model."""
    path = copy / "fp16" / f"{RELEASE['default'][0]}.json"
    manifest = Manifest.read(path)
    steps = [
        step.model_copy(update={"skip": reason}) if step.name == "on-device" else step
        for step in manifest.steps
    ]
    manifest.model_copy(update={"steps": steps}).write(path)
    run = publish(copy, "dry_run=true", *PACKAGES)
    if reason.could_not_run_here:
        assert run.returncode == 0, run.output
    else:
        assert run.returncode == 1
        assert f"fp16/{RELEASE['default'][0]}.mlpackage: not verified: on-device skipped" in run.stderr
