"""Model geometry: the frame arithmetic every stage and the Swift runtime agree on, for a
streaming model (chunks with a speaker cache and FIFO) or an offline one (one whole window).

Streaming lengths are in output frames of 80 ms (8x subsampling of 10 ms mel frames); an
offline window is given in mel frames, as the runtime feeds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sortformer_build.errors import BuildError

SUBSAMPLING_FACTOR = 8
FRAME_SECONDS = 0.08
NUM_SPEAKERS = 4
SILENCE_FRAMES_PER_SPEAKER = 3
# The Neural Engine rejects a tensor dimension above this.
ANE_MAX_DIMENSION = 16384


class GeometryError(BuildError, ValueError):
    """A geometry that NeMo or the runtime cannot serve."""


@dataclass(frozen=True)
class StreamingGeometry:
    chunk_len: int
    chunk_left_context: int
    chunk_right_context: int
    fifo_len: int
    spkcache_len: int
    spkcache_update_period: int

    @property
    def chunk_frames(self) -> int:
        """Pre-encoded frames of one chunk, contexts included."""
        return self.chunk_len + self.chunk_left_context + self.chunk_right_context

    @property
    def chunk_mel_frames(self) -> int:
        return self.chunk_frames * SUBSAMPLING_FACTOR

    @property
    def prediction_frames(self) -> int:
        """Length of the packed spkcache | fifo | chunk sequence the head predicts over."""
        return self.spkcache_len + self.fifo_len + self.chunk_frames

    @property
    def latency_seconds(self) -> float:
        return round((self.chunk_len + self.chunk_right_context) * FRAME_SECONDS, 2)

    @property
    def latency(self) -> str:
        """The latency as the matrix and the dry run show it."""
        return f"{self.latency_seconds:.2f} s"

    @property
    def effective_update_period(self) -> int:
        """The period NeMo and the host runtimes actually use (they clamp the configured one)."""
        return min(max(self.spkcache_update_period, self.chunk_len), self.fifo_len + self.chunk_len)

    def describe(self) -> str:
        """The geometry in one phrase, for job lines and summary tables."""
        return (
            f"chunk {self.chunk_len} (context {self.chunk_left_context}+{self.chunk_right_context}), "
            f"fifo {self.fifo_len}, spkcache {self.spkcache_len}, period {self.spkcache_update_period}"
        )

    def tag(self) -> str:
        """The geometry in a file name, for models that are not a released preset."""
        return (
            f"c{self.chunk_len}-{self.chunk_left_context}-{self.chunk_right_context}_f{self.fifo_len}"
            f"_s{self.spkcache_len}_p{self.spkcache_update_period}"
        )

    def metadata(self) -> dict[str, str]:
        """The creator-defined metadata entries runtimes compare with their own configuration."""
        return {key: str(value) for key, value in asdict(self).items()}

    def validate(self) -> list[str]:
        """Raise GeometryError for a geometry NeMo rejects; return warnings for values it clamps.

        The bounds are those of NeMo's `SortformerModules._check_streaming_parameters` and of the
        host runtimes: positive chunk and period, non-negative contexts and FIFO, and a speaker
        cache that holds at least one frame plus the silence frames of every speaker.
        """
        minimums = {
            "chunk_len": 1,
            "chunk_left_context": 0,
            "chunk_right_context": 0,
            # NeMo accepts an empty FIFO, but Core ML cannot declare a zero-length input.
            "fifo_len": 1,
            "spkcache_len": (1 + SILENCE_FRAMES_PER_SPEAKER) * NUM_SPEAKERS,
            "spkcache_update_period": 1,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise GeometryError(f"{name} must be an integer, got {value!r}")
            if value < minimum:
                raise GeometryError(f"{name} must be at least {minimum}, got {value}")
        if self.chunk_mel_frames > ANE_MAX_DIMENSION:
            raise GeometryError(
                f"a chunk of {self.chunk_mel_frames} mel frames exceeds the Neural Engine's "
                f"{ANE_MAX_DIMENSION}-element dimension limit"
            )
        if self.effective_update_period == self.spkcache_update_period:
            return []
        return [
            f"spkcache_update_period {self.spkcache_update_period} lies outside "
            f"[chunk_len, fifo_len + chunk_len] = [{self.chunk_len}, {self.fifo_len + self.chunk_len}]; "
            f"NeMo and the runtimes use {self.effective_update_period}"
        ]

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> StreamingGeometry:
        missing = [key for key in cls.__dataclass_fields__ if key not in metadata]
        if missing:
            raise GeometryError(f"model metadata lacks the geometry entries {', '.join(missing)}")
        try:
            return cls(**{key: int(metadata[key]) for key in cls.__dataclass_fields__})
        except ValueError as error:
            raise GeometryError(f"model metadata has a non-integer geometry entry: {error}") from None


@dataclass(frozen=True)
class OfflineGeometry:
    """One fused model over a fixed window of `window_frames` mel frames, zero-padded when the
    audio is shorter."""

    window_frames: int

    @property
    def output_frames(self) -> int:
        return self.window_frames // SUBSAMPLING_FACTOR

    @property
    def latency_seconds(self) -> float:
        """A window is diarized once all of it is there."""
        return round(self.output_frames * FRAME_SECONDS, 2)

    @property
    def latency(self) -> str:
        return f"whole window, {self.latency_seconds:.2f} s"

    def describe(self) -> str:
        return f"offline window {self.window_frames} mel frames ({self.output_frames} output frames)"

    def tag(self) -> str:
        return f"w{self.window_frames}"

    def metadata(self) -> dict[str, str]:
        """What the runtime reads to know the model: its window, and the frame arithmetic."""
        return {
            "window_frames": str(self.window_frames),
            "subsampling_factor": str(SUBSAMPLING_FACTOR),
            "frame_duration": str(FRAME_SECONDS),
        }

    def validate(self) -> list[str]:
        """Raise GeometryError for a window the model or the Neural Engine cannot take."""
        frames = self.window_frames
        if isinstance(frames, bool) or not isinstance(frames, int):
            raise GeometryError(f"window_frames must be an integer, got {frames!r}")
        if frames < SUBSAMPLING_FACTOR or frames % SUBSAMPLING_FACTOR:
            raise GeometryError(
                f"window_frames must be a positive multiple of the subsampling factor {SUBSAMPLING_FACTOR}, "
                f"got {frames}"
            )
        if frames > ANE_MAX_DIMENSION:
            raise GeometryError(
                f"a window of {frames} mel frames exceeds the Neural Engine's {ANE_MAX_DIMENSION}-element "
                "dimension limit"
            )
        return []

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> OfflineGeometry:
        try:
            geometry = cls(int(metadata["window_frames"]))
        except ValueError as error:
            raise GeometryError(f"model metadata has a non-integer window_frames: {error}") from None
        stated = {key: metadata.get(key) for key in ("subsampling_factor", "frame_duration")}
        expected = {key: geometry.metadata()[key] for key in stated}
        if stated != expected:
            raise GeometryError(f"model metadata says {stated}, expected {expected}")
        return geometry


Geometry = StreamingGeometry | OfflineGeometry
