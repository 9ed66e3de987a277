"""The identity of the code that runs: a hash of the installed package's Python source.

Why not the version string: installed with ``pip install .`` the package version is ``0.1.0`` whatever the
code says, and a git checkout's ``-dirty`` flag does not change between edits. The run identity (which
decides whether an earlier result may be reused) must change whenever the code does, so it uses
:func:`code_identity`, the sha256 of every ``.py`` file of the three packages, read where Python imports
them from (site-packages, or the checkout for an editable install). The git commit, when there is one,
is kept as extra information in :func:`code_version`, the text a sweep records and the report shows.

Cost: about 60 small files, hashed once per process (a few milliseconds), and only by commands that need
it (``submit``), so ``status`` and ``--help`` never pay for it.

A worker's code is the code it loaded, not the files on disk now: its main process imports the task
modules and hashes the source then (``worker.main``), before forking any task process, and every task
process inherits that cached hash. :func:`source_identity_now` hashes the files again, to notice that
they changed under a running worker.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import subprocess
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

# The packages of the distribution (pyproject.toml: packages.find include), located without importing
# them: this module belongs to the leaf package ``storage``.
PACKAGES = ("contract", "orchestrator", "report", "storage", "worker")
SHORT = 12  # hex digits of the source hash shown in the version text
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _package_version() -> str:
    try:
        return metadata.version("convlab")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"


def package_dirs() -> list[Path]:
    """Where Python imports each of :data:`PACKAGES` from in this process."""
    found = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            found.append(Path(location))
    return found


def source_hash(package_dirs: Iterable[Path]) -> str:
    """sha256 over the ``.py`` files under ``package_dirs``: each file's path relative to its package's
    parent (so the same code installed in two places hashes the same) and its bytes, in sorted order.
    Caches (``__pycache__``) and data files are left out: they do not change what runs."""
    entries: list[tuple[str, Path]] = []
    for folder in package_dirs:
        for path in folder.rglob("*.py"):
            if "__pycache__" not in path.parts:
                entries.append((path.relative_to(folder.parent).as_posix(), path))
    digest = hashlib.sha256()
    for relative, path in sorted(entries):
        digest.update(relative.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@functools.cache
def code_identity() -> str:
    """The source hash of the code this process runs (64 hex digits), computed once per process."""
    return source_hash(package_dirs())


def source_identity_now() -> str:
    """The source hash of the files on disk now, where this process imported its packages from (never
    cached: compared with :func:`code_identity`, it tells whether the code changed since it was loaded)."""
    return source_hash(package_dirs())


class SourceWatch:
    """Whether the files on disk are still the code this process loaded (:func:`code_identity`), asked
    at most every ``every`` seconds (a few milliseconds a time)."""

    def __init__(self, every: float = 5.0) -> None:
        self.loaded = code_identity()
        self.now = self.loaded
        self._every = every
        self._next = time.monotonic() + every

    def changed(self) -> bool:
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self._every
            self.now = source_identity_now()
        return self.now != self.loaded


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


def _git_commit() -> str | None:
    """``1a2b3c4`` or ``1a2b3c4-dirty`` when the running code is a git checkout, else None."""
    if not (_SOURCE_ROOT / ".git").exists():
        return None
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}{'-dirty' if dirty else ''}"


@functools.cache
def code_version() -> str:
    """E.g. ``0.1.0+src.1a2b3c4d5e6f git 9f8e7d6-dirty``; without git: ``0.1.0+src.1a2b3c4d5e6f``.

    The ``src.`` part is the start of :func:`code_identity`. Never raises: a version string must not
    break a sweep (without a readable source it is the bare package version).
    """
    version = _package_version()
    try:
        sep = "." if "+" in version else "+"
        text = f"{version}{sep}src.{code_identity()[:SHORT]}"
        commit = _git_commit()
        return f"{text} git {commit}" if commit else text
    except Exception:  # noqa: BLE001 - a version string must never break a sweep
        return version
