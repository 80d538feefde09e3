"""Loading component configs: YAML file, then `TRAJFORGE__A__B` environment variables, then `--set a.b=v`.

Every component has one YAML file under `configs/` and one pydantic model that rejects unknown keys.
A bad value stops the start with a ConfigError naming the dotted field and where its value came from: the file, or
the override that set it (an `Assignment`'s `origin`: the `--set`, the environment variable, the command's flag). A
check across fields also names the overrides of the other fields it found wrong (`validate`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from trajforge.errors import ConfigError
from trajforge.settings.close_names import unknown_key_hint
from trajforge.settings.yaml_file import load_yaml_text, yaml_problem

ENV_PREFIX = "TRAJFORGE__"
SHIPPED_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
M = TypeVar("M", bound=BaseModel)


class Assignment(tuple):
    """A (dotted path, value) pair, as every loader takes them, that also names where it came from (`origin`): the
    `--set`, the environment variable or the command's flag that the error of a bad value blames:
    `Assignment("http_options.port", 8001, "--port")`. A plain pair counts as a `--set`."""

    origin: str

    def __new__(cls, path: str, value: Any, origin: str) -> Assignment:
        pair = super().__new__(cls, (path, value))
        pair.origin = origin
        return pair

    def __getnewargs__(self) -> tuple[str, Any, str]:  # pickle and copy rebuild it with its origin
        return (*self, self.origin)


def origin_of(assignment: tuple[str, Any]) -> str:
    """What set this override: an `Assignment`'s origin; a plain pair is a `--set`."""
    return getattr(assignment, "origin", None) or f"--set {assignment[0]}"


def read_yaml(path: str | Path, given_by: str | None = None, kind: str = "config file") -> dict[str, Any]:
    """The YAML mapping at `path`, which `given_by` names when a flag gave it (`--config`, `--domains`): a missing
    file is an error naming the path as given, and the flag, or for a shipped default the checkout that lacks it."""
    path = Path(path)
    try:
        data = load_yaml_text(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(_missing_file(path, given_by, kind)) from None
    except IsADirectoryError:
        raise ConfigError(f"{kind} {path}{_given(given_by)} is a folder: give the YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{kind} {path}{_given(given_by)} is not UTF-8 text: give a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {kind} {path}{_given(given_by)} ({exc.strerror or exc}): check the path and its permissions") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML{yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _given(given_by: str | None) -> str:
    return f" (given with {given_by})" if given_by else ""


def _missing_file(path: Path, given_by: str | None, kind: str) -> str:
    where = f" (no such file in {Path.cwd()})" if not path.is_absolute() else ""
    if given_by:
        return f"{kind} {path} given with {given_by} not found{where}: check the path"
    if path.is_absolute() and path.parent.resolve() == SHIPPED_CONFIGS:  # a loader's default (made from the code's place);
        # a relative `--config configs/x.yaml` run in the checkout (or a job's copy of it) is the user's path, not a default
        return f"the default {kind} {path} is missing from this checkout: restore it (git checkout -- configs/{path.name})"
    return f"{kind} {path} not found{where}: check the path"


YAML11_BOOLEANS = frozenset({"yes", "no", "on", "off"})
"""Words PyYAML reads as booleans (YAML 1.1) that YAML 1.2 and most readers take for strings: an override keeps them
as text, so `--set learner.run_name=off` names a run `off`; a boolean field still reads them (pydantic's `off` is False)."""


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """`a.b.c=value` -> ("a.b.c", value), the value read as YAML (so `0`, `true`, `[1, 2]` are typed)."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path.strip():
        raise ConfigError(f"--set expects dotted.path=value, got {assignment!r}")
    if raw.strip().lower() in YAML11_BOOLEANS:
        return path.strip(), raw.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path.strip(), value


def env_assignments(environ: Mapping[str, str] | None = None) -> list[tuple[str, Any]]:
    """`TRAJFORGE__INGEST__RATE_LIMITS__PER_ADDRESS_PER_MINUTE=0` -> ("ingest.rate_limits.per_address_per_minute", 0)."""
    environ = os.environ if environ is None else environ
    found = []
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            path = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            found.append(Assignment(path, parse_assignment(f"{path}={raw}")[1], name))
    return found


def set_path(data: dict[str, Any], dotted: str, value: Any, origin: str | None = None) -> None:
    """Set a dotted path in nested dicts, creating intermediate mappings; an error names `origin`, what set it."""
    node = data
    parts = dotted.split(".")
    for index, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            blame = f" (set by {origin})" if origin else ""
            raise ConfigError(f"cannot set {dotted}{blame}: {'.'.join(parts[: index + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


def parse_assignments(texts: Iterable[str], roots: Iterable[str], command: str) -> list[tuple[str, Any]]:
    """Parse the `--set` texts of `command`, which reads the config sections `roots`.

    Each loader applies only its own root, so an assignment to any other root (a typo such as
    `lerner.optim.lr`, or another component's section) would change nothing: it is refused, naming it
    and the roots `command` accepts. Environment variables are not checked: every component sees them all.
    """
    roots = list(roots)
    parsed = []
    for text in texts:
        dotted, value = parse_assignment(text)
        root = dotted.split(".", 1)[0]
        if not roots:
            raise ConfigError(f"--set {text}: {command} reads no config, so --set has nothing to change")
        if root not in roots:
            raise ConfigError(f"--set {text}: {command} reads no config section {root!r}; it accepts "
                              + ", ".join(f"{name}.*" for name in roots))
        parsed.append((dotted, value))
    return parsed


def apply_assignments(data: dict[str, Any], assignments: Iterable[tuple[str, Any]], roots: Iterable[str]) -> dict[str, Any]:
    """Apply assignments whose first segment is one of `roots` (a component ignores other components' variables).

    A command that loads several components passes each the same list, so this filters; the command
    refuses roots it does not read beforehand, with `parse_assignments`.
    """
    roots = set(roots)
    for assignment in assignments:
        dotted, value = assignment
        if dotted.split(".", 1)[0] in roots:
            set_path(data, dotted, value, origin_of(assignment))
    return data


def origins(env: Iterable[tuple[str, Any]] = (), assignments: Iterable[tuple[str, Any]] = ()) -> dict[str, str]:
    """Where each overridden dotted path got its value, in the order they were applied: each `Assignment`'s origin
    (the environment variable, the flag), else the environment variable of that path for `env`, `--set` for `assignments`."""
    labelled = [(pair[0], getattr(pair, "origin", None) or ENV_PREFIX + pair[0].upper().replace(".", "__")) for pair in env]
    found: dict[str, str] = {}
    for path, origin in [*labelled, *((pair[0], origin_of(pair)) for pair in assignments)]:
        found.pop(path, None)  # set again: it moves to the end, as the override applied last
        found[path] = origin
    return found


def validate(model: type[M], data: Mapping[str, Any], source: str, prefix: str = "", overrides: Mapping[str, str] | None = None,
             file_data: Mapping[str, Any] | None = None) -> M:
    """Validate into `model`; the errors become a ConfigError naming the dotted field and where its value came from:
    `source` (the file), or the last override that `overrides` (from `origins`) says set it or a mapping above it. Given
    `file_data` (the same data as read from the file, before the overrides), an error of a check across fields (a
    validator that reads other fields) also names the overrides of those other fields (`_cross_field_overrides`)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors, overrides = exc.errors(include_url=False), overrides or {}
        others = _cross_field_overrides(model, data, file_data, prefix, overrides, errors) if file_data is not None else {}
        lines = []
        for index, error in enumerate(errors):
            field = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
            origin = _last_override(field, overrides, below=error["type"] == "extra_forbidden")
            hint = f"unknown key: {unknown_key_hint(model, error['loc'], prefix)}" if error["type"] == "extra_forbidden" else error["msg"]
            if error["type"] != "extra_forbidden" and "input" in error and not isinstance(error["input"], dict):
                hint += f" (got {error['input']!r})"
            if others.get(index):
                named = " and ".join(f"{path} (set by {by})" for path, by in others[index])
                lines.append(f"{field} ({f'set by {origin}' if origin else f'from {source}'}) and {named}: {hint}")
            else:
                lines.append(f"{field} (set by {origin}): {hint}" if origin else f"{source}: {field}: {hint}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _last_override(field: str, overrides: Mapping[str, str], below: bool = False) -> str | None:
    """The origin of the last applied override at `field` or a mapping above it: its value is the one validated. With
    `below` (an unknown key), also one under it, which made the key (`--set learner.trian.max_steps=1` makes `trian`)."""
    matching = [by for path, by in overrides.items()
                if field == path or field.startswith(path + ".") or (below and path.startswith(field + "."))]
    return matching[-1] if matching else None


def _cross_field_overrides(model: type[BaseModel], data: Mapping[str, Any], file_data: Mapping[str, Any], prefix: str,
                           overrides: Mapping[str, str], errors: list[Any]) -> dict[int, list[tuple[str, str]]]:
    """Error index -> (path, origin) of each override of another field of the error's model (its siblings, or for a
    model's own check its fields) that the error depends on: with that one path put back as the file has it, the
    errors at the field are not the same. A validator across fields does not say which fields it read; this finds the
    overridden ones among them by trying. It does not find fields that came from the file (the file is named instead),
    nor an override whose undoing leaves the error word for word as it was."""
    if not overrides or not isinstance(data, Mapping):
        return {}
    skip = len(prefix.split(".")) if prefix else 0
    relative = {path: tuple(path.split(".")[skip:]) for path in overrides}
    original = _errors_by_field(model, data)
    undone: dict[str, dict[tuple[str, ...], list[tuple[str, str]]] | None] = {}
    found: dict[int, list[tuple[str, str]]] = {}
    for index, error in enumerate(errors):
        loc = tuple(str(part) for part in error["loc"])
        scope = loc if isinstance(error.get("input"), dict) else loc[:-1]
        for path, parts in relative.items():
            if len(parts) <= len(scope) or parts[: len(scope)] != scope or loc[: len(parts)] == parts:
                continue  # not another field of this model, or the field's own override (or one above it)
            if path not in undone:
                reverted = _put_back(data, file_data, parts)
                undone[path] = None if reverted is None else _errors_by_field(model, reverted)
            if undone[path] is not None and undone[path].get(loc) != original.get(loc):
                found.setdefault(index, []).append((path, overrides[path]))
    return found


def _errors_by_field(model: type[BaseModel], data: Mapping[str, Any]) -> dict[tuple[str, ...], list[tuple[str, str]]]:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        by_field: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        for error in exc.errors(include_url=False):
            by_field.setdefault(tuple(str(part) for part in error["loc"]), []).append((error["type"], error["msg"]))
        return by_field
    return {}


def _put_back(data: Mapping[str, Any], file_data: Mapping[str, Any], parts: tuple[str, ...]) -> dict[str, Any] | None:
    """A copy of `data` whose value at `parts` is the file's (left out where the file has none); None where `data`
    has no mapping there to change."""
    reverted = copy.deepcopy(dict(data))
    node: Any = reverted
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    value: Any = file_data
    for part in parts:
        if not isinstance(value, Mapping) or part not in value:
            node.pop(parts[-1], None)
            return reverted
        value = value[part]
    node[parts[-1]] = copy.deepcopy(value)
    return reverted


def load_section(model: type[M], source: str | Path, section: str, assignments: Iterable[tuple[str, Any]] = ()) -> M:
    """One component's section of its YAML file, then `TRAJFORGE__<SECTION>__*` variables, then `assignments` (from
    `--set section.x=y`), validated into `model`."""
    data = read_yaml(source)
    flat = sorted(set(data) & set(model.model_fields)) if section not in data else []
    if flat:  # e.g. `jail: none` in a --config file for the sandbox: read nowhere, so the defaults would run silently
        raise ConfigError(f"{source}: {', '.join(flat)} {'is a setting' if len(flat) == 1 else 'are settings'} of {section} at "
                          f"the top level of the file, where nothing reads {'it' if len(flat) == 1 else 'them'}: put "
                          f"{'it' if len(flat) == 1 else 'them'} under `{section}:`")
    if data and section not in data and not flat:  # `learnr:`, or another component's file: its defaults would run silently
        raise ConfigError(f"{source}: no `{section}:` section (the file has {', '.join(sorted(map(str, data)))}), so none of "
                          f"it would be read: put the {section} settings under `{section}:`, or give the {section} config file")
    as_read = copy.deepcopy(data.get(section) or {})
    env, assignments = env_assignments(), list(assignments)
    apply_assignments(data, [*env, *assignments], roots=[section])
    return validate(model, data.get(section) or {}, str(source), prefix=section, overrides=origins(env, assignments), file_data=as_read)
