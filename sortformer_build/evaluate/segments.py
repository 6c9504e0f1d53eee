"""Speaker probabilities to speaker segments, by NeMo's own post-processing (the steps of
`SortformerEncLabelModel.diarize`): `ts_vad_post_processing` per speaker, timestamps shifted
by the recording's offset and rounded to 10 ms, then `generate_diarization_output_lines`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from sortformer_build.config import ConfigError, PostProcessingConfig
from sortformer_build.geometry import SUBSAMPLING_FACTOR


@dataclass(frozen=True)
class PostProcessing:
    """The post-processing values in force (NeMo's `PostProcessingParams`), after a tuned file."""

    onset: float
    offset: float
    pad_onset: float
    pad_offset: float
    min_duration_on: float
    min_duration_off: float


_FIELDS = tuple(f.name for f in fields(PostProcessing))


def resolve_postprocessing(config: PostProcessingConfig) -> PostProcessing:
    """The values in force. A tuned file is read by NeMo's own loader, as NeMo's `diarize`
    does: its values over NeMo's defaults, the configured values ignored."""
    if config.yaml is None:
        return PostProcessing(**{name: float(getattr(config, name)) for name in _FIELDS})
    from nemo.collections.asr.parts.utils.vad_utils import load_postprocessing_from_yaml

    path = Path(config.yaml).expanduser()
    if not path.is_file():
        raise ConfigError(f"post-processing file {path} does not exist")
    try:
        loaded = load_postprocessing_from_yaml(str(path))
        values = {name: float(getattr(loaded, name)) for name in _FIELDS}
    except Exception as error:  # yaml, OmegaConf and float conversion errors alike
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(
            f"post-processing file {where} is not in NeMo's format (a `parameters:` mapping of "
            f"{', '.join(_FIELDS)}): {type(error).__name__}: {_first_line(error)}"
        ) from None
    for name, value in values.items():
        if not math.isfinite(value):
            raise ConfigError(f"post-processing file {path}: {name} must be a finite number, got {value}")
    return PostProcessing(**values)


def _first_line(error: BaseException) -> str:
    """YAML and OmegaConf spread their messages over lines: the first that says something."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")


def speaker_labels(preds: np.ndarray, postprocessing: PostProcessing, offset: float = 0.0) -> list[str]:
    """NeMo's label lines (`start end speaker_<i>`) for `preds` (frames, speakers) of 80 ms frames."""
    import torch
    from nemo.collections.asr.parts.utils.speaker_utils import generate_diarization_output_lines
    from nemo.collections.asr.parts.utils.vad_utils import PostProcessingParams, ts_vad_post_processing
    from omegaconf import OmegaConf

    params = OmegaConf.structured(PostProcessingParams(**asdict(postprocessing)))
    probabilities = torch.from_numpy(np.ascontiguousarray(preds, dtype=np.float32))
    timestamps = []
    for speaker in range(probabilities.shape[1]):
        segments = ts_vad_post_processing(
            probabilities[:, speaker], cfg_vad_params=params, unit_10ms_frame_count=SUBSAMPLING_FACTOR
        )
        timestamps.append([[round(start, 2), round(end, 2)] for start, end in (segments + offset).tolist()])
    return generate_diarization_output_lines(speaker_timestamps=timestamps, model_spk_num=len(timestamps))
