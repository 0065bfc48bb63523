#!/usr/bin/env bash
# One-command GPU check (at most ~5 minutes on a GPU): a slice of
# config/paper.yaml (MNIST FCDNN depth 2, widths 256 and 1024, bits 2 and
# float, seed 0, a few epochs) through the workflow and its warm worker, one
# cell at a time, then several cells at once on the same GPU, then the same
# cells on CPU; prints per-epoch times, GPU memory and utilisation
# (nvidia-smi), and whether the GPU numbers match the CPU run within TOL.
#
#   benchmarks/gpu_check.sh                      # device cuda, 3 epochs, all of MNIST
#   DEVICE=cpu benchmarks/gpu_check.sh           # the same on CPU: 1 epoch on 4000 examples
#
# Environment: DEVICE (cuda|cpu), EPOCHS, TRAIN_SUBSET (0: all), PARALLEL
# (cells at once), TOL (largest |error difference| to the CPU run, default
# 0.01), DATA_DIR (default ../shared/data: MNIST in torchvision's layout;
# nothing is downloaded), PYTHON (default: the venv of `make setup`).
# Outputs under benchmarks/out/gpu_check/. Exit status 0 when all checks pass.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cpu ]; then
  EPOCHS=${EPOCHS:-1}; TRAIN_SUBSET=${TRAIN_SUBSET:-4000}; PARALLEL=${PARALLEL:-2}
else
  EPOCHS=${EPOCHS:-3}; TRAIN_SUBSET=${TRAIN_SUBSET:-0}; PARALLEL=${PARALLEL:-4}
  command -v nvidia-smi >/dev/null || { echo "[gpu_check] DEVICE=$DEVICE but no nvidia-smi (use DEVICE=cpu)"; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
cd "$REPO"
exec timeout -k 10 "${LIMIT_S:-300}" "$PYTHON" benchmarks/gpu_check.py --device "$DEVICE" --epochs "$EPOCHS" \
  --train-subset "$TRAIN_SUBSET" --parallel "$PARALLEL" --tol "${TOL:-0.01}" \
  --data-dir "${DATA_DIR:-$REPO/../shared/data}" --timeout "${RUN_TIMEOUT_S:-280}"
