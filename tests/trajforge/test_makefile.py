"""`make venv` on a machine without an NVIDIA GPU installs the CPU build of torch first: PyPI's Linux torch==2.13.0 is
the CUDA build (several GB of nvidia-* wheels), so the pin alone would pull it wherever pip is not configured otherwise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def venv_commands(*variables: str) -> list[str]:
    """The commands `make venv` would run from scratch (-B), as if no NVIDIA GPU were here, without running them."""
    dry = subprocess.run(["make", "-n", "-B", "venv", "HAS_NVIDIA_GPU=", *variables], cwd=REPO, capture_output=True, text=True, check=True)
    return dry.stdout.splitlines()


def test_without_a_gpu_torch_comes_from_the_cpu_index_before_the_project():
    commands = venv_commands("TORCH_CPU_INDEX_REACHABLE=yes")  # where download.pytorch.org resolves
    torch = next(index for index, line in enumerate(commands) if "torch==2.13.0" in line)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in commands[torch]
    assert torch < next(index for index, line in enumerate(commands) if "-e '.[dev]'" in line)


def test_the_cpu_index_can_be_left_to_the_pip_configuration_and_is_left_where_it_cannot_be_reached():
    for variables in (("TORCH_CPU_INDEX=", "TORCH_CPU_INDEX_REACHABLE=yes"), ("TORCH_CPU_INDEX_REACHABLE=",),
                      ("TORCH_CPU_INDEX=https://no-such-host.invalid/whl/cpu",)):
        torch = next(line for line in venv_commands(*variables) if "torch==2.13.0" in line)
        assert "--extra-index-url" not in torch, variables
