"""The Dockerfile built for real and run: every package in the image, migrations, a smoke training.

No Docker engine is needed: buildah builds the Dockerfile and runs commands in the result with
``--isolation chroot`` (which shares the host's network, so the container reaches the CI PostgreSQL
and Redis on 127.0.0.1). The base is ``CONVLAB_CI_BASE_IMAGE``, the python:3.11-slim stand-in that
``.ci/run`` makes from Debian's packages (no registry is reachable in CI). The image is the CPU one
(``EXTRAS=monitor``): the CUDA wheels are not downloaded, and the GPU runtime is not tested here.

Skipped locally, naming why, without buildah or the base image; a failure when ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.services import IN_CI, service_missing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parent.parent
TAG = "localhost/convlab:ci"
BASE_IMAGE = os.environ.get("CONVLAB_CI_BASE_IMAGE", "localhost/convlab-ci-base:3.11-bookworm")
# Where the machine keeps the pip cache mount between CI runs (buildah puts cache mounts under $TMPDIR).
CACHE = Path(os.environ.get("CONVLAB_CI_CACHE", "/var/cache/convlab-ci"))
PG_DATABASE = "convlab_image_test"
REDIS_DB = 12  # not the fixtures' 13: the worker in the image owns this one while the test runs
ENV_OF_THE_IMAGE = {"TF_CPP_MIN_LOG_LEVEL": "2", "CONVLAB_LEASE_SECONDS": "30"}


def _buildah(*args: str, timeout: float = 600, check: bool = True, **kw: object) -> str:
    result = subprocess.run(
        ["buildah", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,  # type: ignore[call-overload]
    )
    if check and result.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} exited {result.returncode}\n{_tail(result)}")
    return str(result.stdout)


def _tail(result: subprocess.CompletedProcess[str], n: int = 4000) -> str:
    return (result.stdout or "")[-n:] + (result.stderr or "")[-n:]


# --- the build machine's pip configuration, handed to the build ---------------------------------


def _pip_config() -> dict[str, dict[str, str]]:
    """This machine's effective pip settings, by section (files first, then PIP_* variables)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    sections: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        match = re.fullmatch(r"(:env:|[\w-]+)\.([\w-]+)='(.*)'", line.strip())
        if match:
            section, key, value = match.groups()
            sections.setdefault("global" if section == ":env:" else section, {})[key] = value
    return sections


def _local_paths(value: str) -> list[Path]:
    paths = []
    for token in value.split():
        path = token.removeprefix("file://")
        if path.startswith("/") and Path(path).exists():
            paths.append(Path(path))
    return paths


def pip_build_args(workdir: Path) -> list[str]:
    """``buildah bud`` arguments that give pip in the build this machine's index configuration.

    The settings become a pip.conf secret (read by the Dockerfile's RUN steps, never stored in a
    layer); the CA bundle becomes the ``pip-ca.crt`` secret; local indexes, wheel folders and
    constraint files are bind-mounted read-only at their own paths (an index's parent folder, since
    a simple index links to ``../../files/``). Nothing about the host is written down here.
    """
    config = _pip_config()
    args: list[str] = []
    mounts: set[Path] = set()
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if key == "cert":
                args += ["--secret", f"id=pip-ca.crt,src={value}"]
                value = "/run/secrets/pip-ca.crt"
            else:
                for path in _local_paths(value):
                    mounts.add(path.parent if key.endswith("index-url") and path.is_dir() else path)
            lines.append(f"{key} = {value}")
    conf = workdir / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    args += ["--secret", f"id=pip.conf,src={conf}"]
    for path in sorted(mounts):
        if not any(other in path.parents for other in mounts):
            args += ["--volume", f"{path}:{path}:ro"]
    return args


# --- fixtures ------------------------------------------------------------------------------------


def _bud(context: Path, workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``buildah bud`` of ``context`` on the stand-in base, as the CPU image, with layer caching."""
    tmpdir = CACHE / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            "buildah",
            "bud",
            "--isolation",
            "chroot",
            "--layers",
            "--force-rm",
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "--build-arg",
            "EXTRAS=monitor",
            *pip_build_args(workdir),
            *extra,
            str(context),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=3000,
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CPU image, built from the working tree with the Dockerfile's own layer and pip caches."""
    if shutil.which("buildah") is None:
        service_missing("buildah", "not on PATH: the image is not built", ci_hint=".ci/run installs it")
    probe = subprocess.run(
        ["buildah", "inspect", "--type", "image", BASE_IMAGE], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        service_missing(
            f"the base image {BASE_IMAGE}",
            "not in buildah's storage (" + (probe.stderr.strip().splitlines() or ["-"])[-1] + ")",
            ci_hint="the image section of .ci/run makes it",
        )
    started = time.monotonic()
    result = _bud(ROOT, tmp_path_factory.mktemp("image-build"), "-t", TAG)
    assert result.returncode == 0, _tail(result, 8000)
    print(f"\nimage {TAG} built in {time.monotonic() - started:.0f} s")
    if IN_CI:
        # The images of earlier builds (their tag moved on) go; the layers this build used stay
        # (an untagged image with children is a cache layer, not dangling), so the next run is warm.
        _buildah("rmi", "--prune", check=False, timeout=1200)
    return TAG


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = f"convlab-image-test-{uuid.uuid4().hex[:8]}"
    _buildah("from", "--pull-never", "--name", name, image, timeout=300)
    yield name
    _buildah("rm", name, check=False, timeout=300)


def run_in(
    container: str, *command: str, env: dict[str, str] | None = None, volumes: tuple[str, ...] = (),
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``command`` inside the container, as the image's user, with the host's network."""
    args = ["buildah", "run", "--isolation", "chroot"]
    for key, value in {**ENV_OF_THE_IMAGE, **(env or {})}.items():
        args += ["--env", f"{key}={value}"]
    for volume in volumes:
        args += ["--volume", volume]
    return subprocess.run([*args, container, "--", *command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def image_database(postgres_url: str) -> Iterator[str]:
    """A database of its own on the CI PostgreSQL, dropped afterwards."""
    server = postgres_url.rsplit("/", 1)[0]
    admin = sa.create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{PG_DATABASE}"'))
    yield f"{server}/{PG_DATABASE}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def image_broker(redis_url: str) -> Iterator[str]:
    import redis

    url = re.sub(r"/\d+$", f"/{REDIS_DB}", redis_url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


# --- the tests -----------------------------------------------------------------------------------


def _tree_packages() -> list[str]:
    """The top-level packages of the repository, tests aside: what the image must hold."""
    return sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")


def test_the_image_holds_every_package_and_no_cuda_wheels(container: str) -> None:
    help_ = run_in(container, "orchestrator", "--help")
    assert help_.returncode == 0, _tail(help_)
    assert "submit" in help_.stdout and "worker" in help_.stdout

    packages = _tree_packages()
    assert {"contract", "orchestrator", "report", "storage", "worker"} <= set(packages)
    probe = run_in(
        container, "python", "-c",
        "import importlib, json, sys; from importlib import metadata as md; "
        "mods = {n: importlib.import_module(n).__file__ for n in sys.argv[1:]}; "
        "print(json.dumps({'modules': mods, 'dists': sorted(d.metadata['Name'].lower() "
        "for d in md.distributions())}))",
        *packages,
    )  # fmt: skip
    assert probe.returncode == 0, _tail(probe)
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    for name, path in found["modules"].items():
        assert "/site-packages/" in path, f"{name} imported from {path}, not from the installed package"
    assert "convlab" in found["dists"] and "flower" in found["dists"]
    cuda = [d for d in found["dists"] if d.startswith("nvidia-")]
    assert not cuda, f"the CPU image (EXTRAS=monitor) holds CUDA wheels: {cuda}"
    # The source tree is not left in the image, and the tests never went in.
    assert run_in(container, "test", "-e", "/src").returncode != 0
    whoami = run_in(container, "id", "-u")
    assert whoami.stdout.strip() == "1000", _tail(whoami)


def test_db_upgrade_in_the_image_migrates_the_ci_postgres(container: str, image_database: str) -> None:
    url = image_database
    upgrade = run_in(container, "orchestrator", "db", "upgrade", env={"CONVLAB_DATABASE_URL": url})
    assert upgrade.returncode == 0, _tail(upgrade)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        version = conn.execute(sa.text("select version_num from alembic_version")).scalar_one()
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert version and "runs" in tables, (version, tables)
    again = run_in(container, "orchestrator", "db", "upgrade", env={"CONVLAB_DATABASE_URL": url})
    assert again.returncode == 0, _tail(again)


def test_a_worker_in_the_image_runs_a_smoke_training(
    container: str, image_database: str, image_broker: str, tmp_path: Path
) -> None:
    from tests.datagen import write_tiny_cifar10

    data = tmp_path / "data"
    data.mkdir()
    write_tiny_cifar10(data, n_train=200, n_test=100, as_tar=True)
    data.chmod(0o755)
    env = {
        "CONVLAB_DATABASE_URL": image_database,
        "CONVLAB_BROKER_URL": image_broker,
        "CONVLAB_CIFAR10": "/datasets/cifar-10-python.tar.gz",
    }
    # The worker and the submitter in one container, as compose runs them in two: the worker in the
    # background, `submit --wait` until the run ends, then SIGTERM, the worker's shutdown path.
    script = (
        "orchestrator db upgrade >/dev/null && "
        "{ orchestrator worker --name image@ci & w=$!; } && "
        "orchestrator submit train --regime scratch --profile smoke --wait; rc=$?; "
        'kill -TERM "$w"; wait "$w"; echo "worker exited $?"; exit "$rc"'
    )
    done = run_in(container, "sh", "-c", script, env=env, volumes=(f"{data}:/datasets:ro",), timeout=1500)
    assert done.returncode == 0, _tail(done)
    assert "worker exited 0" in done.stdout, _tail(done)

    status = run_in(container, "orchestrator", "status", "--json", env=env)
    assert status.returncode == 0, _tail(status)
    runs = json.loads(status.stdout)["runs"]
    assert [(r["kind"], r["status"]) for r in runs] == [("train", "succeeded")], runs
    detail = json.loads(run_in(container, "orchestrator", "status", runs[0]["id"], "--json", env=env).stdout)
    assert detail["worker"] == "image@ci" and detail["device"], detail


def test_a_package_that_pyproject_leaves_out_fails_the_build(image: str, tmp_path: Path) -> None:
    """A new top-level package reaches the image without a Dockerfile edit; one that
    pyproject.toml does not install fails the build, naming it, instead of the first container."""
    context = tmp_path / "context"
    keep = ["pyproject.toml", "README.md", "Dockerfile", ".dockerignore", *_tree_packages()]
    for name in keep:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(source, context / name)
    (context / "newpkg").mkdir()
    (context / "newpkg" / "__init__.py").write_text('"""A package pyproject.toml does not list."""\n')
    # The dependency layer comes from the cache (same pyproject.toml): only the code layer runs.
    result = _bud(context, tmp_path)
    assert result.returncode != 0, "the build installed an image without newpkg"
    assert re.search(r"not installed .*: newpkg\b", result.stdout + result.stderr), _tail(result)
