"""Where everything in the cache folder lives: the one place its layout is spelt."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CACHE_ENVIRONMENT_VARIABLE = "SORTFORMER_BUILD_CACHE"


@dataclass(frozen=True)
class CacheLayout:
    root: Path

    @classmethod
    def at(cls, cache_dir: str | None = None) -> CacheLayout:
        """`cache_dir`, else $SORTFORMER_BUILD_CACHE, else the user's cache folder."""
        if cache_dir:
            return cls(Path(cache_dir).expanduser())
        if os.environ.get(CACHE_ENVIRONMENT_VARIABLE):
            return cls(Path(os.environ[CACHE_ENVIRONMENT_VARIABLE]).expanduser())
        import platformdirs

        return cls(Path(platformdirs.user_cache_dir("sortformer-build")))

    @property
    def checkpoints(self) -> Path:
        """Weights the project makes (synthetic, tiny): slow to remake, never evicted."""
        return self.root / "checkpoints"

    @property
    def checkpoint_digests(self) -> Path:
        """Remembered sha256 of checkpoint files, by path, size and mtime."""
        return self.checkpoints / "sha256"

    @property
    def build(self) -> Path:
        """Stage entries, one folder per stage (see `store.cache`)."""
        return self.root / "build"

    def stage(self, name: str) -> Path:
        return self.build / name

    @property
    def luts(self) -> Path:
        """Palettization look-up tables by tensor content: shared, counted, never evicted."""
        return self.build / LUTS_FOLDER

    @property
    def scratch(self) -> Path:
        """Each running job's temporary files (see `job.scratch`)."""
        return self.root / "scratch"

    @property
    def package_digests(self) -> Path:
        """Remembered package digests, by file stamps (see `coreml.package.package_digest`)."""
        return self.root / "package-digests"

    @property
    def entry_digests(self) -> Path:
        """Stamps of cache entries whose content was last found right (see `store.integrity`)."""
        return self.root / "entry-digests"

    @property
    def file_digests(self) -> Path:
        """Remembered digests of evaluation files, by path, size and mtime."""
        return self.root / "file-digests"


# A folder of the build cache that holds a shared store, not a stage's entries.
LUTS_FOLDER = "luts"
