"""One contract for every artifact store backend: the folder (the default) and the object store, on a real
S3 server (SeaweedFS, ``s3_server``), each test on its own prefix. Then what only the object store has:
the server's own checksum check, the per-host cache (eviction, one download per host with real processes)
and the store's faults (stopped server, wrong secret, missing bucket) in one line each."""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore
import pytest
from obstore.store import from_url

from storage.artifacts import ArtifactStore
from storage.errors import ArtifactError, StoreUnavailable
from storage.folder_store import FolderStore
from storage.object_store import RETRY_TIMEOUT, ObjectStore
from tests.s3server import S3Server, checksum_header

MB = 1 << 20


@dataclass
class Backend:
    store: ArtifactStore
    #: Overwrite a key's stored bytes behind the store's back (bit rot, a foreign writer).
    tamper: Callable[[str, bytes], object]


def _object_store(server: S3Server, prefix: str, tmp: Path, **kwargs: Any) -> ObjectStore:
    options = server.options(**kwargs.pop("options", {}))
    return ObjectStore(
        server.url(prefix),
        cache_dir=kwargs.pop("cache_dir", tmp / "cache"),
        scratch_dir=tmp / "scratch",
        cache_limit_bytes=kwargs.pop("cache_limit_bytes", 64 * MB),
        options=options,
    )


@pytest.fixture(params=["folder", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "folder":
        folder = FolderStore(tmp_path / "artifacts")
        return Backend(folder, lambda key, data: folder.absolute(key).write_bytes(data))
    server: S3Server = request.getfixturevalue("s3_server")
    prefix: str = request.getfixturevalue("s3_prefix")
    options = server.options()
    raw = from_url(server.url(prefix), client_options={"allow_http": options.pop("allow_http")}, **options)
    return Backend(_object_store(server, prefix, tmp_path), lambda key, data: obstore.put(raw, key, data))


@pytest.fixture
def s3(s3_server: S3Server, s3_prefix: str, tmp_path: Path) -> ObjectStore:
    return _object_store(s3_server, s3_prefix, tmp_path)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The contract, on both backends.


def test_write_once_and_read_back(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    stored = store.write_bytes("runs/r1/attempt-1/log.txt", b"abc")
    assert (stored.path, stored.sha256, stored.size) == ("runs/r1/attempt-1/log.txt", sha(b"abc"), 3)
    assert store.read_bytes("runs/r1/attempt-1/log.txt", stored.sha256) == b"abc"
    store.verify("runs/r1/attempt-1/log.txt", stored.sha256)
    src = tmp_path / "fig.png"
    src.write_bytes(b"\x89PNG" * 1000)
    copied = store.write_file("runs/r1/attempt-1/fig.png", src)
    assert (copied.sha256, copied.size) == (sha(src.read_bytes()), 4000)
    assert store.exists("runs/r1/attempt-1/fig.png") and not store.exists("runs/r1/attempt-1/nope")


def test_same_bytes_retry_counts_as_done(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    first = store.write_bytes("a/k.bin", b"same")
    assert store.write_bytes("a/k.bin", b"same") == first
    src = tmp_path / "k.bin"
    src.write_bytes(b"same")
    assert store.write_file("a/k.bin", src) == first


def test_other_bytes_are_refused_naming_the_key(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    first = store.write_bytes("a/once.bin", b"first")
    with pytest.raises(ArtifactError, match="a/once.bin") as info:
        store.write_bytes("a/once.bin", b"second")
    assert "already stored with other content" in str(info.value)
    src = tmp_path / "other"
    src.write_bytes(b"third")
    with pytest.raises(ArtifactError, match="written once"):
        store.write_file("a/once.bin", src)
    assert store.read_bytes("a/once.bin", first.sha256) == b"first"


def test_replace_overwrites(backend: Backend) -> None:
    store = backend.store
    store.write_bytes("sweeps/s/report/index.html", b"v1")
    again = store.write_bytes("sweeps/s/report/index.html", b"v2", replace=True)
    assert store.read_bytes("sweeps/s/report/index.html", again.sha256) == b"v2"


def test_a_mismatch_on_read_is_refused_naming_the_key(backend: Backend) -> None:
    store = backend.store
    good = store.write_bytes("runs/r/attempt-1/ckpt/model.keras", b"good weights")
    backend.tamper("runs/r/attempt-1/ckpt/model.keras", b"flipped bits")
    for read in (store.read_bytes, store.verify, store.local_copy):
        with pytest.raises(ArtifactError, match="runs/r/attempt-1/ckpt/model.keras") as info:
            read("runs/r/attempt-1/ckpt/model.keras", good.sha256)
        assert "corrupt" in str(info.value) and "\n" not in str(info.value)


def test_a_missing_key_is_named(backend: Backend) -> None:
    for read in (backend.store.read_bytes, backend.store.verify, backend.store.local_copy):
        with pytest.raises(ArtifactError, match="missing: .*runs/r/gone.bin") as info:
            read("runs/r/gone.bin", sha(b""))
        assert "\n" not in str(info.value)


def test_listing_is_relative_to_the_store_with_sizes(backend: Backend) -> None:
    store = backend.store
    before = time.time() - 5
    store.write_bytes("runs/r/a.bin", b"123")
    store.write_bytes("runs/r/sub/b.bin", b"12345")
    store.write_bytes("runs/rr/c.bin", b"1")  # shares the prefix's letters, not its folder
    store.write_bytes("inputs/d.img", b"12")
    listed = store.list_files("")
    assert [(f.path, f.size) for f in listed] == [
        ("inputs/d.img", 2),
        ("runs/r/a.bin", 3),
        ("runs/r/sub/b.bin", 5),
        ("runs/rr/c.bin", 1),
    ]
    assert all(before < f.mtime < time.time() + 5 for f in listed)
    assert [f.path for f in store.list_files("runs/r")] == ["runs/r/a.bin", "runs/r/sub/b.bin"]
    assert [f.path for f in store.list_files("runs/r/a.bin")] == ["runs/r/a.bin"]
    assert store.list_files("runs/none") == []


def test_deletion(backend: Backend) -> None:
    store = backend.store
    store.write_bytes("runs/r/a.bin", b"1")
    store.write_bytes("runs/r/b.bin", b"2")
    store.delete("runs/r/a.bin")
    store.delete("runs/r/a.bin")  # already gone: no error
    assert not store.exists("runs/r/a.bin")
    assert [f.path for f in store.list_files("runs/r")] == ["runs/r/b.bin"]
    store.remove_empty_folders("runs/r")
    assert store.exists("runs/r/b.bin")
    # Deleted means written anew may carry other bytes.
    again = store.write_bytes("runs/r/a.bin", b"new")
    assert store.read_bytes("runs/r/a.bin", again.sha256) == b"new"


def test_stage_input_is_named_by_its_content(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    photo = tmp_path / "dog.JPG"
    photo.write_bytes(b"\xff\xd8 a dog")
    copy = tmp_path / "same-dog.jpg"
    copy.write_bytes(b"\xff\xd8 a dog")
    staged = store.stage_input(photo)
    assert staged.path == store.input_path(sha(b"\xff\xd8 a dog"), ".jpg") and staged.path.endswith(".jpg")
    assert store.stage_input(photo) == staged  # again: done
    assert store.stage_input(copy) == staged  # the same photo under another name: one object
    assert store.read_bytes(staged.path, staged.sha256) == b"\xff\xd8 a dog"


def test_scratch_round_trip(backend: Backend) -> None:
    store = backend.store
    key = "runs/r/attempt-2/ckpt/epoch-3.weights.h5"
    path = store.scratch_path(key)
    assert path.parent.is_dir() and path.name == "epoch-3.weights.h5"
    path.write_bytes(b"weights of epoch 3")
    stored = store.store_scratch(key)
    assert (stored.path, stored.sha256, stored.size) == (key, sha(b"weights of epoch 3"), 18)
    assert store.read_bytes(key, stored.sha256) == b"weights of epoch 3"
    store.discard_scratch("runs/r/attempt-2")
    assert store.read_bytes(key, stored.sha256) == b"weights of epoch 3"  # stored, whatever scratch is
    if not store.is_local:
        assert not path.exists()
    with pytest.raises(ArtifactError, match="runs/r/attempt-2/never.h5"):
        store.store_scratch("runs/r/attempt-2/never.h5")


def test_local_copy_puts_a_folders_keys_side_by_side(backend: Backend) -> None:
    store = backend.store
    state = store.write_bytes("runs/r/attempt-1/ckpt/state.json", b"{}")
    model = store.write_bytes("runs/r/attempt-1/ckpt/model.keras", b"model")
    state_path = store.local_copy(state.path, state.sha256)
    model_path = store.local_copy(model.path, model.sha256)
    assert state_path.parent == model_path.parent
    assert (state_path.name, model_path.name) == ("state.json", "model.keras")
    assert (state_path.read_bytes(), model_path.read_bytes()) == (b"{}", b"model")
    assert store.local_copy(model.path, model.sha256) == model_path  # again: the same file


def test_check_access(backend: Backend) -> None:
    backend.store.check_access()
    assert not [f for f in backend.store.list_files("") if "probe" in f.path]


# What only the object store has.


def test_the_server_verifies_the_checksum_it_is_sent(s3_server: S3Server, s3_prefix: str) -> None:
    """The write-once rule leans on the server refusing a body that does not match its SHA-256 header
    (moto, for one, accepts it): a raw signed PUT with a wrong ``x-amz-checksum-sha256``."""
    status, body = s3_server.request(
        "PUT", f"{s3_prefix}/bad.bin", b"data", {"x-amz-checksum-sha256": checksum_header(b"other")}
    )
    assert status == 400 and b"BadDigest" in body
    assert s3_server.request("GET", f"{s3_prefix}/bad.bin")[0] == 404
    good = {"x-amz-checksum-sha256": checksum_header(b"data")}
    assert s3_server.request("PUT", f"{s3_prefix}/good.bin", b"data", good)[0] == 200


def test_object_store_url_names_no_secret(s3: ObjectStore, s3_server: S3Server) -> None:
    assert s3.url.startswith(f"s3://{s3_server.bucket}/t/") and not s3.is_local
    assert s3_server.secret_key not in repr(vars(s3)) or s3_server.secret_key not in s3.url


def test_a_damaged_cached_copy_is_fetched_again(s3: ObjectStore) -> None:
    stored = s3.write_bytes("runs/r/m.keras", b"model bytes")
    path = s3.local_copy(stored.path, stored.sha256)
    path.write_bytes(b"model bytez")  # the cache's file rewritten in place
    assert s3.local_copy(stored.path, stored.sha256).read_bytes() == b"model bytes"


def test_cache_evicts_the_least_recently_used(s3_server: S3Server, s3_prefix: str, tmp_path: Path) -> None:
    store = _object_store(s3_server, s3_prefix, tmp_path, cache_limit_bytes=250)
    files = {name: store.write_bytes(f"runs/r/{name}", name.encode() * 100) for name in "abc"}
    store.local_copy(files["a"].path, files["a"].sha256)
    time.sleep(0.05)  # timestamps a filesystem tick apart
    store.local_copy(files["b"].path, files["b"].sha256)
    time.sleep(0.05)
    store.local_copy(files["a"].path, files["a"].sha256)  # a hit: a is now the most recently used
    time.sleep(0.05)
    store.local_copy(files["c"].path, files["c"].sha256)  # 300 bytes > 250: one must go, and it is b
    assert [store.cache.cached(f.path, f.sha256) for f in files.values()] == [True, False, True]
    assert not (store.cache.root / "runs/r/b").exists()
    # A file larger than the whole limit is still served (never the file just fetched).
    big = store.write_bytes("runs/r/big", b"x" * 1000)
    assert store.local_copy(big.path, big.sha256).stat().st_size == 1000


class _CountingStore(ObjectStore):
    """Counts each download in a file (one line each) and makes it slow, so racers overlap."""

    counter: Path

    def _chunks(self, key: str) -> Iterator[bytes]:
        with open(self.counter, "a") as fh:
            fh.write(f"{key}\n")
        time.sleep(0.5)
        yield from super()._chunks(key)


def _fetch_in_child(
    url: str, options: dict[str, Any], root: str, key: str, sha256: str, barrier: Any, results: Any
) -> None:
    try:
        store = _CountingStore(
            url,
            cache_dir=Path(root) / "cache",
            scratch_dir=Path(root) / "scratch",
            cache_limit_bytes=MB * 64,
            options=options,
        )
        store.counter = Path(root) / "downloads.txt"
        barrier.wait(timeout=30)
        results.put(hashlib.sha256(store.local_copy(key, sha256).read_bytes()).hexdigest())
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(repr(exc))


def test_one_download_per_host_for_three_processes(
    s3: ObjectStore, s3_server: S3Server, tmp_path: Path
) -> None:
    """Three processes of one host (one cache folder) want the same model at once: one GET."""
    stored = s3.write_bytes("runs/r/attempt-1/model.keras", b"m" * (2 * MB))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    args = (s3.url, s3_server.options(), str(tmp_path / "host"), stored.path, stored.sha256, barrier, results)
    procs = [ctx.Process(target=_fetch_in_child, args=args) for _ in range(3)]
    for proc in procs:
        proc.start()
    hashes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert hashes == [stored.sha256] * 3
    assert (tmp_path / "host" / "downloads.txt").read_text().splitlines() == [stored.path]


def test_a_stopped_store_fails_in_bounded_time_in_one_line(s3: ObjectStore, s3_server: S3Server) -> None:
    kept = s3.write_bytes("runs/r/before.bin", b"stored before the outage")
    s3_server.stop()
    try:
        for attempt in (
            lambda: s3.write_bytes("runs/r/during.bin", b"x"),
            lambda: s3.read_bytes(kept.path, kept.sha256),
            lambda: s3.list_files("runs"),
            s3.check_access,
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                attempt()
            assert time.monotonic() - started < RETRY_TIMEOUT.total_seconds() + 5
            message = str(info.value)
            assert "\n" not in message and s3.url in message and "unavailable" in message
            assert s3_server.secret_key not in message
    finally:
        s3_server.start()
    assert s3.read_bytes(kept.path, kept.sha256) == b"stored before the outage"
    s3.write_bytes("runs/r/during.bin", b"x")


def test_a_wrong_secret_is_one_line(s3_server: S3Server, s3_prefix: str, tmp_path: Path) -> None:
    store = _object_store(
        s3_server, s3_prefix, tmp_path, options={"secret_access_key": "not-the-secret-1234"}
    )
    for attempt in (store.check_access, lambda: store.write_bytes("a.bin", b"x")):
        with pytest.raises(ArtifactError) as info:
            attempt()
        message = str(info.value)
        assert not isinstance(info.value, StoreUnavailable)
        assert "\n" not in message and store.url in message and "refused" in message
        assert "HTTP 403" in message
        assert "not-the-secret-1234" not in message and s3_server.secret_key not in message


def test_a_missing_bucket_is_named(s3_server: S3Server, tmp_path: Path) -> None:
    store = ObjectStore(
        "s3://no-such-bucket-here/p",
        cache_dir=tmp_path / "c",
        scratch_dir=tmp_path / "s",
        cache_limit_bytes=MB,
        options=s3_server.options(),
    )
    for attempt in (store.check_access, lambda: store.read_bytes("a.bin", "0" * 64)):
        with pytest.raises(ArtifactError, match="bucket missing at s3://no-such-bucket-here/p") as info:
            attempt()
        assert "\n" not in str(info.value) and "NoSuchBucket" in str(info.value)


def test_credentials_from_the_environment(
    s3_server: S3Server, s3_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a worker does: only CONVLAB_ARTIFACTS_URL and the standard AWS_* variables."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    store = ObjectStore(
        s3_server.url(s3_prefix), cache_dir=tmp_path / "c", scratch_dir=tmp_path / "s", cache_limit_bytes=MB
    )
    store.check_access()
    stored = store.write_bytes("x.bin", b"from the environment")
    assert store.read_bytes("x.bin", stored.sha256) == b"from the environment"
