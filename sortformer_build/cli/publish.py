"""The `sortformer-build-publish` command: Hydra composes conf/publish.yaml, `publish` does the work."""

from __future__ import annotations

import sys

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sortformer_build.cli.logs import quiet_third_party
from sortformer_build.errors import BuildError
from sortformer_build.release.hub.config import PublishConfig
from sortformer_build.release.hub.errors import ReleaseRefused
from sortformer_build.release.hub.publishing import publish

PROGRAM = "sortformer-build-publish"


def report(settings: PublishConfig) -> int:
    """Run `publish`; one line per problem on stderr. Returns the exit status."""
    try:
        publish(settings)
    except ReleaseRefused as refusal:
        print(f"{PROGRAM}: {refusal}", file=sys.stderr)
        for problem in refusal.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
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


def register_schema() -> None:
    ConfigStore.instance().store(group="schema", name="publish", node=PublishConfig)


def main() -> None:
    register_schema()
    _hydra_main()
