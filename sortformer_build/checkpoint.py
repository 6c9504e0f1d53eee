"""Checkpoint sources: where the weights come from, what exactly they are, and loading them."""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import atomic
from .config import CheckpointConfig, CheckpointSource
from .errors import BuildError

log = logging.getLogger(__name__)


class CheckpointError(BuildError):
    """Weights that cannot be found or read."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    sha256: str
    source: str
    # Where it came from, for the manifest: a Hub id and revision, a file, or a seed.
    origin: str


def resolve_checkpoint(config: CheckpointConfig, version: str, cache_dir: Path) -> Checkpoint:
    """Find (or make, for synthetic sources) the .nemo file of `config` and identify it."""
    source = CheckpointSource(config.source)
    if source is CheckpointSource.hub:
        path, origin = _from_hub(config)
    elif source is CheckpointSource.local:
        path = Path(config.path or "").expanduser()
        origin = f"file {path.resolve()}"
    else:
        size = "tiny" if source is CheckpointSource.tiny else "full"
        path = synthetic_checkpoint(cache_dir, size, config.seed, version, config.speaker_logit_scale)
        origin = f"{source.value} random weights, seed {config.seed}, version {version}"
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    return Checkpoint(path=path, sha256=file_sha256(path, cache_dir), source=source.value, origin=origin)


def _from_hub(config: CheckpointConfig) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id = config.repo_id or ""
    try:
        folder = Path(snapshot_download(repo_id, revision=config.revision, allow_patterns=["*.nemo"]))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"cannot download {repo_id} (offline?) and it is not in the Hugging Face cache; "
            "use checkpoint=synthetic for random weights or checkpoint=local checkpoint.path=/path/model.nemo"
        ) from None
    except Exception as error:  # huggingface_hub raises many types for a bad id or revision
        raise CheckpointError(f"cannot fetch {repo_id} from the Hugging Face Hub: {error}") from None
    files = sorted(folder.glob("*.nemo"))
    if len(files) != 1:
        raise CheckpointError(f"expected one .nemo file in {repo_id}, found {len(files)}")
    return files[0], f"huggingface {repo_id} revision {folder.name}"


def synthetic_checkpoint(
    cache_dir: Path, size: str, seed: int, version: str, speaker_logit_scale: float
) -> Path:
    """The cached random-weight checkpoint, created on first use (once, even under concurrency)."""
    from .synthetic import make_synthetic_checkpoint

    scale = f"{speaker_logit_scale:g}".replace(".", "p")
    path = cache_dir / f"synthetic-{size}-{version}-seed{seed}-x{scale}.nemo"
    with atomic.lock(path):
        if not path.is_file():
            log.info("Creating the %s random-weight checkpoint %s (once; later builds reuse it)", size, path)
            with atomic.staged(path) as temporary:
                make_synthetic_checkpoint(temporary, size, seed, version, speaker_logit_scale)
    return path


def file_sha256(path: Path, cache_dir: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so warm builds skip re-reading 470 MB."""
    stat = path.stat()
    memo = cache_dir / "sha256" / hashlib.sha256(str(path.resolve()).encode()).hexdigest()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if memo.is_file():
        try:
            remembered = json.loads(memo.read_text())
            if remembered["stamp"] == stamp:
                return str(remembered["sha256"])
        except (ValueError, KeyError):
            pass
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 22):
            digest.update(block)
    atomic.write_text(memo, json.dumps({"stamp": stamp, "sha256": digest.hexdigest()}))
    return digest.hexdigest()


def load_model(checkpoint: Checkpoint) -> Any:
    """Restore the NeMo `SortformerEncLabelModel` in eval mode on the CPU."""
    if not tarfile.is_tarfile(checkpoint.path):
        raise CheckpointError(f"{checkpoint.path} is not a .nemo archive (corrupt or truncated?)")
    from nemo.collections.asr.models import SortformerEncLabelModel

    try:
        model = SortformerEncLabelModel.restore_from(str(checkpoint.path), map_location="cpu")
    except Exception as error:  # NeMo raises anything from tar, yaml, torch or hydra here
        raise CheckpointError(f"cannot restore {checkpoint.path} as a Sortformer model: {error}") from None
    return model.eval()
