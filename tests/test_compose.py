"""Checks of the deployment files that need no Docker engine (tests/test_image.py builds the image).

* the structure of docker-compose.yml (parsed with PyYAML, a `dev` dependency);
* ``docker-compose config`` (Debian's ``docker-compose`` package, Compose v1.29) of every profile,
  and of the several-boxes files (docker-compose.hub.yml over it, docker-compose.join.yml): what
  they resolve to, and that they refuse to start without their passwords. Skipped locally when the
  binary is missing, a failure when ``CI=true``;
* the hub's Redis command line, run by a real redis-server: no command without the password;
* the Dockerfile and .dockerignore, read as text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import service_missing

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
HUB_FILE = ROOT / "docker-compose.hub.yml"
JOIN_FILE = ROOT / "docker-compose.join.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ARTIFACTS_MOUNT = "convlab-data:/data"


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
        for dep in ("redis", "postgres"):
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


def test_convlab_services_share_image_volume_and_settings(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    convlab = _convlab_services(services)
    assert {"worker", "orchestrator", "flower", "migrate"} <= set(convlab)
    assert len({json.dumps(s["build"], sort_keys=True) for s in convlab.values()}) == 1
    assert len({s["image"] for s in convlab.values()}) == 1
    for name, svc in convlab.items():
        assert ARTIFACTS_MOUNT in svc["volumes"], name
        datasets = [v for v in svc["volumes"] if ":/datasets" in v]
        assert datasets and all(v.endswith(":ro") for v in datasets), name
        env = svc["environment"]
        assert env["CONVLAB_HOME"] == "/data", name
        assert env["CONVLAB_BROKER_URL"] == "redis://:${REDIS_PASSWORD:-convlab}@redis:6379/0", name
        assert env["CONVLAB_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert env["CONVLAB_CIFAR10"].startswith("/datasets/"), name
    assert len({json.dumps(s["environment"], sort_keys=True) for s in convlab.values()}) == 1
    assert "convlab-data" in compose["volumes"]


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
    "CONVLAB_ARTIFACTS": "/mnt/convlab-artifacts",
}
JOIN_ENV = {**HUB_ENV, "CONVLAB_HUB": "10.1.2.3"}
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
    assert config["volumes"]["convlab-data"]["driver_opts"]["device"] == HUB_ENV["CONVLAB_ARTIFACTS"]


def test_a_joining_box_runs_the_same_workers_against_the_hub() -> None:
    main = _resolved([COMPOSE_FILE], JOIN_ENV)["services"]
    join_config = _resolved([JOIN_FILE], JOIN_ENV)
    join = join_config["services"]
    assert set(join) == set(_worker_services(main)), "a joining box runs workers only, all of them"
    hub, pw_redis, pw_pg = JOIN_ENV["CONVLAB_HUB"], JOIN_ENV["REDIS_PASSWORD"], JOIN_ENV["POSTGRES_PASSWORD"]
    urls = {"CONVLAB_BROKER_URL", "CONVLAB_DATABASE_URL"}
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
        assert not svc.get("depends_on"), name
        assert "ports" not in svc, name
    assert join_config["volumes"]["convlab-data"]["driver_opts"]["device"] == JOIN_ENV["CONVLAB_ARTIFACTS"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
