"""Static checks of the deployment files; no Docker engine needed.

* the structure of docker-compose.yml (parsed with PyYAML, skipped if it is not installed);
* ``docker-compose config -q`` (Debian's ``docker-compose`` package, Compose v1.29): skipped locally
  when the binary is missing, a failure when ``CI=true``;
* the Dockerfile and .dockerignore, read as text.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.services import service_missing

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ARTIFACTS_MOUNT = "convlab-data:/data"


def _missing_tool(message: str) -> None:
    service_missing("a compose tool", message, ci_hint="install the Debian package `docker-compose`")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: structural compose checks skipped")
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
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])


def test_postgres(services: dict[str, dict[str, Any]]) -> None:
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:16")
    assert pg["environment"]["POSTGRES_USER"] == "convlab"
    assert pg["environment"]["POSTGRES_DB"] == "convlab"
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


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
        assert env["CONVLAB_BROKER_URL"] == "redis://redis:6379/0", name
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
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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

    assert by_name["FROM"] == ["python:3.11-slim"]
    assert any("PYTHONUNBUFFERED=1" in args for args in by_name["ENV"])
    assert any(re.search(r"pip install .*\"?\.\[gpu", args) for args in by_name["RUN"])

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

    # Copies only the build's inputs: never the whole context.
    for args in by_name["COPY"]:
        assert not re.match(r"^\.\s", args), f"COPY . copies the whole context: {args}"


def test_dockerignore_keeps_repository_clutter_out() -> None:
    rules = [
        ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]

    def excluded(path: str) -> bool:
        # Last matching rule wins, as in Docker; enough for top-level names.
        state = False
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if pattern in ("*", "**") or pattern == path or Path(path).match(pattern):
                state = not negate
        return state

    for path in (".git", "convlab-runs", "tests", "data", ".venv", ".pytest_cache", "__pycache__"):
        assert excluded(path), f"{path} would be sent to the Docker build context"
    for path in ("pyproject.toml", "README.md", "worker", "orchestrator", "storage"):
        assert not excluded(path), f"{path} is needed by the build but ignored"
