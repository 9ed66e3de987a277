"""A host with no data on its disk: ``CONVLAB_CIFAR10`` and ``CONVLAB_WEIGHTS_DIR`` are s3:// URLs (a real
SeaweedFS), the worker checks them at start, fetches them once into its own cache, verified, and trains."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from storage.object_store import ObjectStore
from tests.integration.harness import Stack
from tests.integration.test_recovery import submit_training, wait_until_ended

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_worker_trains_from_inputs_in_the_object_store(  # type: ignore[no-untyped-def]
    s3_stack: Stack, s3_server, s3_prefix: str, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    inputs_url = s3_server.url(f"{s3_prefix}/inputs")
    uploader = ObjectStore(
        inputs_url,
        cache_dir=tmp_path / "uploader-cache",
        scratch_dir=tmp_path / "uploader-scratch",
        cache_limit_bytes=1 << 30,
        options=s3_server.options(),
    )
    tarball = Path(tiny_data["CONVLAB_CIFAR10"])
    uploader.write_file("cifar-10-python.tar.gz", tarball)
    # The tarball with a sha256 sidecar (checked on download), the weights without (pinned by ETag).
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    uploader.write_bytes("cifar-10-python.tar.gz.sha256", f"{digest}  cifar-10-python.tar.gz\n".encode())
    weights = sorted(Path(tiny_data["CONVLAB_WEIGHTS_DIR"]).iterdir())
    for file in weights:
        uploader.write_file(f"weights/{file.name}", file)
    s3_stack.env.update(
        CONVLAB_CIFAR10=f"{inputs_url}/cifar-10-python.tar.gz", CONVLAB_WEIGHTS_DIR=f"{inputs_url}/weights"
    )

    host = tmp_path / "host"
    host.mkdir()
    run_id = submit_training(s3_stack, regime="imagenet")  # loads the ImageNet file: both inputs are read
    s3_stack.start_worker("w", home=host)
    state = wait_until_ended(s3_stack, run_id, "w", timeout=300)
    assert state["status"] == "succeeded", (state["error"], s3_stack.log_of("w"))

    cache = host / "cache" / "inputs" / "s3" / s3_server.bucket / s3_prefix / "inputs"
    assert (cache / "cifar-10-python.tar.gz").read_bytes() == tarball.read_bytes()
    assert [(cache / "weights" / f.name).read_bytes() == f.read_bytes() for f in weights] == [True] * len(
        weights
    )
    detail = json.loads(s3_stack.orchestrator("status", run_id, "--json", check=True).stdout)
    assert detail["worker"] == "w@test"
