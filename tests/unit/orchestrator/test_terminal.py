"""What a person sees in a real terminal (a pseudo-terminal of 80 columns, not a mock), and the facts the
status views state: labels cut but never dropped, paths never broken, settings, files, tries, names."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from contract.profiles import resolve_profile
from contract.records import EpochRecord
from contract.settings import load_settings
from contract.specs import REGIMES
from orchestrator.cli import main
from orchestrator.follow import report_location
from orchestrator.monitor import cut_middle, render_table
from orchestrator.plans import plan_explain, plan_train
from orchestrator.rows import RunRow
from orchestrator.services import live_workers
from storage import repository as repo
from storage.artifacts import ArtifactStore
from storage.db import Database, get_database, reset_databases
from storage.folder_store import FolderStore
from storage.models import RunKind, RunStatus
from tests.datagen import write_tiny_cifar10

ROOT = Path(__file__).resolve().parents[3]
WORKER = "cpu-1a2b3c@a-rather-long-host-name.example.org"
DEVICE = "CPU Intel(R) Xeon(R) Platinum 8488C (tensorflow)"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CONVLAB_DATABASE_URL", "CONVLAB_BROKER_URL", "COLUMNS", "LINES"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("CONVLAB_HOME", str(home))
    return home


@pytest.fixture
def db(home: Path) -> Database:
    database = get_database(load_settings())
    database.ensure_schema()
    yield database
    reset_databases()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def in_terminal(home: Path, *args: str, columns: int = 80, timeout: float = 60.0) -> str:
    """``orchestrator ARGS`` with its output on a pseudo-terminal of ``columns`` columns; what it wrote,
    escape sequences removed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(PYTHONPATH=str(ROOT), CONVLAB_HOME=str(home), TERM="xterm-256color")
    env.pop("CONVLAB_DATABASE_URL", None)
    env.pop("CONVLAB_BROKER_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed, the command has exited
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, b"".join(chunks).decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def _explain_sweep(db: Database) -> dict[str, str]:
    """An ``explain`` sweep mid-way, as wide as it gets: one training inside an epoch, the longest label
    cancelled, one failed, the others queued. Returns run id -> label."""
    plan = plan_explain(resolve_profile("smoke"), seeds=1, base_seed=0)
    labels: dict[str, str] = {}
    with db.session() as s:
        sweep = repo.create_sweep(
            s, plan="explain", profile="smoke", overrides={"lr": "1e-3"}, code_version="t"
        )
        for planned in plan.runs:
            run = repo.create_run(
                s,
                sweep_id=sweep.id,
                kind=planned.kind,
                label=planned.label,
                spec={"batch_size": 32},
                spec_hash=planned.key,
                seed=planned.seed,
                total_epochs=60,
            )
            labels[run.id] = planned.label
        report = repo.create_run(
            s, sweep_id=sweep.id, kind=RunKind.REPORT, label="report", spec={}, spec_hash="r", seed=0
        )
        labels[report.id] = "report"
        ids = list(labels)
        running = repo.claim_run(s, ids[1], worker=WORKER, device=DEVICE, lease_seconds=60)
        assert running is not None
        for epoch in range(1, 13):
            record = EpochRecord(epoch, "train", 1.5, 0.3, 1.6, 0.3355, 1e-4, 60.0, 800.0)
            repo.record_epoch(s, ids[1], record, fence=running.fence)
        assert repo.heartbeat(
            s,
            ids[1],
            running.fence,
            progress={"epoch": 13, "batches": 624, "of": 1560, "images_per_second": 800.0},
        )
        longest = max(ids[:-1], key=lambda i: len(labels[i]))
        assert repo.request_cancel(s, longest, lease_seconds=60) == RunStatus.CANCELLED
        repo.fail_run(s, ids[2], "WeightsError: mobilenet_2_5_224_tf_no_top.h5 not found")
    return labels


def _what_cell_names(line: str, run_id: str, label: str) -> bool:
    """The row shows the run's label whole, or cut in the middle with both ends kept."""
    if re.search(rf"\s{re.escape(label)}\s", line):
        return True
    match = re.search(r"\s(\S+)\u2026(\S+)\s", line)
    if match is None:
        return False
    head, tail = match.groups()
    return label.startswith(head) and label.endswith(tail) and len(head) >= 3 and len(tail) >= 3


def test_an_explain_sweep_in_an_80_column_terminal_shows_every_run_label(home: Path, db: Database) -> None:
    labels = _explain_sweep(db)
    assert max(len(f"train {label}") for label in labels.values()) > 40  # the widest case of the issue
    text = in_terminal(home, "status")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "what" in next(line for line in lines if line.startswith("run ")), text
    shown = set()
    for run_id, label in labels.items():
        row = next(line for line in lines if line.startswith(run_id + " "))
        assert _what_cell_names(row, run_id, label), (label, row)
        shown.add(" ".join(row.split()[1:3]))
    assert len(shown) == len(labels), shown  # cut or not, no two runs read alike
    assert "12/60 +40%" in text and "cancelled" in text and "failed" in text
    assert "profile smoke + lr=1e-3" in lines[0]


def test_a_long_report_path_stays_on_one_line_in_an_80_column_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / ("a-long-folder-name-" * 4) / "convlab-runs"
    monkeypatch.setenv("CONVLAB_HOME", str(home))
    settings = load_settings()
    db = get_database(settings)
    with db.session() as s:
        sweep = repo.create_sweep(s, plan="all", profile="smoke", overrides={}, code_version="t").id
        run = repo.create_run(
            s, sweep_id=sweep, kind=RunKind.REPORT, label="report", spec={}, spec_hash="r", seed=0
        )
        claimed = repo.claim_run(s, run.id, worker=WORKER, device="CPU", lease_seconds=60)
        assert claimed is not None and repo.finish_run(s, run.id, RunStatus.SUCCEEDED, fence=claimed.fence)
    reset_databases()
    html = settings.artifacts_dir / ArtifactStore.sweep_report_dir(sweep) / "report.html"
    html.parent.mkdir(parents=True)
    html.write_text("<html></html>")
    assert len(f"report: {html}") > 120
    text = in_terminal(home, "status", sweep, "--watch")
    assert f"report: {html}" in text.splitlines(), text


def test_the_header_counts_one_device_for_one_worker_whose_report_ran_on_plain_cpu() -> None:
    def row(run_id: str, kind: str, device: str) -> RunRow:
        return RunRow(
            run_id,
            kind,
            kind,
            RunStatus.SUCCEEDED,
            1,
            1 if kind == "train" else 0,
            0.5,
            None,
            WORKER,
            device,
            1,
            None,
            None,
            starts=1,
        )

    rows = [row("r-1", "train", DEVICE), row("r-2", "visualize", DEVICE), row("r-3", "report", "CPU")]
    console_text = _plain(render_table("s-1", rows, width=60))
    assert "2 devices" not in console_text and DEVICE in console_text, console_text
    assert f"worker {WORKER}" in console_text


def _plain(renderable: object) -> str:
    from rich.console import Console

    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_status_of_a_run_shows_its_settings_files_model_and_tries(home: Path, db: Database) -> None:
    store = FolderStore(load_settings().artifacts_dir)
    with db.session() as s:
        sweep = repo.create_sweep(s, plan="all", profile="smoke", overrides={}, code_version="t").id
        spec = {"regime": "scratch", "epochs": 5, "lr": 1e-4, "batch_size": 32}
        run = repo.create_run(
            s,
            sweep_id=sweep,
            kind=RunKind.TRAIN,
            label="scratch",
            spec=spec,
            spec_hash="h",
            seed=3,
            total_epochs=5,
        ).id
        claimed = repo.claim_run(s, run, worker="celery@hostA", device=DEVICE, lease_seconds=60)
        assert claimed is not None
        folder = ArtifactStore.attempt_dir(run, claimed.fence)
        model = store.write_bytes(f"{folder}/model-e0005.keras", b"model")
        state = store.write_bytes(f"{folder}/state-e0005.json", b"{}")
        files = [(f.path, f.sha256, f.size) for f in (model, state)]
        repo.commit_checkpoint_files(s, run, fence=claimed.fence, files=files)
        for epoch in range(1, 6):
            record = EpochRecord(epoch, "train", 1.5, 0.3, 1.6, 0.33, 1e-4, 6.0, 80.0)
            repo.record_epoch(s, run, record, fence=claimed.fence, checkpoint=state.path)
    assert "worker: hostA" in invoke("status", run).output  # as `worker --name hostA` gave it
    with db.session() as s:
        # Ctrl-C: the attempt hands the run back, which refunds it from the attempts counted.
        assert repo.hand_back_run(s, run, fence=claimed.fence)
        later = repo.create_sweep(s, plan="all", profile="smoke", overrides={}, code_version="t").id
        cached = repo.create_run(
            s,
            sweep_id=later,
            kind=RunKind.TRAIN,
            label="scratch",
            spec=spec,
            spec_hash="h",
            seed=3,
            total_epochs=5,
            status=RunStatus.SUCCEEDED,
            reused_run_id=run,
        ).id
    detail = json.loads(invoke("status", run, "--json").output)
    assert detail["attempts"] == 0 and detail["starts"] == 1 and detail["model"] == model.path
    text = invoke("status", run).output
    artifacts = load_settings().artifacts_dir
    assert "tries: started 1, 0 counted against the limit" in text
    for line in ("regime=scratch", "epochs=5", "lr=0.0001", "batch_size=32"):
        assert re.search(rf"^\s+{re.escape(line)}$", text, re.M), text
    assert "settings: what it ran with (its stored spec):" in text
    assert re.search(r"^\s+seed=3$", text, re.M), text
    assert f"model: {artifacts / model.path}" in text
    assert f"{artifacts / state.path} (2 bytes)" in text
    table = invoke("status", sweep).output
    row = next(line for line in table.splitlines() if line.startswith(run))
    assert row.rstrip().endswith(" 1"), row  # tries: it started once, though the attempt was refunded
    reuse = invoke("status", cached).output
    assert f"reuses: {run} (an identical earlier run: its results)" in reuse
    assert f"model: {artifacts / model.path}" in reuse


def test_workers_are_listed_by_the_name_they_were_given(home: Path, db: Database) -> None:
    with db.session() as s:
        repo.upsert_worker(s, name="celery@hostA", host="h", pid=1, device="CPU", slots=1)
        repo.upsert_worker(s, name=WORKER, host="h", pid=2, device="CPU", slots=1)
    names = sorted(w.name for w in live_workers(load_settings(), db))
    assert names == sorted(["hostA", WORKER])
    assert "hostA  CPU" in invoke("workers").output


def test_retry_says_a_training_without_checkpoint_starts_and_one_with_resumes(
    home: Path, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("CONVLAB_CIFAR10", str(write_tiny_cifar10(data, n_train=50, n_test=20, as_tar=True)))
    (data / "weights").mkdir()
    (data / "weights" / "mobilenet_2_5_224_tf_no_top.h5").write_bytes(b"x")
    monkeypatch.setenv("CONVLAB_WEIGHTS_DIR", str(data / "weights"))
    specs = {
        r: plan_train(resolve_profile("smoke"), regime=r, seeds=1, base_seed=0).runs[0].spec for r in REGIMES
    }
    with db.session() as s:
        sweep = repo.create_sweep(s, plan="all", profile="smoke", overrides={}, code_version="t").id
        never, went = (
            repo.create_run(
                s,
                sweep_id=sweep,
                kind=RunKind.TRAIN,
                label=label,
                spec=specs[label],
                spec_hash=label,
                seed=0,
                total_epochs=5,
            ).id
            for label in ("scratch", "imagenet")
        )
        claimed = repo.claim_run(s, went, worker=WORKER, device=DEVICE, lease_seconds=60)
        assert claimed is not None
        record = EpochRecord(1, "train", 1.5, 0.3, 1.6, 0.33, 1e-4, 6.0, 80.0)
        repo.record_epoch(s, went, record, fence=claimed.fence, checkpoint="runs/x/state-e0001.json")
    assert invoke("cancel", sweep).exit_code == 0
    with db.session() as s:  # the running one's worker is gone: the reaper's cancel
        repo.cancel_stale_run(s, went, lease_seconds=0)
    result = invoke("retry", sweep, "--no-wait")
    assert result.exit_code == 0, result.output
    assert f"{never} (train scratch): queued again (starts from the first epoch" in result.output
    assert f"{went} (train imagenet): queued again (resumes from its last checkpoint)" in result.output


def test_a_submit_refused_by_preflight_creates_no_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVLAB_CIFAR10", str(home.parent / "nowhere" / "cifar-10-python.tar.gz"))
    result = invoke("submit", "all", "--profile", "smoke", "--no-wait")
    assert result.exit_code == 2 and "CONVLAB_CIFAR10" in result.output, result.output
    assert not home.exists()


def test_the_end_of_a_sweep_says_where_its_report_is_when_another_host_wrote_it(
    home: Path, db: Database
) -> None:
    with db.session() as s:
        sweep = repo.create_sweep(s, plan="all", profile="smoke", overrides={}, code_version="t").id
        run = repo.create_run(
            s, sweep_id=sweep, kind=RunKind.REPORT, label="report", spec={}, spec_hash="r", seed=0
        )
        claimed = repo.claim_run(s, run.id, worker="celery@hostA", device="CPU", lease_seconds=60)
        assert claimed is not None and repo.finish_run(s, run.id, RunStatus.SUCCEEDED, fence=claimed.fence)
    line = report_location(load_settings(), db, sweep)
    assert line.startswith("report: written by hostA, not found here at ")
    assert f"`orchestrator report {sweep}` builds one here" in line
    watched = invoke("status", sweep, "--watch").output  # not a terminal: the plain watch, then the line
    assert watched.splitlines()[-1] == line


def test_cut_middle_keeps_both_ends() -> None:
    label = "finetune+bn-frozen+upscaled+augment"
    assert cut_middle(label, 40) == label
    cut = cut_middle(label, 20)
    assert len(cut) == 20 and cut.startswith("finetune+b") and cut.endswith("augment") and "\u2026" in cut
