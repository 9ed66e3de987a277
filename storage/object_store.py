"""The artifact store as an object store (S3 and S3-compatible servers; GCS and Azure through the same
library), on obstore: one API over all of them, with the conditional (create-only) PUT write-once needs.

- **Written once, by a create-only PUT** (``If-None-Match: *``) carrying the SHA-256 of the body, which
  the server verifies (``checksum_algorithm="sha256"`` makes obstore send ``x-amz-checksum-sha256``). A PUT
  that finds its key taken downloads it: the same sha256 is a retried upload, done; other bytes are
  refused naming the key (``replace=True``, the published report copy only, overwrites instead).
- **Single PUTs, bodies in memory**: a multipart upload cannot be create-only, and convlab's largest
  objects (checkpoints) are at most ~50 MB, which a worker holds in memory without trouble.
- **Reads are verified**: every GET is hashed and compared; ``local_copy`` goes through this host's
  verified cache (:mod:`storage.artifact_cache`), so Keras and matplotlib read local files.
- **Scratch files** are local (``scratch_dir/<key>``): Keras writes there, ``store_scratch`` uploads.
- **Every error is one line** naming the URL and key (never credentials): obstore's own messages span
  dozens of lines (``Debug source: ...``); only their first line, trimmed, is kept. A store that cannot
  be reached within the bounded retries raises :class:`storage.errors.StoreUnavailable`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import from_url

from contract.settings import mask_url
from storage.artifact_cache import ArtifactCache
from storage.artifacts import (
    ArtifactStore,
    ListedFile,
    StoredFile,
    corrupt,
    refuse_other_bytes,
)
from storage.errors import ArtifactError, StoreUnavailable

# How long one operation keeps retrying an unreachable or failing (5xx) store before it gives up with
# StoreUnavailable. Short on purpose: the worker's own retry of the attempt (from its last committed
# checkpoint) is the long-term answer to an outage, and the heartbeat must not wait behind a dead store.
MAX_RETRIES = 3
RETRY_TIMEOUT = timedelta(seconds=30)
CONNECT_TIMEOUT = "5s"
# One whole request, body included: a 50 MB checkpoint over a slow link must still fit.
REQUEST_TIMEOUT = "120s"
# The longest piece of a server's message kept in an error (an S3 error body is XML, rarely useful).
MESSAGE_LIMIT = 200

_PROBE_FOLDER = ".convlab-probe"
_XML = re.compile(r"\s*<\?xml.*$", re.DOTALL)
_CLIENT_ERROR = re.compile(r"status code: 4\d\d")
_STATUS = re.compile(r"status code: (\d{3}[^:<]*)")
_S3_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")
_RETRIED = re.compile(r" in ([0-9.]+\S*), after (\d+) retries.*? - (.+)$")


def first_line(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """What an obstore error says, in one short line: the HTTP status and S3 error code when the server
    answered (``HTTP 403 Forbidden (SignatureDoesNotMatch)``), the cause and the retries when it did not
    (``error sending request (after 3 retries in 0.6s)``), else the first line without its XML body; cut
    to :data:`MESSAGE_LIMIT`, any secret hidden (none is known to appear: a second fence). The URL and key
    are not repeated: the caller names them."""
    full = str(exc).strip()
    line = full.splitlines()[0] if full else type(exc).__name__
    if status := _STATUS.search(line):
        code = _S3_CODE.search(full)
        text = f"HTTP {status[1].strip()}" + (f" ({code[1]})" if code else "")
    elif retried := _RETRIED.search(line):
        text = f"{retried[3].strip()} (after {retried[2]} retries in {retried[1]})"
    else:
        text = _XML.sub("", line).rstrip(" :")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _no_bucket(exc: BaseException) -> bool:
    return "NoSuchBucket" in str(exc) or "NoSuchContainer" in str(exc)


def _is_missing(exc: BaseException) -> bool:
    """A missing object (not a missing bucket, which S3 also answers with 404). obstore raises the
    builtin FileNotFoundError for it (NotFoundError for some stores)."""
    return isinstance(exc, FileNotFoundError | NotFoundError) and not _no_bucket(exc)


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a key, as a HEAD saw it."""

    key: str
    size: int
    etag: str | None


class ObjectStore(ArtifactStore):
    is_local = False

    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path,
        scratch_dir: Path,
        cache_limit_bytes: int,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """``url``: ``s3://bucket/prefix`` (or ``gs://``, ``az://``); credentials and endpoint come from the
        standard environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), or ``options`` (the
        store's config keys, for tests). Connects to nothing: :meth:`check_access` does."""
        self.url = mask_url(url.rstrip("/"))
        self.scratch_dir = Path(scratch_dir).absolute()
        self.cache = ArtifactCache(Path(cache_dir), cache_limit_bytes)
        config: dict[str, Any] = dict(options or {})
        client: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "timeout": REQUEST_TIMEOUT}
        # A client option in obstore, not a store one; obstore reads AWS_ALLOW_HTTP only when it builds
        # the client options itself, so it is passed on here.
        if "allow_http" in config:
            client["allow_http"] = bool(config.pop("allow_http"))
        elif os.environ.get("AWS_ALLOW_HTTP", "").strip().lower() in ("1", "true", "yes"):
            client["allow_http"] = True
        if self.url.startswith("s3://"):
            # The server verifies each PUT's body against the SHA-256 obstore sends with it.
            config.setdefault("checksum_algorithm", "sha256")
        self._secrets = tuple(
            str(v)
            for k, v in {**os.environ, **config}.items()
            if "secret" in k.lower() or "password" in k.lower() or k.lower().endswith("token")
        )
        try:
            self._store = from_url(  # type: ignore[call-overload]  # config keys vary by scheme
                url.rstrip("/"),
                retry_config={"max_retries": MAX_RETRIES, "retry_timeout": RETRY_TIMEOUT},
                client_options=client,
                **config,
            )
        except BaseError as exc:
            raise ArtifactError(".", f"cannot open {self.url}: {first_line(exc, self._secrets)}") from None

    # Errors, in one line each.

    def _fail(self, key: str, what: str, exc: BaseException) -> NoReturn:
        where = f"{self.url}/{key}" if key else self.url
        detail = first_line(exc, self._secrets)
        if _no_bucket(exc):
            raise ArtifactError(key, f"bucket missing at {self.url}: {detail}") from None
        if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
            raise ArtifactError(key, f"{what} refused at {where} (credentials?): {detail}") from None
        if _is_missing(exc):
            raise ArtifactError(key, f"missing: {where} does not exist") from None
        if isinstance(exc, BaseError) and not _CLIENT_ERROR.search(str(exc)):
            # Connection refused, timeouts, 5xx after the bounded retries: the store is down.
            raise StoreUnavailable(key, f"{what} failed at {where}, store unavailable: {detail}") from None
        raise ArtifactError(key, f"{what} failed at {where}: {detail}") from None

    # Raw operations on one key.

    def _put(self, key: str, data: bytes, *, create: bool) -> bool:
        """Upload ``data``; False when ``create`` and the key already exists."""
        try:
            obstore.put(self._store, key, data, mode="create" if create else "overwrite", use_multipart=False)
        except (AlreadyExistsError, PreconditionError) as exc:
            if create:
                return False
            self._fail(key, "upload", exc)
        except BaseError as exc:
            self._fail(key, "upload", exc)
        return True

    def _chunks(self, key: str, *, if_match: str | None = None) -> Iterator[bytes]:
        """The key's bytes, streamed; with ``if_match``, only the version that ETag names (a key replaced
        since is refused, not read half old and half new)."""
        try:
            result = obstore.get(self._store, key, options={"if_match": if_match} if if_match else None)
            for chunk in result:
                yield bytes(chunk)
        except PreconditionError:
            raise ArtifactError(key, f"changed while downloaded: {self.url}/{key}; try again") from None
        except (BaseError, FileNotFoundError) as exc:
            self._fail(key, "download", exc)

    def _get(self, key: str) -> bytes | None:
        """The key's bytes, or None if it does not exist."""
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except (BaseError, FileNotFoundError) as exc:
            if _is_missing(exc):
                return None
            self._fail(key, "download", exc)

    def _store_bytes(self, key: str, data: bytes, sha256: str, *, replace: bool) -> StoredFile:
        stored = StoredFile(key, sha256, len(data))
        if replace:
            self._put(key, data, create=False)
            return stored
        for _ in range(2):  # a second round only if the key vanished between the PUT and the GET
            if self._put(key, data, create=True):
                return stored
            existing = self._get(key)
            if existing is None:
                continue
            existing_sha256 = hashlib.sha256(existing).hexdigest()
            if existing_sha256 == sha256:
                return stored  # a retried upload: already done
            raise refuse_other_bytes(key, existing_sha256, sha256)
        raise ArtifactError(key, f"upload to {self.url}/{key} raced with a deletion twice")

    # Writing.

    def write_bytes(self, relpath: str, data: bytes, *, replace: bool = False) -> StoredFile:
        key = self.validate_name(relpath)
        return self._store_bytes(key, bytes(data), hashlib.sha256(data).hexdigest(), replace=replace)

    def write_file(self, relpath: str, src: Path, *, replace: bool = False) -> StoredFile:
        key = self.validate_name(relpath)
        # Read whole: a single create-only PUT needs the body, and files are at most ~50 MB.
        data = self._read_local(key, Path(src))
        return self._store_bytes(key, data, hashlib.sha256(data).hexdigest(), replace=replace)

    @staticmethod
    def _read_local(key: str, src: Path) -> bytes:
        try:
            return src.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(key, f"missing: {src} was not written") from None
        except OSError as exc:
            raise ArtifactError(key, f"unreadable: {src}: {exc.strerror or exc}") from None

    def stage_input(self, src: Path) -> StoredFile:
        """Content-named, so the key is the same from every host; a key holding other bytes than its
        name says is a damaged copy and is replaced (as the folder backend does)."""
        data = self._read_local(str(src), Path(src))
        sha256 = hashlib.sha256(data).hexdigest()
        key = self.input_path(sha256, Path(src).suffix)
        try:
            return self._store_bytes(key, data, sha256, replace=False)
        except StoreUnavailable:
            raise
        except ArtifactError as exc:
            if "already stored with other content" not in exc.reason:
                raise
            return self._store_bytes(key, data, sha256, replace=True)

    def scratch_path(self, relpath: str) -> Path:
        path = self.scratch_dir / self.validate_name(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def store_scratch(self, relpath: str) -> StoredFile:
        key = self.validate_name(relpath)
        return self.write_file(key, self.scratch_dir / key)

    def discard_scratch(self, prefix: str) -> None:
        path = self.scratch_dir / self.validate_name(prefix)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    # Reading.

    def read_bytes(self, relpath: str, sha256: str) -> bytes:
        key = self.validate_name(relpath)
        data = self._get(key)
        if data is None:
            raise ArtifactError(key, f"missing: {self.url}/{key} does not exist")
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise corrupt(key, actual, sha256, f"{self.url}/{key}")
        return data

    def verify(self, relpath: str, sha256: str) -> None:
        """Streams the object through the hash (a checkpoint is not held in memory to check it)."""
        key = self.validate_name(relpath)
        digest = hashlib.sha256()
        for chunk in self._chunks(key):
            digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise corrupt(key, digest.hexdigest(), sha256, f"{self.url}/{key}")

    def local_copy(self, relpath: str, sha256: str) -> Path:
        key = self.validate_name(relpath)

        def download(out: BinaryIO) -> None:
            for chunk in self._chunks(key):
                out.write(chunk)

        return self.cache.fetch(key, sha256, download, where=f"downloaded from {self.url}/{key}")

    # Objects nobody recorded a sha256 for (inputs a user uploaded): pinned by what the store says.

    def version_of(self, relpath: str) -> ObjectVersion | None:
        """The key's size and ETag (a HEAD), or None if it does not exist."""
        key = self.validate_name(relpath)
        try:
            meta = obstore.head(self._store, key)
        except (BaseError, FileNotFoundError) as exc:
            if _is_missing(exc):
                return None
            self._fail(key, "HEAD", exc)
        return ObjectVersion(key, int(meta["size"]), meta.get("e_tag"))

    def bucket_missing(self) -> bool:
        """Whether the bucket (container) is known not to exist: S3 answers a HEAD of a key in a missing
        bucket with a bare 404, like a missing key, so a LIST (which names NoSuchBucket) tells them apart.
        False when the listing shows the bucket, or cannot say (credentials that may not list)."""
        try:
            next(iter(obstore.list(self._store, prefix=_PROBE_FOLDER, chunk_size=1)), None)
        except (BaseError, FileNotFoundError) as exc:
            return _no_bucket(exc)
        return False

    def read_if_exists(self, relpath: str) -> bytes | None:
        """A small object's bytes (a ``.sha256`` sidecar), or None if it does not exist."""
        return self._get(self.validate_name(relpath))

    def local_copy_of_version(self, version: ObjectVersion, *, sha256: str | None) -> Path:
        """A verified copy of the object at ``version`` in this host's cache, downloaded at most once: its
        bytes hashed against ``sha256`` when one is known, else its size checked and its GET bound to the
        ETag (``If-Match``). The cache version is the sha256, or the ETag and size: an object replaced
        since it was cached has another ETag and is fetched again."""
        key = version.key
        pin = sha256 or "etag-" + hashlib.sha256(f"{version.etag} {version.size}".encode()).hexdigest()[:40]

        def download(out: BinaryIO) -> None:
            for chunk in self._chunks(key, if_match=version.etag):
                out.write(chunk)

        return self.cache.fetch_version(
            key, pin, download, where=f"downloaded from {self.url}/{key}", sha256=sha256, size=version.size
        )

    # Listing and removal.

    def list_files(self, prefix: str = "") -> list[ListedFile]:
        key = self.validate_name(prefix) if prefix else None
        found: list[ListedFile] = []
        try:
            for page in obstore.list(self._store, prefix=key):
                for meta in page:
                    found.append(ListedFile(meta["path"], meta["size"], meta["last_modified"].timestamp()))
            if key and not found:  # a prefix naming one key lists that key, as in the folder backend
                meta = obstore.head(self._store, key)
                found.append(ListedFile(meta["path"], meta["size"], meta["last_modified"].timestamp()))
        except (BaseError, FileNotFoundError) as exc:
            if not _is_missing(exc):
                self._fail(key or "", "listing", exc)
        return sorted(found, key=lambda f: f.path)

    def delete(self, relpath: str) -> None:
        key = self.validate_name(relpath)
        try:
            obstore.delete(self._store, key)  # S3's DELETE of a missing key succeeds
        except (BaseError, FileNotFoundError) as exc:
            if not _is_missing(exc):
                self._fail(key, "delete", exc)

    def exists(self, relpath: str) -> bool:
        key = self.validate_name(relpath)
        try:
            obstore.head(self._store, key)
        except (BaseError, FileNotFoundError) as exc:
            if _is_missing(exc):
                return False
            self._fail(key, "HEAD", exc)
        return True

    def check_access(self) -> None:
        """Write, read back and delete a probe key: the store is reachable, the bucket exists, and these
        credentials may write and read it."""
        key = f"{_PROBE_FOLDER}/{socket.gethostname()}-{os.getpid()}"
        body = f"convlab probe from {key}\n".encode()
        try:
            obstore.put(self._store, key, body, use_multipart=False)
            got = bytes(obstore.get(self._store, key).bytes())
            obstore.delete(self._store, key)
        except (BaseError, FileNotFoundError) as exc:
            self._fail(key, "access check", exc)
        if got != body:
            raise ArtifactError(key, f"access check at {self.url}/{key}: read back other bytes than written")
