"""The code version recorded with each sweep: package version plus the git commit when in a checkout."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _package_version() -> str:
    try:
        return metadata.version("convlab")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=_SOURCE_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@functools.cache
def code_version() -> str:
    """E.g. ``0.1.0+1a2b3c4`` or ``0.1.0+1a2b3c4-dirty``; the bare package version outside git.

    Never raises: a version string must not break a sweep.
    """
    version = _package_version()
    try:
        if not (_SOURCE_ROOT / ".git").exists():
            return version
        commit = _git("rev-parse", "--short", "HEAD")
        if not commit:
            return version
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        sep = "." if "+" in version else "+"
        return f"{version}{sep}{commit}{'-dirty' if dirty else ''}"
    except Exception:  # noqa: BLE001 - a version string must never break a sweep
        return version
