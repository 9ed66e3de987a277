"""``CONVLAB_CIFAR10`` / ``CONVLAB_WEIGHTS_DIR`` as object-store URLs, on a real S3 server (SeaweedFS):
fetched once per host, verified (a ``.sha256`` sidecar, else size and ETag), every fault in one line
naming the setting and the URL, never the secret."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import obstore
import pytest
from obstore.store import from_url

from contract.inputs import CIFAR_FOLDER_FILES, weights_file_name
from contract.settings import Settings, load_settings
from storage import remote_inputs
from storage.errors import ArtifactError
from tests.datagen import write_tiny_cifar10
from tests.s3server import S3Server

WEIGHTS = weights_file_name(0.25)


class Bucket:
    """Uploads behind the resolver's back, as a user's ``aws s3 cp`` would."""

    def __init__(self, server: S3Server, prefix: str) -> None:
        options = server.options()
        self.server = server
        self.prefix = prefix
        client = {"allow_http": options.pop("allow_http")}
        self._raw = from_url(server.url(), client_options=client, **options)

    def put(self, key: str, data: bytes) -> str:
        obstore.put(self._raw, f"{self.prefix}/{key}", data, use_multipart=False)
        return self.url(key)

    def put_folder(self, folder: Path, under: str) -> None:
        for file in sorted(folder.iterdir()):
            self.put(f"{under}/{file.name}".replace("//", "/"), file.read_bytes())

    def url(self, key: str = "") -> str:
        return self.server.url(f"{self.prefix}/{key}".rstrip("/"))


@pytest.fixture
def bucket(s3_server: S3Server, s3_prefix: str) -> Bucket:
    return Bucket(s3_server, s3_prefix)


def settings_for(home: Path, **env: str) -> Settings:
    return load_settings({"CONVLAB_HOME": str(home), **env})


def cifar(tmp_path: Path, server: S3Server, url: str, **overrides: Any) -> str | None:
    settings = settings_for(tmp_path / "home", CONVLAB_CIFAR10=url)
    return remote_inputs.local_cifar10(settings, options=server.options(**overrides))


@pytest.fixture
def tarball(tmp_path: Path) -> bytes:
    return write_tiny_cifar10(tmp_path / "data", n_train=20, n_test=10, as_tar=True).read_bytes()


def one_line(exc: pytest.ExceptionInfo[ArtifactError]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# Fetched once, where the cache says.


def test_a_tarball_url_is_fetched_once_into_the_hosts_cache(
    bucket: Bucket, s3_server: S3Server, tmp_path: Path, tarball: bytes
) -> None:
    url = bucket.put("data/cifar-10-python.tar.gz", tarball)
    local = Path(cifar(tmp_path, s3_server, url) or "")
    cache = tmp_path / "home" / "cache" / "inputs" / "s3" / s3_server.bucket
    assert local == cache / bucket.prefix / "data" / "cifar-10-python.tar.gz"
    assert local.read_bytes() == tarball
    first = local.stat()

    assert cifar(tmp_path, s3_server, url) == str(local)
    again = local.stat()
    # Not downloaded again: a download writes a new file and renames it in place (another inode).
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)


def test_a_local_path_is_left_as_it_is(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", CONVLAB_CIFAR10="rel/cifar.tar.gz", CONVLAB_WEIGHTS_DIR="w")
    assert remote_inputs.local_cifar10(settings) == "rel/cifar.tar.gz"
    assert remote_inputs.local_weights_dir(settings, [WEIGHTS]) == "w"
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("under", ["", "cifar-10-batches-py", "tarball"])
def test_a_prefix_holds_what_a_local_folder_may_hold(
    bucket: Bucket, s3_server: S3Server, tmp_path: Path, under: str
) -> None:
    from worker.experiments.data import load_cifar10

    folder = write_tiny_cifar10(tmp_path / "data", n_train=20, n_test=10)
    if under == "tarball":
        tar = write_tiny_cifar10(tmp_path / "data2", n_train=20, n_test=10, as_tar=True)
        bucket.put("set/cifar-10-python.tar.gz", tar.read_bytes())
    else:
        bucket.put_folder(folder, f"set/{under}")
    local = Path(cifar(tmp_path, s3_server, bucket.url("set") + "/") or "")
    if under == "tarball":
        assert local.name == "cifar-10-python.tar.gz"
    else:
        assert sorted(p.name for p in local.iterdir() if not p.name.startswith(".")) == sorted(
            CIFAR_FOLDER_FILES
        )
    data = load_cifar10(local)
    assert len(data.x_train) == 20 and len(data.x_val) == 10


# Verified.


def test_a_replaced_object_is_fetched_again(bucket: Bucket, s3_server: S3Server, tmp_path: Path) -> None:
    url = bucket.put("w/cifar-10-python.tar.gz", b"version one")
    local = Path(cifar(tmp_path, s3_server, url) or "")
    assert local.read_bytes() == b"version one"
    bucket.put("w/cifar-10-python.tar.gz", b"version two, another size and ETag")
    assert Path(cifar(tmp_path, s3_server, url) or "").read_bytes() == b"version two, another size and ETag"


def test_a_sidecar_sha256_is_checked_and_a_mismatch_refused_naming_the_key(
    bucket: Bucket, s3_server: S3Server, tmp_path: Path
) -> None:
    body = b"the tarball's bytes"
    url = bucket.put("s/cifar-10-python.tar.gz", body)
    bucket.put("s/cifar-10-python.tar.gz.sha256", f"{hashlib.sha256(body).hexdigest()}  x.tar.gz\n".encode())
    assert Path(cifar(tmp_path, s3_server, url) or "").read_bytes() == body

    other = tmp_path / "other"
    bucket.put("s/cifar-10-python.tar.gz", b"other bytes than the sidecar says")
    with pytest.raises(ArtifactError) as exc:
        cifar(other, s3_server, url)
    line = one_line(exc)
    assert "CONVLAB_CIFAR10" in line and "corrupt" in line
    assert f"{bucket.prefix}/s/cifar-10-python.tar.gz" in line
    cached = other / "home" / "cache" / "inputs" / "s3" / s3_server.bucket / bucket.prefix / "s"
    assert not (cached / "cifar-10-python.tar.gz").exists()  # refused: nothing left for the engine

    bucket.put("s/cifar-10-python.tar.gz.sha256", b"not a digest")
    with pytest.raises(ArtifactError, match="is not a sha256"):
        cifar(other, s3_server, url)


def test_a_damaged_cached_copy_is_fetched_again(bucket: Bucket, s3_server: S3Server, tmp_path: Path) -> None:
    url = bucket.put("d/cifar-10-python.tar.gz", b"the good bytes")
    local = Path(cifar(tmp_path, s3_server, url) or "")
    local.write_bytes(b"the bad bytes!")  # same size, rewritten in place: another mtime
    assert Path(cifar(tmp_path, s3_server, url) or "").read_bytes() == b"the good bytes"


# Weights: a prefix, only the files a run needs.


def test_weights_fetch_only_the_files_named(bucket: Bucket, s3_server: S3Server, tmp_path: Path) -> None:
    bucket.put(f"weights/{WEIGHTS}", b"alpha 0.25")
    bucket.put(f"weights/{weights_file_name(1.0)}", b"alpha 1.0, not needed")
    settings = settings_for(tmp_path / "home", CONVLAB_WEIGHTS_DIR=bucket.url("weights"))
    folder = Path(remote_inputs.local_weights_dir(settings, [WEIGHTS], options=s3_server.options()) or "")
    assert (folder / WEIGHTS).read_bytes() == b"alpha 0.25"
    assert not (folder / weights_file_name(1.0)).exists()

    with pytest.raises(ArtifactError) as exc:
        remote_inputs.local_weights_dir(settings, [weights_file_name(0.5)], options=s3_server.options())
    line = one_line(exc)
    assert "CONVLAB_WEIGHTS_DIR" in line and f"weights/{weights_file_name(0.5)} does not exist" in line


def test_the_worker_check_of_weights_wants_at_least_one_keras_file(
    bucket: Bucket, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket.put("empty/readme.txt", b"no weights here")
    settings = settings_for(tmp_path / "home", CONVLAB_WEIGHTS_DIR=bucket.url("empty"))
    with pytest.raises(ArtifactError, match="holds none of Keras's MobileNet weight files"):
        remote_inputs.check_weights(settings, options=s3_server.options())
    bucket.put(f"empty/{WEIGHTS}", b"w")
    remote_inputs.check_weights(settings, options=s3_server.options())
    assert not (tmp_path / "home").exists()  # a check downloads and writes nothing


# Faults, in one line naming the URL and never the secret.


def test_a_missing_key_is_one_line_naming_the_url(
    bucket: Bucket, s3_server: S3Server, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path / "home", CONVLAB_CIFAR10=bucket.url("nothing/cifar-10-python.tar.gz"))
    with pytest.raises(ArtifactError) as exc:
        remote_inputs.check_cifar10(settings, options=s3_server.options())
    line = one_line(exc)
    assert line.count("CONVLAB_CIFAR10") == 1 and bucket.url("nothing/cifar-10-python.tar.gz") in line
    assert "no such object" in line
    assert not (tmp_path / "home").exists()


def test_a_wrong_secret_is_one_line_without_the_secret(
    bucket: Bucket, s3_server: S3Server, tmp_path: Path
) -> None:
    url = bucket.put("x/cifar-10-python.tar.gz", b"x")
    wrong = "wrong-" + s3_server.secret_key
    with pytest.raises(ArtifactError) as exc:
        cifar(tmp_path, s3_server, url, secret_access_key=wrong)
    line = one_line(exc)
    assert "CONVLAB_CIFAR10" in line and "credentials?" in line and "403" in line, line
    assert wrong not in line and s3_server.secret_key not in line


def test_a_missing_bucket_is_named(s3_server: S3Server, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as exc:
        cifar(tmp_path, s3_server, "s3://no-such-bucket-here/cifar-10-python.tar.gz")
    line = one_line(exc)
    assert "CONVLAB_CIFAR10" in line and "bucket missing at s3://no-such-bucket-here" in line, line


def test_an_object_replaced_between_its_head_and_its_get_is_refused(
    bucket: Bucket, s3_server: S3Server, tmp_path: Path
) -> None:
    url = bucket.put("r/cifar-10-python.tar.gz", b"as the HEAD saw it")
    settings = settings_for(tmp_path / "home", CONVLAB_CIFAR10=url)
    source = remote_inputs.open_input("CONVLAB_CIFAR10", url, settings, options=s3_server.options())
    seen = source.present(source.key)
    bucket.put("r/cifar-10-python.tar.gz", b"replaced meanwhile")
    with pytest.raises(ArtifactError, match="changed while downloaded"):
        source.store.local_copy_of_version(seen, sha256=None)  # the GET carries If-Match: <etag>
    assert not source.local_path(source.key).exists()


def test_a_folder_that_does_not_fit_the_cache_is_refused_naming_the_limit(
    bucket: Bucket, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket.put_folder(write_tiny_cifar10(tmp_path / "data", n_train=20, n_test=10), "big")
    # A few KB: each file fits, the seven together do not, so fetching the last evicts the first.
    limit = {"CONVLAB_CACHE_LIMIT_MB": "0.02"}
    settings = settings_for(tmp_path / "home", CONVLAB_CIFAR10=bucket.url("big"), **limit)
    with pytest.raises(ArtifactError) as exc:
        remote_inputs.local_cifar10(settings, options=s3_server.options())
    assert "do not fit in the input cache (CONVLAB_CACHE_LIMIT_MB=0.02)" in one_line(exc)
