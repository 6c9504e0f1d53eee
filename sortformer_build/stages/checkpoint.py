"""The checkpoint stage: the weights a build starts from, found, downloaded or made."""

from __future__ import annotations

from typing import Any

from sortformer_build.checkpoint.sources import Checkpoint, load_model, resolve_checkpoint
from sortformer_build.config import BuildConfig
from sortformer_build.records.status import Prediction
from sortformer_build.records.steps import StepStatus
from sortformer_build.stages.base import Job, UncachedStage
from sortformer_build.stages.slots import CHECKPOINT, NEMO
from sortformer_build.stages.steps import StepLog


class LazyModel:
    """Restores the NeMo model on first use, so a job whose stages are all cached never pays for
    it; the time goes to the stage that first needed it."""

    def __init__(self, checkpoint: Checkpoint, steps: StepLog) -> None:
        self._checkpoint, self._steps, self._model = checkpoint, steps, None

    def get(self) -> Any:
        if self._model is None:
            with self._steps.timed("restore", f"Restoring the NeMo model from {self._checkpoint.path.name}"):
                self._model = load_model(self._checkpoint)
        return self._model


class CheckpointStage(UncachedStage):
    name = "checkpoint"
    provides = (CHECKPOINT, NEMO)

    def description(self, config: BuildConfig) -> str:
        return f"Locating the {config.checkpoint.source} checkpoint"

    def execute(self, job: Job) -> None:
        config = job.config
        with self.step(job) as step:
            checkpoint = resolve_checkpoint(config.checkpoint, config.variant.version, config.cache_layout)
            if checkpoint.reused:
                step.status = StepStatus.cached
            step.detail = f"{checkpoint.origin}, sha256 {checkpoint.sha256[:12]}"
        job.put(CHECKPOINT, checkpoint)
        job.put(NEMO, LazyModel(checkpoint, job.steps))

    def predict(self, config: BuildConfig, checkpoint_present: bool) -> Prediction:
        return Prediction.present if checkpoint_present else Prediction.obtain
