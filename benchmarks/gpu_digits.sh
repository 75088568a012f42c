#!/usr/bin/env bash
# The 10-seed digits profile on one GPU: params/fid_curves/gpu_digits.yaml (cpu_long.yaml's 30 runs: IC, OT and
# GC mu=0.5 at seeds 0-9, 4000 steps each) trained 10 at a time on one card, then the fid_curves notebook's
# curves, final evaluation (10k samples per run), figures and pre-registered claims into
# results/fid_curves/gpu_digits/, and results/README.md refreshed. No network: the digits come from scikit-learn
# and the FD_digits classifier ships with gclib. Target: under 8 minutes on one H200.
# GPU-trained runs live in their own cache (GCLIB_RUNS, default runs-gpu/), never mixed with CPU-trained ones.
#
#   bash benchmarks/gpu_digits.sh            # on a CUDA machine
#   bash benchmarks/gpu_digits.sh --smoke    # CPU, 2 seeds, 40 steps: what the tests run (results/fid_curves/_pytest-gpu-smoke/)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PAPERMILL=("$PY" -m papermill)
LIMIT=${GPU_DIGITS_LIMIT_S:-480}
export GCLIB_RUNS=${GCLIB_RUNS:-$PWD/runs-gpu}
variant=gpu_digits
extra=()
if [ "${1:-}" = "--smoke" ]; then
  variant=_pytest-gpu-smoke
  export GCLIB_RUNS=${GCLIB_RUNS_SMOKE:-$(mktemp -d)}
  extra=(-y "variant: $variant
seeds: [0, 1]
workers: 2
final_eval: {n: 100, sampling_seeds: [0, 1]}
overrides: {total_steps: 40, batch_size: 16, lr: 5.0e-4, optimizer: adam, ema_every: 1, ema_decay: 0.99, s1: 20,
            eval_every: 20, eval_n: 200, eval_metrics: [fd_digits], checkpoint_every: 20, keep_checkpoints: 2,
            sample_every: 0, device: cpu}")
else
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_digits.sh: no CUDA device here (use --smoke for the CPU check)")'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
fi
out=results/fid_curves/$variant
mkdir -p "$out"
echo "[gpu_digits.sh] run cache $GCLIB_RUNS, results $out"
start=$(date +%s)
status=0
timeout --signal=TERM --kill-after=15 "$LIMIT" "${PAPERMILL[@]}" notebooks/fid_curves.ipynb "$out/fid_curves.ipynb" \
  -f params/fid_curves/gpu_digits.yaml "${extra[@]}" --cwd notebooks -k python3 --no-progress-bar || status=$?
echo "[gpu_digits.sh] notebook finished with status $status in $(( $(date +%s) - start )) s"
[ "$status" -eq 124 ] && echo "[gpu_digits.sh] hit the ${LIMIT}s cap; rerun to resume the cached runs" >&2
if [ "$status" -eq 0 ] && [ "$variant" = gpu_digits ]; then
  "$PY" -c 'from gclib.reproduce import write_results_readme; from gclib.report import project_root; write_results_readme(project_root())'
fi
exit "$status"
