from __future__ import annotations

from pathlib import Path

import pytest

from storage.artifacts import ArtifactStore, sha256_file
from storage.errors import ArtifactError


@pytest.fixture
def store(convlab_home: Path) -> ArtifactStore:
    return ArtifactStore(convlab_home / "artifacts")


def test_write_and_read_back(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.write_bytes("r-1/weights.bin", b"abc")
    assert stored.path == "r-1/weights.bin" and stored.size == 3
    assert store.read_bytes("r-1/weights.bin", stored.sha256) == b"abc"
    assert sha256_file(store.absolute("r-1/weights.bin")) == stored.sha256
    assert store.run_dir("r-1") == store.absolute("r-1")
    again = store.write_bytes("r-1/weights.bin", b"abcd")  # replaces atomically
    assert store.read_bytes("r-1/weights.bin", again.sha256) == b"abcd"
    src = tmp_path / "src.png"
    src.write_bytes(b"\x89PNG" * 1000)
    copied = store.write_file("r-1/img/a.png", src)
    assert copied.sha256 == sha256_file(src) and copied.size == 4000
    assert not [p for p in store.absolute("r-1").rglob("*.tmp")]


def test_corrupted_artifact_names_the_file(store: ArtifactStore) -> None:
    stored = store.write_bytes("r-1/ckpt.keras", b"good weights")
    store.absolute("r-1/ckpt.keras").write_bytes(b"flipped bits")
    with pytest.raises(ArtifactError, match="r-1/ckpt.keras") as info:
        store.read_bytes("r-1/ckpt.keras", stored.sha256)
    assert "corrupt" in str(info.value)
    with pytest.raises(ArtifactError, match="corrupt"):
        store.verify("r-1/ckpt.keras", stored.sha256)


def test_missing_artifact_names_the_file(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match="r-1/gone.png") as info:
        store.read_bytes("r-1/gone.png", "0" * 64)
    assert "missing" in str(info.value)


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/../../b", "a/./b", "a\\b", "a\x00b", "", "a//b", "~/x", ".."]
)
def test_path_traversal_is_rejected(store: ArtifactStore, name: str) -> None:
    with pytest.raises(ArtifactError):
        store.write_bytes(name, b"x")
    with pytest.raises(ArtifactError):
        store.absolute(name)


def test_symlink_out_of_the_root_is_rejected(store: ArtifactStore, tmp_path: Path) -> None:
    store.root.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)
    with pytest.raises(ArtifactError, match="outside"):
        store.write_bytes("link/x", b"x")
