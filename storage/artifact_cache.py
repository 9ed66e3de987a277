"""This host's cache of verified downloads from an object store, keyed by (key, version: the sha256).

A key's file lands at ``<root>/<key>``, keeping the key's folder, so the files of one checkpoint fetched
the same way sit side by side where Keras expects them. Bookkeeping lives apart, under
``<root>/.convlab-cache/`` (no key of the store's layout starts with a dot):

- ``sha256/<key>``: the sidecar, ``"<version> <size> <mtime_ns>"`` of the file as this cache verified it,
  written after the file. The version is the file's sha256 (artifacts, whose sha256 the database
  recorded); an input fetched from a store that records none is versioned by its size and ETag instead
  (:meth:`ArtifactCache.fetch_version`). A hit is a file whose sidecar names the wanted version and
  whose size and mtime are still the recorded ones; the file is not re-hashed (hashing 40 MB costs
  ~25-100 ms a read, more than a whole hit otherwise; the stat check still catches a file rewritten or
  truncated in place, not a bit flipped by the disk). The sidecar's own mtime is the file's last use
  (touched on each hit): the LRU order.
- ``locks/<key>.lock``: an ``fcntl.flock`` per key, held while a process checks and downloads, so three
  processes wanting the same model download it once; the others wait and find the hit. Lock files are
  kept (a few bytes each): removing a lock file someone may be about to lock would let two holders in.

Downloads are hashed while written to a temporary file in the key's folder, refused naming the key on a
mismatch (and removed), and renamed in place. After each download the cache evicts least recently used
files until it is under its limit, never the file just fetched nor one another process is downloading
(its lock is held). Unlinking a file another process is reading is safe on POSIX: the reader keeps its
open file until it closes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage.artifacts import chmod_like_open, corrupt, fsync_dir
from storage.errors import ArtifactError

BOOKKEEPING = ".convlab-cache"

#: What a download is given: write the key's bytes into this file.
Download = Callable[[BinaryIO], None]


class _HashingWriter:
    """A file-like sink that hashes and counts what passes through it (``write`` is all downloads use)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._out.write(data)


@dataclass(frozen=True)
class _Entry:
    key: str
    sidecar: Path
    size: int
    last_used: float


class ArtifactCache:
    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = Path(root).absolute()
        self.limit_bytes = int(limit_bytes)
        self._meta = self.root / BOOKKEEPING / "sha256"
        self._locks = self.root / BOOKKEEPING / "locks"

    def path_of(self, key: str) -> Path:
        if key == BOOKKEEPING or key.startswith(BOOKKEEPING + "/"):
            raise ArtifactError(key, f"{BOOKKEEPING}/ is the cache's own folder")
        return self.root / key

    def fetch(self, key: str, sha256: str, download: Download, *, where: str) -> Path:
        """The cached file holding ``key``'s bytes with this ``sha256``, downloaded at most once per host
        (``download`` writes them into the file it is given). ``where`` names the source in errors."""
        return self.fetch_version(key, sha256, download, where=where, sha256=sha256)

    def fetch_version(
        self,
        key: str,
        version: str,
        download: Download,
        *,
        where: str,
        sha256: str | None,
        size: int | None = None,
    ) -> Path:
        """The cached file holding ``key`` at ``version`` (a token without spaces: a hit is a file cached
        under the same one), downloaded at most once per host. The download is refused naming the key if
        its sha256 is not ``sha256`` (when known) or its size not ``size`` (when given)."""
        if not version or any(c.isspace() for c in version):
            raise ArtifactError(key, f"cache version {version!r} is empty or holds spaces")
        target = self.path_of(key)
        with self._locked(key):
            if self._is_hit(key, target, version):
                return target
            self._download(key, target, version, download, where, sha256=sha256, size=size)
            self._evict(keep=key)
        return target

    def cached(self, key: str, sha256: str) -> bool:
        """Whether ``key`` is cached with this sha256 (no download, no touch; for tests and tools)."""
        return self._read_sidecar(key) is not None and self._matches(key, self.path_of(key), sha256)

    # The steps, each under the key's lock.

    @contextmanager
    def _locked(self, key: str, *, blocking: bool = True) -> Iterator[bool]:
        lock_path = self._locks / f"{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True  # closing the fd below releases the lock
        finally:
            os.close(fd)

    def _read_sidecar(self, key: str) -> tuple[str, int, int] | None:
        try:
            version, size, mtime_ns = (self._meta / key).read_text(encoding="ascii").split()
            return version, int(size), int(mtime_ns)
        except (OSError, ValueError):
            return None

    def _matches(self, key: str, target: Path, version: str) -> bool:
        recorded = self._read_sidecar(key)
        if recorded is None or recorded[0] != version:
            return False
        try:
            info = target.stat()
        except OSError:
            return False
        return (info.st_size, info.st_mtime_ns) == recorded[1:]

    def _is_hit(self, key: str, target: Path, version: str) -> bool:
        if not self._matches(key, target, version):
            return False
        with suppress(OSError):  # the LRU clock; a failed touch only makes it older
            os.utime(self._meta / key)
        return True

    def _download(
        self,
        key: str,
        target: Path,
        version: str,
        download: Download,
        where: str,
        *,
        sha256: str | None,
        size: int | None,
    ) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # The sidecar goes first: a file without a matching sidecar is never a hit, whatever a crash
        # between the two steps leaves.
        (self._meta / key).unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                chmod_like_open(out.fileno(), tmp)
                sink = _HashingWriter(out)
                download(sink)  # type: ignore[arg-type]  # write() is all a download may use
                out.flush()
                os.fsync(out.fileno())
            actual = sink.digest.hexdigest()
            if sha256 is not None and actual != sha256:
                raise corrupt(key, actual, sha256, where)
            if size is not None and sink.size != size:
                raise ArtifactError(key, f"truncated: {sink.size} bytes {where}, expected {size}")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)
        info = target.stat()
        sidecar = self._meta / key
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=sidecar.parent, prefix=f".{sidecar.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(f"{version} {info.st_size} {info.st_mtime_ns}\n")
        os.replace(tmp, sidecar)

    def _entries(self) -> Iterator[_Entry]:
        for folder, _subfolders, names in os.walk(self._meta):
            for name in names:
                sidecar = Path(folder) / name
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                key = sidecar.relative_to(self._meta).as_posix()
                recorded = self._read_sidecar(key)
                try:
                    last_used = sidecar.stat().st_mtime
                except OSError:  # evicted meanwhile
                    continue
                if recorded is not None:
                    yield _Entry(key, sidecar, recorded[1], last_used)

    def _evict(self, *, keep: str) -> None:
        """Least recently used first, until the cache is under its limit; ``keep`` (just fetched) and keys
        another process holds locked stay."""
        entries = sorted(self._entries(), key=lambda e: e.last_used)
        total = sum(e.size for e in entries)
        for entry in entries:
            if total <= self.limit_bytes:
                break
            if entry.key == keep:
                continue
            with self._locked(entry.key, blocking=False) as got:
                if not got:
                    continue
                entry.sidecar.unlink(missing_ok=True)  # first: a file without its sidecar is no hit
                (self.root / entry.key).unlink(missing_ok=True)
            total -= entry.size
