"""The architecture's import rules, checked in fresh interpreters so nothing else has loaded a module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import orchestrator.cli",
        "import worker.app",
        "import worker.main",
        "import worker.specs, worker.profiles",
        "import orchestrator.report.build",
    ],
)
def test_no_tensorflow_or_keras_on_the_light_paths(statement: str) -> None:
    loaded = _loaded_after(statement)
    heavy = {m for m in loaded if m.split(".")[0] in ("tensorflow", "keras", "jax", "torch")}
    assert not heavy, f"{statement} loaded {sorted(heavy)[:5]}"


def test_cli_does_not_import_celery_until_a_command_needs_it() -> None:
    loaded = _loaded_after("import orchestrator.cli")
    assert "celery" not in loaded


def _imports_of(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_storage_is_a_leaf() -> None:
    assert not _imports_of(ROOT / "storage") & {"worker", "orchestrator"}


def test_experiments_import_neither_celery_nor_storage() -> None:
    imports = _imports_of(ROOT / "worker" / "experiments")
    assert not imports & {"celery", "kombu", "storage", "orchestrator"}


# orchestrator/host.py reads what other programs define (KERAS_HOME, COLUMNS), never a CONVLAB_* variable.
ENVIRONMENT_READERS = {"storage/config.py", "orchestrator/host.py"}


def test_only_the_config_module_reads_the_environment() -> None:
    offenders = []
    for package in ("storage", "worker", "orchestrator"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            relative = path.relative_to(ROOT).as_posix()
            if ("os.environ.get(" in text or "os.getenv(" in text) and relative not in ENVIRONMENT_READERS:
                offenders.append(relative)
    assert offenders == []
    host = (ROOT / "orchestrator" / "host.py").read_text()
    assert "CONVLAB_" not in host
