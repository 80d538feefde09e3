#!/usr/bin/env bash
# On the GPU machine: the GPU figures of the learner (issue 6), the generation actors (issue 7) and the
# embed pipeline (issue 3), in one call of at most 9.5 minutes. After benchmarks/gpu/pack.sh here:
#   device run, carry [".carry"], timeout_s 600:
#   bash .carry/unpack.sh && export PYTHONPATH=/tmp/site:$PWD TORCH_CUDA_ARCH_LIST=9.0 && bash benchmarks/gpu/run.sh
# PARTS picks the parts and their order (default "learner actors": the embed figure was taken on
# 2026-12-04; PARTS="learner actors embed" adds it). Each part has its own time limit, so one that
# hangs leaves the others their time; one that outlives its limit gets the Python stacks of every
# process (py-spy) and the Ray workers' logs appended to its output before it is stopped. Outputs go
# to $OUT, at most 5 files (the device tool brings back only a few).
set -uo pipefail
out=${OUT:-/tmp/gpu-out}; mkdir -p "$out"
export PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_DEDUP_LOGS=0 NCCL_DEBUG=INFO
parts=${PARTS:-learner actors}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, transformers, ray, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__)" 2>&1 | tail -1 | tee -a "$out/gpu.txt"
timeout 60 python3 benchmarks/gpu/probe.py 2>&1 | tail -2 | tee -a "$out/gpu.txt"

# DeepSpeed's FusedAdam is built by nvcc at its first use (a minute or more): build it now, in the
# background, while the learner benchmark makes its model; its Ray Train workers then load the build
# from the shared torch_extensions cache (or wait on the build's lock).
if [[ " $parts " == *" learner "* ]]; then
  (started=$SECONDS; python3 -c "from deepspeed.ops.op_builder import FusedAdamBuilder; FusedAdamBuilder().load()" > /tmp/fused_adam.log 2>&1
   echo "FusedAdam build: exit $? after $((SECONDS - started)) s" >> /tmp/fused_adam.log) &
fi

diagnose() {  # what every Python process is doing, and what Ray's workers wrote
  echo "== diagnosis at $(date +%T)"
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  ps -eo pid,pcpu,rss,etimes,args --sort=-pcpu | grep -v ' \[' | cut -c1-160 | head -16
  for pid in $(pgrep -f '^python3 -m benchmarks|^ray::' | head -8); do
    case $(ps -o args= -p "$pid") in ray::IDLE*) continue ;; esac
    echo "--- py-spy dump $pid: $(ps -o args= -p "$pid" | cut -c1-100)"
    timeout 10 py-spy dump --pid "$pid" 2>&1 | head -60
  done
  for f in /tmp/ray/session_latest/logs/worker-*.err /tmp/ray/session_latest/logs/worker-*.out; do
    [ -s "$f" ] && { echo "--- $f"; grep -v '^\s*$' "$f" | tail -30; }
  done
  [ -s /tmp/fused_adam.log ] && { echo "--- FusedAdam build"; tail -20 /tmp/fused_adam.log; }
}

part() {  # name, seconds, command...
  local name=$1 limit=$2 file="$out/$1.txt"; shift 2
  echo "== $name (limit ${limit} s): $*" > "$file"
  local started=$SECONDS
  setsid "$@" >> "$file" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null && (( SECONDS - started < limit )); do sleep 2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "== $name still running after $((SECONDS - started)) s: stacks and logs, then stopped" >> "$file"
    diagnose >> "$file" 2>&1
    kill -TERM -- "-$pid" 2>/dev/null; sleep 5; kill -KILL -- "-$pid" 2>/dev/null
  fi
  wait "$pid"; local rc=$?
  echo "== $name exit $rc after $((SECONDS - started)) s" >> "$file"
  ray stop --force >/dev/null 2>&1 || true
  # the part's summary where the device tool shows it (the whole output is in $file)
  grep -v 'logging.cc\|^ *@\|^PC:\|SIGTERM\|it/s\]' "$file" | tail -25
}

for name in $parts; do
  case $name in
    learner)
      # half the default token budget (20 plain steps, 10 of the learner); then the learner with sdpa (what
      # `auto` picked before varlen), without gradient checkpointing, and with every layer's weights kept
      # whole (no ZeRO-3 gathers on one GPU), a row each; each run prints its figure as it ends, so a
      # part stopped at its limit still has the first ones
      part learner 390 python3 -m benchmarks.learner --device gpu --workdir /tmp/learner --worker-logs --tokens 327680 \
        --variant train.attention=sdpa --variant train.gradient_checkpointing=false --variant zero.param_persistence_threshold=100000000 ;;
    actors)
      # the learner part's random Qwen3-0.6B-shaped model when it ran, else the embedded small one; no jail by
      # default (nsjail under the machine's gVisor is untried; JAIL=nsjail tries it)
      model=small; [ -f /tmp/learner/qwen3-28x1024/config.json ] && model=/tmp/learner/qwen3-28x1024
      TRAJFORGE__SANDBOX__JAIL=${JAIL:-none} part actors 100 python3 -m benchmarks.actors --num-gpus 1 --tasks 2 --max-tokens 48 --model $model --worker-logs ;;
    embed)
      minilm=/tmp/minilm
      if [ ! -f $minilm/model.safetensors ]; then
        rm -rf $minilm && cp -r .carry/minilm $minilm
        python3 -c "import sys, torch; from transformers import BertConfig, BertModel; torch.manual_seed(0); BertModel(BertConfig.from_pretrained(sys.argv[1]), add_pooling_layer=False).save_pretrained(sys.argv[1])" $minilm
      fi
      part embed 110 python3 -m benchmarks.embed --num-gpus 1 --texts 100000 --pipeline-only --model $minilm ;;
  esac
done
[ -s /tmp/fused_adam.log ] && tail -3 /tmp/fused_adam.log
ls -la "$out"
