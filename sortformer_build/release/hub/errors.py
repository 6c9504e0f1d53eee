"""What the publish command reports in one line per problem."""

from __future__ import annotations

from sortformer_build.errors import BuildError


class PublishError(BuildError):
    """The release cannot be staged or uploaded; the message says why and what to do."""


class UploadRefused(PublishError):
    """The release is fit, but uploading it would be refused: one reason per line. A dry run
    still stages it for inspection."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(f"an upload would be refused: {len(reasons)} reason(s)")


class ReleaseRefused(PublishError):
    """The release is unfit to publish: one problem per line."""

    def __init__(self, folder: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"refusing to publish {folder}: {len(problems)} problem(s)")
