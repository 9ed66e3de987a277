# syntax=docker/dockerfile:1
# One image for every convlab service: the Celery worker, the orchestrator CLI and Flower.
#
# No CUDA base image: tensorflow[and-cuda] (the `gpu` extra) pulls the CUDA runtime, cuDNN, cuBLAS...
# as nvidia-* wheels from PyPI, so python:3.11-slim is enough. What the image can NOT bring is the
# kernel driver: the GPU host needs an NVIDIA driver and nvidia-container-toolkit (which injects
# libcuda.so and the /dev/nvidia* devices into the container at start).
#
# Build arguments:
#   BASE_IMAGE  python:3.11-slim; CI passes a stand-in made from Debian packages (no registry there).
#   EXTRAS      the pyproject extras to install: gpu,monitor (the CUDA wheels, several GB) for GPU
#               boxes; `monitor` alone for a CPU-only image (laptop, CPU server, CI).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG EXTRAS=gpu,monitor

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    CONVLAB_HOME=/data

# Non-root user; /data is created and owned by it so that a fresh named volume mounted there
# inherits that ownership (Docker copies the image's directory ownership into an empty volume).
RUN groupadd --system --gid 1000 convlab \
 && useradd --system --uid 1000 --gid convlab --create-home --home-dir /home/convlab convlab \
 && mkdir -p /data \
 && chown convlab:convlab /data

WORKDIR /src
# The dependencies first, read from pyproject.toml (dependencies + the chosen extras), in a layer of
# their own: a code change rebuilds only the small layer below, not the GBs of TensorFlow.
# The wheels are downloaded into the cache mount and installed from there: `pip download` reuses a
# file already in its --dest, which keeps working where an index's responses are not cacheable
# (pip's own HTTP cache then stays empty). The optional secrets let a build machine hand in its pip
# configuration (an index mirror, a CA bundle) without it landing in a layer.
COPY pyproject.toml ./
RUN --mount=type=cache,id=convlab-pip,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca.crt \
    python -c "import sys, tomllib; \
p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in sys.argv[1].split(',') if e]; \
print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" \
      "$EXTRAS" > /tmp/requirements.txt \
 && pip download --quiet --dest /root/.cache/pip/wheelhouse -r /tmp/requirements.txt \
 && pip install --no-index --find-links /root/.cache/pip/wheelhouse -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the whole tree: .dockerignore, not this file, decides what stays out (tests, docs, data...),
# so a new package is copied without anyone editing this file. pyproject.toml decides what is
# installed; the check after it fails the build when a top-level package of the tree did not make
# it into site-packages (it imports each one from outside /src, then /src is removed).
COPY . ./
RUN --mount=type=cache,id=convlab-pip,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca.crt \
    pip install --no-deps . \
 && cd / \
 && python -c "import importlib.util, pathlib, sys; \
names = sorted(p.parent.name for p in pathlib.Path('/src').glob('*/__init__.py')); \
specs = {n: importlib.util.find_spec(n) for n in names}; \
bad = [n for n, s in specs.items() if s is None or str(s.origin).startswith('/src/')]; \
print('packages installed:', ', '.join(names)); \
sys.exit('not installed (see [tool.setuptools.packages.find] in pyproject.toml): ' + ', '.join(bad) if bad else 0)" \
 && rm -rf /src

USER convlab
WORKDIR /home/convlab

# Exec form: `orchestrator` is the container's main process and receives SIGTERM directly
# (compose adds tini as PID 1 with `init: true`, which forwards signals and reaps zombies).
ENTRYPOINT ["orchestrator"]
CMD ["worker"]
