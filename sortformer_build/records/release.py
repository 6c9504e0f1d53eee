"""release.json, the index of a Hugging Face release: every staged file with its size and
sha256, and per model the digests that tie the download back to its build."""

from __future__ import annotations

from typing import Final, Literal

from sortformer_build.records.base import Record

RELEASE_FORMAT: Final = 2


class Provenance(Record):
    """Which code built or publishes a release."""

    version: str
    # `<sha>` or `<sha>-dirty`; None outside a git checkout (an installed wheel).
    git_revision: str | None

    def describe(self) -> str:
        return f"sortformer-build {self.version}, git {self.git_revision or 'revision unknown'}"


class StagedFile(Record):
    path_in_repo: str
    bytes: int
    sha256: str


class ReleaseEntry(Record):
    release_path: str
    variant: str
    compression: str
    staged: list[str]  # the model's folders in the repo, one per format
    manifest_sha256: str  # of the manifest file as published beside the package
    package_content_sha256: str
    job_digest: str
    checkpoint_sha256: str
    # NeMo's reference trace of the model (its index; the arrays beside it), shared by every
    # compression of it; None: none was made.
    trace: str | None = None


class ReleaseIndex(Record):
    format: Literal[2] = RELEASE_FORMAT
    repo_id: str
    path_in_repo: str
    published_by: Provenance
    models: list[ReleaseEntry]
    files: list[StagedFile]
