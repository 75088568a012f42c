#!/usr/bin/env bash
# The 10-seed digits profile on one GPU: params/fid_curves/gpu_digits.yaml (cpu_long.yaml's 30 runs: IC, OT and
# GC mu=0.5 at seeds 0-9, 4000 steps each), trained by benchmarks/gpu_train.py in one pool of one-thread worker
# processes sharing the card, each training a stack of up to GPU_DIGITS_STACK runs (default 10; gclib.stack: the
# runs' networks evaluated as one; 1 trains each run alone), with each run's final evaluation (10k samples); then
# the fid_curves notebook's curves, figures and pre-registered claims into results/fid_curves/gpu_digits/, and
# results/README.md refreshed.
# --all adds gpu_long_2x (twice the steps, 5 seeds) and gpu_long_mu (the mu sweep and the frozen predictors,
# 5 seeds) to the same pool, in that order. No network: the digits come from scikit-learn and the FD_digits
# classifier ships with gclib. Target: gpu_digits under 8 minutes on one H200.
# GPU-trained runs live in their own cache (GCLIB_RUNS, default runs-gpu/), never mixed with CPU-trained ones.
# Cut short (GPU_DIGITS_LIMIT_S, default 480 s), it stops starting runs in time for the notebooks of the complete
# profiles; a rerun resumes the rest from the cache.
#
#   bash benchmarks/gpu_digits.sh            # on a CUDA machine
#   bash benchmarks/gpu_digits.sh --all      # the three GPU profiles
#   bash benchmarks/gpu_digits.sh --replication   # gpu_digits, then cpu_long_replication.yaml (30 fresh seeds, 90 runs)
#   bash benchmarks/gpu_digits.sh --smoke    # CPU, 2 seeds, 40 steps: what the tests run (results/fid_curves/_pytest-gpu-smoke/)
#   GPU_DIGITS_SMOKE_DEVICE=cuda bash benchmarks/gpu_digits.sh --smoke   # the same on the GPU: a check before a long run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
LIMIT=${GPU_DIGITS_LIMIT_S:-480}
RESERVE=${GPU_DIGITS_NOTEBOOK_S:-100}   # seconds kept for the notebooks after training stops starting runs
STACK=${GPU_DIGITS_STACK:-10}
WORKERS=${GPU_DIGITS_WORKERS:-$([ "$STACK" = 1 ] && echo 12 || echo 4)}
export GCLIB_RUNS=${GCLIB_RUNS:-$PWD/runs-gpu}
profiles=(params/fid_curves/gpu_digits.yaml)
case "${1:-}" in
  "") ;;
  --all) profiles+=(params/fid_curves/gpu_long_2x.yaml params/fid_curves/gpu_long_mu.yaml) ;;
  --replication) profiles+=(params/fid_curves/cpu_long_replication.yaml) ;;
  --smoke)
    export GCLIB_RUNS=${GCLIB_RUNS_SMOKE:-$(mktemp -d)}
    mkdir -p "$GCLIB_RUNS"
    WORKERS=2
    profiles=("$GCLIB_RUNS/_pytest-gpu-smoke.yaml")
    "$PY" - "${profiles[0]}" "${GPU_DIGITS_SMOKE_DEVICE:-cpu}" <<'PYEOF'
import sys, yaml
p = yaml.safe_load(open("params/fid_curves/gpu_digits.yaml"))
p.update(variant="_pytest-gpu-smoke", seeds=[0, 1], workers=2, final_eval={"n": 100, "sampling_seeds": [0, 1]})
p["overrides"] = dict(total_steps=40, batch_size=16, lr=5.0e-4, optimizer="adam", ema_every=1, ema_decay=0.99, s1=20,
                      eval_every=20, eval_n=200, eval_metrics=["fd_digits"], checkpoint_every=20, keep_checkpoints=2,
                      sample_every=0, device=sys.argv[2])
yaml.safe_dump(p, open(sys.argv[1], "w"), sort_keys=False)
PYEOF
    ;;
  *) echo "gpu_digits.sh: unknown option ${1} (allowed: --all, --replication, --smoke)" >&2; exit 2 ;;
esac
if [ "${1:-}" != "--smoke" ]; then
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_digits.sh: no CUDA device here (use --smoke for the CPU check)")'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  # CUDA's multi-process service: without it the workers' kernels take turns on the GPU (measured on an H200:
  # 12 workers made 139 steps/s together, the GPU busy 100% of the time with kernels of a few microseconds).
  # GPU_DIGITS_MPS=0 turns it off; where it cannot start, or a CUDA probe fails under it, the run goes on without.
  if [ "${GPU_DIGITS_MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
    mps=$(mktemp -d)
    export CUDA_MPS_PIPE_DIRECTORY=$mps/pipe CUDA_MPS_LOG_DIRECTORY=$mps/log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d && timeout 60 "$PY" -c 'import torch; assert (torch.ones(2, device="cuda") + 1).sum().item() == 4'; then
      trap 'echo quit | nvidia-cuda-mps-control' EXIT
      echo "[gpu_digits.sh] MPS on: the workers' kernels run side by side"
    else
      echo quit | nvidia-cuda-mps-control 2>/dev/null || true
      unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
      echo "[gpu_digits.sh] MPS could not be started: the workers take turns on the GPU"
    fi
  fi
fi
echo "[gpu_digits.sh] run cache $GCLIB_RUNS; $WORKERS workers, stacks of up to $STACK runs; ${LIMIT}s cap"
start=$(date +%s)
status=0
device=()   # the GPU (a profile such as cpu_long_replication names no device: its runs train anywhere)
[ "${1:-}" = "--smoke" ] || device=(--device cuda)
timeout --signal=TERM --kill-after=15 "$((LIMIT - 20))" "$PY" benchmarks/gpu_train.py "${profiles[@]}" \
  --workers "$WORKERS" --stack "$STACK" --deadline "$((LIMIT - RESERVE))" "${device[@]}" || status=$?
echo "[gpu_digits.sh] training finished with status $status in $(( $(date +%s) - start )) s"
pids=()
for f in "${profiles[@]}"; do   # the notebooks of the complete profiles, side by side (every run is cached)
  variant=$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["variant"])' "$f")
  out=results/fid_curves/$variant
  [ -f "$out/final_eval.csv" ] || { echo "[gpu_digits.sh] $variant is not complete: no notebook"; continue; }
  timeout --signal=TERM --kill-after=15 "$((LIMIT - $(date +%s) + start))" "$PY" -m papermill notebooks/fid_curves.ipynb \
    "$out/fid_curves.ipynb" -f "$f" --cwd notebooks -k python3 --no-progress-bar > "$out.log" 2>&1 &
  pids+=("$!:$variant")
done
for pv in "${pids[@]}"; do
  s=0; wait "${pv%%:*}" || s=$?
  echo "[gpu_digits.sh] notebook ${pv#*:} finished with status $s ($(( $(date +%s) - start )) s)"
  [ "$s" -eq 0 ] || { status=$s; tail -20 "results/fid_curves/${pv#*:}.log" >&2; }
  rm -f "results/fid_curves/${pv#*:}.log"
done
if [ "${1:-}" != "--smoke" ] && [ "${#pids[@]}" -gt 0 ]; then
  "$PY" -c 'from gclib.reproduce import write_results_readme; from gclib.report import project_root; write_results_readme(project_root())' || status=$?
fi
echo "[gpu_digits.sh] done with status $status in $(( $(date +%s) - start )) s"
exit "$status"
