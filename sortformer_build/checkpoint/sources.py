"""Checkpoint sources: where the weights come from, what exactly they are, and loading them."""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sortformer_build.config import CheckpointConfig, CheckpointSource
from sortformer_build.errors import BuildError
from sortformer_build.store import atomic
from sortformer_build.store.digests import file_sha256
from sortformer_build.store.layout import CacheLayout

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
    # Already on this machine before the build asked for it (not downloaded or made now).
    reused: bool = True


def resolve_checkpoint(config: CheckpointConfig, version: str, layout: CacheLayout) -> Checkpoint:
    """Find (or download, or make for synthetic sources) the .nemo file of `config` and identify it."""
    checkpoint = _checkpoint(config, version, layout, obtain=True)
    assert checkpoint is not None
    return checkpoint


def find_checkpoint(config: CheckpointConfig, version: str, layout: CacheLayout) -> Checkpoint | None:
    """The checkpoint if its weights are already on this machine, else None; downloads and makes
    nothing (dry runs)."""
    return _checkpoint(config, version, layout, obtain=False)


def _checkpoint(
    config: CheckpointConfig, version: str, layout: CacheLayout, obtain: bool
) -> Checkpoint | None:
    cache_dir = layout.checkpoints
    source = CheckpointSource(config.source)
    reused = True
    if source is CheckpointSource.hub:
        found = _from_hub(config, download=False)
        reused = found is not None
        if obtain:  # even when cached: online, the Hub may hold a newer revision
            found = _from_hub(config, download=True)
        if found is None:
            return None
        path, origin = found
    elif source is CheckpointSource.local:
        path = Path(config.path or "").expanduser()
        origin = f"file {path.resolve()}"
    else:
        size = "tiny" if source is CheckpointSource.tiny else "full"
        path = synthetic_checkpoint_path(cache_dir, size, config.seed, version, config.speaker_logit_scale)
        reused = path.is_file()
        if obtain and not reused:
            synthetic_checkpoint(cache_dir, size, config.seed, version, config.speaker_logit_scale)
        origin = f"{source.value} random weights, seed {config.seed}, version {version}"
        if not (obtain or reused):
            return None
    if path.is_dir():
        raise CheckpointError(f"checkpoint.path {path} is a folder: give the .nemo file itself")
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    sha256 = file_sha256(path, layout.checkpoint_digests)
    return Checkpoint(path=path, sha256=sha256, source=source.value, origin=origin, reused=reused)


def _from_hub(config: CheckpointConfig, download: bool) -> tuple[Path, str] | None:
    """The cached snapshot's .nemo file; without `download`, None when the cache lacks it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id = config.repo_id or ""
    try:
        folder = Path(
            snapshot_download(
                repo_id, revision=config.revision, allow_patterns=["*.nemo"], local_files_only=not download
            )
        )
    except LocalEntryNotFoundError:
        if not download:
            return None
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
    from sortformer_build.checkpoint.synthetic import make_synthetic_checkpoint

    path = synthetic_checkpoint_path(cache_dir, size, seed, version, speaker_logit_scale)
    with atomic.lock(path):
        if not path.is_file():
            log.info("Creating the %s random-weight checkpoint %s (once; later builds reuse it)", size, path)
            with atomic.staged(path) as temporary:
                make_synthetic_checkpoint(temporary, size, seed, version, speaker_logit_scale)
    return path


def synthetic_checkpoint_path(
    cache_dir: Path, size: str, seed: int, version: str, speaker_logit_scale: float
) -> Path:
    scale = f"{speaker_logit_scale:g}".replace(".", "p")
    return cache_dir / f"synthetic-{size}-{version}-seed{seed}-x{scale}.nemo"


# The last restored model, by checkpoint sha256: the jobs of a sweep that run in one process
# (basic launcher, or a reused joblib worker) and share a checkpoint restore it once.
_restored: dict[str, Any] = {}


def load_model(checkpoint: Checkpoint) -> Any:
    """Restore the NeMo `SortformerEncLabelModel` in eval mode on the CPU (memoized)."""
    if checkpoint.sha256 and checkpoint.sha256 in _restored:
        return _restored[checkpoint.sha256]
    if not tarfile.is_tarfile(checkpoint.path):
        raise CheckpointError(f"{checkpoint.path} is not a .nemo archive (corrupt or truncated?)")
    from nemo.collections.asr.models import SortformerEncLabelModel

    _restored.clear()  # a full-size model is hundreds of MB: keep one
    try:
        model = SortformerEncLabelModel.restore_from(str(checkpoint.path), map_location="cpu")
    except Exception as error:  # NeMo raises anything from tar, yaml, torch or hydra here
        raise CheckpointError(f"cannot restore {checkpoint.path} as a Sortformer model: {error}") from None
    model.eval()
    if checkpoint.sha256:
        _restored[checkpoint.sha256] = model
    return model
