#!/usr/bin/env bash
# The GPU device check (issue #14): install dpolab without dependencies, then run
# `python -m dpolab.bench.gpu_check` (verify --quick with JAX on the GPU, the registered check
# gpu/float32-agreement at full size (float32 on the GPU vs float64 on the CPU), a large float32
# sweep with its float64 CPU cross-check, the real-model track on a tiny random model with --device cuda).
# Results: $RESULTS_DIR/gpu_check.json and gpu_check.md (default: $OUT, else ./gpu_check_results).
#
#   scripts/gpu_check.sh [RESULTS_DIR]              # on a GPU machine (about 5 minutes)
#   GPU_CHECK_SMALL=1 GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh DIR   # toy sizes on a CPU
#
# Assumes jax (with CUDA), torch, transformers, optax, scipy, matplotlib, seaborn and pytest are
# installed; needs no network and no Gemma package. The whole run stays under 8 minutes: the
# install is given 60 s and no stage starts after GPU_CHECK_BUDGET_S seconds (default 330).
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS_DIR="${1:-${OUT:-gpu_check_results}}"
PYTHON="${PYTHON:-python3}"
if [ "${GPU_CHECK_SKIP_INSTALL:-0}" != 1 ]; then
  # offline: build with the setuptools already installed; else let pip fetch it (needs network)
  timeout 60 "$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e . ||
    timeout 60 "$PYTHON" -m pip install --quiet --no-deps -e .
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX and torch share the GPU
export HF_HUB_OFFLINE=1
args=(--out "$RESULTS_DIR" --device "${GPU_CHECK_DEVICE:-cuda}" --budget-s "${GPU_CHECK_BUDGET_S:-330}")
if [ "${GPU_CHECK_SMALL:-0}" = 1 ]; then args+=(--small); fi
timeout 400 "$PYTHON" -m dpolab.bench.gpu_check "${args[@]}"
