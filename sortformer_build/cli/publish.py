"""The `sortformer-build-publish` command: Hydra composes conf/publish.yaml, `publish` does the work."""

from __future__ import annotations

import dataclasses
import sys

import hydra
from hydra import compose
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sortformer_build.cli.help import hydra_loader
from sortformer_build.cli.logs import quiet_third_party
from sortformer_build.config import BuildConfig
from sortformer_build.errors import BuildError
from sortformer_build.release.hub.config import PublishConfig
from sortformer_build.release.hub.errors import ReleaseRefused, UploadRefused
from sortformer_build.release.hub.publishing import publish
from sortformer_build.stages.artifact import ArtifactPaths

PROGRAM = "sortformer-build-publish"


# Exit status of a fit release whose upload would be refused (a dry run still stages it).
UPLOAD_REFUSED = 3


def report(settings: PublishConfig) -> int:
    """Run `publish`; one line per problem on stderr. Returns the exit status."""
    try:
        publish(settings, release_set())
    except ReleaseRefused as refusal:
        print(f"{PROGRAM}: {refusal}", file=sys.stderr)
        for problem in refusal.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except UploadRefused as refusal:
        print(f"{PROGRAM}: {refusal}", file=sys.stderr)
        for reason in refusal.reasons:
            print(f"  {reason}", file=sys.stderr)
        return UPLOAD_REFUSED
    except (BuildError, OSError) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 1
    return 0


@hydra.main(version_base="1.3", config_path="pkg://sortformer_build.conf", config_name="publish")
def _hydra_main(cfg: DictConfig) -> None:
    quiet_third_party()
    try:
        settings = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        print(f"{PROGRAM}: error: invalid configuration: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    assert isinstance(settings, PublishConfig)
    status = report(settings)
    if status:
        sys.exit(status)


def release_set() -> set[str]:
    """Every variant option with every release compression, as release paths: what a full
    release publishes, read from the config groups themselves."""
    from sortformer_build.cli.app import register_schemas

    register_schemas()

    def composed(group: str, option: str) -> BuildConfig:
        config = OmegaConf.to_object(compose("build", [f"{group}={option}", "checkpoint=tiny"]))
        assert isinstance(config, BuildConfig)
        return config

    # No option of one group refers to the other group, so each option is composed once, not
    # once per pair.
    with hydra_loader() as loader:
        variants = [composed("variant", option) for option in loader.get_group_options("variant")]
        compressions = [
            composed("compression", option).compression for option in loader.get_group_options("compression")
        ]
    return {
        ArtifactPaths.of(dataclasses.replace(config, compression=compression)).release_stem
        for compression in compressions
        if compression.release
        for config in variants
    }


def register_schema() -> None:
    ConfigStore.instance().store(group="schema", name="publish", node=PublishConfig)


def main() -> None:
    register_schema()
    _hydra_main()
