#!/usr/bin/env bash
# The whole GPU codec check on a machine with a CUDA device, from a copy of the working tree, with no
# network: install the wheels handed over, run the `gpu`-marked tests, decode a few hundred mutated
# frames under compute-sanitizer, run the benchmark. Each step has its own time limit; all of them
# together stay under 8 minutes. Exit status: 0 when every step passed, else the number of failed steps.
#
#   scripts/gpu_check.sh WHEELS_DIR [OUT_DIR]
#
# WHEELS_DIR holds the wheels the GPU path needs beyond the project's environment (numba-cuda and its
# CUDA bindings; nvidia-nvcomp-cu13 for the nvCOMP comparison), installed with pip --no-index.
# OUT_DIR (default benchmarks/results/gpu_check) receives the benchmark's gpu_codec.json / .md and
# this script's log, check.log. PYTHON picks the interpreter (default: .venv/bin/python, else python3).
set -uo pipefail

wheels=${1:?usage: scripts/gpu_check.sh WHEELS_DIR [OUT_DIR]}
cd "$(dirname "$0")/.." || exit 1
out=${2:-benchmarks/results/gpu_check}
mkdir -p "$out"
log="$out/check.log"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
unset NUMBA_ENABLE_CUDASIM # the simulator is for CI without a GPU
start=$SECONDS
failed=0

step() { # step NAME LIMIT_S COMMAND...: run one step with a time limit, record how it went
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s, at $((SECONDS - start)) s)" | tee -a "$log"
  if timeout "$limit" "$@" 2>&1 | tee -a "$log"; then
    echo "-- $name: ok" | tee -a "$log"
  else
    echo "-- $name: FAILED (status ${PIPESTATUS[0]})" | tee -a "$log"
    failed=$((failed + 1))
  fi
}

: >"$log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$log"

shopt -s nullglob
found=("$wheels"/*.whl)
if ((${#found[@]})); then
  step install 60 "$PYTHON" -m pip install --no-index --find-links "$wheels" "${found[@]}"
else
  echo "no wheels in $wheels: using the environment as it is" | tee -a "$log"
fi
if ! "$PYTHON" -c "import codec._kernels" 2>/dev/null; then
  step build-kernels 45 "$PYTHON" setup.py build_ext --inplace
fi
step device 20 "$PYTHON" -c "import codec; codec.device.gpu_module(); from numba import cuda; print(cuda.get_current_device().name)"

step gpu-tests 120 "$PYTHON" -m pytest -q -m gpu -rs -p no:cacheprovider tests

sanitizer=$(command -v compute-sanitizer || true)
[[ -z $sanitizer && -x /usr/local/cuda/bin/compute-sanitizer ]] && sanitizer=/usr/local/cuda/bin/compute-sanitizer
if [[ -n $sanitizer ]]; then
  step compute-sanitizer 110 "$sanitizer" --tool memcheck --error-exitcode 3 \
    "$PYTHON" scripts/gpu_sanitize.py --frames 300
else
  echo "-- compute-sanitizer: FAILED (not found on PATH or in /usr/local/cuda/bin)" | tee -a "$log"
  failed=$((failed + 1))
fi

step benchmark 120 "$PYTHON" -m benchmarks.gpu_codec --quick --out "$out"

echo "== done in $((SECONDS - start)) s, $failed step(s) failed; log: $log" | tee -a "$log"
exit "$failed"
