"""Sandboxes for the tests: the real nsjail policy with tighter limits so hostile cases end fast."""

from __future__ import annotations

import pytest

from sandbox.runner import Sandbox
from sandbox.settings import load_sandbox_settings


@pytest.fixture(scope="session")
def sandbox_root(tmp_path_factory):
    return tmp_path_factory.mktemp("sandbox")


@pytest.fixture(scope="session")
def box(sandbox_root) -> Sandbox:
    """configs/sandbox.yaml as shipped, with workspaces and logs under the test's temp folder."""
    settings = load_sandbox_settings().model_copy(update={
        "workspaces_root": sandbox_root / "workspaces", "logs_dir": sandbox_root / "logs"})
    return Sandbox(settings)


@pytest.fixture(scope="session")
def tight_box(box) -> Sandbox:
    """The same jail with small limits: 3 s, 128 MB (64 of them for the workspace, /tmp and /dev/shm tmpfs), 32
    processes, 8 MB files, 1 MB of output."""
    return Sandbox(box.settings.model_copy(update={
        "wall_time_s": 3, "memory_mb": 128, "disk_mb": 32, "tmp_mb": 16, "shm_mb": 16, "max_processes": 32, "max_file_size_mb": 8,
        "output_cap_bytes": 64 * 1024, "output_kill_bytes": 1 << 20}))


@pytest.fixture()
def workspace(box, request):
    """A workspace with a small Python project, removed after the test."""
    files = {"app.py": "def main(x):\n    print(x)\n    return x\n",
             "test_app.py": "from app import main\n\ndef test_main():\n    assert main(2) == 2\n"}
    import re

    path = box.prepare_workspace(re.sub(r"[^A-Za-z0-9_.]+", "-", request.node.name)[:60].strip("-"), files)
    yield path
    box.cleanup(path)
