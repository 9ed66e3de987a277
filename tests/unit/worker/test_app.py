"""The Celery app's broker settings."""

from __future__ import annotations

from pathlib import Path

from contract.settings import load_settings
from worker.app import EMBEDDED_POLLING_INTERVAL, create_app


def test_the_embedded_broker_is_looked_at_every_tenth_of_a_second(tmp_path: Path) -> None:
    """kombu's filesystem transport would poll every 1 s: up to a second idle between a plan's tasks."""
    app = create_app(load_settings({"CONVLAB_HOME": str(tmp_path)}))
    with app.connection_for_read() as connection:
        assert connection.transport.polling_interval == EMBEDDED_POLLING_INTERVAL == 0.1
    assert (tmp_path / "broker" / "queue").is_dir()


def test_a_broker_url_gets_no_filesystem_options(tmp_path: Path) -> None:
    settings = load_settings({"CONVLAB_HOME": str(tmp_path), "CONVLAB_BROKER_URL": "redis://127.0.0.1:1/0"})
    app = create_app(settings)
    assert "polling_interval" not in app.conf.broker_transport_options
    assert not (tmp_path / "broker").exists()
