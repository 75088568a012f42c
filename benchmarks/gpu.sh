#!/usr/bin/env bash
# GPU benchmark: CIFAR-10 U-Net (~35M parameters) at batch 512, IC vs GC, fp32 / bf16 autocast + channels_last
# / + torch.compile; samples/s and peak memory (torch.cuda.max_memory_allocated).
# Writes results/bench/gpu-<card>.json (after every mode, so a cut-short run keeps what it measured) and
# refreshes the GPU section of results/bench/README.md if the CPU results are there.
# Runs unattended; a hard wall-clock cap (GPU_BENCH_LIMIT_S, default 470 s) keeps it under 8 minutes.
#
#   bash benchmarks/gpu.sh                 # on a CUDA machine
#   bash benchmarks/gpu.sh --dry-run       # CPU path with a tiny network (what the tests run)
#   PY=python3 bash benchmarks/gpu.sh --no-compile
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
LIMIT=${GPU_BENCH_LIMIT_S:-470}
DEADLINE=$((LIMIT - 50))   # the script stops starting new work here; timeout is the backstop
echo "[gpu.sh] $($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
timeout --signal=TERM --kill-after=15 "$LIMIT" "$PY" benchmarks/gpu_bench.py --deadline "$DEADLINE" "$@" || status=$?
if [ "$status" -eq 124 ]; then
  echo "[gpu.sh] hit the ${LIMIT}s cap; the JSON holds the modes that finished" >&2
fi
# refresh the README's GPU table from whatever gpu-*.json exist (cheap; needs the CPU results to be present)
if [ -f results/bench/step_time.json ] && [ -f results/bench/ot_scaling.json ] && [ -f results/bench/sampling.json ]; then
  "$PY" benchmarks/run_all.py --readme-only || true
fi
exit "$status"
