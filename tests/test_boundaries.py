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
        "import contract.specs, contract.profiles",
        "import report.build",
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


def test_contract_is_a_leaf() -> None:
    assert not _imports_of(ROOT / "contract") & {"storage", "worker", "report", "orchestrator"}


def test_storage_depends_on_the_contract_only() -> None:
    assert not _imports_of(ROOT / "storage") & {"worker", "report", "orchestrator"}


def _modules_of(package: str) -> list[str]:
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    )


def _packages_loaded_by(package: str, *, but: tuple[str, ...] = ()) -> set[str]:
    """Import every module of ``package`` in a fresh interpreter: which convlab modules got loaded?"""
    modules = [m for m in _modules_of(package) if not m.startswith(but)] if but else _modules_of(package)
    loaded = _loaded_after("import " + ", ".join(modules))
    return {
        m for m in loaded if m.split(".")[0] in ("contract", "storage", "worker", "report", "orchestrator")
    }


def test_the_worker_never_imports_the_orchestrator() -> None:
    loaded = _packages_loaded_by("worker")
    assert not {m for m in loaded if m.startswith("orchestrator")}


def test_the_report_reads_storage_and_the_contract_only() -> None:
    loaded = _packages_loaded_by("report")
    assert not {m for m in loaded if m.split(".")[0] in ("worker", "orchestrator")}


# How the orchestrator reaches the worker: the Celery app it sends with, dispatching runs, and how to
# start a worker process. Nothing of the experiments, the tasks' bodies or their state machine.
ORCHESTRATOR_MAY_LOAD = {"worker", "worker.app", "worker.dispatch", "worker.launch"}


def _imported_anywhere(package: str) -> set[str]:
    """Every module an import statement of ``package`` names, at module level or inside a function (the
    CLI imports lazily, so what a fresh ``import`` loads is not all it can reach)."""
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


def test_the_orchestrator_reaches_the_worker_only_through_the_contract() -> None:
    loaded = _packages_loaded_by("orchestrator")
    assert {m for m in loaded if m.split(".")[0] == "worker"} <= ORCHESTRATOR_MAY_LOAD
    named = {m for m in _imported_anywhere("orchestrator") if m.split(".")[0] == "worker"}
    assert named <= ORCHESTRATOR_MAY_LOAD, named - ORCHESTRATOR_MAY_LOAD


def test_nothing_below_the_orchestrator_names_it_even_lazily() -> None:
    for package in ("contract", "storage", "worker", "report"):
        assert not {m for m in _imported_anywhere(package) if m.split(".")[0] == "orchestrator"}, package


def test_experiments_import_neither_celery_nor_storage() -> None:
    imports = _imports_of(ROOT / "worker" / "experiments")
    assert not imports & {"celery", "kombu", "storage", "orchestrator"}


# orchestrator/host.py reads what other programs define (KERAS_HOME, COLUMNS), never a CONVLAB_* variable;
# worker/compile_cache.py adds to TensorFlow's TF_XLA_FLAGS, keeping what is there; storage/object_store.py
# reads the standard AWS_ALLOW_HTTP (obstore reads the other AWS_* variables itself, and ignores that one
# once client options are passed) and the secret values it must keep out of its messages.
ENVIRONMENT_READERS = {
    "contract/settings.py",
    "orchestrator/host.py",
    "worker/compile_cache.py",
    "storage/object_store.py",
}


def test_only_the_config_module_reads_the_environment() -> None:
    offenders = []
    for package in ("contract", "storage", "worker", "report", "orchestrator"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            relative = path.relative_to(ROOT).as_posix()
            if ("os.environ.get(" in text or "os.getenv(" in text) and relative not in ENVIRONMENT_READERS:
                offenders.append(relative)
    assert offenders == []
    for reader in ("orchestrator/host.py", "storage/object_store.py"):
        assert "CONVLAB_" not in (ROOT / reader).read_text()
