"""Settings: URLs never leak a password; the engine switches default on and reject a mistyped value."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.settings import SettingsError, is_object_url, load_settings, mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://u:secret@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        ("amqp://guest:secret@h:5672//", "amqp://guest:***@h:5672//"),
        # A raw '@' or '?' in the password (should be %-encoded, often is not): hide it all the same.
        ("postgresql://u:se@cret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:se?cret@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_password_in_userinfo_is_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "secret" not in mask_url(url) and "cret" not in mask_url(url)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u@h/db?password=secret", "postgresql://u@h/db?password=***"),
        (
            "postgresql://h/db?sslmode=require&password=secret&application_name=x",
            "postgresql://h/db?sslmode=require&password=***&application_name=x",
        ),
        ("postgresql://h/db?PASSWORD=secret", "postgresql://h/db?PASSWORD=***"),
        ("postgresql://h/db?sslpassword=secret", "postgresql://h/db?sslpassword=***"),
        ("redis://h:6379/0?password=secret", "redis://h:6379/0?password=***"),
        ("postgresql://h/db?password=", "postgresql://h/db?password=***"),
        # Both at once: each is masked.
        ("postgresql://u:secret@h/db?password=secret", "postgresql://u:***@h/db?password=***"),
    ],
)
def test_password_in_query_is_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "secret" not in mask_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dt_1&sslmode=disable",
        "postgresql://h/db?passwordless=1",
        "redis://127.0.0.1:6379/13",
        "sqlite:////tmp/home/convlab.db",
        "filesystem:// (embedded)",
        "not a url",
    ],
)
def test_url_without_password_is_unchanged(url: str) -> None:
    assert mask_url(url) == url


def test_engine_settings_default_to_the_loop_chosen_by_device_and_the_cache() -> None:
    settings = load_settings({"CONVLAB_HOME": "/tmp/h"})
    assert settings.train_loop == "auto"
    assert settings.compile_cache_dir == Path("/tmp/h/cache/xla")


def test_engine_settings_can_be_switched_off() -> None:
    settings = load_settings({"CONVLAB_TRAIN_LOOP": "FIT", "CONVLAB_COMPILE_CACHE": "off"})
    assert settings.train_loop == "fit"
    assert settings.compile_cache_dir is None


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [("CONVLAB_TRAIN_LOOP", "fast", "auto, device, fit"), ("CONVLAB_COMPILE_CACHE", "yes", "on, off")],
)
def test_a_mistyped_engine_setting_names_the_variable_and_what_is_allowed(
    name: str, value: str, allowed: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{name}='{value}': expected one of {allowed}$"):
        load_settings({name: value})


@pytest.mark.parametrize(
    ("url", "opened"),
    [
        ("postgres://u:pw@h:5432/db", "postgresql+psycopg://u:pw@h:5432/db"),
        ("postgresql://u@h/db?sslmode=require", "postgresql+psycopg://u@h/db?sslmode=require"),
        ("POSTGRES://h/db", "postgresql+psycopg://h/db"),
        ("postgresql+psycopg://h/db", "postgresql+psycopg://h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_urls_as_users_write_them_open_with_psycopg(url: str, opened: str) -> None:
    assert load_settings({"CONVLAB_DATABASE_URL": url}).database_url == opened


@pytest.mark.parametrize(
    "url", ["mysql://u:secret@h/db", "postgresql+psycopg2://u:secret@h/db", "h:5432/db", "redis://h/0"]
)
def test_other_database_urls_are_refused_naming_the_variable_the_url_and_the_forms(url: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CONVLAB_DATABASE_URL": url})
    message = str(info.value)
    assert message.startswith("CONVLAB_DATABASE_URL=") and "\n" not in message
    assert "postgres://" in message and "sqlite:///PATH" in message and "secret" not in message


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://:pw@h:6380/1"])
def test_redis_brokers_are_accepted(url: str) -> None:
    assert load_settings({"CONVLAB_BROKER_URL": url}).broker_url == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("amqp://guest:secret@127.0.0.1:5672//", "RabbitMQ is not supported"),
        ("pyamqp://guest:secret@h//", "consumer_timeout"),
        ("sqs://key:secret@", "expected redis://"),
    ],
)
def test_other_brokers_are_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CONVLAB_BROKER_URL": url})
    message = str(info.value)
    assert message.startswith("CONVLAB_BROKER_URL=") and why in message
    assert "secret" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("s3://lab/convlab/", "s3://lab/convlab"),
        ("S3://lab", "s3://lab"),
        ("gs://bucket/p", "gs://bucket/p"),
        ("az://container/p", "az://container/p"),
        ("file:///srv/artifacts", "file:///srv/artifacts"),
    ],
)
def test_artifact_store_urls_are_accepted(url: str, kept: str) -> None:
    settings = load_settings({"CONVLAB_ARTIFACTS_URL": url})
    assert settings.artifacts_url == kept
    assert settings.artifacts_in_object_store == (not kept.startswith("file://"))


def test_without_an_artifacts_url_the_store_is_the_home_folder(tmp_path: Path) -> None:
    settings = load_settings({"CONVLAB_HOME": str(tmp_path)})
    assert settings.artifacts_url is None and not settings.artifacts_in_object_store
    assert settings.artifacts_dir == tmp_path / "artifacts"
    assert load_settings({"CONVLAB_ARTIFACTS_URL": "file:///srv/a"}).artifacts_dir == Path("/srv/a")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("s3://", "expected s3://BUCKET"),
        ("s3:///prefix", "expected s3://BUCKET"),
        ("https://minio:9000/bucket", "expected s3://BUCKET"),
        ("file://relative/path", "file:///ABSOLUTE/PATH"),
        ("s3://key:secret@bucket/p", "credentials do not belong in the URL"),
    ],
)
def test_other_artifact_urls_are_refused_naming_the_variable(url: str, why: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CONVLAB_ARTIFACTS_URL": url})
    message = str(info.value)
    assert message.startswith("CONVLAB_ARTIFACTS_URL") and why in message
    assert "secret" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("../data/cifar-10-python.tar.gz", "../data/cifar-10-python.tar.gz"),  # made absolute later
        ("file:///srv/data/cifar-10-python.tar.gz", "/srv/data/cifar-10-python.tar.gz"),
        ("S3://lab/data/cifar-10-python.tar.gz", "s3://lab/data/cifar-10-python.tar.gz"),
        ("gs://bucket/inputs/", "gs://bucket/inputs"),
        ("az://container", "az://container"),
    ],
)
def test_input_settings_are_local_paths_or_object_store_urls(value: str, kept: str) -> None:
    settings = load_settings({"CONVLAB_CIFAR10": value, "CONVLAB_WEIGHTS_DIR": value})
    assert settings.cifar10_path == kept and settings.weights_dir == kept
    assert is_object_url(kept) == ("://" in kept)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "expected a local path"),
        ("s3:///data", "s3://BUCKET/KEY"),
        ("file://relative", "file:///ABSOLUTE/PATH"),
        ("s3://key:secret@bucket/data", "credentials do not belong in the URL"),
    ],
)
def test_other_input_urls_are_refused_naming_the_variable(value: str, why: str) -> None:
    for name in ("CONVLAB_CIFAR10", "CONVLAB_WEIGHTS_DIR"):
        with pytest.raises(SettingsError) as info:
            load_settings({name: value})
        message = str(info.value)
        assert message.startswith(name) and why in message
        assert "secret" not in message and "\n" not in message


def test_warm_process_limits_default_and_are_read() -> None:
    default = load_settings({})
    assert default.tasks_per_process == 20 and default.process_memory_mb == 4096.0
    chosen = load_settings({"CONVLAB_TASKS_PER_PROCESS": "1", "CONVLAB_PROCESS_MEMORY_MB": "512.5"})
    assert chosen.tasks_per_process == 1 and chosen.process_memory_mb == 512.5


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CONVLAB_TASKS_PER_PROCESS", "0", "a whole number >= 1"),
        ("CONVLAB_TASKS_PER_PROCESS", "2.5", "a whole number >= 1"),
        ("CONVLAB_TASKS_PER_PROCESS", "many", "a whole number >= 1"),
        ("CONVLAB_PROCESS_MEMORY_MB", "0", "a positive number"),
        ("CONVLAB_PROCESS_MEMORY_MB", "4G", "a positive number"),
    ],
)
def test_a_bad_warm_process_limit_is_refused_in_one_line(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name}='{value}': expected {expected}$"):
        load_settings({name: value})
