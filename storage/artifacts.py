"""Files a run produces (checkpoints, images, figures), stored under one root with a sha256 each.

:class:`ArtifactStore` is the one interface; it owns the layout (which key holds what) and the rules every
backend keeps:

- **Every key is written once.** A write that finds its key holding the same bytes (a retried upload)
  counts as done; other bytes are refused naming the key, unless the caller asks to ``replace`` (only the
  published copy of a sweep's report is rewritten). The database records each key's sha256 and is the
  commit point: upload, then commit, then delete what the run no longer references.
- **Reads are verified** against the sha256 the database recorded, and a mismatch names the key.
- **Engines write local files.** Keras and matplotlib write into :meth:`ArtifactStore.scratch_path`
  (for the folder backend that is the stored file itself, so nothing is copied), then
  :meth:`ArtifactStore.store_scratch` stores it; they read :meth:`ArtifactStore.local_copy`, a verified
  local file (the stored file itself, or a per-host cached download for an object store).

Backends: :class:`storage.folder_store.FolderStore` (a folder, the default) and
:class:`storage.object_store.ObjectStore` (S3 and other object stores); :func:`storage.stores.open_store`
picks one from the settings.

File helpers for local files (also used outside a store: ``orchestrator report --out``) live here too:
atomic writes with fsync and the mode ``open()`` would give (``0o666 & ~umask``).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from storage.errors import ArtifactError

CHUNK = 1 << 20
# What open() asks for before the umask; mkstemp's 0o600 would make our files unlike everyone else's.
_OPEN_MODE = 0o666
_umask_lock = threading.Lock()
_ATTEMPT_PATH = re.compile(r"runs/(?P<run>[^/]+)/attempt-(?P<fence>\d+)/")


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the store's root, with forward slashes
    sha256: str
    size: int


@dataclass(frozen=True)
class ListedFile:
    """A file found in the store (what an object store's listing gives: key, size, modification time)."""

    path: str  # relative to the store's root, with forward slashes
    size: int
    mtime: float  # seconds since the epoch


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _umask_from_proc() -> int | None:
    """The umask as Linux (4.7+) reports it, or None where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_by_setting() -> int:
    """The umask read the only portable way, by setting it and back.

    Another thread creating a file in between would get a umask of 0o077 (not 0: too open): safe, if
    briefly stricter. The lock keeps our own threads from reading each other's temporary value.
    """
    with _umask_lock:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def current_umask() -> int:
    """The process umask, without changing it where /proc tells it (Linux), which is race-free in threads.

    Read per write, not cached at import: a umask the process sets later is honoured by open() and Keras,
    so it must be here too. Reading /proc costs some microseconds, nothing beside an fsync.
    """
    umask = _umask_from_proc()
    return _umask_by_setting() if umask is None else umask


def chmod_like_open(fd: int, path: str) -> None:
    mode = _OPEN_MODE & ~current_umask()
    if os.chmod in os.supports_fd:
        os.chmod(fd, mode)
    else:  # pragma: no cover - platforms without fchmod
        os.chmod(path, mode)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that a reader sees the old file or the new one, never half of one:
    a unique temporary file in the same folder, fsynced, renamed, the folder fsynced; the mode ``open()``
    would give. For files outside a store too (``orchestrator report --out``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            chmod_like_open(fh.fileno(), tmp)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


class ArtifactStore(ABC):
    """Where a deployment's artifacts live; keys are relative, with forward slashes (see the module doc)."""

    #: What messages name as the store (a folder, or ``s3://bucket/prefix``; never credentials).
    url: str
    #: Whether every key is a file on this host's disk (then ``local_copy`` is the stored file itself).
    is_local: bool

    # The layout of the store, owned here and nowhere else.

    @staticmethod
    def run_dir(run_id: str) -> str:
        """Everything a run wrote."""
        return f"runs/{run_id}"

    @staticmethod
    def attempt_dir(run_id: str, fence: int) -> str:
        """What one attempt wrote: no other attempt of the run writes there (see ``runs.fence``)."""
        return f"runs/{run_id}/attempt-{fence}"

    @staticmethod
    def sweep_report_dir(sweep_id: str) -> str:
        """Where a sweep's report is published, for users (``orchestrator report`` writes it there too)."""
        return f"sweeps/{sweep_id}/report"

    @staticmethod
    def input_path(sha256: str, suffix: str) -> str:
        """A staged input (a photo), named by its content: identical photos share one file."""
        return f"inputs/{sha256[:16]}{suffix.lower() or '.img'}"

    @staticmethod
    def attempt_of(relpath: str) -> tuple[str, int] | None:
        """(run id, fence) of a path inside an attempt's folder (:meth:`attempt_dir`), else ``None``."""
        match = _ATTEMPT_PATH.match(relpath)
        return (match["run"], int(match["fence"])) if match else None

    @staticmethod
    def is_temporary(relpath: str) -> bool:
        """A file written under a temporary name (every writer's: ``.NAME.<...>.tmp[.SUFFIX]``), which
        only a writer that died before its rename leaves behind."""
        name = relpath.rsplit("/", 1)[-1]
        return name.startswith(".") and ".tmp" in name

    def validate_name(self, relpath: str) -> str:
        """Reject any key that could leave the root; return it normalised."""
        if not isinstance(relpath, str) or not relpath:
            raise ArtifactError(str(relpath), "empty or not a string")
        if "\\" in relpath or "\x00" in relpath:
            raise ArtifactError(relpath, "backslashes and NUL are not allowed")
        pure = PurePosixPath(relpath)
        if pure.is_absolute() or relpath.startswith("~"):
            raise ArtifactError(relpath, "must be relative to the artifacts root")
        if any(part in ("..", ".") for part in relpath.split("/")) or "" in relpath.split("/")[:-1]:
            raise ArtifactError(relpath, "'..', '.' and empty path segments are not allowed")
        return str(pure)

    def describe(self, relpath: str) -> str:
        """Where ``relpath`` is, as a user would open it (a path, or a URL)."""
        return f"{self.url.rstrip('/')}/{self.validate_name(relpath)}"

    # Writing.

    @abstractmethod
    def write_bytes(self, relpath: str, data: bytes, *, replace: bool = False) -> StoredFile:
        """Store ``data`` under ``relpath`` (written once; see the module doc for ``replace``)."""

    @abstractmethod
    def write_file(self, relpath: str, src: Path, *, replace: bool = False) -> StoredFile:
        """Store a copy of the local file ``src`` under ``relpath``, hashed as it is read."""

    @abstractmethod
    def stage_input(self, src: Path) -> StoredFile:
        """Store an input (a photo) under a key made from its content (:meth:`input_path`)."""

    @abstractmethod
    def scratch_path(self, relpath: str) -> Path:
        """The local file a writer (Keras, the report) creates for ``relpath``; its folder exists."""

    def scratch_folder(self, prefix: str) -> Path:
        """The local folder a writer fills with the files that belong under ``prefix`` (Keras's
        checkpoints, a report); it exists."""
        return self.scratch_path(f"{prefix}/_").parent

    @abstractmethod
    def store_scratch(self, relpath: str) -> StoredFile:
        """Store what was written at :meth:`scratch_path` under ``relpath``; its sha256 and size."""

    @abstractmethod
    def discard_scratch(self, prefix: str) -> None:
        """Forget the local scratch files under ``prefix`` (nothing for a store whose scratch is itself)."""

    # Reading: every read is verified against the sha256 the caller got from the database.

    @abstractmethod
    def read_bytes(self, relpath: str, sha256: str) -> bytes: ...

    @abstractmethod
    def verify(self, relpath: str, sha256: str) -> None:
        """Raise :class:`ArtifactError` naming the key if it is missing or holds other bytes."""

    @abstractmethod
    def local_copy(self, relpath: str, sha256: str) -> Path:
        """A local file holding ``relpath``'s verified bytes, under the key's own file name, beside the
        other keys of its folder fetched the same way (a checkpoint's state and model files)."""

    # Listing and removal (``orchestrator gc``, superseded checkpoints).

    @abstractmethod
    def list_files(self, prefix: str = "") -> list[ListedFile]:
        """Every key under ``prefix`` (a folder of the layout; ``""``: the whole store), sorted."""

    @abstractmethod
    def delete(self, relpath: str) -> None:
        """Remove one key; one already gone is no error."""

    def remove_empty_folders(self, prefix: str) -> None:  # noqa: B027 - a no-op where there are no folders
        """Remove the folders under ``prefix`` that hold no file; an object store has none."""

    @abstractmethod
    def exists(self, relpath: str) -> bool: ...

    @abstractmethod
    def check_access(self) -> None:
        """Raise :class:`ArtifactError` in one line if this host cannot write and read the store."""


def refuse_other_bytes(relpath: str, stored_sha256: str, new_sha256: str) -> ArtifactError:
    """The error for a write-once key that already holds other bytes."""
    return ArtifactError(
        relpath,
        f"already stored with other content (sha256 {stored_sha256[:12]}…, this write {new_sha256[:12]}…);"
        " keys are written once",
    )


def corrupt(relpath: str, actual: str, expected: str, where: str) -> ArtifactError:
    return ArtifactError(relpath, f"corrupt: sha256 is {actual[:12]}…, expected {expected[:12]}… ({where})")
