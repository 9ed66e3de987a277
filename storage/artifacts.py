"""Files a run produces (checkpoints, images, figures), stored under one root with a sha256 each.

Writes are atomic (temporary file in the same folder, fsync, ``os.replace``): a reader sees the old file
or the new one, never half of one. Reads verify the checksum recorded in the database. Files get the mode
``open()`` would give them (``0o666 & ~umask``), like those Keras and the report write into the same store.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from contract.disk import disk_full_message, is_disk_full
from storage.errors import ArtifactError

_CHUNK = 1 << 20
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
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _size_of(path: Path) -> int:
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


def _chmod_like_open(fd: int, path: str) -> None:
    mode = _OPEN_MODE & ~current_umask()
    if os.chmod in os.supports_fd:
        os.chmod(fd, mode)
    else:  # pragma: no cover - platforms without fchmod
        os.chmod(path, mode)


def _fsync_dir(folder: Path) -> None:
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
            _chmod_like_open(fh.fileno(), tmp)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    # The layout of the store, owned here and nowhere else. Paths are relative to the root, with "/".

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
        """Reject anything that could leave the root; return the normalised relative path."""
        if not isinstance(relpath, str) or not relpath:
            raise ArtifactError(str(relpath), "empty or not a string")
        if "\\" in relpath or "\x00" in relpath:
            raise ArtifactError(relpath, "backslashes and NUL are not allowed")
        pure = PurePosixPath(relpath)
        if pure.is_absolute() or relpath.startswith("~"):
            raise ArtifactError(relpath, "must be relative to the artifacts root")
        if any(part in ("..", ".") for part in relpath.split("/")) or "" in relpath.split("/")[:-1]:
            raise ArtifactError(relpath, "'..', '.' and empty path segments are not allowed")
        resolved = (self.root / pure).resolve()
        root = self.root.resolve()
        if resolved != root and root not in resolved.parents:
            raise ArtifactError(relpath, "resolves outside the artifacts root")
        return str(pure)

    def absolute(self, relpath: str) -> Path:
        return self.root / self.validate_name(relpath)

    def write_bytes(self, relpath: str, data: bytes) -> StoredFile:
        with self._disk_full_named(relpath, len(data)):
            write_atomically(self.absolute(relpath), data)
        return StoredFile(self.validate_name(relpath), hashlib.sha256(data).hexdigest(), len(data))

    def write_file(self, relpath: str, src: Path) -> StoredFile:
        target = self.absolute(relpath)
        with self._disk_full_named(relpath, _size_of(src)):
            tmp, sha256, size = self._copy_in(src, target.parent, target.name)
            self._commit(tmp, target)
        return StoredFile(self.validate_name(relpath), sha256, size)

    @contextmanager
    def _disk_full_named(self, relpath: str, needed: int) -> Iterator[None]:
        """A write that found no room fails in one line (what it needed, what is free), not with a
        traceback; its temporary file is already gone (``write_atomically``, ``_copy_in``)."""
        try:
            yield
        except OSError as exc:
            if is_disk_full(exc):
                raise ArtifactError(relpath, disk_full_message(self.root, needed)) from None
            raise

    def stage_input(self, src: Path) -> StoredFile:
        """Copy an input (a photo) in under a name made from its content (:meth:`input_path`).

        The copy is hashed as it is written, so the name matches what was stored even if the source
        changes meanwhile. A copy already there is kept only if its content still matches; a damaged
        one is replaced.
        """
        folder = self.absolute("inputs")
        with self._disk_full_named(str(src), _size_of(src)):
            tmp, sha256, size = self._copy_in(src, folder, "staging")
        relpath = self.input_path(sha256, Path(src).suffix)
        target = self.absolute(relpath)
        if target.is_file() and sha256_file(target) == sha256:
            tmp.unlink()
        else:
            with self._disk_full_named(relpath, size):
                self._commit(tmp, target)
        return StoredFile(relpath, sha256, size)

    @staticmethod
    def _copy_in(src: Path, folder: Path, name: str) -> tuple[Path, str, int]:
        """Copy ``src`` to a unique temporary file in ``folder`` (fsynced); its path, sha256 and size."""
        if not Path(src).is_file():
            raise ArtifactError(str(src), "source file does not exist")
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                # Not the source's mode (copymode): a source made by mkstemp would pass on its 0o600.
                _chmod_like_open(out.fileno(), tmp)
                while chunk := inp.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp), digest.hexdigest(), size

    @staticmethod
    def _commit(tmp: Path, target: Path) -> None:
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)

    # Listing and removal, for ``orchestrator gc``: what no database row references is found by comparing
    # this listing with the rows. An object store backend lists keys under a prefix the same way.

    def list_files(self, prefix: str = "") -> list[ListedFile]:
        """Every file under ``prefix`` (a folder of the layout; ``""``: the whole store), sorted by path."""
        base = self.absolute(prefix) if prefix else self.root
        found: list[ListedFile] = []
        for folder, _subfolders, names in os.walk(base):
            for name in names:
                path = Path(folder) / name
                try:
                    info = path.lstat()
                except FileNotFoundError:  # removed while we looked
                    continue
                if stat.S_ISREG(info.st_mode):
                    found.append(
                        ListedFile(path.relative_to(self.root).as_posix(), info.st_size, info.st_mtime)
                    )
        return sorted(found, key=lambda f: f.path)

    def delete(self, relpath: str) -> None:
        """Remove one file; one already gone is no error."""
        self.absolute(relpath).unlink(missing_ok=True)

    def remove_empty_folders(self, prefix: str) -> None:
        """Remove ``prefix`` and the folders under it that hold no file (an object store has none).

        Only for a folder no writer will create files in again (a finished attempt's): a writer making
        its folders with ``mkdir(parents=True)`` could otherwise lose one between two of its steps."""
        base = self.absolute(prefix)
        for folder, _subfolders, _names in os.walk(base, topdown=False):
            with suppress(OSError):  # not empty, or gone
                os.rmdir(folder)

    def read_bytes(self, relpath: str, sha256: str) -> bytes:
        path = self.absolute(relpath)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(relpath, f"missing: {path} does not exist") from None
        except OSError as exc:
            raise ArtifactError(relpath, f"unreadable: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ArtifactError(
                relpath, f"corrupt: sha256 is {actual[:12]}…, expected {sha256[:12]}… ({path})"
            )
        return data

    def verify(self, relpath: str, sha256: str) -> None:
        """Check a (possibly large) file's checksum without loading it into memory."""
        path = self.absolute(relpath)
        if not path.is_file():
            raise ArtifactError(relpath, f"missing: {path} does not exist")
        actual = sha256_file(path)
        if actual != sha256:
            raise ArtifactError(
                relpath, f"corrupt: sha256 is {actual[:12]}…, expected {sha256[:12]}… ({path})"
            )
