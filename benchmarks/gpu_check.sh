#!/usr/bin/env bash
# Checks that need a GPU, for a machine that has one (benchmarks/README.md, "GPU check"): step() tokens/s and MFU
# in bf16 beside TRL 0.23.1 on random-weight models of two real architectures (Qwen2.5-0.5B's and SmolLM2-135M's
# configs from the model zoo), the hf generator beside model.generate on the SmolLM2 one, then 5 iterations of
# `iterframe run` with the hf generator and their generated tokens/s, peak memory of each; then a one-device
# DeepSpeed ZeRO-2/3 smoke run.
# Prints the machine, then RESULT lines. From the repository root, after
# `DS_BUILD_OPS=0 pip install -e ".[test]"`:
#
#   bash benchmarks/gpu_check.sh                             # on the GPU machine
#   benchmarks/gpu_check.sh --device cpu --preset tiny       # a dry run on CPU (seconds to minutes)
#
# Options: --device cuda|cpu, --preset full|tiny, --families "qwen2.5 smollm2" (the step part's), --python PATH (the env with iterframe; default: python),
# --trl-python PATH (an env with trl==0.23.1 and transformers<4.58 for the step part; default: --python, and
# iterframe alone when it has no TRL).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda preset=full python=python trl_python="" families="qwen2.5 smollm2"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --preset) preset="$2"; shift 2 ;;
    --families) families="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --trl-python) trl_python="$2"; shift 2 ;;
    *) echo "gpu_check.sh: unknown option $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
trl_python="${trl_python:-$python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export ITERFRAME_LOAD_PLUGINS="${ITERFRAME_LOAD_PLUGINS-}"  # built-in components only, unless told otherwise

echo "== machine"
echo "command: $0 --device $device --preset $preset; load average: $(cut -d' ' -f1-3 /proc/loadavg); nproc: $(nproc --all)"
"$python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

extra=() generation=(--zoo smollm2-instruct --device "$device")
[ "$preset" = tiny ] && extra=(--texts-per-step 16 --rounds 1 --max-new-tokens 8)
[ "$preset" = tiny ] && generation+=(--tiny --rounds 1 --prompts 4 --k 2 --max-new-tokens 8 --eval-prompts 8)
[ "$device" = cuda ] && generation+=(--dtype bfloat16)

for family in $families; do
  echo "== step(): iterframe beside TRL 0.23.1 (bf16), random weights of $family's config"
  "$trl_python" benchmarks/gpu_check.py step --device "$device" --preset "$preset" --family "$family" "${extra[@]}"
done

echo "== generation: the hf generator (decoding loop, use_generate) beside model.generate, SmolLM2-135M's config"
"$python" benchmarks/generation_throughput.py "${generation[@]}"

echo "== iterframe run: 5 iterations, hf generator"
"$python" benchmarks/gpu_check.py loop --device "$device" --preset "$preset" "${extra[@]}"

if [ "$device" = cuda ]; then
  echo "== DeepSpeed ZeRO-2/3 on one GPU: one optimizer step per accumulated update, weights equal to a plain run's"
  "$python" benchmarks/deepspeed_smoke.py
fi
