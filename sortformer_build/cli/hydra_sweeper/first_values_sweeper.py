"""Hydra's basic sweeper, with chosen values dispatched first whatever order they were typed in.

The release sweep lists fp16 jobs first (`first: {compression: fp16}` in conf/build.yaml): each
fp16 job converts a model, and its palettized twin later reuses that conversion instead of
waiting on the fp16 job's lock. Everything else is Hydra's: the product, batches, launchers.
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
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.first = {f"{key}={value}" for key, value in (first or {}).items()}

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:  # type: ignore[override]
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        jobs.sort(key=lambda job: not self.first.intersection(job))  # stable: typed order otherwise
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))
