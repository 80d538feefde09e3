"""The disk limit (sandbox.disk_mb, sandbox.tmp_mb): a run that fills its workspace or /tmp fails alone with the
`disk` limit, says so on its stderr, and leaves nothing behind; runs within it keep their writes."""

from __future__ import annotations

import os

import pytest

from bubblewrap_sandbox import bubblewrap_sandbox, needs_bwrap

from sandbox.pool import SandboxPool
from sandbox.runner import Sandbox

FILL = "for i in range({n}):\n    open(f'{where}/fill{{i}}.bin', 'wb').write(b'x' * (1 << 20))\n"


@pytest.fixture()
def small_disk(box) -> Sandbox:
    """16 MB of workspace and 8 MB of /tmp (files up to 256 MB, so only the disk limit can stop a fill)."""
    return Sandbox(box.settings.model_copy(update={"disk_mb": 16, "tmp_mb": 8}))


def run_python(box, workspace, code: str):
    return box.run_tests(workspace, {"command": ["python3", "-c", code], "framework": "pytest"})


def leftovers(box) -> list[str]:
    return [name for name in os.listdir(box.settings.workspaces_root) if name.startswith(".")]


def test_a_program_filling_the_workspace_hits_the_disk_limit_and_its_writes_are_discarded(small_disk, workspace):
    result = run_python(small_disk, workspace, FILL.format(n=40, where="."))
    assert "disk" in result.limits_hit and not result.ok
    assert "No space left on device" in result.stderr.text
    assert "sandbox: no space left in /workspace (sandbox.disk_mb)" in result.stderr.text
    assert sorted(os.listdir(workspace)) == ["app.py", "test_app.py"]  # the 16 MB it wrote never reached the host
    assert leftovers(small_disk) == []
    after = run_python(small_disk, workspace, "open('kept.txt', 'w').write('ok')\n")  # the next run is unaffected
    assert after.exit_code == 0 and after.limits_hit == [] and (workspace / "kept.txt").read_text() == "ok"


def test_a_program_filling_tmp_hits_the_disk_limit(small_disk, workspace):
    result = run_python(small_disk, workspace, FILL.format(n=20, where="/tmp"))
    assert "disk" in result.limits_hit
    assert "sandbox: no space left in /tmp (sandbox.tmp_mb)" in result.stderr.text


def test_a_snapshot_larger_than_the_disk_limit_fails_its_run_with_the_disk_limit(box, small_disk):
    ws = small_disk.prepare_workspace("too-big", {f"blob{i}.bin": b"x" * (1 << 20) for i in range(20)})
    try:
        result = run_python(small_disk, ws, "print('never runs')\n")
        assert result.limits_hit == ["disk"] and "never runs" not in result.stdout.text
        assert "could not be copied into the jail (no space left: sandbox.disk_mb)" in result.stderr.text
        assert len(os.listdir(ws)) == 20
    finally:
        small_disk.cleanup(ws)


def test_a_run_over_the_disk_limit_fails_alone_in_a_pool(small_disk):
    workspaces = [small_disk.prepare_workspace(f"pool-disk-{i}", {"a.py": "print(1)\n"}) for i in range(4)]
    try:
        code = [FILL.format(n=40, where=".") if i % 2 else "open('out.txt', 'w').write('ok')\n" for i in range(4)]
        with SandboxPool(workers=2, sandbox=small_disk) as pool:
            results = pool.test_many([(ws, {"command": ["python3", "-c", c], "framework": "pytest"}) for ws, c in zip(workspaces, code)])
        assert [r.limits_hit for r in results] == [[], ["disk"], [], ["disk"]]
        assert [(ws / "out.txt").exists() for ws in workspaces] == [True, False, True, False]
        assert leftovers(small_disk) == []
    finally:
        for ws in workspaces:
            small_disk.cleanup(ws)


def test_without_a_jail_the_workspace_is_measured_and_a_run_over_the_limit_reported(small_disk, workspace):
    unjailed = Sandbox(small_disk.settings.model_copy(update={"jail": "none"}))
    result = run_python(unjailed, workspace, FILL.format(n=24, where=".") + "import tempfile\nprint(tempfile.gettempdir())\n")
    assert "disk" in result.limits_hit
    temp = run_python(unjailed, workspace, "import tempfile\nprint(tempfile.gettempdir())\n")
    assert not temp.stdout.text.startswith("/tmp\n")  # its own folder, measured and removed, not the host's /tmp
    assert not os.path.exists(temp.stdout.text.strip())


def test_a_killed_run_leaves_the_workspace_as_it_was(tight_box, workspace):
    result = run_python(tight_box, workspace, "open('partial.txt', 'w').write('x')\nimport time\ntime.sleep(60)\n")
    assert "time" in result.limits_hit
    assert not (workspace / "partial.txt").exists()


@needs_bwrap
def test_bubblewrap_sizes_its_tmp_and_measures_the_workspace(small_disk):
    with bubblewrap_sandbox(small_disk.settings, ["dd"]) as wrapped:
        ws = wrapped.prepare_workspace("bwrap-disk", {"a.txt": "x"})
        tmp = wrapped.run_tests(ws, {"command": "dd if=/dev/zero of=/tmp/fill bs=1M count=20", "framework": "pytest"})
        assert tmp.exit_code != 0 and "No space left on device" in tmp.stderr.text  # /tmp is tmp_mb (8 MB), not unbounded
        workspace = wrapped.run_tests(ws, {"command": "dd if=/dev/zero of=/workspace/fill bs=1M count=40", "framework": "pytest"})
        assert "disk" in workspace.limits_hit


def test_disk_mb_is_configured_and_becomes_the_jails_workspace_tmpfs(box, monkeypatch, tmp_path):
    from sandbox.jail import nsjail_argv
    from sandbox.settings import load_sandbox_settings

    assert load_sandbox_settings().disk_mb == 512  # configs/sandbox.yaml
    monkeypatch.setenv("TRAJFORGE__SANDBOX__DISK_MB", "64")
    assert load_sandbox_settings().disk_mb == 64
    argv = nsjail_argv(box.settings.model_copy(update={"disk_mb": 16}), ["/bin/true"], [], "/workspace", {}, tmp_path / "log", (7,))
    mount = next(argv[i + 1] for i, arg in enumerate(argv) if arg == "--mount" and argv[i + 1].startswith("none:/workspace:"))
    assert mount.startswith(f"none:/workspace:tmpfs:size={16 << 20},nr_inodes=100000,mode=0755,")
    assert argv[argv.index("--pass_fd") + 1] == "7"
