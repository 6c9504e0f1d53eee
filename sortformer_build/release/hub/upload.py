"""One commit to the Hugging Face repo with the staged files that differ from the remote's, and
deletions of stale files inside the models' folders; or, in a dry run, the list of operations."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, constants
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.hf_api import RepoFile, RepoFolder

from sortformer_build.records.release import Provenance, StagedFile
from sortformer_build.release.hub.errors import PublishError
from sortformer_build.release.hub.tree import CARD_FILE, StagedRelease

ADD, DELETE = "add", "delete"
T = TypeVar("T")


@dataclass(frozen=True)
class Operation:
    action: str
    path_in_repo: str
    bytes: int | None = None
    sha256: str | None = None

    def describe(self) -> str:
        if self.action == DELETE:
            return f"delete {self.path_in_repo}"
        return f"add {self.path_in_repo} {self.bytes} bytes sha256 {self.sha256}"


@dataclass(frozen=True)
class RemoteFile:
    path_in_repo: str
    # LFS files: the content's sha256. Plain git files: only the git blob id (sha1).
    sha256: str | None
    blob_id: str


def repo_url(repo_id: str, revision: str | None, path_in_repo: str) -> str:
    return f"{constants.ENDPOINT}/{repo_id}/tree/{revision or 'main'}/{path_in_repo}"


def require_online(repo_id: str) -> None:
    """Fail before anything is staged when huggingface_hub is told to stay offline."""
    if constants.HF_HUB_OFFLINE:
        raise PublishError(
            f"HF_HUB_OFFLINE is set: cannot upload to {repo_id}; unset it to publish "
            "(dry_run=true stages and lists the operations without the network)"
        )


def operations(staged: StagedRelease, remote: dict[str, RemoteFile]) -> list[Operation]:
    """Adds for files the remote lacks or holds different, deletes for remote files inside a
    staged model folder that the release no longer has."""
    adds = [
        Operation(ADD, file.path_in_repo, file.bytes, file.sha256)
        for file in staged.files
        if not _same(staged, file, remote.get(file.path_in_repo))
    ]
    staged_paths = {file.path_in_repo for file in staged.files}
    folders = tuple(f"{folder}/" for folder in staged.model_folders)
    deletes = [
        Operation(DELETE, path)
        for path in sorted(remote)
        if path.startswith(folders) and path not in staged_paths
    ]
    return adds + deletes


def _same(staged: StagedRelease, file: StagedFile, remote: RemoteFile | None) -> bool:
    if remote is None:
        return False
    if remote.sha256 is not None:
        return remote.sha256 == file.sha256
    data = staged.local_path(file).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == remote.blob_id


def upload(
    staged: StagedRelease,
    repo_id: str,
    path_in_repo: str,
    revision: str | None,
    create_pr: bool,
    message: str,
    provenance: Provenance,
) -> tuple[list[Operation], str | None]:
    """Commit what changed; return the operations and the commit (or pull request) URL, None when
    the repo already holds the release."""
    require_online(repo_id)
    api = HfApi()
    card = ModelCard.load(staged.root / CARD_FILE)
    _network("validate the model card", lambda: card.validate(repo_type="model"))
    remote = _remote_files(api, repo_id, path_in_repo, revision)
    planned = operations(staged, remote)
    if not planned:
        return planned, None
    commit_operations = [
        CommitOperationAdd(path_in_repo=op.path_in_repo, path_or_fileobj=str(staged.root / op.path_in_repo))
        if op.action == ADD
        else CommitOperationDelete(path_in_repo=op.path_in_repo)
        for op in planned
    ]
    info = _network(
        f"commit to {repo_id}",
        lambda: api.create_commit(
            repo_id,
            commit_operations,
            commit_message=message,
            commit_description=f"Published by {provenance.describe()}.",
            revision=revision,
            create_pr=create_pr,
        ),
    )
    return planned, info.pr_url or info.commit_url


def _remote_files(api: HfApi, repo_id: str, path_in_repo: str, revision: str | None) -> dict[str, RemoteFile]:
    """The repo's files under `path_in_repo` and its card; empty when the folder is new."""

    def listing() -> list[RepoFile | RepoFolder]:
        try:
            entries = list(api.list_repo_tree(repo_id, path_in_repo, recursive=True, revision=revision))
        except EntryNotFoundError:
            entries = []
        return entries + list(api.get_paths_info(repo_id, [CARD_FILE], revision=revision))

    entries = _network(f"list the files of {repo_id}", listing)
    return {
        entry.path: RemoteFile(entry.path, entry.lfs.sha256 if entry.lfs else None, entry.blob_id)
        for entry in entries
        if isinstance(entry, RepoFile)
    }


def _network(what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except Exception as error:  # huggingface_hub and httpx raise many types for one failed request
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PublishError(f"could not {what}: {first}") from None
