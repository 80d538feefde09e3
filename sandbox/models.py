"""Pydantic models of what goes into the sandbox (actions, test specs) and what comes out (results)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from sandbox.languages import normalize_language
from trajforge.errors import TrajforgeError

Limit = Literal["time", "memory", "processes", "output", "file_size", "seccomp", "disk"]
"""The limits a run can hit: wall time, memory (cgroup OOM), processes, output bytes, one file's size (RLIMIT_FSIZE),
a syscall seccomp kills, and disk (the workspace or /tmp ran out of space: `disk_mb`, `tmp_mb`)."""


class InvalidAction(TrajforgeError, ValueError):
    """An action, path or test spec that cannot be run; the message says what to fix."""


# A name every platform can hold (seed 002 section 4.3: tasks stay portable even though the jail runs on Linux), and
# that a diff names as `git apply` reads it: no control character, none of Windows' forbidden characters (a backslash,
# a drive's colon), no component ending in a dot or a space, no device name (CON, NUL, COM1, ... with any extension).
_NOT_PORTABLE = re.compile(r'[\x00-\x1f\x7f\\:<>"|?*]')
_DEVICE = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)
MAX_NAME_BYTES = 255
"""Longest file or folder name every common filesystem holds (ext4, XFS, APFS, NTFS: 255)."""
MAX_PATH_BYTES = 1024
"""Longest path in a workspace: well under Linux's PATH_MAX (4096) once the workspace's own folder is in front."""


def check_relative_path(path: str) -> str:
    """A path inside the workspace: relative, no `..`, portable (see `_NOT_PORTABLE`); returned normalized (POSIX)."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"path {path!r} must be a non-empty string")
    if bad := _NOT_PORTABLE.search(path):
        raise ValueError(f"path {path!r} has {bad.group()!r}, which a file name cannot hold on every platform (control characters, "
                         "backslashes, ':', '<', '>', '\"', '|', '?', '*'): use '/' between folders and plain names")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"path {path!r} must be relative to the workspace and must not contain '..'")
    normalized = str(pure)
    if normalized in ("", "."):
        raise ValueError(f"path {path!r} names the workspace itself")
    if len(normalized.encode("utf-8")) > MAX_PATH_BYTES:
        raise ValueError(f"path {normalized[:60]!r}... is {len(normalized.encode('utf-8'))} bytes long: a workspace path has at most {MAX_PATH_BYTES}")
    for part in pure.parts:
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise ValueError(f"path {normalized[:60]!r}... has a name of {len(part.encode('utf-8'))} bytes: file systems hold at most {MAX_NAME_BYTES}")
        if part.endswith((".", " ")) or _DEVICE.fullmatch(part):
            raise ValueError(f"path {path!r} has the part {part!r}, which Windows cannot hold (a device name, or a trailing dot or space)")
    return normalized


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: str
    """An ast-grep language (python, javascript, typescript, tsx, java, ...; aliases such as py, js, ts accepted)."""
    paths: list[str] | None = None
    """Files or directories of the workspace to rewrite (default: all of it)."""

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        return normalize_language(value)

    @field_validator("paths")
    @classmethod
    def _inside_workspace(cls, value: list[str] | None) -> list[str] | None:
        if value == []:  # ast-grep given no path would rewrite the whole workspace
            raise ValueError("an empty list names no file: omit paths to rewrite the whole workspace")
        return None if value is None else [check_relative_path(path) for path in value]


class RewriteAction(_Action):
    """`ast-grep run --pattern P --rewrite R --lang L -U`."""

    type: Literal["rewrite"] = "rewrite"
    pattern: str = Field(min_length=1, max_length=20_000)
    rewrite: str = Field(max_length=20_000)
    strictness: Literal["cst", "smart", "ast", "relaxed", "signature", "template"] | None = None


class RuleAction(_Action):
    """`ast-grep scan --rule rule.yml -U` with an ast-grep YAML rule."""

    type: Literal["rule"] = "rule"
    id: str = Field(default="trajforge-rule", min_length=1, max_length=200)
    rule: dict[str, Any]
    fix: str | dict[str, Any] | None = None
    constraints: dict[str, Any] | None = None
    transform: dict[str, Any] | None = None
    utils: dict[str, Any] | None = None
    rewriters: list[dict[str, Any]] | None = None
    # What ast-grep rules also carry for reporting, passed through to the rule file unchanged
    message: str | None = None
    severity: Literal["hint", "info", "warning", "error", "off"] | None = None
    note: str | None = None
    url: str | None = None
    metadata: dict[str, Any] | None = None
    files: list[str] | None = None
    ignores: list[str] | None = None

    def to_yaml(self) -> str:
        body = {"id": self.id, "language": self.language, "rule": self.rule}
        for key in ("fix", "constraints", "transform", "utils", "rewriters", "message", "severity", "note", "url", "metadata",
                    "files", "ignores"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


Action = RewriteAction | RuleAction
_RULE_ONLY = {"id", "fix", "constraints", "transform", "utils", "rewriters"}
"""Keys only a YAML rule has: a mapping with one of them and no `pattern` is a rule (one missing its `rule`)."""


MAX_RULE_FILE_BYTES = 1 << 20
"""Largest action file `parse_action` reads."""
MAX_NESTING = 64
"""Mappings and lists an action may nest: ast-grep-py overflows its stack on a rule nested some thousands deep (a
SIGSEGV of the process checking it), Python's JSON and YAML readers and writers raise RecursionError, and the ast-grep
CLI refuses a rule file nested not much deeper than this. Real rules nest a dozen or two."""


def _too_deep() -> InvalidAction:
    return InvalidAction(f"the action nests more levels deep than can be read: at most {MAX_NESTING} mappings and lists")


def _nesting(value: Any) -> int:
    """How many mappings and lists deep `value` nests (iterative: any depth is measured without recursion)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, Mapping) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _read_rule_file(path: os.PathLike) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_RULE_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidAction(f"cannot read the action file {os.fspath(path)!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_RULE_FILE_BYTES:
        raise InvalidAction(f"the action file {os.fspath(path)!r} is over {MAX_RULE_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidAction(f"the action file {os.fspath(path)!r} is not UTF-8 text") from None


def parse_action(data: Action | Mapping[str, Any] | str | os.PathLike) -> Action:
    """An action from a model, a dict (`rule`, or a rule-only key without `pattern` -> a YAML rule), YAML/JSON text, or
    a path (`pathlib.Path`) to a YAML rule file or an action's JSON file; InvalidAction if malformed."""
    if isinstance(data, (RewriteAction, RuleAction)):
        return data
    if isinstance(data, os.PathLike):  # an ast-grep YAML rule file (or an action's JSON file); never a str: text is the action
        data = _read_rule_file(data)
    if isinstance(data, str):
        try:
            data = json.loads(data)  # first: JSON is not quite a subset of YAML (a tab may indent JSON, not YAML)
        except RecursionError:
            raise _too_deep() from None
        except ValueError:
            try:
                data = yaml.safe_load(data)
            except RecursionError:
                raise _too_deep() from None
            except yaml.YAMLError as exc:
                if "found another document" in str(getattr(exc, "problem", "")):  # a rule file may hold rules between '---'
                    where = f" (line {exc.problem_mark.line + 1} starts another)" if exc.problem_mark else ""
                    raise InvalidAction(f"the action holds several YAML documents{where}: an action is one rule, "
                                        "so apply each rule as its own action") from None
                raise InvalidAction(f"the action is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise InvalidAction(f"an action must be a mapping, got {type(data).__name__}")
    if (depth := _nesting(data)) > MAX_NESTING:
        raise InvalidAction(f"the action nests {depth} levels deep: at most {MAX_NESTING} mappings and lists")
    kind = data.get("type") or ("rule" if "rule" in data or ("pattern" not in data and data.keys() & _RULE_ONLY) else "rewrite")
    model = {"rewrite": RewriteAction, "rule": RuleAction}.get(kind)
    if model is None:
        raise InvalidAction(f"unknown action type {kind!r}: use 'rewrite' (pattern + rewrite) or 'rule' (an ast-grep YAML rule)")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'action'}: {e['msg']}" for e in exc.errors(include_url=False))
        raise InvalidAction(f"invalid {kind} action: {problems}") from None


RAW_KEEP_BYTES = 16 << 10
"""Of an action that could not be parsed, the result (and its log line) keeps this many bytes of what was given."""


def unparsed_record(action: Any) -> dict[str, Any]:
    """What an invalid action's result (and log line) records as its `action`: a mapping as it is when it is JSON
    of at most RAW_KEEP_BYTES, otherwise `{"unparsed": the text (the JSON, or the repr), cut to RAW_KEEP_BYTES,
    "bytes": its whole size, "truncated": whether it was cut}`; the result's `error` says why it is invalid."""
    if isinstance(action, Mapping) and (depth := _nesting(action)) > MAX_NESTING:  # neither json.dumps nor repr writes it
        text = f"(a mapping nested {depth} levels deep)"
    elif isinstance(action, Mapping):
        try:
            text = json.dumps(dict(action), ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(dict(action))
        else:
            try:
                fits = len(text.encode("utf-8")) <= RAW_KEEP_BYTES
            except UnicodeEncodeError:  # a lone UTF-16 surrogate, which no UTF-8 log line holds: kept below, replaced
                fits = False
            if fits:
                return json.loads(text)
    else:
        text = action if isinstance(action, str) else repr(action)
    data = text.encode("utf-8", "replace")
    return {"unparsed": data[:RAW_KEEP_BYTES].decode("utf-8", "ignore"), "bytes": len(data), "truncated": len(data) > RAW_KEEP_BYTES}


class StreamOutput(BaseModel):
    text: str = ""
    """The first `output_cap_bytes` of the stream, decoded as UTF-8 (invalid bytes replaced)."""
    bytes: int = 0
    """Bytes the stream carried in all."""
    truncated: bool = False


class RunReport(BaseModel):
    """What one jailed process tree did: shared by action and test results."""

    exit_code: int | None = None
    """The command's exit status; None when it was killed."""
    signal: str | None = None
    """The signal that ended it (SIGKILL, SIGSYS, ...), if any."""
    stdout: StreamOutput = Field(default_factory=StreamOutput)
    stderr: StreamOutput = Field(default_factory=StreamOutput)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    memory_peak_mb: float | None = None
    limits_hit: list[Limit] = Field(default_factory=list)
    jail: str = "nsjail"
    """The isolation that ran it: nsjail, bwrap or none."""
    _tails: dict[str, str] = PrivateAttr(default_factory=dict)
    """The last bytes of a truncated stream (not in the result): where a test runner prints its counts."""

    def output_for_counts(self) -> str:
        """stdout then stderr as a test runner's counts are read from them: each kept start, then its end when cut."""
        return "\n".join(stream.text + ("\n" + self._tails.get(name, "") if stream.truncated else "")
                         for name, stream in (("stdout", self.stdout), ("stderr", self.stderr)))


class SandboxResult(RunReport):
    task_id: str = ""
    action: dict[str, Any] = Field(default_factory=dict)
    valid: bool = True
    """False when the action was rejected (bad pattern, rule, language or path): see `error`."""
    error: str | None = None
    diff: str = ""
    """Unified diff of the workspace before and after (a/ and b/ prefixes, as `git apply` takes): its first
    `diff_cap_bytes`, cut at a line end, as stdout and stderr keep their first `output_cap_bytes`."""
    diff_bytes: int = 0
    """Bytes of the whole diff (UTF-8)."""
    diff_truncated: bool = False
    """True when `diff` is only the start of it (then it no longer applies with `git apply`)."""
    files_changed: list[str] = Field(default_factory=list)
    matches: int = 0
    """Matches ast-grep found (nested ones included; one pass rewrites only the outermost)."""
    skipped_files: dict[str, str] = Field(default_factory=dict)
    """Files of the action's language that ast-grep skipped, neither searched nor rewritten, with its reason
    (`fileTooLarge`: over the CLI's own size limit, a few MB; `invalidUtf8`): the CLI says so only when asked."""


class TestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[str] | str | None = None
    """The command (argv list or a shell line); default by framework: pytest -q, python -m unittest, node --test, or the
    Java runner."""
    framework: Literal["auto", "pytest", "unittest", "node", "java"] = "auto"
    """How to read the counts; `auto` guesses from the command or the workspace's files."""


class TestResult(RunReport):
    __test__ = False  # not a pytest test class

    task_id: str = ""
    framework: str = "pytest"
    command: list[str] = Field(default_factory=list)
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.failed and not self.errors and not self.limits_hit
