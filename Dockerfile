# syntax=docker/dockerfile:1
# One image for every convlab service: the Celery worker, the orchestrator CLI and Flower.
#
# No CUDA base image: tensorflow[and-cuda] (the `gpu` extra) pulls the CUDA runtime, cuDNN, cuBLAS...
# as nvidia-* wheels from PyPI, so python:3.11-slim is enough. What the image can NOT bring is the
# kernel driver: the GPU host needs an NVIDIA driver and nvidia-container-toolkit (which injects
# libcuda.so and the /dev/nvidia* devices into the container at start).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONVLAB_HOME=/data

# Non-root user; /data is created and owned by it so that a fresh named volume mounted there
# inherits that ownership (Docker copies the image's directory ownership into an empty volume).
RUN groupadd --system --gid 1000 convlab \
 && useradd --system --uid 1000 --gid convlab --create-home --home-dir /home/convlab convlab \
 && mkdir -p /data \
 && chown convlab:convlab /data

WORKDIR /src
# Only what the build needs (.dockerignore keeps everything else out of the context anyway).
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY orchestrator ./orchestrator
COPY storage ./storage
RUN pip install --no-cache-dir ".[gpu,monitor]" \
 && rm -rf /src/build /src/*.egg-info

USER convlab
WORKDIR /home/convlab

# Exec form: `orchestrator` is the container's main process and receives SIGTERM directly
# (compose adds tini as PID 1 with `init: true`, which forwards signals and reaps zombies).
ENTRYPOINT ["orchestrator"]
CMD ["worker"]
