"""Plain Celery for bench/dispatch.py: a no-op task under convlab's worker settings, no convlab code."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ["BENCH_BROKER_URL"]
app = Celery("plain", broker=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="plain",
)
_redis = redis.Redis.from_url(BROKER)


@app.task(name="bench.noop")
def noop(sent_at: float) -> None:
    _redis.rpush("bench:latency", time.time() - sent_at)
