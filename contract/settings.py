"""The one settings object. Every ``CONVLAB_*`` variable is read here and nowhere else.

Defaults and the reason for each live in :data:`DEFAULTS` so the README and ``--help`` can quote them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# name -> (default, why). A default of "" means "unset": see the property that derives it.
DEFAULTS: dict[str, tuple[str, str]] = {
    "CONVLAB_HOME": ("./convlab-runs", "like MLflow's ./mlruns: everything of a project stays beside it"),
    "CONVLAB_DATABASE_URL": ("", "unset: SQLite at $CONVLAB_HOME/convlab.db, no server needed"),
    "CONVLAB_BROKER_URL": ("", "unset: an embedded filesystem broker under $CONVLAB_HOME/broker"),
    "CONVLAB_ARTIFACTS_URL": (
        "",
        "unset: the folder $CONVLAB_HOME/artifacts (one host, or a volume all hosts mount); "
        "s3://BUCKET/PREFIX (with AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, "
        "AWS_ALLOW_HTTP), gs://BUCKET/PREFIX or az://CONTAINER/PREFIX: hosts that share no disk",
    ),
    "CONVLAB_CACHE_LIMIT_MB": (
        "2048",
        "the per-host cache of verified downloads from an object store ($CONVLAB_HOME/cache/artifacts, "
        "and cache/inputs/<scheme>/<bucket> for each bucket of CONVLAB_CIFAR10 / CONVLAB_WEIGHTS_DIR URLs, "
        "each under this limit); least recently used files go first",
    ),
    "CONVLAB_CIFAR10": (
        "",
        "unset: Keras's own cifar10.load_data() (downloads once into the Keras cache); else "
        "cifar-10-python.tar.gz or its extracted folder, as a local path or s3://BUCKET/KEY (gs://, az://: "
        "fetched once per host into $CONVLAB_HOME/cache/inputs, verified)",
    ),
    "CONVLAB_WEIGHTS_DIR": (
        "",
        "unset: Keras's cache/download for ImageNet weights; else a folder holding Keras's "
        "mobilenet_*_224_tf_no_top.h5 files, as a local path or an s3://BUCKET/PREFIX (gs://, az://)",
    ),
    "CONVLAB_LEASE_SECONDS": (
        "60",
        "a run whose heartbeat is older than this is taken over by another worker",
    ),
    "CONVLAB_RESEND_SECONDS": (
        "300",
        "a queued run whose message a worker received this long ago and no task claimed is sent again "
        "(a task claims within seconds of the receipt; the message was lost after it)",
    ),
    "CONVLAB_HEARTBEAT_SECONDS": ("10", "how often a running task proves it is alive (well under the lease)"),
    "CONVLAB_MAX_ATTEMPTS": (
        "3",
        "a run that loses its worker this many times is failed, not retried forever",
    ),
    "CONVLAB_COMPILE_CACHE": (
        "on",
        "on: compiled XLA programs are kept under $CONVLAB_HOME/cache/xla and reused by every later task on "
        "this machine (whoever can write that folder runs code in the workers); off: each task compiles",
    ),
    "CONVLAB_TRAIN_LOOP": (
        "auto",
        "device: an epoch runs as a few compiled multi-step calls (JAX: data on the accelerator, scanned "
        "steps; TensorFlow: Keras's steps_per_execution loop); fit: Keras's model.fit, one call per batch; "
        "auto: device on a GPU, fit on a CPU (where it is faster)",
    ),
    "CONVLAB_TASKS_PER_PROCESS": (
        "20",
        "a worker slot's task process runs this many tasks (importing Keras once) and is then replaced; "
        "1: a fresh process for every task. It is also replaced after a failed task and above "
        "CONVLAB_PROCESS_MEMORY_MB",
    ),
    "CONVLAB_PROCESS_MEMORY_MB": (
        "4096",
        "a task process whose resident memory is above this after a task is replaced before the next one "
        "(a warm CPU task process holds about 0.8 GB after importing Keras, 1.0-1.2 GB after trainings)",
    ),
    # Set by `orchestrator worker` for the Celery process it starts; not meant to be set by hand.
    "CONVLAB_WORKER_DEVICE": ("", "what the worker runs on, as `orchestrator workers` shows it"),
    "CONVLAB_WORKER_SLOTS": ("1", "how many tasks the worker runs at once"),
}


class SettingsError(ValueError):
    """A CONVLAB_* variable holds a value that cannot be used."""


def _positive_float(env: Mapping[str, str], name: str) -> float:
    raw = env.get(name) or DEFAULTS[name][0]
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a positive number") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r}: expected a positive number")
    return value


def _whole_number(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name) or DEFAULTS[name][0]
    if not raw.strip().isdigit() or int(raw) < 1:
        raise SettingsError(f"{name}={raw!r}: expected a whole number >= 1")
    return int(raw)


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url_override: str | None = None
    artifacts_url: str | None = None  # None: the folder ``artifacts_dir``
    cache_limit_mb: float = 2048.0
    broker_url: str | None = None
    cifar10_path: str | None = None
    weights_dir: str | None = None
    lease_seconds: float = 60.0
    resend_seconds: float = 300.0
    heartbeat_seconds: float = 10.0
    max_attempts: int = 3
    worker_device: str = ""
    worker_slots: int = 1
    compile_cache: bool = True
    train_loop: str = "auto"
    tasks_per_process: int = 20
    process_memory_mb: float = 4096.0

    @property
    def database_url(self) -> str:
        if self.database_url_override:
            return self.database_url_override
        return f"sqlite:///{(self.home / 'convlab.db').resolve()}"

    @property
    def maintenance_seconds(self) -> float:
        """How often a worker refreshes its liveness row and reaps: often enough that a lost run is
        noticed soon after its lease ends (also how readers judge whether a worker is alive)."""
        return max(0.5, min(self.heartbeat_seconds, self.lease_seconds / 3))

    @property
    def compile_cache_dir(self) -> Path | None:
        """Where compiled XLA programs are kept for every task on this machine; None when switched off."""
        return self.home / "cache" / "xla" if self.compile_cache else None

    @property
    def artifacts_dir(self) -> Path:
        """The folder store's root (``CONVLAB_ARTIFACTS_URL`` unset, or a ``file://`` URL)."""
        if self.artifacts_url and self.artifacts_url.startswith("file://"):
            return Path(self.artifacts_url[len("file://") :])
        return self.home / "artifacts"

    @property
    def artifacts_in_object_store(self) -> bool:
        return bool(self.artifacts_url) and not str(self.artifacts_url).startswith("file://")

    @property
    def artifact_cache_dir(self) -> Path:
        """This host's verified downloads from an object store."""
        return self.home / "cache" / "artifacts"

    @property
    def input_cache_dir(self) -> Path:
        """This host's verified downloads of ``CONVLAB_CIFAR10`` / ``CONVLAB_WEIGHTS_DIR`` given as
        object-store URLs (``<scheme>/<bucket>/<key>`` below it)."""
        return self.home / "cache" / "inputs"

    @property
    def scratch_dir(self) -> Path:
        """This host's local files on their way into an object store (checkpoints, figures)."""
        return self.home / "scratch"

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url


TRAIN_LOOPS = ("auto", "device", "fit")


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name) or DEFAULTS[name][0]
    if raw.strip().lower() not in allowed:
        raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
    return raw.strip().lower()


# The database URLs convlab can open, as users write them. ``postgres://`` (Heroku's, most hosting
# services') and ``postgresql://`` mean psycopg 3, the driver convlab installs; SQLAlchemy alone would
# reach for psycopg2 (not installed) or refuse ``postgres`` outright.
_PSYCOPG = "postgresql+psycopg://"
_DATABASE_SCHEMES = {"postgresql+psycopg": _PSYCOPG, "postgresql": _PSYCOPG, "postgres": _PSYCOPG}
DATABASE_FORMS = "postgresql+psycopg://, postgresql://, postgres:// (PostgreSQL) or sqlite:///PATH"

# Redis only. RabbitMQ (amqp://) is refused, not ignored: it closes the channel of a consumer that holds
# a message unacknowledged for longer than its consumer_timeout (30 min by default since 3.8.17; settable
# per queue only from 3.11.15, server-wide before; Celery workers have been seen to stop on the
# resulting PRECONDITION_FAILED, Kitware/dive#995). Tasks are acknowledged after they ran
# (task_acks_late) and a training runs for hours. Acknowledging early would not help: a message
# prefetched behind a busy slot waits unacknowledged just as long.
BROKER_FORMS = "redis://HOST:PORT/DB or rediss://HOST:PORT/DB (unset: the embedded broker)"


def _database_url(raw: str | None) -> str | None:
    """``CONVLAB_DATABASE_URL`` in the form SQLAlchemy opens, or a one-line refusal."""
    if not raw:
        return None
    scheme, sep, rest = raw.strip().partition("://")
    if sep and scheme.lower() in _DATABASE_SCHEMES:
        return _DATABASE_SCHEMES[scheme.lower()] + rest
    if sep and scheme.lower() == "sqlite":
        return raw.strip()
    raise SettingsError(f"CONVLAB_DATABASE_URL={mask_url(raw)!r}: expected {DATABASE_FORMS}")


# The object stores obstore reaches with one API; each needs a bucket (container) after the scheme.
OBJECT_STORE_SCHEMES = ("s3", "gs", "az")
ARTIFACTS_FORMS = "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX or file:///ABSOLUTE/PATH"


INPUT_FORMS = "a local path, file:///ABSOLUTE/PATH, s3://BUCKET/KEY, gs://BUCKET/KEY or az://CONTAINER/KEY"
# A bucket (container) name becomes a folder of the per-host cache: S3's, GCS's and Azure's rules allow
# no more than these characters.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _object_url(name: str, raw: str) -> str | None:
    """``raw`` as ``scheme://BUCKET[/KEY]`` (scheme lower-cased, no trailing slash) when it names an object
    store; None when it has no object-store scheme. The one parser of object-store URLs (artifacts and
    inputs): credentials in the URL are refused, as they would end up in logs."""
    url = raw.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not (sep and scheme.lower() in OBJECT_STORE_SCHEMES):
        return None
    bucket = rest.split("/", 1)[0]
    if "@" in bucket:
        raise SettingsError(
            f"{name}: credentials do not belong in the URL; "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the store's own variables)"
        )
    if not _BUCKET.fullmatch(bucket) or bucket.strip(".") != bucket:
        return None
    return f"{scheme.lower()}://{rest}"


def is_object_url(value: str | None) -> bool:
    """Whether a (validated) setting names an object in a store rather than a local path."""
    return value is not None and value.partition("://")[0] in OBJECT_STORE_SCHEMES and "://" in value


def split_object_url(url: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` -> ``("s3", "bucket", "a/b")`` (the key may be empty: the bucket's root)."""
    scheme, _sep, rest = url.partition("://")
    bucket, _slash, key = rest.partition("/")
    return scheme, bucket, key.strip("/")


def _artifacts_url(raw: str | None) -> str | None:
    """``CONVLAB_ARTIFACTS_URL`` normalised (no trailing slash), or a one-line refusal."""
    if not raw or not raw.strip():
        return None
    url = raw.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() == "file" and rest.startswith("/"):
        return url
    if (found := _object_url("CONVLAB_ARTIFACTS_URL", raw)) is not None:
        return found
    raise SettingsError(f"CONVLAB_ARTIFACTS_URL={mask_url(raw)!r}: expected {ARTIFACTS_FORMS}")


def _input_setting(env: Mapping[str, str], name: str) -> str | None:
    """``CONVLAB_CIFAR10`` or ``CONVLAB_WEIGHTS_DIR``: a local path as given (made absolute where a worker
    is started), ``file:///PATH`` as the path it names, an object-store URL normalised; any other
    ``scheme://`` is refused in one line naming the variable."""
    raw = env.get(name) or ""
    if not raw.strip():
        return None
    scheme, sep, rest = raw.strip().partition("://")
    if not sep:
        return raw
    if scheme.lower() == "file" and rest.startswith("/"):
        return rest  # a file:// URL is a local path: nothing to fetch, nothing to cache
    if (found := _object_url(name, raw)) is not None:
        return found
    raise SettingsError(f"{name}={mask_url(raw)!r}: expected {INPUT_FORMS}")


def _broker_url(raw: str | None) -> str | None:
    if not raw:
        return None
    scheme, sep, _rest = raw.strip().partition("://")
    if sep and scheme.lower() in ("redis", "rediss"):
        return raw.strip()
    why = (
        "; RabbitMQ is not supported (it closes a channel whose task runs longer than its "
        "consumer_timeout, and trainings run for hours)"
        if scheme.lower() in ("amqp", "amqps", "pyamqp", "librabbitmq")
        else ""
    )
    raise SettingsError(f"CONVLAB_BROKER_URL={mask_url(raw)!r}: expected {BROKER_FORMS}{why}")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the environment once. Pass ``env`` in tests instead of patching ``os.environ``."""
    env = os.environ if env is None else env
    attempts_raw = env.get("CONVLAB_MAX_ATTEMPTS") or DEFAULTS["CONVLAB_MAX_ATTEMPTS"][0]
    if not attempts_raw.isdigit() or int(attempts_raw) < 1:
        raise SettingsError(f"CONVLAB_MAX_ATTEMPTS={attempts_raw!r}: expected a whole number >= 1")
    return Settings(
        tasks_per_process=_whole_number(env, "CONVLAB_TASKS_PER_PROCESS"),
        process_memory_mb=_positive_float(env, "CONVLAB_PROCESS_MEMORY_MB"),
        home=Path(env.get("CONVLAB_HOME") or DEFAULTS["CONVLAB_HOME"][0]).absolute(),
        database_url_override=_database_url(env.get("CONVLAB_DATABASE_URL")),
        artifacts_url=_artifacts_url(env.get("CONVLAB_ARTIFACTS_URL")),
        cache_limit_mb=_positive_float(env, "CONVLAB_CACHE_LIMIT_MB"),
        broker_url=_broker_url(env.get("CONVLAB_BROKER_URL")),
        cifar10_path=_input_setting(env, "CONVLAB_CIFAR10"),
        weights_dir=_input_setting(env, "CONVLAB_WEIGHTS_DIR"),
        lease_seconds=_positive_float(env, "CONVLAB_LEASE_SECONDS"),
        heartbeat_seconds=_positive_float(env, "CONVLAB_HEARTBEAT_SECONDS"),
        resend_seconds=_positive_float(env, "CONVLAB_RESEND_SECONDS"),
        max_attempts=int(attempts_raw),
        worker_device=env.get("CONVLAB_WORKER_DEVICE", ""),
        worker_slots=int(env.get("CONVLAB_WORKER_SLOTS") or 1),
        compile_cache=_choice(env, "CONVLAB_COMPILE_CACHE", ("on", "off")) == "on",
        train_loop=_choice(env, "CONVLAB_TRAIN_LOOP", TRAIN_LOOPS),
    )


def _mask_query(query: str) -> str:
    """``a=1&password=x`` -> ``a=1&password=***``; also ``sslpassword`` (libpq) and ``;`` separators."""
    masked = []
    for part in re.split(r"([&;])", query):
        key, eq, _value = part.partition("=")
        masked.append(f"{key}=***" if eq and key.lower().endswith("password") else part)
    return "".join(masked)


def mask_url(url: str) -> str:
    """Hide passwords in a URL for messages and logs.

    ``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``, and ``?password=secret`` (or
    ``&password=``, ``sslpassword=``) -> ``?password=***``. When the URL is ambiguous (a raw ``@`` or ``?``
    in a password) it hides too much rather than too little.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    query_at = rest.find("?")
    # The credentials end at the last '@' before the query; failing that (a '?' inside the password
    # itself), at the last '@' anywhere.
    at = rest.rfind("@", 0, query_at if query_at >= 0 else len(rest))
    if at < 0:
        at = rest.rfind("@")
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        rest = f"{user}{':***' if colon else ''}{rest[at:]}"
    host, qmark, query = rest.partition("?")
    return f"{scheme}://{host}{qmark}{_mask_query(query) if qmark else ''}"
