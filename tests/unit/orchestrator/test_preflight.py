"""Mistakes caught at submit time: data, weights, disk, GPUs; exit 2 naming the file, nothing written."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
from click.testing import Result

from orchestrator import host, preflight
from orchestrator.submit import stage_image
from storage.folder_store import FolderStore
from tests.datagen import write_tiny_cifar10
from tests.unit.orchestrator.test_cli import invoke, nothing_written

ALPHA_025 = "mobilenet_2_5_224_tf_no_top.h5"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded default with tiny data and a weights folder holding the alpha-0.25 file only."""
    for name in ("CONVLAB_DATABASE_URL", "CONVLAB_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    tarball = write_tiny_cifar10(data, n_train=50, n_test=20, as_tar=True)
    weights = data / "weights"
    weights.mkdir()
    (weights / ALPHA_025).write_bytes(b"only its name is checked at submit")
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CONVLAB_CIFAR10", str(tarball))
    monkeypatch.setenv("CONVLAB_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))  # an empty Keras cache
    return tmp_path / "home"


def one_line_exit_2(result: Result, *expected: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_a_relative_data_path_that_does_not_exist_is_refused_resolved(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVLAB_CIFAR10", "../shared/data/cifar-10-python.tar.gz")  # the README's snippet
    result = invoke("submit", "all", "--profile", "smoke", "--no-wait")  # --no-wait: never train here
    line = one_line_exit_2(result, "CONVLAB_CIFAR10", str(tmp_path.parent / "shared" / "data"))
    assert f"taken relative to {tmp_path}" in line
    assert nothing_written(home)


def test_a_relative_data_path_that_exists_is_accepted(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVLAB_CIFAR10", "data/cifar-10-python.tar.gz")
    result = invoke("submit", "train", "--regime", "scratch", "--profile", "smoke", "--no-wait")
    assert result.exit_code == 0, result.output
    # Nobody runs it yet: the command says exactly what to run.
    assert "no worker is running" in result.output and "`orchestrator worker`" in result.output
    assert not nothing_written(home)


def test_data_that_is_not_a_tarball_is_refused(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "cifar-10-python.tar.gz"
    fake.write_text("not a tarball")
    monkeypatch.setenv("CONVLAB_CIFAR10", str(fake))
    one_line_exit_2(
        invoke("submit", "all", "--profile", "smoke", "--no-wait"), "CONVLAB_CIFAR10", str(fake), "tar"
    )
    assert nothing_written(home)


def test_the_paper_profile_without_the_alpha_1_weights_is_refused_naming_the_file(home: Path) -> None:
    result = invoke("submit", "all", "--no-wait")  # the default profile, paper: alpha 1.0
    one_line_exit_2(result, "CONVLAB_WEIGHTS_DIR", "mobilenet_1_0_224_tf_no_top.h5", "train imagenet")
    assert nothing_written(home)


def test_a_scratch_training_needs_no_weights(home: Path) -> None:
    result = invoke(
        "submit", "train", "--regime", "scratch", "--set", "alpha=1.0", "--profile", "smoke", "--no-wait"
    )
    assert result.exit_code == 0, result.output


def test_weights_neither_cached_nor_downloadable_are_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVLAB_WEIGHTS_DIR")
    monkeypatch.setattr(host, "reachable", lambda *_a, **_k: False)  # offline, whatever this machine is
    result = invoke("submit", "visualize", "--profile", "smoke", "--source", "imagenet", "--no-wait")
    one_line_exit_2(result, ALPHA_025, "cannot be reached", str(home.parent / "keras-home" / "models"))
    assert nothing_written(home)


def test_weights_in_the_keras_cache_are_enough(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVLAB_WEIGHTS_DIR")
    monkeypatch.setattr(host, "reachable", lambda *_a, **_k: False)
    models = home.parent / "keras-home" / "models"
    models.mkdir(parents=True)
    (models / ALPHA_025).write_bytes(b"x")
    result = invoke("submit", "visualize", "--profile", "smoke", "--source", "imagenet", "--no-wait")
    assert result.exit_code == 0, result.output


def test_data_neither_given_nor_cached_nor_downloadable_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVLAB_CIFAR10")
    monkeypatch.setattr(host, "reachable", lambda *_a, **_k: False)
    result = invoke("submit", "all", "--profile", "smoke", "--no-wait")
    one_line_exit_2(result, "CONVLAB_CIFAR10", "www.cs.toronto.edu")
    assert nothing_written(home)


def test_too_little_disk_for_the_checkpoints_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "free_bytes", lambda _path: 10_000_000)
    result = invoke("submit", "all", "--profile", "smoke", "--no-wait")
    line = one_line_exit_2(result, "CONVLAB_HOME", "10 MB free")
    assert str(home) in line
    assert nothing_written(home)


def test_the_decoded_data_cache_is_counted_until_it_exists(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Room for the checkpoints but not for the decoded CIFAR-10 cache as well: refused; once the
    cache is on disk it needs no more room, and the same free space is enough."""
    free = preflight.MARGIN_BYTES + preflight.CIFAR_CACHE_BYTES // 2  # > a smoke plan's checkpoints
    monkeypatch.setattr(preflight, "free_bytes", lambda _path: free)
    result = invoke("submit", "all", "--profile", "smoke", "--no-wait")
    line = one_line_exit_2(result, "CONVLAB_HOME", f"{free / 1e6:,.0f} MB free", "decoded CIFAR-10 cache")
    needed = int(line.split("needs about ")[1].split(" MB")[0].replace(",", "")) * 1_000_000
    assert needed > preflight.CIFAR_CACHE_BYTES  # the cache is in the sum, not only in the wording
    assert nothing_written(home)

    (home / "cache").mkdir(parents=True)
    (home / "cache" / "cifar10-0123abcd.npz").write_bytes(b"decoded once by an earlier task")
    accepted = invoke("submit", "all", "--profile", "smoke", "--no-wait")
    assert accepted.exit_code == 0, accepted.output


def test_checkpoint_sizes_grow_with_the_width() -> None:
    # MobileNet v1 at alpha 1.0: 3.2 M parameters, x3 with Adam's moments, float32: about 40 MB.
    assert 35e6 < preflight.checkpoint_bytes(1.0) < 45e6
    assert (
        preflight.checkpoint_bytes(0.25) < preflight.checkpoint_bytes(0.5) < preflight.checkpoint_bytes(1.0)
    )


def test_weight_file_names_match_the_engine() -> None:
    pytest.importorskip("keras")
    from worker.experiments.models import weights_file_name

    for alpha in (0.25, 0.5, 0.75, 1.0):
        assert preflight.weights_file_name(alpha) == weights_file_name(alpha)


# ----------------------------------------------------------------------------------------------- GPUs


def test_worker_gpu_that_does_not_exist_is_refused(home: Path) -> None:
    one_line_exit_2(invoke("worker", "--gpu", "99"), "--gpu: no GPU 99 on this machine")


def test_worker_gpu_0_is_refused_on_a_machine_without_gpus(home: Path) -> None:
    if host.nvidia_gpus():
        pytest.skip("this machine has an NVIDIA GPU")
    one_line_exit_2(invoke("worker", "--gpu", "0"), "--gpu: no GPU 0", "none")


def test_gpus_are_read_from_nvidia_smi_then_from_the_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200'\necho 'NVIDIA H200'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert host.nvidia_gpus() == ["NVIDIA H200", "NVIDIA H200"]

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    proc = tmp_path / "gpus"
    (proc / "0000:01:00.0").mkdir(parents=True)
    (proc / "0000:01:00.0" / "information").write_text("Model:           Tesla T4\nIRQ: 1\n")
    assert host.nvidia_gpus(proc) == ["Tesla T4"]
    assert host.nvidia_gpus(tmp_path / "absent") == []


def test_worker_refuses_a_data_path_that_does_not_exist(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVLAB_CIFAR10", "/nonexistent/cifar-10-python.tar.gz")
    one_line_exit_2(invoke("worker"), "CONVLAB_CIFAR10", "/nonexistent/cifar-10-python.tar.gz")


# ------------------------------------------------------------------------------------------- staging


def _photo(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "dog.JPG"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format="JPEG")
    return path


def test_stage_image_returns_the_sha256_of_the_staged_bytes(tmp_path: Path) -> None:
    photo = _photo(tmp_path)
    store = FolderStore(tmp_path / "artifacts")
    reference, sha256 = stage_image(store, photo)
    expected = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert sha256 == expected and reference == f"artifact:inputs/{expected[:16]}.jpg"
    staged = store.absolute(reference.removeprefix("artifact:"))
    assert hashlib.sha256(staged.read_bytes()).hexdigest() == expected
    assert [p.name for p in staged.parent.iterdir()] == [staged.name]  # no temporary file left


def test_concurrent_stagings_never_share_a_temporary_file(tmp_path: Path) -> None:
    photo = _photo(tmp_path)
    store = FolderStore(tmp_path / "artifacts")
    results: list[tuple[str, str]] = []
    threads = [threading.Thread(target=lambda: results.append(stage_image(store, photo))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 8
    folder = store.absolute("inputs")
    assert len(os.listdir(folder)) == 1


def test_a_damaged_staged_copy_is_replaced(tmp_path: Path) -> None:
    photo = _photo(tmp_path)
    store = FolderStore(tmp_path / "artifacts")
    reference, sha256 = stage_image(store, photo)
    staged = store.absolute(reference.removeprefix("artifact:"))
    staged.write_bytes(b"truncated")
    assert stage_image(store, photo) == (reference, sha256)
    assert hashlib.sha256(staged.read_bytes()).hexdigest() == sha256


# ------------------------------------------------------------------------ inputs in an object store


@pytest.fixture
def s3_env(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """This process's environment holds the test S3 server's endpoint and credentials."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("s3_env")
def test_worker_refuses_a_cifar_url_to_a_missing_key(
    home: Path,
    s3_server,
    s3_prefix: str,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    url = s3_server.url(f"{s3_prefix}/cifar-10-python.tar.gz")
    monkeypatch.setenv("CONVLAB_CIFAR10", url)
    line = one_line_exit_2(invoke("worker"), "CONVLAB_CIFAR10", url, "no such object")
    assert s3_server.secret_key not in line
    assert not home.exists()  # refused before the database or anything else was created


@pytest.mark.usefixtures("s3_env")
def test_worker_refuses_a_weights_url_with_a_wrong_secret_in_one_line(
    home: Path,
    s3_server,
    s3_prefix: str,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + s3_server.secret_key)
    monkeypatch.setenv("CONVLAB_WEIGHTS_DIR", s3_server.url(f"{s3_prefix}/weights"))
    line = one_line_exit_2(invoke("worker"), "CONVLAB_WEIGHTS_DIR", "credentials?", "403")
    assert s3_server.secret_key not in line and not home.exists()


@pytest.mark.usefixtures("s3_env")
def test_submit_checks_a_weights_url_for_the_widths_the_plan_needs(
    home: Path,
    s3_server,
    s3_prefix: str,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    url = s3_server.url(f"{s3_prefix}/weights")
    monkeypatch.setenv("CONVLAB_WEIGHTS_DIR", url)
    result = invoke("submit", "train", "--regime", "imagenet", "--profile", "smoke", "--no-wait")
    one_line_exit_2(result, "CONVLAB_WEIGHTS_DIR", f"{url}/{ALPHA_025} does not exist")
    assert nothing_written(home)


@pytest.mark.parametrize("value", ["http://example.com/cifar.tar.gz", "s3:///no-bucket", "ftp://h/x"])
def test_an_input_url_of_another_scheme_is_refused_naming_the_forms(
    home: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CONVLAB_CIFAR10", value)
    one_line_exit_2(invoke("worker"), "CONVLAB_CIFAR10", "s3://BUCKET/KEY", "a local path")
    assert not home.exists()


def test_absolute_inputs_leaves_a_url_a_url(tmp_path: Path) -> None:
    from contract.settings import load_settings

    settings = load_settings(
        {"CONVLAB_HOME": str(tmp_path), "CONVLAB_CIFAR10": "s3://b/c.tar.gz", "CONVLAB_WEIGHTS_DIR": "w"}
    )
    made = preflight.absolute_inputs(settings)
    assert made.cifar10_path == "s3://b/c.tar.gz" and made.weights_dir == str(Path.cwd() / "w")


@pytest.mark.usefixtures("s3_env")
def test_submit_of_a_plan_without_imagenet_weights_reads_no_weights_url(
    home: Path,
    s3_server,
    s3_prefix: str,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("CONVLAB_WEIGHTS_DIR", s3_server.url(f"{s3_prefix}/no-weights-here"))
    result = invoke("submit", "train", "--regime", "scratch", "--profile", "smoke", "--no-wait")
    assert result.exit_code == 0, result.output
