#!/usr/bin/env bash
# The GPU benchmark of issue 11, as ONE call of the `device` tool (15 minutes of device time per session,
# each start included). Prepare here first: `bash bench/gpu_prepare.sh` (builds .dev/, ~50 MiB). Then:
#   device run: command "bash bench/gpu_plan.sh", carry [".dev"], timeout_s 600
# Rehearse on a CPU (no .dev needed; the smoke profile, alpha 0.25, KERAS_BACKEND=jax):
#   GPU_PLAN_DRY=1 GPU_PLAN_PHASES="A C" OUT=/tmp/gpu-plan bash bench/gpu_plan.sh
#
# Phases (each prints its table as soon as it ends; later phases are skipped once GPU_PLAN_BUDGET seconds
# have passed, so a slow machine still returns what it measured):
#   A  quick plan, worker --gpu 0 --slots 3, device loop, cold compilation cache: end-to-end wall,
#      first-epoch seconds cold, the projected paper plan
#   B  the same plan again (--force) with the cache now warm: first-epoch seconds warm
#   C  paper-scale throughput: three alpha 1.0 trainings at batch 32 at once, device loop
#   D  the same with CONVLAB_TRAIN_LOOP=fit (Keras model.fit): what the device loop buys
#   E  slots: 1 and 6 alpha 1.0 trainings at once (with C's 3: the default --slots for a GPU worker)
# Everything measured comes from the runs' own records (orchestrator status --json): bench/gpu_plan.py.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-/tmp/gpu-plan-out}
budget=${GPU_PLAN_BUDGET:-500}
dry=${GPU_PLAN_DRY:-0}
phases=" ${GPU_PLAN_PHASES:-A B C D E1 E6} "
mkdir -p "$out"
t0=$SECONDS
say() { printf '[%4ds] %s\n' $((SECONDS - t0)) "$*"; }

if [[ -d .dev/whl && $dry != 1 ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .dev/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
  export CONVLAB_CIFAR10=$root/.dev/data/cifar-10-python.tar.gz CONVLAB_WEIGHTS_DIR=$root/.dev/weights
fi
export KERAS_BACKEND=jax
export CONVLAB_HOME=${CONVLAB_HOME:-/tmp/convlab-gpu-plan}
rm -rf "$CONVLAB_HOME"
python3 - <<'PY'
import jax, keras
print("jax", jax.__version__, "keras", keras.__version__, "devices", jax.devices())
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [[ $dry == 1 ]]; then
  gpu=() profile=smoke alpha=0.25 scale=(--set train_limit=300 --set val_limit=100) tput_epochs=2
else
  gpu=(--gpu 0) profile=quick alpha=1.0 scale=() tput_epochs=3
fi

worker_pid=
start_worker() { # slots loop
  CONVLAB_TRAIN_LOOP=$2 orchestrator worker "${gpu[@]}" --slots "$1" --name "bench-$1-$2" \
    >"$out/worker-$1-$2.log" 2>&1 &
  worker_pid=$!
}
stop_worker() {
  [[ -n $worker_pid ]] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
  worker_pid=
}
trap stop_worker EXIT

phase() { # name slots loop -- submit arguments...
  local name=$1 slots=$2 loop=$3
  shift 4
  [[ $phases == *" $name "* ]] || return 0
  if ((SECONDS - t0 > budget)); then
    say "phase $name skipped: past the budget of ${budget} s"
    return
  fi
  say "phase $name: slots $slots, loop $loop: orchestrator submit $*"
  start_worker "$slots" "$loop"
  local sweep
  sweep=$(orchestrator submit "$@" --force --no-wait 2>&1 | tee "$out/$name-submit.log" | awk '/^sweep /{print $2}')
  if [[ -z $sweep ]]; then
    say "phase $name: submit failed"; cat "$out/$name-submit.log"; stop_worker; return
  fi
  python3 bench/gpu_plan.py wait "$sweep" "$out/$name" --timeout $((budget + 120 - (SECONDS - t0)))
  stop_worker
  python3 bench/gpu_plan.py summary "$out/$name"
}

phase A 3 device -- all --profile "$profile" "${scale[@]}"
phase B 3 device -- all --profile "$profile" "${scale[@]}"
tput=(--profile "$profile" "${scale[@]}" --set alpha="$alpha" --set epochs="$tput_epochs")
phase C 3 device -- train --regime scratch --seeds 3 "${tput[@]}"
phase D 3 fit -- train --regime scratch --seeds 3 "${tput[@]}"
phase E1 1 device -- train --regime scratch --seeds 1 "${tput[@]}"
phase E6 6 device -- train --regime scratch --seeds 6 "${tput[@]}"
say "done; records in $out"
ls "$CONVLAB_HOME/cache/xla" 2>/dev/null | wc -l | xargs echo "compilation cache entries:"
