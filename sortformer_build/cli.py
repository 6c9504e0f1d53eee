"""The `sortformer-build` command: Hydra composes the config, `build` does the work."""

from __future__ import annotations

import logging
import sys
import warnings
from importlib import resources

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .build import build
from .config import BuildConfig, CheckpointConfig, CompressionConfig, VariantConfig
from .errors import BuildError
from .geometry import StreamingGeometry

log = logging.getLogger("sortformer_build")


def register_schemas() -> None:
    """Schemas live in their own `schema` group so that `variant=glob(*)` never picks one up."""
    store = ConfigStore.instance()
    for name, node in (
        ("build", BuildConfig),
        ("variant", VariantConfig),
        ("compression", CompressionConfig),
        ("checkpoint", CheckpointConfig),
    ):
        store.store(group="schema", name=name, node=node)


def groups_help() -> str:
    """The option lists of `--help`, computed from the options themselves."""
    conf = resources.files("sortformer_build.conf")
    lines = [
        "== Variants: geometry, checkpoint version, file name; latency = (chunk + right context) x 80 ms =="
    ]
    for option in _options(conf, "variant"):
        variant = _variant_option(conf / "variant", option)
        geometry = StreamingGeometry(
            **{key: int(variant[key]) for key in StreamingGeometry.__dataclass_fields__}
        )
        lines.append(
            f"  {option:<15} {variant['file_name']:<27} latency {geometry.latency_seconds:>5.2f} s"
            f"  chunk {geometry.chunk_len:>3}  fifo {geometry.fifo_len:>3}  spkcache {geometry.spkcache_len}"
        )
    for group, title in (("compression", "Compressions"), ("checkpoint", "Checkpoints (weight sources)")):
        lines.append(f"== {title} ==")
        for option in _options(conf, group):
            text = (conf / group / f"{option}.yaml").read_text()
            folder = OmegaConf.create(text).get("folder")
            where = f"-> {folder}/ " if folder else ""
            lines.append(f"  {option:<15} {where:<17}{text.splitlines()[0].lstrip('# ')}")
    return "\n".join(lines)


def _options(conf, group: str) -> list[str]:
    return sorted(
        entry.name.removesuffix(".yaml") for entry in (conf / group).iterdir() if entry.name.endswith(".yaml")
    )


def _variant_option(folder, option: str) -> DictConfig:
    """An option merged over the twin its defaults list names (the `_v2` options reuse geometry)."""
    node = OmegaConf.create((folder / f"{option}.yaml").read_text())
    twins = [
        entry
        for entry in node.pop("defaults", [])
        if isinstance(entry, str) and not entry.startswith(("/", "_"))
    ]
    merged = [_variant_option(folder, twin) for twin in twins]
    return OmegaConf.merge(*merged, node) if merged else node


def _quiet_third_party() -> None:
    """Keep the log about this build: the libraries' import chatter says nothing actionable."""
    for name in ("coremltools", "nv_one_logger", "numba", "urllib3", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # NeMo resets its logger's level to INFO on import; a filter survives that.
    logging.getLogger("nemo_logger").addFilter(lambda record: record.levelno >= logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def run_job(cfg: DictConfig) -> None:
    try:
        config = OmegaConf.to_object(cfg)
        assert isinstance(config, BuildConfig)
        result = build(config)
    except OmegaConfBaseException as error:
        _fail(f"invalid configuration: {str(error).splitlines()[0]}")
    except BuildError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}")
    else:
        statuses = ", ".join(f"{step['name']} {step['status']}" for step in result.record["steps"])
        print(f"{'Up to date' if result.up_to_date else 'Built'}: {result.package} [{statuses}]")


def _fail(message: str) -> None:
    print(f"sortformer-build: error: {message}", file=sys.stderr)
    sys.exit(1)


@hydra.main(version_base="1.3", config_path="pkg://sortformer_build.conf", config_name="build")
def _hydra_main(cfg: DictConfig) -> None:
    _quiet_third_party()
    run_job(cfg)


def main() -> None:
    register_schemas()
    if not OmegaConf.has_resolver("sortformer_build_groups"):
        OmegaConf.register_new_resolver("sortformer_build_groups", groups_help)
    _hydra_main()
