"""The config tree, composed in process with Hydra's compose API: every option is valid, every
enumerated field is checked at composition, bad values fail with one line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sortformer_build.cli.app import describe, register_schemas
from sortformer_build.config import BuildConfig, validate_config

from .conftest import ALL_VARIANTS, OFFLINE, RELEASE


@pytest.fixture(scope="module", autouse=True)
def hydra() -> Iterator[None]:
    register_schemas()
    with initialize_config_module(config_module="sortformer_build.conf", version_base="1.3"):
        yield


def composed(*overrides: str) -> BuildConfig:
    """What the console script does before any work: compose, convert to objects, validate."""
    config = OmegaConf.to_object(compose(config_name="build", overrides=["checkpoint=tiny", *overrides]))
    assert isinstance(config, BuildConfig)
    validate_config(config)
    return config


def options(group: str) -> list[str]:
    return GlobalHydra.instance().config_loader().get_group_options(group)


def test_the_groups_hold_exactly_the_release_options() -> None:
    assert set(options("variant")) == set(ALL_VARIANTS)
    assert set(options("compression")) == {"fp16", "palettized4", "palettized6", "palettized8", "mixed"}


@pytest.mark.parametrize("variant", sorted(RELEASE))
def test_every_variant_composes_to_its_released_geometry(variant: str) -> None:
    config = composed(f"variant={variant}")
    file_name, *geometry = RELEASE[variant]
    assert config.variant.file_name == file_name
    assert list(config.variant.geometry.metadata().values()) == [str(value) for value in geometry]


def test_the_offline_variant_composes_to_its_window() -> None:
    variant = composed("variant=offline").variant
    file_name, window_frames = OFFLINE["offline"]
    assert (variant.file_name, variant.version) == (file_name, "v2.1")
    assert variant.geometry.metadata()["window_frames"] == str(window_frames)
    assert variant.geometry.latency == "whole window, 30.72 s"


def test_compressions_carry_their_gates() -> None:
    fp16, six = composed("compression=fp16").compression, composed("compression=palettized6").compression
    assert fp16.release and six.release and not composed("compression=palettized4").compression.release
    assert fp16.gates.max_prob_error is not None and fp16.gates.min_twin_decision_agreement is None
    for option in ("palettized4", "palettized6", "palettized8"):
        assert composed(f"compression={option}").compression.gates.min_twin_decision_agreement is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["compresion=fp16"], "Could not override 'compresion'"),
        (["variant.chunk_len=abc"], "could not be converted to Integer"),
        (["variant.chunk_lenn=3"], "Key 'chunk_lenn' not in 'VariantConfig'"),
        (["variant.spkcache_len=10"], "spkcache_len must be at least 16"),
        (["variant.fifo_len=0"], "fifo_len must be at least 1"),
        (["variant.version=v3"], "variant.version must be one of v2, v2.1"),
        (["compression=palettized6", "compression.nbits=5"], "compression.nbits must be one of"),
        (
            ["compression=palettized6", "compression.gates.min_twin_decision_agreement=null"],
            "no gates.min_twin",
        ),
        (["deployment_target=iOS18"], "Invalid value 'iOS18', expected one of [iOS16, iOS17]"),
        (["verify.precision=fp16"], "Invalid value 'fp16', expected one of [float16, float32]"),
        (["compression.engine=kmeans"], "Invalid value 'kmeans', expected one of [fast, coremltools]"),
        (["checkpoint=local"], "checkpoint=local needs checkpoint.path=/path/to/model.nemo"),
        (["variant=offline", "variant.chunk_len=6"], "variant.chunk_len cannot be set for offline variants"),
        (["variant=offline", "variant.window_frames=1000.5"], "could not be converted to Integer"),
        (["variant=offline", "variant.window_frames=1001"], "window_frames must be a positive multiple of"),
        (["variant=offline", "variant.window_frames=null"], "offline variants need variant.window_frames"),
        (["variant.window_frames=3072"], "variant.window_frames cannot be set for streaming variants"),
        (["compression=mixed"], "compression=mixed needs one of compression.budget_mb=MB"),
        (
            ["compression=mixed", "compression.budget_mb=1", "compression.budget_ratio=0.5"],
            "got compression.budget_mb, compression.budget_ratio",
        ),
        (["compression=mixed", "compression.budget_ratio=1.5"], "budget_ratio is a share of the fp16 size"),
        (["compression=mixed", "compression.nbits=6", "compression.budget_mb=1"], "leave compression.nbits"),
        (["compression=palettized6", "compression.budget_mb=50"], "apply to compression=mixed only"),
        (
            ["compression=mixed", "compression.budget_mb=50", "compression.engine=coremltools"],
            "use compression.engine=fast",
        ),
    ],
)
def test_bad_values_fail_with_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(Exception) as caught:
        composed(*overrides)
    if _is_hydra(caught.value):  # Hydra reports these itself, with the cause it wraps
        assert message in f"{caught.value} {caught.value.__cause__}"
    else:
        line = describe(caught.value)
        assert message in line and "\n" not in line


def test_enum_typos_fail_at_composition_not_later() -> None:
    with pytest.raises(Exception) as caught:
        compose(config_name="build", overrides=["checkpoint=tiny", "verify.precision=fp16"])
    assert "Invalid value 'fp16', expected one of [float16, float32]" in str(caught.value.__cause__)


def _is_hydra(error: BaseException) -> bool:
    return type(error).__module__.startswith("hydra")


def test_help_lists_every_option_with_hydras_own_composition() -> None:
    from sortformer_build.cli.help import groups_help

    text = groups_help()
    for variant, (file_name, *_) in RELEASE.items():
        assert any(line.split()[:2] == [variant, file_name] for line in text.splitlines()), variant
    # NVIDIA's preset: marked on its rows, explained once as information.
    assert "period 300*" in text and text.count("300 runs as 340") == 1
    assert "palettized6     -> palettized/" in text and "not for release" in text
