"""A small real file system for disk-full tests: a tmpfs mounted for the test, unmounted afterwards.

Mounting needs root (or CAP_SYS_ADMIN): where it is not permitted the test is skipped with the reason
locally and fails in CI (:func:`tests.services.service_missing`), like a missing service.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.services import service_missing


@contextmanager
def small_filesystem(mount_point: Path, megabytes: float) -> Iterator[Path]:
    """``mount_point`` as a tmpfs of ``megabytes`` (ENOSPC once full, as a real disk)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    size = f"size={int(megabytes * 1024)}k"
    if shutil.which("mount") is None:
        service_missing("a small file system (tmpfs)", "no `mount` command", ci_hint="CI runs as root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        reason = (done.stderr.strip() or f"exit {done.returncode}").splitlines()[0]
        service_missing("a small file system (tmpfs)", f"mount refused: {reason}", ci_hint="CI runs as root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def fill(folder: Path, leave_bytes: int) -> Path:
    """A ballast file that takes all but ``leave_bytes`` of the free space under ``folder``."""
    ballast = folder / "ballast"
    free = shutil.disk_usage(folder).free
    with open(ballast, "wb") as fh:
        fh.truncate(0)
        remaining = max(free - leave_bytes, 0)
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            fh.write(chunk[: min(len(chunk), remaining)])
            remaining -= min(len(chunk), remaining)
    return ballast
