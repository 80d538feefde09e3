"""The sandbox API: prepare a workspace, apply ast-grep actions to it in a jail, run its tests, clean up.

    from sandbox import Sandbox
    box = Sandbox()                                   # configs/sandbox.yaml
    ws = box.prepare_workspace("task-1", {"app.py": "print(1)\\n"})
    result = box.apply_action(ws, {"pattern": "print($A)", "rewrite": "log($A)", "language": "python"})
    tests = box.run_tests(ws, {"command": ["python", "-m", "pytest", "-q"]})
    box.cleanup(ws)

One action at a time per workspace; many workspaces in parallel (see `SandboxPool`). Every action
and test run is appended as one JSON line to `logs/sandbox/<task_id>.jsonl`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandbox import astgrep, testing, workspace as ws
from sandbox.jail import Mount
from sandbox.models import Action, InvalidAction, RuleAction, SandboxResult, TestResult, TestSpec, parse_action, unparsed_record
from sandbox.process import run_jailed
from sandbox.scratch import scratch, sweep_leftovers
from sandbox.settings import SandboxSettings, check_memory, load_sandbox_settings

_log_lock = threading.Lock()


class Sandbox:
    def __init__(self, settings: SandboxSettings | None = None):
        """Raises ConfigError when the jail's memory-backed folders leave its processes too little of `memory_mb`
        (settings made with `model_copy` skip the load-time check); removes scratch folders of killed runs."""
        self.settings = check_memory(settings or load_sandbox_settings())
        sweep_leftovers()

    @property
    def _owner(self) -> tuple[int, int] | None:
        """Workspaces belong to the jail's uid when we are root (the jail runs as that uid)."""
        return ws.jail_owner(self.settings)

    def prepare_workspace(self, task_id: str, files: Mapping[str, str | bytes] | str | Path) -> Path:
        """A fresh workspace for `task_id` from {relative path: content} or a snapshot directory (copied)."""
        return ws.create(self.settings.workspaces_root, task_id, files, self._owner)

    def cleanup(self, workspace: Path) -> None:
        ws.remove(Path(workspace), self.settings.workspaces_root)

    def apply_action(self, workspace: Path, action: Action | Mapping[str, Any] | str | os.PathLike) -> SandboxResult:
        """Apply one rewrite or YAML rule (a dict, YAML/JSON text, or a rule file's Path) with the ast-grep CLI in the jail;
        never raises for a bad action."""
        workspace = Path(workspace)
        task_id = ws.task_of(workspace)
        parsed = None
        try:
            workspace = self._check_workspace(workspace)
            parsed = parse_action(action)
            if isinstance(parsed, RuleAction):
                astgrep.check_rule(parsed)
            for path in parsed.paths or []:
                if (link := ws.link_on_the_way(workspace, path)) is not None:  # the host would follow it
                    raise InvalidAction(f"path {path!r} passes through the link {link!r} (links are never followed)")
                if not os.path.lexists(workspace / path):
                    raise InvalidAction(f"path {path!r} is not in the workspace")
        except InvalidAction as exc:  # the log says so (valid false), why (error) and what was given (capped)
            why = str(exc) if len(str(exc)) <= 2000 else str(exc)[:2000] + " [...]"
            given = unparsed_record(action if parsed is None else parsed.model_dump(exclude_none=True))
            result = SandboxResult(task_id=task_id, action=given, valid=False, error=why, jail=self.settings.jail)
            self._log(task_id, "action", result)
            return result
        result = self._apply(workspace, task_id, parsed)
        self._log(task_id, "action", result)
        return result

    def _check_workspace(self, workspace: Path) -> Path:
        """The workspace's absolute path (a relative one, such as `.sandbox/<task>--<id>`, failed to mount in nsjail and
        matched nothing without a jail); InvalidAction for a directory `prepare_workspace` did not make: the jail's user
        could not read it (a 0700 temporary directory reads as empty, so an action would "match nothing" and look valid)."""
        root = Path(self.settings.workspaces_root).resolve()
        resolved = workspace.resolve()
        if resolved.parent != root or not resolved.is_dir():
            raise InvalidAction(f"{workspace} is not a workspace of this sandbox (made under {root}): call "
                                f"prepare_workspace(task_id, files or a directory to copy) and pass the path it returns")
        return resolved

    def _apply(self, workspace: Path, task_id: str, action: Action) -> SandboxResult:
        limit = self.settings.max_file_size_mb << 20
        before = ws.read_tree(workspace, limit)
        with scratch("trajforge-action", mode=0o755) as folder:  # removed at the end, or by a sweep once this worker is gone
            action_dir, out_dir = folder / "action", folder / "out"
            action_dir.mkdir(mode=0o755)
            out_dir.mkdir(mode=0o755)
            if self._owner:
                os.chown(out_dir, *self._owner)
            command = astgrep.command(action, self.settings, action_dir, out_dir)
            report = run_jailed(self.settings, command, workspace, cwd="/action",
                                extra_mounts=[Mount(action_dir, "/action"), Mount(out_dir, "/out", writable=True)])
            matches = astgrep.count_matches(out_dir, limit)
            skipped = astgrep.skipped_files(out_dir, workspace, limit)
        diff, changed = ws.unified_diff(before, ws.read_tree(workspace, limit))
        diff, diff_bytes, diff_truncated = ws.cap_lines(diff, self.settings.diff_cap_bytes)
        valid = report.exit_code == 0 and not report.limits_hit
        error = None if valid else (report.stderr.text.strip()[-2000:] or f"ast-grep stopped: exit {report.exit_code}, signal {report.signal}, limits {report.limits_hit}")
        unparsed = astgrep.pattern_error(action, report.stderr.text) if valid and not matches else None
        if unparsed:  # ast-grep ran it anyway and, as such patterns do, matched nothing: not a valid action
            valid, error = False, f"{unparsed}; it matched nothing"
        return SandboxResult(**report.model_dump(), task_id=task_id, action=action.model_dump(exclude_none=True), valid=valid,
                             error=error, diff=diff, diff_bytes=diff_bytes, diff_truncated=diff_truncated, files_changed=changed,
                             matches=matches, skipped_files=skipped)

    def run_tests(self, workspace: Path, test_spec: TestSpec | Mapping[str, Any] | str | list[str] | None = None) -> TestResult:
        """Run the workspace's tests in the same jail and count passed/failed (pytest, node --test, Java)."""
        workspace = self._check_workspace(Path(workspace))
        spec = testing.parse_spec(test_spec)
        framework, command = testing.resolve(spec, workspace, self.settings.allowed_test_programs)
        report = run_jailed(self.settings, command, workspace, env={"PYTEST_ADDOPTS": "-p no:cacheprovider"})
        counts = testing.count(framework, report.output_for_counts())
        result = TestResult(**report.model_dump(), task_id=ws.task_of(workspace), framework=framework, command=command, **counts)
        self._log(result.task_id, "tests", result)
        return result

    def _log(self, task_id: str, kind: str, result: SandboxResult | TestResult) -> None:
        directory = self.settings.logs_dir
        directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"ts": time.time(), "kind": kind, **result.model_dump(mode="json")}, ensure_ascii=False) + "\n"
        with _log_lock, open(directory / f"{task_id or 'unknown'}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line)


_default: Sandbox | None = None


def default_sandbox() -> Sandbox:
    global _default
    if _default is None:
        _default = Sandbox()
    return _default


def prepare_workspace(task_id: str, files: Mapping[str, str | bytes] | str | Path) -> Path:
    return default_sandbox().prepare_workspace(task_id, files)


def apply_action(workspace: Path, action: Action | Mapping[str, Any] | str | os.PathLike) -> SandboxResult:
    return default_sandbox().apply_action(workspace, action)


def run_tests(workspace: Path, test_spec: TestSpec | Mapping[str, Any] | str | list[str] | None = None) -> TestResult:
    return default_sandbox().run_tests(workspace, test_spec)


def cleanup(workspace: Path) -> None:
    default_sandbox().cleanup(workspace)
