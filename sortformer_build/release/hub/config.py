"""Typed settings of `sortformer-build-publish` (the Hydra schema of sortformer_build/conf/publish.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

STAGING_FOLDER = ".publish"
# Where the Swift runtime downloads its models from.
RUNTIME_REPO = "FluidInference/diar-streaming-sortformer-coreml"
RUNTIME_FOLDER = "v3"


class Format(StrEnum):
    # Compiled models: what the Swift runtime downloads. Compiling needs macOS.
    mlmodelc = "mlmodelc"
    # The verified packages themselves.
    mlpackage = "mlpackage"


@dataclass
class CardConfig:
    """Model-card metadata that is a choice rather than a fact of the release."""

    library_name: str = "coreml"
    pipeline_tag: str = "automatic-speech-recognition"
    tags: list[str] = field(
        default_factory=lambda: [
            "speaker-diarization",
            "sortformer",
            "streaming",
            "coreml",
            "apple",
            "ios",
            "macos",
            "audio",
        ]
    )


@dataclass
class PublishConfig:
    # The output folder of a finished sweep (holds matrix.json).
    output_dir: str = "outputs/hub"
    repo_id: str = RUNTIME_REPO
    path_in_repo: str = RUNTIME_FOLDER
    # Branch to commit to; None: the repo's default branch.
    revision: str | None = None
    create_pr: bool = False
    formats: list[Format] = field(default_factory=lambda: [Format.mlmodelc])
    # Stage, write the card and release.json, list the commit's operations; no network.
    dry_run: bool = False
    # None: <output_dir>/.publish
    staging_dir: str | None = None
    # None: a message naming the release, this project's version and git revision.
    commit_message: str | None = None
    # Synthetic and tiny checkpoints are random weights: uploading them is refused unless asked.
    allow_synthetic: bool = False
    # A release of fewer models than the release set, or one bound elsewhere than where the
    # runtime downloads from, is refused unless asked.
    allow_partial: bool = False
    card: CardConfig = field(default_factory=CardConfig)

    @property
    def staging_root(self) -> Path:
        return Path(self.staging_dir) if self.staging_dir else Path(self.output_dir) / STAGING_FOLDER

    @property
    def format_values(self) -> list[Format]:
        """The formats as enum members, in a fixed order, once each."""
        chosen = {Format(value) for value in self.formats}
        return [value for value in Format if value in chosen]
