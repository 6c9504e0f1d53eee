"""Hydra's basic sweeper, with chosen values dispatched first whatever order they were typed in.

The release sweep lists fp16 jobs first (`first: {compression: fp16}` in the build config): each
fp16 job converts a model, and its palettized twin later reuses that conversion instead of
waiting on the fp16 job's lock. Within that order, the values listed in `longest` (the slowest
jobs, slowest first) go ahead of the others, so that a parallel sweep ends on short jobs rather
than on one long job while the other workers have nothing left to do. Everything else is
Hydra's: the product, batches, launchers.
"""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override


class FirstValuesSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
        first: dict[str, str] | None = None,
        longest: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.first = {f"{key}={value}" for key, value in (first or {}).items()}
        self.longest = [f"{key}={value}" for key, values in (longest or {}).items() for value in values]

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:  # type: ignore[override]
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        jobs.sort(key=lambda job: (not self.first.intersection(job), self._rank(job)))  # stable otherwise
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))

    def _rank(self, job: list[str]) -> int:
        """Where the job's first value listed in `longest` stands; the unlisted come last."""
        return min(
            (self.longest.index(value) for value in job if value in self.longest), default=len(self.longest)
        )
