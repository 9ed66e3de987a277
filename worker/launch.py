"""How `orchestrator worker` starts a Celery worker: pool, concurrency, GPU pinning, environment.

Process model: Celery's prefork pool with warm task processes (``worker.pool``, ``worker.warm``). The main
process never imports TensorFlow; each slot's child imports it once, right after its fork, and runs task
after task, reset between them, until it is recycled (after a failed task, after
``CONVLAB_TASKS_PER_PROCESS`` tasks, above ``CONVLAB_PROCESS_MEMORY_MB``). A crash in one task (OOM,
segfault) is contained: the main process notices the lost child, the message is re-queued, and the worker
keeps serving with a new child. The threads and solo pools were rejected because they run tasks inside the
main process: a crash would take the worker down.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from dataclasses import dataclass

from worker.app import QUEUE
from worker.owner import OWNER_ENV, OWNER_SWEEP_ENV, Owner

# Celery's prefork pool whose task processes stay for the next task (worker.pool).
WARM_POOL = "worker.pool:WarmTaskPool"


@dataclass(frozen=True)
class WorkerLaunch:
    argv: list[str]
    env: dict[str, str]
    name: str


def worker_launch(
    *,
    gpu: int | None = None,
    slots: int = 1,
    name: str | None = None,
    loglevel: str = "INFO",
    base_env: dict[str, str] | None = None,
    owned: bool = False,
    owner_sweep: str | None = None,
) -> WorkerLaunch:
    """``owned``: the worker ends when the calling process does (a local worker; see ``worker.owner``),
    cancelling what remains of ``owner_sweep``."""
    if slots < 1:
        raise ValueError(f"--slots: must be >= 1, got {slots}")
    if gpu is not None and gpu < 0:
        raise ValueError(f"--gpu: must be a GPU index >= 0, got {gpu}")
    env = dict(os.environ if base_env is None else base_env)
    for key in (OWNER_ENV, OWNER_SWEEP_ENV):  # a worker has an owner only if its starter says so
        env.pop(key, None)
    if owned:
        env.update(Owner.this_process(owner_sweep).to_env())
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)  # the task processes see exactly one GPU, as index 0
        device = f"GPU {gpu}"
    else:
        device = (
            "CPU"
            if env.get("CUDA_VISIBLE_DEVICES", "") in ("", "-1")
            else f"GPU {env['CUDA_VISIBLE_DEVICES']}"
        )
    if slots > 1:
        # Several task processes share one GPU: each takes memory as it needs it instead of all of it.
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env["CONVLAB_WORKER_DEVICE"] = f"{device} x{slots} slots" if slots > 1 else device
    env["CONVLAB_WORKER_SLOTS"] = str(slots)
    env["CELERY_CUSTOM_WORKER_POOL"] = WARM_POOL
    label = f"gpu{gpu}" if gpu is not None else "cpu"
    node = name or f"{label}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.main",
        "worker",
        "--pool",
        "custom",  # Celery's name for the pool that CELERY_CUSTOM_WORKER_POOL names
        "--concurrency",
        str(slots),
        "--prefetch-multiplier",
        "1",
        "--queues",
        QUEUE,
        "--hostname",
        node,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",  # peers are tracked in the database, not by chatter
        "--task-events",
    ]
    return WorkerLaunch(argv=argv, env=env, name=node)
