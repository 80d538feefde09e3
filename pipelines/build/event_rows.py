"""Starcode telemetry events (`lake/raw/events/`, from `POST /v1/events`) as curated rows, as Starcode's export makes them.

- sft rows: one per `conversation.turn` event. Its payload's `messages` (OpenAI chat format, text parts
  joined) or its user and assistant fields (`user_message`/`user`/`input`/`prompt`, then
  `assistant_message`/`assistant`/`output`/`response`/`completion`), with `tool_calls` and
  `tool_results` (or `toolCalls`/`toolResults`) rendered as JSON; loss on the assistant turns. A turn without an assistant answer
  gives no row (counted as `unusable_turns`). These rows have no tier or score: no session score
  covers a lone turn.
- behaviour rows: one per `model.error` (kind `model_error`) and `model.behavior` (kind `behavior`)
  event: what happened (`behavior`/`kind`/`code`/`type` of the payload), its message, tool and model.

An event stored twice (a retry after a crash between its fsync and its dedup entry) counts once, by
(org, event_id). `--org` keeps one organisation's events; a forgotten contributor's events (by
`contributor_id` or `user_id`) are left out. Every text is redacted with the build's redactor. Lines
that do not parse (a writer killed mid-line), and events no row can hold (a lone UTF-16 surrogate, which the
service now refuses, or nesting past MAX_DEPTH), are skipped and listed in the manifest's quarantine with the reason.
`event_stage` runs this file by file in Ray tasks.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajforge.contracts.events import lone_surrogate_field

USER_KEYS = ("user_message", "user", "input", "prompt", "request")
ASSISTANT_KEYS = ("assistant_message", "assistant", "output", "response", "completion")
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool", "function": "tool"}
BEHAVIOR_KINDS = {"model.error": "model_error", "model.behavior": "behavior"}
TELEMETRY_SUFFIX = "-telemetry.parquet"
MAX_DEPTH = 200


@dataclass
class EventRows:
    sft: list[dict[str, Any]] = field(default_factory=list)
    behavior: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    redactions: Counter = field(default_factory=Counter)


def event_files(lake_root: Path) -> list[str]:
    """Every raw events file, relative to the lake root, in the lake's order."""
    root = lake_root / "raw" / "events"
    return [str(path.relative_to(lake_root)) for path in sorted(root.glob("org=*/date=*/type=*/*.jsonl"))] if root.is_dir() else []


def read_events(lake_root: Path, quarantined: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(raw id `<path>:<line>`, record) of every stored event, in file order; unreadable lines go to `quarantined`."""
    return [found for relative in event_files(lake_root) for found in read_event_file(lake_root, relative, quarantined)]


def read_event_file(lake_root: Path, relative: str, quarantined: list[dict[str, Any]], size: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(raw id, record) of one events file's events (its first `size` bytes: what an earlier read of it saw)."""
    offset, found = 0, []
    try:
        data = (lake_root / relative).read_bytes()[:size]
    except OSError as exc:  # a broken link, an I/O error, a folder: the whole file is listed, the build goes on
        quarantined.append({"source": "events", "path": relative, "offset": 0, "length": 0, "reason": f"unreadable: {exc.strerror or exc}"})
        return found
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        reason = "torn last line" if not line.endswith(b"\n") else "not an event record"
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except RecursionError:
            record, reason = None, "nested too deeply to parse"
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("event"), dict) and record.get("event_id"):
            reason = _unwritable(record["event"])
        if reason is None:
            found.append((f"{relative}:{number}", record))
        else:
            quarantined.append({"source": "events", "path": relative, "offset": offset, "length": len(line), "reason": reason})
        offset += len(line)
    return found


def event_key(record: dict[str, Any]) -> tuple[str, str]:
    """What makes a stored event the same event: (org, event id)."""
    return str(record.get("org_id") or "default"), str(record["event_id"])


def _unwritable(event: dict[str, Any]) -> str | None:
    """Why an event's rows could not be made or written, or None: a lone UTF-16 surrogate (JSON can escape one, a
    Parquet string, UTF-8, cannot hold it), or nesting deeper than MAX_DEPTH (redacting and rendering it recurse)."""
    if (field := lone_surrogate_field(event)) is not None:
        return f"a lone UTF-16 surrogate in {field}, which is not text (Parquet strings are UTF-8)"
    pending, depth = [(event, 1)], 0
    while pending:
        value, level = pending.pop()
        depth = max(depth, level)
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep"
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(part, dict) and ("text" in part or "type" in part) for part in value):
        return "".join(str(part.get("text", "")) for part in value if part.get("type", "text") == "text")  # OpenAI content parts
    if isinstance(value, dict) and isinstance(value.get("content"), (str, list)):
        return _text(value["content"])
    return json_text(value)


def json_text(value: Any) -> str:
    """A value as the model sees it: a string as it is, anything else as JSON. Tool calls and tool results go through
    this, never read as content parts, whose non-text parts would be dropped (an OpenAI tool call's `type` is `function`)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _field(payload: dict[str, Any], *names: str) -> Any:
    return next((payload[name] for name in names if payload.get(name)), None)


def turn_messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages of one conversation turn, loss on the assistant's; empty when there is no assistant answer."""
    messages = []
    if isinstance(payload.get("messages"), list):
        for message in payload["messages"]:
            if not isinstance(message, dict) or ROLES.get(str(message.get("role"))) is None:
                continue
            content = _text(message.get("content"))
            if not content and message.get("tool_calls"):
                content = json_text(message["tool_calls"])
            messages.append({"role": ROLES[message["role"]], "content": content})
    else:
        system = next((_text(payload[key]) for key in ("system_prompt", "system") if payload.get(key)), "")
        user = next((_text(payload[key]) for key in USER_KEYS if payload.get(key) is not None), "")
        answer = next((_text(payload[key]) for key in ASSISTANT_KEYS if payload.get(key) is not None), "")
        messages = [{"role": "system", "content": system}] if system else []
        if user:
            messages.append({"role": "user", "content": user})
        if (calls := _field(payload, "tool_calls", "toolCalls")) is not None:
            messages.append({"role": "assistant", "content": json_text(calls)})
        if (results := _field(payload, "tool_results", "toolResults")) is not None:
            messages.append({"role": "tool", "content": json_text(results)})
        if answer:
            messages.append({"role": "assistant", "content": answer})
    if not any(message["role"] == "assistant" and message["content"] for message in messages):
        return []
    return [{**message, "loss": message["role"] == "assistant"} for message in messages]


def _provenance(session_id: str, contributor: str | None, raw_ids: list[str], payload: dict[str, Any]) -> dict[str, Any]:
    def strings(*keys: str) -> list[str]:
        values = [payload.get(key) for key in keys]
        flat = [item for value in values for item in (value if isinstance(value, list) else [value])]
        return sorted({str(item) for item in flat if isinstance(item, (str, int)) and item != ""})

    return {"source": "telemetry", "session_id": session_id, "contributor_id": contributor, "raw_ids": raw_ids,
            "repos": strings("repo", "repository"), "commits": strings("commit", "commit_sha"), "files": strings("file", "files", "files_written")}


def event_rows(records: Iterable[tuple[str, dict[str, Any]]], redactor, *, org: str | None, forgotten: set[str], system_prompt: str,
               split_of) -> EventRows:
    """These stored events (`read_event_file`'s) as sft and behaviour rows (`split_of(session_id)` gives train or dev)."""
    rows = EventRows()
    seen: set[tuple[str, str]] = set()
    for raw_id, record in records:
        event, key = record["event"], event_key(record)
        event_org = key[0]
        if key in seen:
            rows.counts["duplicates"] += 1
            continue
        seen.add(key)
        contributor = next((str(event[name]) for name in ("contributor_id", "contributorId", "user_id", "userId") if event.get(name)), None)
        if (org is not None and event_org != org) or (contributor and contributor.lower() in forgotten):
            rows.counts["left_out"] += 1
            continue
        rows.counts["events"] += 1
        payload, found = redactor.redact_tree(event.get("payload") if isinstance(event.get("payload"), dict) else {})
        rows.redactions.update(found)
        session_id = f"telemetry:{event_org}:{record.get('session_id') or event.get('session_id') or record['event_id']}"
        example_id = "telemetry-" + hashlib.sha256(f"{key[0]}\0{key[1]}".encode()).hexdigest()[:32]
        provenance = _provenance(session_id, contributor, [str(record["event_id"]), raw_id], payload)  # its id, then where it lies
        kind = record.get("event_type")
        if kind == "conversation.turn":
            messages = turn_messages(payload)
            if not messages:
                rows.counts["unusable_turns"] += 1
                continue
            if messages[0]["role"] != "system" and system_prompt:
                messages.insert(0, {"role": "system", "content": system_prompt, "loss": False})
            rows.sft.append({"example_id": example_id, "source": "telemetry", "session_id": session_id, "step": None,
                             "split": split_of(session_id), "tier": None, "score": None, "messages": messages,
                             "num_tokens": None, "loss_tokens": None, "provenance": provenance})
        elif kind in BEHAVIOR_KINDS:
            model = payload.get("model") if isinstance(payload.get("model"), str) else event.get("model")
            rows.behavior.append({
                "row_id": example_id, "kind": BEHAVIOR_KINDS[kind], "session_id": session_id, "step": None, "source": "telemetry",
                "behavior": next((str(payload[name]) for name in ("behavior", "kind", "code", "type", "name") if payload.get(name)), kind),
                "provider": _text(payload.get("provider") or event.get("provider")) or None,
                "model_engine": _text(model) or None, "tool": _text(payload.get("tool")) or None,
                "content": _text(payload.get("message") or payload.get("error") or payload), "context": None, "recovered": None,
                "provenance": provenance,
            })
    return rows
