"""The typed records and the shape of the code around them: schemas generated from the types
and checked in, one-line refusals of bad files, the stage contracts checked when a registry is
made, cache keys that follow only the code a stage runs, and a dry run that stays light."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sortformer_build.records.base import RecordError
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.schemas import FOLDER, SCHEMAS, schema_path, schema_text
from sortformer_build.stages.base import StageOrderError, check_order
from sortformer_build.stages.registry import STAGES
from sortformer_build.store.fingerprint import SourceTree, installed

from .conftest import ALL_VARIANTS

HEAVY = ("torch", "coremltools", "nemo", "numba")


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_checked_in_schema_is_current(name: str) -> None:
    assert schema_path(name).read_text() == schema_text(SCHEMAS[name]), (
        f"{schema_path(name)} is stale: run python -m sortformer_build.records.schemas"
    )
    assert FOLDER.name == "schemas"


def test_a_manifest_of_another_format_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "Sortformer_v2.1.json"
    path.write_text(json.dumps({"format": 2, "artifact": {}}))
    with pytest.raises(RecordError) as caught:
        Manifest.read(path)
    message = str(caught.value)
    assert "\n" not in message and f"{path} has manifest format 2" in message and "rebuild" in message


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("not json", "the document: Invalid JSON"),
        (
            '{"format": 3, "artifact": {"file": "x", "content_sha256": "y", "bytes": "many"}}',
            "artifact.bytes",
        ),
        ("[]", "Input should be an object"),
    ],
)
def test_an_unreadable_manifest_is_refused_in_one_line(tmp_path: Path, text: str, found: str) -> None:
    path = tmp_path / "Sortformer_v2.1.json"
    path.write_text(text)
    with pytest.raises(RecordError) as caught:
        Manifest.read(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and found in message, message


def test_the_registry_is_in_data_flow_order() -> None:
    check_order(STAGES)
    names = [stage.name for stage in STAGES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("moved", ["assemble", "nemo-reference", "palettize"])
def test_a_stage_before_its_producer_fails_when_the_registry_is_made(moved: str) -> None:
    stages = list(STAGES)
    stage = next(stage for stage in stages if stage.name == moved)
    stages.remove(stage)
    stages.insert(1, stage)  # right after the checkpoint, before the conversion
    with pytest.raises(StageOrderError, match=f"stage {moved} "):
        check_order(stages)


def _tree_copy(tmp_path: Path) -> Path:
    root = tmp_path / "sortformer_build"
    shutil.copytree(installed().root, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _codes(root: Path) -> dict[str, str]:
    tree = SourceTree(root)
    return {stage.name: tree.fingerprint([type(stage).__module__]) for stage in STAGES}


def _edit(path: Path) -> None:
    text = path.read_text()
    path.write_text(text.replace('"""', '"""Edited. ', 1))


CONVERSION_AND_ITS_PRODUCTS = ("programs", "palettize", "nemo-reference", "fp16-outputs")


@pytest.mark.parametrize("edited", ["release/hub/card.py", "evaluate/scoring.py", "evaluate/datasets.py"])
def test_editing_the_card_or_evaluation_keeps_conversion_entries(tmp_path: Path, edited: str) -> None:
    root = _tree_copy(tmp_path)
    before = _codes(root)
    _edit(root / edited)
    after = _codes(root)
    for stage in CONVERSION_AND_ITS_PRODUCTS:
        assert after[stage] == before[stage], stage
    changed = {stage for stage in before if after[stage] != before[stage]}
    if edited.startswith("evaluate/"):
        assert changed == {"nemo-diarization", "diarization", "fp16-diarization", "evaluation"}
    else:
        assert changed == set()


def test_editing_the_converter_rekeys_the_conversion(tmp_path: Path) -> None:
    root = _tree_copy(tmp_path)
    before = _codes(root)
    _edit(root / "coreml" / "convert.py")
    after = _codes(root)
    # Everything built from the conversion is keyed on its entry, so it is rebuilt too.
    assert after["programs"] != before["programs"]


def _python(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter has loaded after `code`."""
    loaded = f"sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})"
    probe = f"{code}\nimport sys, json\nprint(json.dumps({loaded}))"
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.splitlines()[-1])


def test_importing_the_config_loads_no_heavy_library() -> None:
    assert _python("import sortformer_build.config") == []


def test_a_release_dry_run_loads_no_heavy_library(tmp_path: Path) -> None:
    code = f"""
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from sortformer_build.cli.app import register_schemas
from sortformer_build.job.plan import plan_job
register_schemas()
with initialize_config_module("sortformer_build.conf", version_base="1.3"):
    plans = [
        plan_job(OmegaConf.to_object(compose("build", [f"variant={{variant}}", f"compression={{compression}}",
                 "checkpoint=synthetic", "cache_dir={tmp_path / "cache"}"])))
        for variant in {sorted(ALL_VARIANTS)!r} for compression in ("fp16", "palettized6")
    ]
assert len(plans) == 16 and not any(plan.up_to_date for plan in plans)
"""
    assert _python(code) == []
