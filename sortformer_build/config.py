"""Typed configuration of one build job.

These dataclasses are the Hydra schemas (registered by `cli.app.register_schemas`) and the plain
objects every stage takes, so a stage can be called from Python without Hydra. Enumerated fields
are enums, so OmegaConf rejects a typo when the config is composed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum, StrEnum
from pathlib import Path

from omegaconf import MISSING

from sortformer_build.coreml.targets import DEFAULT_TARGET, LUT_NBITS, DeploymentTarget
from sortformer_build.errors import BuildError
from sortformer_build.geometry import Geometry, OfflineGeometry, StreamingGeometry
from sortformer_build.store.layout import CacheLayout

CHECKPOINT_VERSIONS = ("v2", "v2.1")


class ConfigError(BuildError, ValueError):
    """A configuration that cannot describe a build."""


class CheckpointSource(StrEnum):
    hub = "hub"
    local = "local"
    synthetic = "synthetic"
    tiny = "tiny"


class ExecutorPrecision(StrEnum):
    # float16 rounds every fp16-typed value, as the GPU and Neural Engine do.
    float16 = "float16"
    float32 = "float32"


class PalettizerEngine(StrEnum):
    fast = "fast"  # sortformer-build's histogram k-means (`coreml.palettizer`)
    coremltools = "coremltools"  # coremltools' own k-means


class VariantMode(StrEnum):
    streaming = "streaming"  # chunk by chunk, with a speaker cache and FIFO (a pipeline)
    offline = "offline"  # one fused program over a whole window


_STREAMING_FIELDS = tuple(f.name for f in fields(StreamingGeometry))
_OFFLINE_FIELDS = tuple(f.name for f in fields(OfflineGeometry))


@dataclass
class VariantConfig:
    name: str = MISSING
    version: str = MISSING
    file_name: str = MISSING
    mode: VariantMode = VariantMode.streaming
    # Streaming geometry (output frames); unset for an offline variant.
    chunk_len: int | None = None
    chunk_left_context: int | None = None
    chunk_right_context: int | None = None
    fifo_len: int | None = None
    spkcache_len: int | None = None
    spkcache_update_period: int | None = None
    # Offline window (mel frames); unset for a streaming variant.
    window_frames: int | None = None
    # False once any geometry field differs from the option's published preset: such a model
    # gets its own file name and its manifest says it is not a released geometry.
    released: bool = True

    @property
    def geometry(self) -> Geometry:
        """The one place the mode decides the model: every stage reads the kind from this."""
        offline = self.mode is VariantMode.offline
        needed, unused = (
            (_OFFLINE_FIELDS, _STREAMING_FIELDS) if offline else (_STREAMING_FIELDS, _OFFLINE_FIELDS)
        )
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"{self.mode.value} variants need variant.{', variant.'.join(missing)}")
        stray = [name for name in unused if getattr(self, name) is not None]
        if stray:
            raise ConfigError(
                f"variant.{', variant.'.join(stray)} cannot be set for {self.mode.value} variants"
            )
        values = {name: getattr(self, name) for name in needed}
        return OfflineGeometry(**values) if offline else StreamingGeometry(**values)


def as_custom(variant: VariantConfig, preset: VariantConfig) -> VariantConfig:
    """`variant` as a user overrode it from `preset`: a changed geometry is not the released
    model, so unless the user named the file it gets a self-describing name, never the released
    one (which would overwrite the release)."""
    geometry = variant.geometry
    if geometry == preset.geometry:
        return variant
    file_name = variant.file_name
    if file_name == preset.file_name:
        file_name = f"{preset.file_name}_{geometry.tag()}"
    return replace(variant, file_name=file_name, released=False)


@dataclass
class GateConfig:
    """What a package must reach to be published; each compression option carries its own.
    None leaves a figure ungated."""

    # Per step, against NeMo.
    max_prob_error: float | None = None
    min_decision_agreement: float | None = None
    # Per step, against the fp16 package built from the same conversion.
    min_twin_decision_agreement: float | None = None
    # Over a whole stream through NeMo's state update, against NeMo's own stream.
    min_streaming_decision_agreement: float = 0.99


@dataclass
class CompressionConfig:
    name: str = MISSING
    folder: str = MISSING
    # None keeps fp16 weights; otherwise k-means palettization of the head to this many bits.
    nbits: int | None = None
    engine: PalettizerEngine = PalettizerEngine.fast
    # Bits per group of head weights instead of `nbits`: chosen by the sensitivity analysis
    # within a size budget (`budget_mb`, or `budget_ratio` of the fp16 package), or read from a
    # recipe file (`recipe`); see `compress`.
    mixed: bool = False
    budget_mb: float | None = None
    budget_ratio: float | None = None
    recipe: str | None = None
    # Part of the published release (the runtime downloads it), or an experiment.
    release: bool = False
    gates: GateConfig = field(default_factory=GateConfig)
    # Core ML's own predictions on the per-call cases (macOS), against NeMo. No stream and no
    # twin run on the device, so only the per-call thresholds apply.
    on_device_gates: GateConfig = field(default_factory=GateConfig)

    @property
    def is_fp16(self) -> bool:
        return self.nbits is None and not self.mixed

    @property
    def measures(self) -> bool:
        """Whether the bits come from the sensitivity analysis (a mixed build without a recipe)."""
        return self.mixed and self.recipe is None


@dataclass
class CheckpointConfig:
    # A plain string (one of CheckpointSource) so that `${checkpoint.source}` interpolates to
    # the bare name in paths.
    source: str = MISSING
    repo_id: str | None = None
    revision: str | None = None
    path: str | None = None
    seed: int = 0
    # Random weights squash every speaker probability towards 0.5; scaling the final speaker
    # layer makes synthetic outputs decisive, so parity checks can fail.
    speaker_logit_scale: float = 25.0


@dataclass
class VerifyConfig:
    """How a package is compared with NeMo (the thresholds are the compression's gates)."""

    parity: bool = True
    precision: ExecutorPrecision = ExecutorPrecision.float16
    seed: int = 0
    # Audio streamed chunk by chunk through NeMo's state update, at least `streaming_min_chunks`
    # chunks long. The speaker cache is compressed only once the stream outgrows spkcache +
    # fifo: raise this to check that too.
    streaming_seconds: float = 4.0
    streaming_min_chunks: int = 2
    # Chunk embeddings (never compressed): max |error| relative to the reference's largest magnitude.
    max_emb_error_ratio: float = 0.02


class DatasetKind(StrEnum):
    conversation = "conversation"  # the short meeting shipped with the package
    manifest = "manifest"  # NeMo's diarization manifest (JSON lines)
    folder = "folder"  # audio files with same-named .rttm files


class EvaluationBackend(StrEnum):
    executor = "executor"  # the package run by sortformer-build's executor (any platform)
    coreml = "coreml"  # the package run by Core ML (macOS only)


@dataclass
class PostProcessingConfig:
    """How speaker probabilities become segments: NeMo's defaults (thresholds at 0.5, no
    padding, no minimum durations), overridable one by one or all at once from a tuned file."""

    onset: float = 0.5
    offset: float = 0.5
    pad_onset: float = 0.0
    pad_offset: float = 0.0
    min_duration_on: float = 0.0
    min_duration_off: float = 0.0
    # A tuned post-processing file in NeMo's format (a `parameters:` mapping of the fields
    # above). As in NeMo's `diarize`, its values apply over NeMo's defaults and the fields
    # above are ignored.
    yaml: str | None = None


@dataclass
class EvaluateConfig:
    """Diarize a dataset with the artifact and score it (DER) against the ground truth, NeMo's
    own diarization and, for a compressed artifact, its fp16 twin."""

    dataset: DatasetKind = MISSING
    # conversation: unused; manifest: the manifest file; folder: the folder.
    path: str | None = None
    # pyannote.metrics' collar: the total width of the unscored zone around each reference
    # boundary (half of it on each side); NIST md-eval and NeMo's scorer take the half-width.
    collar: float = 0.25
    # true: overlapped reference speech is not scored.
    skip_overlap: bool = False
    postprocessing: PostProcessingConfig = field(default_factory=PostProcessingConfig)
    backend: EvaluationBackend = EvaluationBackend.executor
    # The executor's numeric mode (float16 rounds as the GPU and Neural Engine do).
    precision: ExecutorPrecision = ExecutorPrecision.float16


class TraceRecording(StrEnum):
    conversation = "conversation"  # the short meeting shipped with the package
    file = "file"  # an audio file: trace.path


@dataclass
class TraceConfig:
    """A reference trace for host runtimes (docs/traces.md): NeMo's own loop on one recording,
    chunk by chunk, delivered under <output_dir>/traces/ (every compression of a model shares
    it); the package's own trace, run by the executor, is compared with it."""

    recording: TraceRecording = MISSING
    path: str | None = None  # with trace=file: the audio file
    # The executor's numeric mode for the package's own trace.
    precision: ExecutorPrecision = ExecutorPrecision.float16


@dataclass
class BuildConfig:
    variant: VariantConfig = MISSING
    compression: CompressionConfig = MISSING
    checkpoint: CheckpointConfig = MISSING
    output_dir: str = MISSING
    cache_dir: str | None = None
    cache: bool = True
    # The build cache's size budget: after each job, the least recently used entries that no
    # running job holds are evicted down to it.
    cache_max_gb: float = 20.0
    deployment_target: DeploymentTarget = DEFAULT_TARGET
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    # None: no evaluation (the `evaluate` group picks a dataset).
    evaluate: EvaluateConfig | None = None
    # None: no reference trace (the `trace` group picks the recording).
    trace: TraceConfig | None = None
    # Say what the job would build and which cache entries it would reuse; build nothing.
    dry_run: bool = False
    # Keep the libraries' own progress bars and warnings (coremltools draws one per pass).
    verbose: bool = False

    @property
    def cache_layout(self) -> CacheLayout:
        return CacheLayout.at(self.cache_dir)

    @property
    def artifact_dir(self) -> Path:
        return Path(self.output_dir) / self.compression.folder


def validate_config(config: BuildConfig) -> list[str]:
    """Raise ConfigError (or GeometryError) for a config no build can satisfy; return warnings."""
    if config.variant.version not in CHECKPOINT_VERSIONS:
        raise ConfigError(
            f"variant.version must be one of {', '.join(CHECKPOINT_VERSIONS)}, got {config.variant.version!r}"
        )
    nbits = config.compression.nbits
    if nbits is not None and nbits not in LUT_NBITS:
        raise ConfigError(f"compression.nbits must be one of {LUT_NBITS} or null, got {nbits}")
    _validate_mixed(config.compression)
    if not config.compression.is_fp16 and config.compression.gates.min_twin_decision_agreement is None:
        raise ConfigError(
            f"compression {config.compression.name} palettizes but sets no "
            "gates.min_twin_decision_agreement: a compressed head must be judged against its fp16 twin"
        )
    if config.cache_max_gb <= 0:
        raise ConfigError(f"cache_max_gb must be positive, got {config.cache_max_gb}")
    checkpoint = config.checkpoint
    sources = [source.value for source in CheckpointSource]
    if checkpoint.source not in sources:
        raise ConfigError(f"checkpoint.source must be one of {', '.join(sources)}, got {checkpoint.source!r}")
    if checkpoint.source == CheckpointSource.local and not checkpoint.path:
        raise ConfigError("checkpoint=local needs checkpoint.path=/path/to/model.nemo")
    if checkpoint.source != CheckpointSource.local and checkpoint.path:
        raise ConfigError(
            f"checkpoint.path is read only with checkpoint=local, not checkpoint={checkpoint.source}: "
            "add checkpoint=local to build from the file"
        )
    if checkpoint.source == CheckpointSource.hub and not checkpoint.repo_id:
        raise ConfigError("checkpoint=hub needs checkpoint.repo_id (a Hugging Face model id)")
    if config.evaluate is not None:
        _validate_evaluate(config.evaluate)
    if config.trace is not None:
        _validate_trace(config.trace)
    warnings = config.variant.geometry.validate()
    # A published preset's clamped period is NVIDIA's choice, said once in --help and recorded
    # in the manifest; a warning is for geometries a user changed.
    return warnings if not config.variant.released else []


def _validate_mixed(compression: CompressionConfig) -> None:
    choices = {
        "compression.budget_mb": compression.budget_mb,
        "compression.budget_ratio": compression.budget_ratio,
        "compression.recipe": compression.recipe,
    }
    given = [name for name, value in choices.items() if value is not None]
    if not compression.mixed:
        if given:
            raise ConfigError(f"{', '.join(given)} apply to compression=mixed only")
        return
    if compression.nbits is not None:
        raise ConfigError("compression=mixed chooses bits per group: leave compression.nbits null")
    if compression.engine is not PalettizerEngine.fast:
        raise ConfigError(
            "compression=mixed measures each group with this project's own look-up tables: "
            "use compression.engine=fast"
        )
    if len(given) != 1:
        raise ConfigError(
            "compression=mixed needs one of compression.budget_mb=MB, compression.budget_ratio=SHARE "
            f"(of the fp16 size) or compression.recipe=FILE; got {', '.join(given) or 'none'}"
        )
    if compression.budget_mb is not None and compression.budget_mb <= 0:
        raise ConfigError(f"compression.budget_mb must be positive, got {compression.budget_mb:g}")
    ratio = compression.budget_ratio
    if ratio is not None and not 0 < ratio <= 1:
        raise ConfigError(f"compression.budget_ratio is a share of the fp16 size in (0, 1], got {ratio:g}")


def _validate_evaluate(settings: EvaluateConfig) -> None:
    if settings.dataset is not DatasetKind.conversation and not settings.path:
        kind = settings.dataset.value
        raise ConfigError(f"evaluate={kind} needs evaluate.path=/path/to/the/{kind}")
    if settings.collar < 0:
        raise ConfigError(f"evaluate.collar must be 0 or more seconds, got {settings.collar}")


def _validate_trace(settings: TraceConfig) -> None:
    if settings.recording is TraceRecording.file and not settings.path:
        raise ConfigError("trace=file needs trace.path=/path/to/audio (a file NeMo's preprocessor reads)")
    if settings.recording is not TraceRecording.file and settings.path:
        raise ConfigError("trace.path is read only with trace=file: add trace=file to trace that recording")
    if settings.path and not Path(settings.path).is_file():
        raise ConfigError(f"trace.path: {settings.path} is not a file")


def config_dict(config: BuildConfig) -> dict[str, object]:
    """The config as plain JSON-ready values (enums by value)."""

    def plain(value: object) -> object:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return plain(asdict(config))  # type: ignore[return-value]
