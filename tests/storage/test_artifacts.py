from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.artifacts import sha256_file
from storage.errors import ArtifactError
from storage.folder_store import FolderStore


@pytest.fixture
def store(convlab_home: Path) -> FolderStore:
    return FolderStore(convlab_home / "artifacts")


def test_write_and_read_back(store: FolderStore, tmp_path: Path) -> None:
    stored = store.write_bytes("r-1/weights.bin", b"abc")
    assert stored.path == "r-1/weights.bin" and stored.size == 3
    assert store.read_bytes("r-1/weights.bin", stored.sha256) == b"abc"
    assert sha256_file(store.absolute("r-1/weights.bin")) == stored.sha256
    assert store.absolute(store.run_dir("r-1")) == store.root / "runs" / "r-1"
    assert store.attempt_dir("r-1", 3) == "runs/r-1/attempt-3"
    assert store.write_bytes("r-1/weights.bin", b"abc") == stored  # a retried write: done
    with pytest.raises(ArtifactError, match="written once"):
        store.write_bytes("r-1/weights.bin", b"abcd")
    again = store.write_bytes("r-1/weights.bin", b"abcd", replace=True)  # replaces atomically
    assert store.read_bytes("r-1/weights.bin", again.sha256) == b"abcd"
    src = tmp_path / "src.png"
    src.write_bytes(b"\x89PNG" * 1000)
    copied = store.write_file("r-1/img/a.png", src)
    assert copied.sha256 == sha256_file(src) and copied.size == 4000
    assert not [p for p in store.absolute("r-1").rglob("*.tmp")]


def test_corrupted_artifact_names_the_file(store: FolderStore) -> None:
    stored = store.write_bytes("r-1/ckpt.keras", b"good weights")
    store.absolute("r-1/ckpt.keras").write_bytes(b"flipped bits")
    with pytest.raises(ArtifactError, match="r-1/ckpt.keras") as info:
        store.read_bytes("r-1/ckpt.keras", stored.sha256)
    assert "corrupt" in str(info.value)
    with pytest.raises(ArtifactError, match="corrupt"):
        store.verify("r-1/ckpt.keras", stored.sha256)


def test_missing_artifact_names_the_file(store: FolderStore) -> None:
    with pytest.raises(ArtifactError, match="r-1/gone.png") as info:
        store.read_bytes("r-1/gone.png", "0" * 64)
    assert "missing" in str(info.value)


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/../../b", "a/./b", "a\\b", "a\x00b", "", "a//b", "~/x", ".."]
)
def test_path_traversal_is_rejected(store: FolderStore, name: str) -> None:
    with pytest.raises(ArtifactError):
        store.write_bytes(name, b"x")
    with pytest.raises(ArtifactError):
        store.absolute(name)


def test_symlink_out_of_the_root_is_rejected(store: FolderStore, tmp_path: Path) -> None:
    store.root.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)
    with pytest.raises(ArtifactError, match="outside"):
        store.write_bytes("link/x", b"x")


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    # The test process is single-threaded here, so setting the umask affects nothing else.
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_get_the_same_mode_as_open(store: FolderStore, tmp_path: Path, umask: int) -> None:
    folder = store.absolute("r-1")
    folder.mkdir(parents=True)
    with open(folder / "plain.bin", "wb") as fh:  # as Keras's model.save and the report write files
        fh.write(b"x")
    expected = 0o666 & ~umask
    assert _mode(folder / "plain.bin") == expected

    store.write_bytes("r-1/bytes.bin", b"x")
    src = tmp_path / "src.bin"
    src.write_bytes(b"y")
    src.chmod(0o600)  # as tempfile.mkstemp leaves a file: its mode must not be passed on
    store.write_file("r-1/copied.bin", src)
    store.write_bytes("r-1/plain.bin", b"replaced", replace=True)  # replacing a file made by open()

    modes = {p.name: _mode(p) for p in folder.iterdir()}
    assert modes == {"plain.bin": expected, "bytes.bin": expected, "copied.bin": expected}


def test_umask_is_read_without_changing_it(umask: int) -> None:
    from storage import artifacts

    from_proc = artifacts._umask_from_proc()
    if from_proc is not None:  # Linux 4.7+
        assert from_proc == umask
    assert artifacts._umask_by_setting() == umask
    assert artifacts.current_umask() == umask
    assert os.umask(umask) == umask  # still in place after all three reads


def test_fallback_umask_read_is_consistent_across_threads(umask: int) -> None:
    """Without /proc the umask is read by setting it and back; the lock keeps threads from seeing each
    other's temporary value (without it, some reads here return 0o077)."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from storage import artifacts

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, between the two umask calls too
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            seen = set(pool.map(lambda _: artifacts._umask_by_setting(), range(20_000)))
    finally:
        sys.setswitchinterval(interval)
    assert seen == {umask}
    assert os.umask(umask) == umask


def test_a_write_that_finds_the_disk_full_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    from tests.filesystems import small_filesystem

    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 2_000_000)
    with small_filesystem(tmp_path / "small", 1) as small:
        store = FolderStore(small / "artifacts")
        for write in (
            lambda: store.write_bytes("runs/r-1/attempt-1/big.png", b"\0" * 2_000_000),
            lambda: store.write_file("runs/r-1/attempt-1/big.png", big),
        ):
            with pytest.raises(ArtifactError) as caught:
                write()
            assert caught.value.reason.startswith(f"disk full under {store.root} (needs ~2.0 MB, ")
            assert "\n" not in str(caught.value)
            assert store.list_files() == []  # the temporary file is gone


def test_listing_and_deleting(store: FolderStore) -> None:
    store.write_bytes("runs/r-1/attempt-2/checkpoint/model-e0001.keras", b"abc")
    store.write_bytes("inputs/x.jpg", b"de")
    listed = store.list_files()
    assert [(f.path, f.size) for f in listed] == [
        ("inputs/x.jpg", 2),
        ("runs/r-1/attempt-2/checkpoint/model-e0001.keras", 3),
    ]
    assert all(f.mtime > 0 for f in listed)
    assert [f.path for f in store.list_files("runs/r-1")] == [listed[1].path]
    assert store.attempt_of(listed[1].path) == ("r-1", 2) and store.attempt_of("inputs/x.jpg") is None
    assert store.is_temporary("runs/r-1/attempt-2/.model-e0001.keras.12.tmp.keras")
    assert not store.is_temporary(listed[1].path)
    store.delete(listed[1].path)
    store.delete(listed[1].path)  # already gone: no error
    store.remove_empty_folders("runs/r-1/attempt-2")
    assert not store.absolute("runs/r-1/attempt-2").exists() and store.absolute("runs/r-1").is_dir()
    assert [f.path for f in store.list_files()] == ["inputs/x.jpg"]
