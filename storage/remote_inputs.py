"""``CONVLAB_CIFAR10`` and ``CONVLAB_WEIGHTS_DIR`` as object-store URLs: resolved to local paths, each
object fetched once per host into ``$CONVLAB_HOME/cache/inputs/<scheme>/<bucket>/<key>``, verified.

A local path is returned as it is: nothing here touches it. A URL is read through
:class:`storage.object_store.ObjectStore` rooted at its bucket (one owner of the URL, the credentials,
the retries and the one-line errors), whose per-host :class:`storage.artifact_cache.ArtifactCache` (one
lock per key, LRU under ``CONVLAB_CACHE_LIMIT_MB``) holds the copies.

**What is verified.** No database row records a sha256 for an input, so each object is checked against
the best the store offers, in this order:

1. ``<key>.sha256`` beside it (what ``sha256sum`` writes: the first word is the hex digest): the download
   is hashed and refused naming the key on a mismatch; the cached copy is versioned by that sha256.
2. Else the size and ETag a HEAD reports: the GET is bound to that ETag (``If-Match``) and its size
   checked; the cached copy is versioned by them, so an object replaced since (another ETag) is fetched
   again on the next resolve.

The store's own SHA-256 checksum (``x-amz-checksum-sha256``, which SeaweedFS and S3 return to a HEAD
sent with ``x-amz-checksum-mode: ENABLED``) is not used: obstore 0.12 neither sends that header nor
surfaces the checksum (``ObjectMeta`` has path, size, ETag, version; ``GetResult.attributes`` only the
content headers), and a presigned URL cannot carry the header signed (SeaweedFS answers 403). Each
resolve costs a HEAD and a small GET per object; a hit downloads nothing.

**Layouts.** A CIFAR-10 URL names an object (the tarball) or a prefix holding what a local folder may
hold (``worker.experiments.data._resolve_source``): the extracted files themselves, a
``cifar-10-batches-py/`` folder of them, or ``cifar-10-python.tar.gz``. A weights URL names a prefix
holding Keras's ``mobilenet_*_224_tf_no_top.h5`` files; only the files a run needs are fetched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from contract.inputs import (
    CIFAR_FOLDER,
    CIFAR_FOLDER_FILES,
    CIFAR_TARBALL,
    CIFAR_TEST_BATCH,
    WEIGHTS_FILE_NAMES,
)
from contract.settings import Settings, is_object_url, mask_url, split_object_url
from storage.errors import ArtifactError, StoreUnavailable
from storage.object_store import ObjectStore, ObjectVersion

SIDECAR_SUFFIX = ".sha256"
CIFAR_SETTING = "CONVLAB_CIFAR10"
WEIGHTS_SETTING = "CONVLAB_WEIGHTS_DIR"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


class RemoteInput:
    """One input setting that names an object store: its bucket's store, and the key (or prefix) in it."""

    def __init__(self, setting: str, url: str, settings: Settings, options: Mapping[str, Any] | None = None):
        scheme, bucket, self.key = split_object_url(url)
        self.setting = setting
        self.url = mask_url(url)
        self.store = ObjectStore(
            f"{scheme}://{bucket}",
            cache_dir=settings.input_cache_dir / scheme / bucket,
            scratch_dir=settings.scratch_dir,
            cache_limit_bytes=int(settings.cache_limit_mb * 1024 * 1024),
            options=options,
        )

    def refuse(self, key: str, reason: str, *, missing: bool = False) -> ArtifactError:
        """A refusal naming the setting; for something ``missing``, the bucket's absence when that is why
        (S3 answers a HEAD in a missing bucket as it answers one of a missing key)."""
        if missing and self.store.bucket_missing():
            where = self.store.describe(key) if key else self.store.url
            reason = f"bucket missing at {self.store.url} (looking for {where})"
        return ArtifactError(key, f"{self.setting}: {reason}")

    def _named(self, exc: ArtifactError) -> ArtifactError:
        """A store error with the setting in front, keeping its kind (an outage stays one)."""
        kind = StoreUnavailable if isinstance(exc, StoreUnavailable) else ArtifactError
        return kind(exc.path, f"{self.setting}: {exc.reason}")

    def version(self, key: str) -> ObjectVersion | None:
        try:
            return self.store.version_of(key)
        except ArtifactError as exc:
            raise self._named(exc) from None

    def expected_sha256(self, key: str) -> str | None:
        """The sha256 that ``<key>.sha256`` declares, or None when there is no such object."""
        sidecar = key + SIDECAR_SUFFIX
        try:
            data = self.store.read_if_exists(sidecar)
        except ArtifactError as exc:
            raise self._named(exc) from None
        if data is None:
            return None
        words = data.decode("ascii", errors="replace").split()
        if not words or not _SHA256.fullmatch(words[0].lower()):
            raise self.refuse(
                sidecar,
                f"{self.store.describe(sidecar)} is not a sha256 (64 hex digits, as sha256sum writes)",
            )
        return words[0].lower()

    def present(self, key: str) -> ObjectVersion:
        found = self.version(key)
        if found is None:
            raise self.refuse(key, f"missing: {self.store.describe(key)} does not exist", missing=True)
        return found

    def fetch(self, key: str) -> Path:
        """This host's verified copy of ``key`` (downloaded unless already cached at its version)."""
        version = self.present(key)
        sha256 = self.expected_sha256(key)
        try:
            return self.store.local_copy_of_version(version, sha256=sha256)
        except ArtifactError as exc:
            raise self._named(exc) from None

    def local_path(self, key: str) -> Path:
        """Where ``key`` (a file or a prefix) lies in this host's cache."""
        return self.store.cache.path_of(key) if key else self.store.cache.root


def open_input(
    setting: str, url: str, settings: Settings, *, options: Mapping[str, Any] | None = None
) -> RemoteInput:
    try:
        return RemoteInput(setting, url, settings, options)
    except ArtifactError as exc:
        raise ArtifactError(exc.path, f"{setting}: {exc.reason}") from None


# CIFAR-10.


def cifar10_layout(source: RemoteInput) -> tuple[str, tuple[str, ...]]:
    """(the key the local path will name, the keys to fetch), by the rule a local path follows: an
    object is the tarball; a prefix holds the extracted files, a ``cifar-10-batches-py/`` of them, or
    the tarball. HEADs only: nothing is downloaded."""
    key = source.key
    if key and source.version(key) is not None:
        return key, (key,)
    for folder in (key, _join(key, CIFAR_FOLDER)):
        if source.version(_join(folder, CIFAR_TEST_BATCH)) is not None:
            return folder, tuple(_join(folder, name) for name in CIFAR_FOLDER_FILES)
    tarball = _join(key, CIFAR_TARBALL)
    if source.version(tarball) is not None:
        return tarball, (tarball,)
    raise source.refuse(
        key,
        f"{source.url}: no such object, and no {CIFAR_FOLDER}/ (with {CIFAR_TEST_BATCH}) "
        f"nor {CIFAR_TARBALL} under it",
        missing=True,
    )


def local_cifar10(settings: Settings, *, options: Mapping[str, Any] | None = None) -> str | None:
    """``CONVLAB_CIFAR10`` as a local path the engine reads: itself when local (or unset), else this host's
    verified copy of the tarball or the extracted folder."""
    raw = settings.cifar10_path
    if raw is None or not is_object_url(raw):
        return raw
    source = open_input(CIFAR_SETTING, raw, settings, options=options)
    target, keys = cifar10_layout(source)
    fetched = [source.fetch(key) for key in keys]
    if not all(path.is_file() for path in fetched):
        # The cache evicted an earlier file of the folder to make room for a later one.
        raise source.refuse(
            target,
            f"the {len(keys)} files under {source.url} do not fit in the input cache "
            f"(CONVLAB_CACHE_LIMIT_MB={settings.cache_limit_mb:g}); raise it",
        )
    return str(source.local_path(target))


def check_cifar10(settings: Settings, *, options: Mapping[str, Any] | None = None) -> None:
    """The store answers with these credentials, the bucket exists and every object a training will read
    is there (HEADs, and the small GET of any ``.sha256``: read access); nothing is downloaded or
    written. Raises :class:`ArtifactError` in one line naming the setting and the URL."""
    raw = settings.cifar10_path
    if raw is None or not is_object_url(raw):
        return
    source = open_input(CIFAR_SETTING, raw, settings, options=options)
    _target, keys = cifar10_layout(source)
    for key in keys:
        source.present(key)
        source.expected_sha256(key)


# Weights.


def local_weights_dir(
    settings: Settings, names: Iterable[str], *, options: Mapping[str, Any] | None = None
) -> str | None:
    """``CONVLAB_WEIGHTS_DIR`` as a local folder: itself when local (or unset), else this host's cache
    folder of the prefix, holding verified copies of ``names`` (the weight files a run needs)."""
    raw = settings.weights_dir
    if raw is None or not is_object_url(raw):
        return raw
    source = open_input(WEIGHTS_SETTING, raw, settings, options=options)
    for name in dict.fromkeys(names):
        source.fetch(_join(source.key, name))
    return str(source.local_path(source.key))


def check_weights(
    settings: Settings, names: Iterable[str] | None = None, *, options: Mapping[str, Any] | None = None
) -> None:
    """``names`` (or, when None, at least one of Keras's MobileNet weight files) exist under the
    prefix, readable with these credentials; nothing is downloaded or written."""
    raw = settings.weights_dir
    if raw is None or not is_object_url(raw):
        return
    source = open_input(WEIGHTS_SETTING, raw, settings, options=options)
    if names is not None:
        for name in dict.fromkeys(names):
            key = _join(source.key, name)
            source.present(key)
            source.expected_sha256(key)
        return
    found = [n for n in WEIGHTS_FILE_NAMES if source.version(_join(source.key, n)) is not None]
    if not found:
        raise source.refuse(
            source.key,
            f"{source.url} holds none of Keras's MobileNet weight files ({', '.join(WEIGHTS_FILE_NAMES)})",
        )
    source.expected_sha256(_join(source.key, found[0]))
