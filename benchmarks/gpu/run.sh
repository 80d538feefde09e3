#!/usr/bin/env bash
# On the GPU machine: the GPU figures of the embed pipeline (issue 3), the learner (issue 6) and the
# generation actors (issue 7), in one call of at most 9 minutes (about 5 when all goes well). After benchmarks/gpu/pack.sh here:
#   device run, carry [".carry"], timeout_s 600:
#   bash .carry/unpack.sh && export PYTHONPATH=/tmp/site:$PWD TORCH_CUDA_ARCH_LIST=9.0 && bash benchmarks/gpu/run.sh
# Each part has its own time limit, so one that hangs leaves the others their time; every output goes
# to $OUT (the device tool brings it back). PARTS="embed learner actors" picks the parts.
set -uo pipefail
out=${OUT:-/tmp/gpu-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_DEDUP_LOGS=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, transformers, ray, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__)" 2>&1 | tail -1 | tee -a "$out/gpu.txt"

part() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s): $*" | tee "$out/$name.txt"
  local started=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$out/$name.txt"
  echo "== $name exit ${PIPESTATUS[0]} after $((SECONDS - started)) s" | tee -a "$out/$name.txt"
  ray stop --force >/dev/null 2>&1 || true
}

for name in ${PARTS:-embed learner actors}; do
  case $name in
    embed)
      minilm=/tmp/minilm
      if [ ! -f $minilm/model.safetensors ]; then
        rm -rf $minilm && cp -r .carry/minilm $minilm
        python3 -c "import sys, torch; from transformers import BertConfig, BertModel; torch.manual_seed(0); BertModel(BertConfig.from_pretrained(sys.argv[1]), add_pooling_layer=False).save_pretrained(sys.argv[1])" $minilm
      fi
      part embed 150 python3 -m benchmarks.embed --num-gpus 1 --texts 100000 --pipeline-only --model $minilm ;;
    learner)
      part learner 270 python3 -m benchmarks.learner --device gpu --workdir /tmp/learner ;;
    actors)
      # the learner part's random Qwen3-0.6B-shaped model when it ran, else the embedded small one; no jail by
      # default (nsjail under the machine's gVisor is untried; JAIL=nsjail tries it)
      model=small; [ -f /tmp/learner/qwen3-28x1024/config.json ] && model=/tmp/learner/qwen3-28x1024
      TRAJFORGE__SANDBOX__JAIL=${JAIL:-none} part actors 100 python3 -m benchmarks.actors --num-gpus 1 --tasks 8 --max-tokens 128 --model $model ;;
  esac
done
ls -la "$out"
