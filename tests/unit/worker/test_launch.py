from __future__ import annotations

import pytest

from worker.launch import worker_launch


def test_gpu_worker_is_pinned_and_runs_warm_task_processes() -> None:
    launch = worker_launch(gpu=2, base_env={"PATH": "/bin"})
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "2"
    argv = " ".join(launch.argv)
    assert "--concurrency 1" in argv and "--pool custom" in argv
    assert launch.env["CELERY_CUSTOM_WORKER_POOL"] == "worker.pool:WarmTaskPool"
    assert "--max-tasks-per-child" not in argv  # worker.warm decides when a task process is replaced
    assert "--prefetch-multiplier 1" in argv and "-A worker.main" in argv
    assert launch.env["CONVLAB_WORKER_DEVICE"] == "GPU 2"
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in launch.env  # one task owns the GPU


def test_slots_share_one_gpu_with_memory_growth() -> None:
    launch = worker_launch(gpu=0, slots=3, base_env={})
    assert "--concurrency 3" in " ".join(launch.argv)
    assert launch.env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert launch.env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert launch.env["CONVLAB_WORKER_SLOTS"] == "3"


def test_no_gpu_means_cpu_and_unique_names() -> None:
    a, b = worker_launch(base_env={}), worker_launch(base_env={})
    assert a.env["CONVLAB_WORKER_DEVICE"] == "CPU" and "CUDA_VISIBLE_DEVICES" not in a.env
    assert a.name != b.name and a.name.startswith("cpu-")
    assert worker_launch(name="w1@box", base_env={}).name == "w1@box"


@pytest.mark.parametrize(("kwargs", "message"), [({"slots": 0}, "--slots"), ({"gpu": -1}, "--gpu")])
def test_bad_arguments(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        worker_launch(base_env={}, **kwargs)  # type: ignore[arg-type]
