#!/usr/bin/env bash
# Checks that need a GPU, for a machine that has one. From the repository root, after
# `DS_BUILD_OPS=0 pip install -e ".[test]"`: bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi -L || true

# DeepSpeed ZeRO-2/3 on one GPU: one optimizer step per accumulated update, weights equal to a plain run's
python benchmarks/deepspeed_smoke.py
