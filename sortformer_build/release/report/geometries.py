"""One diarization timeline per evaluated geometry, for the model card: the compressed artifact's
(its rows hold the ground truth, NeMo, the package and its fp16 twin), else the fp16 one's; on its
first dataset's recording with the highest DER."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sortformer_build.records.manifest import Manifest
from sortformer_build.release.report.page import Image, ranked_recordings, timeline_image
from sortformer_build.release.report.timeline import ReportInputError, reference_set
from sortformer_build.stages.artifact import ArtifactPaths

TIMELINE_SUFFIX = ".timeline.png"

log = logging.getLogger("sortformer_build")


@dataclass(frozen=True)
class GeometryTimeline:
    file: str  # `<file name>.timeline.png`
    image: Image


def geometry_timelines(models: Iterable[tuple[ArtifactPaths, Manifest]]) -> list[GeometryTimeline]:
    by_geometry: dict[str, list[tuple[ArtifactPaths, Manifest]]] = {}
    for paths, manifest in models:
        if manifest.evaluations and manifest.evaluations[0].recordings:
            by_geometry.setdefault(manifest.variant.file_name, []).append((paths, manifest))
    timelines = []
    for name, candidates in by_geometry.items():
        paths, manifest = min(candidates, key=lambda candidate: candidate[1].compression.is_fp16)
        evaluation = manifest.evaluations[0]
        reference = reference_set(evaluation, manifest.checkpoint.random_weights)
        recording = ranked_recordings(evaluation, reference)[0]
        folder = paths.evaluation(evaluation.dataset)
        try:
            image = timeline_image(folder, manifest, evaluation, recording, manifest.release_stem)
        except ReportInputError as error:
            log.warning("No timeline of %s for the model card: %s", manifest.release_stem, error)
            continue
        timelines.append(GeometryTimeline(f"{name}{TIMELINE_SUFFIX}", image))
    return timelines
