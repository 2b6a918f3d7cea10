"""Where kvlab keeps images it builds (the QEMU guest image of the netns runtime, the ToR image's
base of the containerlab runtime), and one holder at a time per cache."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path

from harness.errors import LabError, UnsafePathError
from harness.locking import file_lock, private_dir

DEFAULT_CACHE = Path("/var/cache/kvlab/images")


def cache_root() -> Path:
    return Path(os.environ.get("KVLAB_IMAGE_CACHE", str(DEFAULT_CACHE)))


def ensure_cache_dir(root: Path, error: type[LabError] = LabError) -> Path:
    """Create the image cache `root` (guest images, the ToR image's base), or raise `error`;
    refuse one that is not safely this user's (see harness.locking.private_dir)."""
    try:
        return private_dir(root)
    except UnsafePathError as e:
        raise error(
            f"image cache: {e}; run as root or set KVLAB_IMAGE_CACHE to a directory of your own"
        ) from None


def cache_lock(
    root: Path, name: str = ".lock", error: type[LabError] = LabError
) -> AbstractContextManager[None]:
    """One holder at a time of the image cache `root` (the lock file `name` goes with it)."""
    return file_lock(ensure_cache_dir(root, error) / name)
