"""CLI behaviour through click's runner: bad input is one line, exit 2, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from orchestrator.cli import main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CONVLAB_DATABASE_URL", "CONVLAB_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def nothing_written(home: Path) -> bool:
    """No sweep, no run, no message: the database is absent or empty and the queue folder is empty."""
    queue = home / "broker" / "queue"
    if queue.exists() and any(queue.iterdir()):
        return False
    db = home / "convlab.db"
    if not db.exists():
        return True
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        counts = [
            conn.execute(sa.text(f"select count(*) from {t}")).scalar()
            for t in ("sweeps", "runs")
            if t in tables
        ]
    engine.dispose()
    return not any(counts)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["submit", "all", "--profile", "fast"], "profile: must be one of paper, quick, smoke"),
        (["submit", "train", "--regime", "random", "--profile", "smoke"], "--regime: must be one of"),
        (["submit", "all", "--profile", "smoke", "--set", "nope=1"], "unknown key 'nope'"),
        (["submit", "all", "--profile", "smoke", "--set", "epochs=ten"], "epochs: expected an int"),
        (["submit", "all", "--profile", "smoke", "--set", "epochs=0"], "epochs: must be between 1"),
        (["submit", "all", "--profile", "smoke", "--set", "lr=-1"], "lr: must be > 0"),
        (
            ["submit", "all", "--profile", "smoke", "--set", "alpha=0.3"],
            "alpha: must be one of 0.25, 0.5, 0.75, 1.0",
        ),
        (["submit", "all", "--profile", "smoke", "--set", "input_size=8"], "input_size: must be between 32"),
        (["submit", "all", "--profile", "smoke", "--set", "batch_size=0"], "batch_size: must be between 1"),
        (["submit", "all", "--profile", "smoke", "--seeds", "0"], "--seeds: must be between 1 and 100"),
        (["submit", "all", "--profile", "smoke", "--seed", "-1"], "--seed: -1 is not in the range"),
        (
            ["submit", "all", "--profile", "smoke", "--set", "vis_layers="],
            "vis_layers: expected comma-separated names, got ''",
        ),
        (["submit", "all", "--profile", "smoke", "--set", "epochs"], "--set: expected KEY=VALUE"),
        (
            ["submit", "explain", "--profile", "smoke", "--set", "lr=1e-4", "--set", "lr=1e-3"],
            "--set: lr given twice (lr=1e-4 and lr=1e-3); give it once",
        ),
        (["submit", "all", "--profile", "smoke", "--image", "/nonexistent/dog.jpg"], "--image: no such file"),
    ],
)
def test_bad_submit_input_is_one_line_exit_2_and_writes_nothing(
    home: Path, args: list[str], expected: str
) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert nothing_written(home)


def test_unreadable_image_is_rejected(home: Path, tmp_path: Path) -> None:
    fake = tmp_path / "dog.jpg"
    fake.write_text("not an image")
    result = invoke("submit", "all", "--profile", "smoke", "--image", str(fake))
    assert result.exit_code == 2 and "is not a readable image" in result.output
    assert nothing_written(home)


def test_unreachable_broker_exits_1_naming_the_url_and_writes_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVLAB_BROKER_URL", "redis://:hunter2@127.0.0.1:1/0")
    result = invoke("submit", "all", "--profile", "smoke")
    assert result.exit_code == 1
    assert "redis://:***@127.0.0.1:1/0" in result.output and "hunter2" not in result.output
    assert nothing_written(home)


def test_unreachable_database_exits_1_with_the_password_masked(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVLAB_DATABASE_URL", "postgresql+psycopg://convlab:hunter2@127.0.0.1:1/convlab")
    result = invoke("status")
    assert result.exit_code == 1
    assert "convlab:***@127.0.0.1:1" in result.output and "hunter2" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["status", "s-doesnotexist"],
        ["status", "r-doesnotexist"],
        ["cancel", "r-doesnotexist"],
        ["retry", "r-doesnotexist"],
        ["report", "s-doesnotexist"],
    ],
)
def test_unknown_ids_exit_2(home: Path, args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "doesnotexist" in result.output
    assert nothing_written(home)


def test_status_without_any_sweep_says_how_to_start(home: Path) -> None:
    result = invoke("status")
    assert result.exit_code == 2 and "orchestrator submit all" in result.output


def test_bad_settings_exit_2(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVLAB_LEASE_SECONDS", "soon")
    result = invoke("status")
    assert result.exit_code == 2 and "CONVLAB_LEASE_SECONDS" in result.output


def test_worker_rejects_bad_slots(home: Path) -> None:
    result = invoke("worker", "--slots", "0")
    assert result.exit_code == 2 and "--slots" in result.output


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("CONVLAB_DATABASE_URL", "mysql://convlab:hunter2@db.example.org/convlab"),
        ("CONVLAB_BROKER_URL", "amqp://guest:hunter2@127.0.0.1:5672//"),
        ("CONVLAB_ARTIFACTS_URL", "https://convlab:hunter2@minio.example.org/bucket"),
    ],
)
def test_an_unsupported_url_is_one_line_exit_2_with_the_password_masked(
    home: Path, monkeypatch: pytest.MonkeyPatch, name: str, url: str
) -> None:
    monkeypatch.setenv(name, url)
    result = invoke("submit", "all", "--profile", "smoke")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {name}="), result.output
    assert "hunter2" not in result.output and "***" in result.output
    assert not home.exists()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_postgres_url_as_hosting_services_write_it_opens_with_psycopg(
    home: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    for form in ("postgres://", "postgresql://"):
        monkeypatch.setenv("CONVLAB_DATABASE_URL", db_url.replace("postgresql+psycopg://", form, 1))
        result = invoke("status")
        assert result.exit_code == 2 and "no sweep yet" in result.output, result.output
