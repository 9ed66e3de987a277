"""The notebook API, in fresh interpreters: runs, settings, histories and models, TensorFlow loaded only
when a model is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.results import model_path
from storage.artifacts import sha256_file
from storage.folder_store import FolderStore
from storage.models import Artifact, ArtifactKind, RunStatus
from tests.unit.orchestrator.results_db import Planned, add_reused, add_sweep, database, epoch_record

ROOT = Path(__file__).resolve().parents[3]
PLAN = [
    Planned("scratch", "scratch", epochs=2, start=0.1),
    Planned("imagenet", "imagenet", epochs=3, done=1, status=RunStatus.CANCELLED, start=0.4),
]

SCRIPT = """
import json, sys
from orchestrator import api

heavy = lambda: sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "jax"))
lab = api.connect(sys.argv[1])
sweep = lab.sweep()                     # the latest
first = lab.sweep(sys.argv[2])
run = first.run("scratch")
out = {
    "sweeps": lab.sweeps(),
    "latest": sweep.id,
    "labels": [r.label for r in first.runs],
    "statuses": [str(r.status) for r in first.runs],
    "settings": run.settings,
    "history": run.history,
    "final": run.final_val_accuracy,
    "model_path": str(run.model_path),
    "cancelled_model": str(first.run("imagenet").model_path),
    "reused_from": sweep.runs[0].reused_from,
    "reused_history": sweep.runs[0].history == run.history,
    "rows": len(first.rows()),
    "heavy_before": heavy(),
}
model = run.load_model()
out["params"] = model.count_params()
out["heavy_after"] = heavy()
print(json.dumps(out))
"""


def _python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full.pop("CONVLAB_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300
    )


def test_a_notebook_reads_a_sweep_and_loads_a_model_and_only_then_imports_tensorflow(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings, db = database(home)
    ids = add_sweep(settings, db, PLAN)
    again = add_reused(db, ids["scratch"], "scratch")
    with db.session(readonly=True) as s:
        from storage import repository as repo

        checkpoint = repo.get_run(s, ids["scratch"]).checkpoint
    # The final model, a real .keras file as the engine saves it (a tiny one).
    path = settings.artifacts_dir / str(checkpoint).replace("state-e0002.json", "model-e0002.keras")
    built = _python(
        "-c",
        "import sys, keras\nkeras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save(sys.argv[1])",
        str(path),
    )
    assert built.returncode == 0, built.stderr
    model_rel = path.relative_to(settings.artifacts_dir).as_posix()
    with db.session() as s:  # record both files with their checksums, as the worker's commit does
        for rel in (str(checkpoint), model_rel):
            file = settings.artifacts_dir / rel
            s.add(
                Artifact(
                    run_id=ids["scratch"],
                    path=rel,
                    kind=ArtifactKind.CHECKPOINT,
                    sha256=sha256_file(file),
                    bytes=file.stat().st_size,
                )
            )
    with db.session(readonly=True) as s:
        recorded = {a.path: a.sha256 for a in repo.artifacts_of(s, ids["scratch"])}
    store = FolderStore(settings.artifacts_dir)
    assert model_path(store, checkpoint, recorded) == path
    assert model_path(store, checkpoint, {**recorded, model_rel: "0" * 64}) is None  # damaged: no model

    done = _python("-c", SCRIPT, str(home), ids["sweep"])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy_before"] == [], out["heavy_before"]  # runs, settings, histories: no TensorFlow
    assert "keras" in out["heavy_after"] and out["params"] == 4 * 3 + 3
    assert out["sweeps"] == [again["sweep"], ids["sweep"]] and out["latest"] == again["sweep"]
    assert out["labels"] == ["scratch", "imagenet"] and out["statuses"] == ["succeeded", "cancelled"]
    assert out["settings"]["regime"] == "scratch" and out["settings"]["alpha"] == 0.25
    assert out["history"] == [epoch_record(PLAN[0], e).to_dict() for e in (1, 2)]
    assert out["final"] == epoch_record(PLAN[0], 2).val_accuracy
    assert out["model_path"] == str(path)
    assert out["cancelled_model"] == "None"  # its state file names a model that was never written here
    assert out["reused_from"] == ids["scratch"] and out["reused_history"] is True
    assert out["rows"] == 3  # 2 + 1 epochs, as `orchestrator export` gives them


def test_connect_to_a_missing_database_says_where_it_looked(tmp_path: Path) -> None:
    done = _python(
        "-c", "import sys; from orchestrator import api; api.connect(sys.argv[1])", str(tmp_path / "x")
    )
    assert done.returncode == 1
    assert f"no convlab database at {tmp_path / 'x' / 'convlab.db'}" in done.stderr
    assert not (tmp_path / "x").exists()  # nothing created


def test_asking_for_an_unknown_label_names_the_labels_there(tmp_path: Path) -> None:
    from orchestrator import api

    home = tmp_path / "home"
    settings, db = database(home)
    add_sweep(settings, db, PLAN)
    sweep = api.connect(home).sweep()
    with pytest.raises(KeyError, match="its labels: scratch, imagenet"):
        sweep.run("finetune")
