"""What ``CONVLAB_CIFAR10`` as an s3:// URL costs a host: the first resolve (the download into
``$CONVLAB_HOME/cache/inputs``, verified), a later one (a HEAD and the ``.sha256`` GET, nothing
downloaded), and the same for the weights file, on a local SeaweedFS (``weed mini``, as the tests start it).

    python bench/remote_inputs.py [--rounds 3] [--data ../shared/data]

The real tarball (189 MB) and alpha-0.25 weights from ``--data``; the tarball with a ``.sha256`` sidecar
(hashed on download), the weights without (pinned by size and ETag). One machine, one disk: what the S3
protocol and the verification add, not what a network adds. JSON on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contract.inputs import weights_file_name  # noqa: E402
from contract.settings import Settings, load_settings  # noqa: E402
from storage import remote_inputs  # noqa: E402
from storage.object_store import ObjectStore  # noqa: E402
from tests.s3server import S3Server  # noqa: E402


def _timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def _resolve_both(settings: Settings, options: dict[str, Any], weights_name: str) -> dict[str, float]:
    return {
        "cifar10": _timed(lambda: remote_inputs.local_cifar10(settings, options=options)),
        "weights": _timed(lambda: remote_inputs.local_weights_dir(settings, [weights_name], options=options)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    tarball = args.data / "cifar-10-python.tar.gz"
    weights = args.data / "weights" / weights_file_name(0.25)
    with tempfile.TemporaryDirectory() as tmp:
        server = S3Server(Path(tmp) / "s3")
        server.start()
        try:
            uploader = ObjectStore(
                server.url("bench"),
                cache_dir=Path(tmp) / "up-cache",
                scratch_dir=Path(tmp) / "up-scratch",
                cache_limit_bytes=1 << 30,
                options=server.options(),
            )
            uploader.write_file("cifar-10-python.tar.gz", tarball)
            digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
            uploader.write_bytes("cifar-10-python.tar.gz.sha256", f"{digest}\n".encode())
            uploader.write_file(f"weights/{weights.name}", weights)
            cold: dict[str, list[float]] = {"cifar10": [], "weights": []}
            warm: dict[str, list[float]] = {"cifar10": [], "weights": []}
            for round_ in range(args.rounds):
                home = Path(tmp) / f"home-{round_}"
                settings = load_settings(
                    {
                        "CONVLAB_HOME": str(home),
                        "CONVLAB_CIFAR10": server.url("bench/cifar-10-python.tar.gz"),
                        "CONVLAB_WEIGHTS_DIR": server.url("bench/weights"),
                    }
                )
                for times in (cold, warm):
                    for name, seconds in _resolve_both(settings, server.options(), weights.name).items():
                        times[name].append(seconds)
                shutil.rmtree(home)
        finally:
            server.stop()
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "tarball_bytes": tarball.stat().st_size,
                "weights_bytes": weights.stat().st_size,
                "first_resolve_s": {k: round(statistics.median(v), 4) for k, v in cold.items()},
                "later_resolve_s": {k: round(statistics.median(v), 4) for k, v in warm.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
