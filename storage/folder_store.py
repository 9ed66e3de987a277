"""The artifact store as a folder on this host (the default: ``$CONVLAB_HOME/artifacts``).

Writes are atomic (temporary file in the same folder, fsync, ``os.replace``): a reader sees no file or the
whole one, never half of one. Scratch paths are the stored files themselves, so Keras's checkpoints are
hashed in place, not copied. Several hosts can share it only as one mounted volume; an object store
(:mod:`storage.object_store`) needs no shared disk.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath

from contract.disk import disk_full_message, is_disk_full
from storage.artifacts import (
    CHUNK,
    ArtifactStore,
    ListedFile,
    StoredFile,
    chmod_like_open,
    corrupt,
    fsync_dir,
    refuse_other_bytes,
    sha256_file,
    size_of,
    write_atomically,
)
from storage.errors import ArtifactError


class FolderStore(ArtifactStore):
    is_local = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)

    def validate_name(self, relpath: str) -> str:
        name = super().validate_name(relpath)
        resolved = (self.root / PurePosixPath(name)).resolve()
        root = self.root.resolve()
        if resolved != root and root not in resolved.parents:
            raise ArtifactError(relpath, "resolves outside the artifacts root")
        return name

    def absolute(self, relpath: str) -> Path:
        return self.root / self.validate_name(relpath)

    def describe(self, relpath: str) -> str:
        return str(self.absolute(relpath))

    # Writing.

    def write_bytes(self, relpath: str, data: bytes, *, replace: bool = False) -> StoredFile:
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.absolute(relpath)
        if not self._may_write(relpath, target, sha256, replace):
            return StoredFile(self.validate_name(relpath), sha256, len(data))
        with self._disk_full_named(relpath, len(data)):
            write_atomically(target, data)
        return StoredFile(self.validate_name(relpath), sha256, len(data))

    def write_file(self, relpath: str, src: Path, *, replace: bool = False) -> StoredFile:
        target = self.absolute(relpath)
        with self._disk_full_named(relpath, size_of(src)):
            tmp, sha256, size = self._copy_in(src, target.parent, target.name)
            if self._may_write(relpath, target, sha256, replace):
                self._commit(tmp, target)
            else:
                tmp.unlink()
        return StoredFile(self.validate_name(relpath), sha256, size)

    @staticmethod
    def _may_write(relpath: str, target: Path, sha256: str, replace: bool) -> bool:
        """False when ``target`` already holds these bytes (a retried write: done); raises for other
        bytes unless ``replace``."""
        if replace or not target.is_file():
            return True
        existing = sha256_file(target)
        if existing == sha256:
            return False
        raise refuse_other_bytes(relpath, existing, sha256)

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
        """The copy is hashed as it is written, so the name matches what was stored even if the source
        changes meanwhile. A copy already there is kept only if its content still matches; a damaged
        one is replaced."""
        folder = self.absolute("inputs")
        with self._disk_full_named(str(src), size_of(src)):
            tmp, sha256, size = self._copy_in(src, folder, "staging")
        relpath = self.input_path(sha256, Path(src).suffix)
        target = self.absolute(relpath)
        if target.is_file() and sha256_file(target) == sha256:
            tmp.unlink()
        else:
            with self._disk_full_named(relpath, size):
                self._commit(tmp, target)
        return StoredFile(relpath, sha256, size)

    def scratch_path(self, relpath: str) -> Path:
        path = self.absolute(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def store_scratch(self, relpath: str) -> StoredFile:
        path = self.absolute(relpath)
        if not path.is_file():
            raise ArtifactError(relpath, f"missing: {path} was not written")
        return StoredFile(self.validate_name(relpath), sha256_file(path), path.stat().st_size)

    def discard_scratch(self, prefix: str) -> None:
        """Nothing: the scratch files are the stored ones."""

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
                chmod_like_open(out.fileno(), tmp)
                while chunk := inp.read(CHUNK):
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
        fsync_dir(target.parent)

    # Reading.

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
            raise corrupt(relpath, actual, sha256, str(path))
        return data

    def verify(self, relpath: str, sha256: str) -> None:
        """Check a (possibly large) file's checksum without loading it into memory."""
        path = self.absolute(relpath)
        if not path.is_file():
            raise ArtifactError(relpath, f"missing: {path} does not exist")
        actual = sha256_file(path)
        if actual != sha256:
            raise corrupt(relpath, actual, sha256, str(path))

    def local_copy(self, relpath: str, sha256: str) -> Path:
        self.verify(relpath, sha256)
        return self.absolute(relpath)

    # Listing and removal.

    def list_files(self, prefix: str = "") -> list[ListedFile]:
        base = self.absolute(prefix) if prefix else self.root
        if base.is_file():
            info = base.stat()
            return [ListedFile(self.validate_name(prefix), info.st_size, info.st_mtime)]
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
        self.absolute(relpath).unlink(missing_ok=True)

    def exists(self, relpath: str) -> bool:
        return self.absolute(relpath).is_file()

    def remove_empty_folders(self, prefix: str) -> None:
        """Only for a folder no writer will create files in again (a finished attempt's): a writer making
        its folders with ``mkdir(parents=True)`` could otherwise lose one between two of its steps."""
        base = self.absolute(prefix)
        for folder, _subfolders, _names in os.walk(base, topdown=False):
            with suppress(OSError):  # not empty, or gone
                os.rmdir(folder)

    def check_access(self) -> None:
        """The folder exists or can be made, and is writable."""
        existing = self.root
        while not existing.exists():
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ArtifactError(".", f"cannot write in {existing} (the artifacts folder {self.root})")
