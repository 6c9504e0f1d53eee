"""The checkpoint stage: the weights a build starts from, found, downloaded or made."""

from __future__ import annotations

from sortformer_build.checkpoint.sources import resolve_checkpoint
from sortformer_build.config import BuildConfig
from sortformer_build.stages.base import JobContext, LazyModel, PlanContext, Prediction, Stage
from sortformer_build.stages.steps import CACHED


class CheckpointStage(Stage):
    name = "checkpoint"

    def description(self, config: BuildConfig) -> str:
        return f"Locating the {config.checkpoint.source} checkpoint"

    def execute(self, job: JobContext) -> None:
        config = job.config
        with self.step(job) as step:
            checkpoint = resolve_checkpoint(config.checkpoint, config.variant.version, config.checkpoint_dir)
            if checkpoint.reused:
                step.status = CACHED
            step.detail = f"{checkpoint.origin}, sha256 {checkpoint.sha256[:12]}"
        job.checkpoint = checkpoint
        job.model = LazyModel(checkpoint, job.steps)

    def predict(self, plan: PlanContext) -> Prediction:
        return Prediction.present if plan.checkpoint is not None else Prediction.obtain
