# Every target that runs code depends on `venv`, which is idempotent: it re-installs only when
# pyproject.toml changed since the last successful install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where the CPU build of torch comes from (PyPI's Linux torch is the CUDA build); empty: the pip configuration's indexes only.
# Used only where its host resolves: a machine that cannot reach it keeps pip's own indexes, without retry warnings.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_CPU_INDEX_REACHABLE = $(shell timeout 5 $(PYTHON) -c "import socket, sys, urllib.parse; socket.getaddrinfo(urllib.parse.urlsplit(sys.argv[1]).hostname, 443)" '$(TORCH_CPU_INDEX)' >/dev/null 2>&1 && echo yes)
HAS_NVIDIA_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)

.PHONY: venv test demo serve bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
ifneq ($(HAS_NVIDIA_GPU),yes)
	# No NVIDIA GPU: pin the CPU build of torch first so nothing pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(and $(TORCH_CPU_INDEX),$(TORCH_CPU_INDEX_REACHABLE)),--extra-index-url $(TORCH_CPU_INDEX))
endif
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest

demo: venv
	$(BIN)/trajforge demo

serve: venv
	$(BIN)/trajforge serve

bench: venv
	$(BIN)/python -m benchmarks.ingest
	$(BIN)/python -m benchmarks.embed
	$(BIN)/python -m benchmarks.sandbox
	$(BIN)/python -m benchmarks.build
	$(BIN)/python -m benchmarks.actors
	$(BIN)/python -m benchmarks.learner
	$(BIN)/python -m benchmarks.datasets

clean:
	rm -rf $(VENV) lake logs .pytest_cache
