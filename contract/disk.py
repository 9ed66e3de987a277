"""Disk space: what convlab's own files need, and the one line a write that found the disk full says.

Shared by the engine (the decoded-data cache, checkpoints), the artifact store and ``submit``'s preflight,
so the sizes and the message have one home.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

# The decoded CIFAR-10 cache: 60,000 x 32 x 32 x 3 bytes of images, the labels as int64, the npz headers.
CIFAR_CACHE_BYTES = 185_000_000
# The official cifar-10-python.tar.gz: what a host fetches into its input cache when CONVLAB_CIFAR10 is a URL.
CIFAR_TARBALL_BYTES = 170_500_000
# Free space the best-effort data cache leaves behind it: it is written only if this much stays free
# afterwards, so that it never takes the room of what a run cannot do without (two alpha-1.0 checkpoints
# of about 40 MB each while one replaces the other, figures, logs, other tasks on the same disk).
CACHE_KEEP_FREE_BYTES = 200_000_000
# errno values that mean "no room": the disk, or the user's quota on it.
_FULL = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free space (for this user) on the file system that holds ``path``, or would once created."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is an out-of-space error."""
    seen: BaseException | None = exc
    for _ in range(5):  # Keras and zipfile wrap the OSError of a failed write in their own errors
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full_message(path: str | os.PathLike[str], needed: int) -> str:
    """``disk full under PATH (needs ~N MB, M MB free)``: the one line for a write that found no room."""
    try:
        free = f"{megabytes(free_bytes(path))} MB free"
    except OSError:
        free = "free space unknown"
    return f"disk full under {path} (needs ~{megabytes(needed)} MB, {free})"


def megabytes(size: int) -> str:
    """``size`` in MB for messages: one decimal below 10 MB, so a small need does not read as 0."""
    return f"{size / 1e6:,.1f}" if size < 10_000_000 else f"{size / 1e6:,.0f}"
