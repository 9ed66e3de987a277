"""The object store's cost per object: PUT (``write_file``) and GET (``local_copy``, a cold cache) of a 5 MB
and a 40 MB object on a local SeaweedFS (``weed mini``, as the tests start it) vs the folder store.

    python bench/object_store.py [--sizes 5 40] [--rounds 3]

One server, one machine, both backends on the same disk: what the S3 protocol, the server's checksum check
and the verified cache add, not what a network adds. Each size is stored ``--rounds`` times under fresh
keys (write once), the median reported; ``local_copy`` is timed on a cold cache (the download), then once
more warm (a cache hit). JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage.artifacts import ArtifactStore  # noqa: E402
from storage.folder_store import FolderStore  # noqa: E402
from storage.object_store import ObjectStore  # noqa: E402
from tests.s3server import S3Server  # noqa: E402

MB = 1 << 20


def _time(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def measure(store: ArtifactStore, src: Path, rounds: int, tag: str) -> dict[str, float]:
    puts, gets, hits = [], [], []
    for i in range(rounds):
        key = f"bench/{tag}/{i}/{src.name}"
        stored = None

        def put(key: str = key) -> None:
            nonlocal stored
            stored = store.write_file(key, src)

        puts.append(_time(put))
        assert stored is not None
        gets.append(_time(lambda key=key, s=stored: store.local_copy(key, s.sha256)))
        hits.append(_time(lambda key=key, s=stored: store.local_copy(key, s.sha256)))
    return {
        "put_s": statistics.median(puts),
        "local_copy_cold_s": statistics.median(gets),
        "local_copy_hit_s": statistics.median(hits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 40], help="object sizes in MB")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-object-store-") as tmp_name:
        tmp = Path(tmp_name)
        server = S3Server(tmp / "s3")
        server.start()
        try:
            folder = FolderStore(tmp / "folder")
            s3 = ObjectStore(
                server.url("bench"),
                cache_dir=tmp / "cache",
                scratch_dir=tmp / "scratch",
                cache_limit_bytes=4096 * MB,
                options=server.options(),
            )
            results = []
            for size in args.sizes:
                src = tmp / f"obj-{size}mb.bin"
                src.write_bytes(os.urandom(size * MB))
                row: dict[str, object] = {"size_mb": size}
                row["folder"] = measure(folder, src, args.rounds, f"folder-{size}")
                row["s3"] = measure(s3, src, args.rounds, f"s3-{size}")
                f, o = row["folder"], row["s3"]
                assert isinstance(f, dict) and isinstance(o, dict)
                row["ratio_s3_over_folder"] = {k: round(o[k] / f[k], 3) for k in f}
                row["s3_put_MBps"] = round(size / o["put_s"], 1)
                row["s3_get_MBps"] = round(size / o["local_copy_cold_s"], 1)
                results.append(row)
        finally:
            server.stop()
    print(json.dumps({"rounds": args.rounds, "cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
