#!/usr/bin/env bash
# Builds .dev/ for bench/gpu_plan.sh: everything the GPU machine of the `device` tool lacks, carried with
# the call (64 MiB at most). Run here, from the repository root, where pip reaches PyPI:
#   bash bench/gpu_prepare.sh && du -sh .dev
# then on the device tool: command `bash bench/gpu_plan.sh`, carry [".dev"], timeout 600.
# The machine there (../shared/device/README.md): one GPU, Python 3.12, JAX with CUDA, numpy, matplotlib,
# h5py, rich, click, pillow; no TensorFlow, no network, no Redis/PostgreSQL (the embedded default runs).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${CONVLAB_SHARED:-../shared}
rm -rf .dev && mkdir -p .dev/whl .dev/data .dev/weights
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude

# What the GPU machine lacks, pinned to the versions this checkout is tested with (pip list here).
pins=$(python - <<'PY'
import importlib.metadata as md
names = ["keras", "namex", "optree", "celery", "kombu", "billiard", "vine", "amqp", "click",
         "click-didyoumean", "click-plugins", "click-repl", "prompt_toolkit", "wcwidth", "tzlocal",
         "tzdata", "python-dateutil", "six", "typing_extensions", "redis", "SQLAlchemy", "greenlet",
         "alembic", "Mako", "MarkupSafe"]
def pin(name):
    try:
        return f"{name}=={md.version(name)}"
    except md.PackageNotFoundError:  # needed there, not here (e.g. tzdata): the newest release
        return name
print(" ".join(pin(n) for n in names))
PY
)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$p")
done
# shellcheck disable=SC2086
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .dev/whl $pins
python -m pip wheel -q --no-deps . -w .dev/whl

# A class-balanced 10,000/2,000 subset of CIFAR-10 in the official tarball layout (the full one is 163 MB).
python "$shared/device/cifar_subset.py" --train 10000 --val 2000 --out .dev/data/cifar-10-python.tar.gz
cp "$shared"/data/weights/*.h5 .dev/weights/
du -sh .dev/whl .dev/data .dev/weights; du -sh .dev | sed "s/\t.*/\tin all (64 MiB at most per call)/"
