"""Hostile code and inputs: each contained, reported with the limit it hit, and the host untouched."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sandbox.models import InvalidAction


def run_python(box, workspace, code: str):
    return box.run_tests(workspace, {"command": ["python3", "-c", code], "framework": "pytest"})


def test_fork_bomb_hits_the_process_limit(tight_box, workspace):
    result = run_python(tight_box, workspace, "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n")
    assert "processes" in result.limits_hit
    assert result.exit_code != 0


def test_memory_hog_is_killed_at_the_memory_limit(tight_box, workspace):
    result = run_python(tight_box, workspace, "blocks = []\nwhile True: blocks.append(bytearray(8 << 20))\n")
    assert result.limits_hit == ["memory"]
    assert result.signal == "SIGKILL"
    assert result.memory_peak_mb <= tight_box.settings.memory_mb + 1


def test_endless_loop_hits_the_time_limit(tight_box, workspace):
    started = time.monotonic()
    result = run_python(tight_box, workspace, "while True: pass\n")
    assert result.limits_hit == ["time"]
    assert result.signal == "SIGKILL"
    assert tight_box.settings.wall_time_s <= time.monotonic() - started < tight_box.settings.wall_time_s + 4


@pytest.mark.parametrize("status", [137, 130, 159])
def test_a_program_that_exits_128_plus_n_itself_is_an_exit_status_not_a_signal(box, workspace, status):
    result = run_python(box, workspace, f"import sys\nsys.exit({status})\n")  # nsjail exits 128+N for signal N too
    assert (result.exit_code, result.signal, result.limits_hit) == (status, None, [])


def test_a_gigabyte_of_output_is_cut_and_reported(tight_box, workspace):
    result = run_python(tight_box, workspace, "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024): sys.stdout.write(chunk)\n")
    assert "output" in result.limits_hit
    assert result.stdout.truncated and len(result.stdout.text) == tight_box.settings.output_cap_bytes
    assert result.stdout.bytes < 64 << 20  # killed long before the gigabyte


def test_tests_whose_output_is_cut_at_the_cap_still_report_their_counts(tight_box):
    ws = tight_box.prepare_workspace("loud-tests", {"test_loud.py": (
        "def test_ok():\n    pass\n\ndef test_loud_failure():\n    print('x' * (256 << 10))\n    assert False\n")})
    try:
        result = tight_box.run_tests(ws, "python -m pytest -q")
    finally:
        tight_box.cleanup(ws)
    assert result.stdout.truncated and len(result.stdout.text) == tight_box.settings.output_cap_bytes and not result.limits_hit
    assert (result.passed, result.failed, result.exit_code) == (1, 1, 1)  # pytest's summary is past the cap: it read 0 and 0


def test_a_huge_diff_is_cut_at_a_line_end_and_flagged_like_the_streams(box):
    from sandbox.runner import Sandbox

    files = {"big.py": "".join(f"print({i})\n" for i in range(20_000)), "small.py": "print('é')\n"}
    action = {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"}
    results = []
    for cap in (box.settings.diff_cap_bytes, 4 << 20):  # configs/sandbox.yaml's cap, then one above the whole diff
        sized = Sandbox(box.settings.model_copy(update={"diff_cap_bytes": cap}))
        ws = sized.prepare_workspace("diff-cap", files)
        try:
            results.append(sized.apply_action(ws, action))
        finally:
            sized.cleanup(ws)
    cut, whole = results
    assert box.settings.diff_cap_bytes == 64 << 10 and cut.valid and whole.valid
    assert cut.diff_truncated and not whole.diff_truncated
    assert cut.diff_bytes == whole.diff_bytes == len(whole.diff.encode()) > 64 << 10
    assert len(cut.diff.encode()) <= 64 << 10 and cut.diff.endswith("\n") and whole.diff.startswith(cut.diff)
    assert cut.files_changed == whole.files_changed == ["big.py", "small.py"] and cut.matches == 20_001


def test_a_diff_cap_never_splits_a_character():
    from sandbox.workspace import cap_lines

    assert cap_lines("é" * 10, 5) == ("éé", 20, True)
    assert cap_lines("ab\ncd\n", 5) == ("ab\n", 6, True) and cap_lines("ab\n", 3) == ("ab\n", 3, False)


def test_a_huge_file_hits_the_file_size_limit(tight_box, workspace):
    result = run_python(tight_box, workspace, "open('big.bin', 'wb').write(b'x' * (64 << 20))\n")
    assert "file_size" in result.limits_hit
    assert (workspace / "big.bin").stat().st_size <= tight_box.settings.max_file_size_mb << 20


def test_writing_outside_the_workspace_fails_and_the_host_is_untouched(box, workspace, tmp_path):
    target = tmp_path / "escaped.txt"
    code = ("import os\nfails = 0\n"
            f"for path in ['/etc/trajforge-escape', '/usr/trajforge-escape', '{target}', '/escape', '../escape']:\n"
            "    try: open(path, 'w').write('x')\n"
            "    except OSError: fails += 1\n"
            "print('failed', fails)\n"
            "open('/tmp/private.txt', 'w').write('jail tmp is private')\n")
    result = run_python(box, workspace, code)
    assert result.exit_code == 0, result.stderr.text
    assert "failed 5" in result.stdout.text
    assert not target.exists() and not Path("/etc/trajforge-escape").exists() and not Path("/usr/trajforge-escape").exists()
    assert not (workspace.parent / "escape").exists()


def test_secrets_and_the_hosts_home_are_out_of_reach(box, workspace):
    home_secret = Path.home() / ".trajforge-sandbox-test-secret"
    home_secret.write_text("host secret")
    try:
        code = ("import os\n"
                "for path in ['/etc/shadow', " + repr(str(home_secret)) + "]:\n"
                "    try: print(path, 'READ', open(path).read()[:10])\n"
                "    except OSError as exc: print(path, 'denied', type(exc).__name__)\n"
                "print('uid', os.getuid(), os.getgid())\n"
                "print('other workspaces', os.path.exists(" + repr(str(workspace.parent)) + "))\n")
        result = run_python(box, workspace, code)
    finally:
        home_secret.unlink()
    assert "READ" not in result.stdout.text
    assert "uid 65534 65534" in result.stdout.text
    assert "other workspaces False" in result.stdout.text


def test_network_is_unreachable(box, workspace):
    code = ("import socket\n"
            "for host in [('1.1.1.1', 80), ('127.0.0.1', 22)]:\n"
            "    try: socket.create_connection(host, timeout=2); print('CONNECTED', host)\n"
            "    except OSError as exc: print('refused', host, exc.errno)\n")
    result = run_python(box, workspace, code)
    assert result.exit_code == 0 and "CONNECTED" not in result.stdout.text
    assert result.stdout.text.count("refused") == 2


def test_ptrace_is_killed_by_seccomp(box, workspace):
    result = run_python(box, workspace, "import ctypes\nctypes.CDLL(None).ptrace(0, 0, 0, 0)\nprint('survived')\n")
    assert result.limits_hit == ["seccomp"] and result.signal == "SIGSYS"
    assert "survived" not in result.stdout.text


def test_threads_multiprocessing_and_pytest_still_work(box, workspace):
    (workspace / "test_mp.py").write_text(
        "import multiprocessing, threading\n\ndef square(x):\n    return x * x\n\n"
        "def test_pool():\n    with multiprocessing.Pool(2) as pool:\n        assert pool.map(square, range(4)) == [0, 1, 4, 9]\n\n"
        "def test_thread():\n    seen = []\n    t = threading.Thread(target=seen.append, args=(1,))\n    t.start(); t.join()\n    assert seen == [1]\n")
    result = box.run_tests(workspace, {"framework": "pytest"})
    assert result.ok, result.stdout.text + result.stderr.text
    assert (result.passed, result.failed) == (3, 0)


def test_a_symlink_planted_by_jailed_code_is_not_followed_by_the_host(box, workspace):
    result = run_python(box, workspace, "import os\nos.symlink('/etc/passwd', 'leak.txt')\nos.symlink('/etc', 'leakdir')\n")
    assert result.exit_code == 0
    after = box.apply_action(workspace, {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"})
    assert after.valid
    from sandbox.workspace import read_tree

    tree = read_tree(workspace, 1 << 20)
    assert tree["leak.txt"] == "symlink -> /etc/passwd" and tree["leakdir"] == "symlink -> /etc"
    assert not any(key.startswith("leakdir/") for key in tree)


def test_a_snapshot_symlink_pointing_outside_is_refused(box, tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "ok.py").write_text("print(1)\n")
    (snapshot / "inside.py").symlink_to("ok.py")
    workspace = box.prepare_workspace("links-inside", snapshot)
    assert os.readlink(workspace / "inside.py") == "ok.py"
    box.cleanup(workspace)
    (snapshot / "shadow").symlink_to("/etc/shadow")
    before = set(os.listdir(box.settings.workspaces_root))
    with pytest.raises(InvalidAction, match="points outside the snapshot"):
        box.prepare_workspace("links-outside", snapshot)
    assert set(os.listdir(box.settings.workspaces_root)) == before  # nothing half-made left behind


@pytest.mark.parametrize("action,message", [
    ({"id": "x", "language": "python", "rule": {"pattern": "print($A)", "nope": 1}}, "does not compile"),
    ({"id": "x", "language": "python", "rule": "just a string"}, "rule"),
    ("id: x\nlanguage: python\nrule: [unclosed", "not valid YAML"),
    ({"pattern": "print($A)", "rewrite": "x", "language": "klingon"}, "unknown language 'klingon'"),
    ({"pattern": "print($A)", "rewrite": "x", "language": "python", "paths": ["../outside.py"]}, "must not contain '..'"),
    ({"pattern": "print($A)", "rewrite": "x", "language": "python", "paths": ["/etc/passwd"]}, "must be relative"),
    ({"pattern": "print($A)", "rewrite": "x", "language": "python", "paths": ["src\\app.py"]}, "use '/' between folders"),
    ({"pattern": "print($A)", "rewrite": "x", "language": "python", "paths": ["missing.py"]}, "not in the workspace"),
    ({"pattern": "", "rewrite": "x", "language": "python"}, "pattern"),
    ({"pattern": "print($A)", "rewrite": "x", "language": "python", "paths": []}, "omit paths to rewrite the whole workspace"),
    (["not", "a", "mapping"], "must be a mapping"),
])
def test_invalid_actions_are_reported_not_run(box, workspace, action, message):
    before = (workspace / "app.py").read_text()
    result = box.apply_action(workspace, action)
    assert not result.valid and message in result.error
    assert result.diff == "" and (workspace / "app.py").read_text() == before


@pytest.mark.parametrize("action,message", [
    ({"id": "x", "language": "python", "fix": "log($A)"}, "invalid rule action: rule: Field required"),
    ({"language": "python", "constraints": {"A": {"kind": "integer"}}}, "invalid rule action: rule: Field required"),
    ({"id": "x", "language": "python", "rule": {"pattern": "print($A)"}, "constraints": {"B": {"kind": "integer"}}},
     "Undefined meta var `B`"),
])
def test_a_rule_missing_its_rule_or_not_compiling_says_so_plainly(box, workspace, action, message):
    """A YAML rule without `rule` was read as an inline rewrite (pattern, rewrite required; id, fix not permitted), and
    a rule ast-grep-py rejects carried the binding's Rust stack backtrace."""
    result = box.apply_action(workspace, action)
    assert not result.valid and message in result.error
    assert "pattern" not in result.error and "backtrace" not in result.error.lower()


def test_a_pattern_the_cli_rejects_is_invalid_with_its_message(box, workspace):
    result = box.apply_action(workspace, {"pattern": "$$$", "rewrite": "x", "language": "python"})
    assert not result.valid and result.exit_code not in (0, 1)
    assert "Cannot parse query as a valid pattern" in result.error
    assert result.diff == ""


@pytest.mark.parametrize("files,message", [
    ({"../escape.py": "x"}, "must not contain '..'"),
    ({"/abs.py": "x"}, "must be relative"),
    ({"a.py": 3}, "must be str or bytes"),
    # names a Windows checkout (or a diff `git apply` reads) cannot hold: refused with what to do, whatever the host
    ({"src\\app.py": "x"}, "use '/' between folders"),
    ({"C:/app.py": "x"}, "':'"),
    ({"q?.py": "x"}, "'?'"),
    ({"two\nlines.py": "x"}, "control characters"),
    ({"tab\there.py": "x"}, "control characters"),
    ({"CON.py": "x"}, "device name"),
    ({"lib/aux": "x"}, "device name"),
    ({"notes./a.py": "x"}, "trailing dot"),
    ({"trailing .py ": "x"}, "trailing dot or space"),
])
def test_bad_workspace_files_are_refused(box, files, message):
    with pytest.raises(InvalidAction, match=message):
        box.prepare_workspace("bad-files", files)


@pytest.mark.parametrize("name,message", [("CON.py", "device name"), ("a:b.py", "':'"), ("notes.", "trailing dot")])
def test_a_snapshot_directory_with_a_name_that_is_not_portable_is_refused_like_files_given_as_a_dict(box, tmp_path, name, message):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / name).write_text("print(1)\n")  # an action's paths could not name it
    with pytest.raises(InvalidAction, match=f"snapshot entry src/{name}: .*{message}"):
        box.prepare_workspace("bad-names", tmp_path)
    assert not list(box.settings.workspaces_root.glob("bad-names--*"))


@pytest.mark.parametrize("task_id", ["../x", "a/b", "", "a--b", "x" * 200])
def test_bad_task_ids_are_refused(box, task_id):
    with pytest.raises(InvalidAction, match="task id"):
        box.prepare_workspace(task_id, {"a.py": "x"})
