"""A processed public code-edit record (`lake/processed/datasets/<language>/<split>.jsonl`) as an sft row.

The chat, loss on the assistant turn only:

| role | content | loss |
| --- | --- | --- |
| system | `build.datasets.system_prompt` (left out when empty) | no |
| user | the instruction, then `The <Language> code before the change (<path>):` and the code in a fenced block | no |
| assistant | the code after the change, in a fenced block of the same language | yes |

A fence is longer than any run of backticks in the code, so code that holds a Markdown fence stays inside its block.
Every text (instruction, code, tags) goes through the build's redactor first.

Provenance, in the curated schema's columns: `source` `dataset`; `session_id` (also the `example_id`)
`dataset:<dataset>:<first 16 hex of the record's sha256>` (the record's `task_id` is `<dataset>-<same 16 hex>`);
`provenance.raw_ids` the record's sha256 (the processed manifest's sample hash); `repos`, `commits`, `files` from
its `repo:`, `commit:`, `path:` tags; `provenance.license` the record's own licence (its `license:` tag,
CommitPackFT's per repository) or else its dataset's; `provenance.contributor_id` null: a public record has no
contributor who could be forgotten, only the licence it is used under. `split` is the record's split (train or dev); tier, score,
reward and sampling are null.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

LANGUAGE_NAMES = {"python": "Python", "javascript": "JavaScript", "typescript": "TypeScript", "tsx": "TSX", "java": "Java"}
_TICKS = re.compile(r"`{3,}")


def fenced(code: str, language: str) -> str:
    """`code` in a Markdown fence tagged with `language`, the fence longer than any run of backticks in the code."""
    longest = max((len(run) for run in _TICKS.findall(code)), default=2)
    fence = "`" * max(3, longest + 1)
    body = code[:-1] if code.endswith("\n") else code
    return f"{fence}{language}\n{body}\n{fence}"


def tag_values(tags: list[str], name: str) -> list[str]:
    """The values of the `name:` tags, in order, without repeats."""
    prefix = f"{name}:"
    return list(dict.fromkeys(tag[len(prefix):] for tag in tags if isinstance(tag, str) and tag.startswith(prefix) and len(tag) > len(prefix)))


def messages_of(record: dict[str, Any], system_prompt: str) -> list[dict[str, Any]]:
    language = str(record["language"])
    name = LANGUAGE_NAMES.get(language, language)
    paths = tag_values(record.get("tags") or [], "path")
    where = f" (`{paths[0]}`)" if paths else ""
    user = f"{record['instruction'].strip()}\n\nThe {name} code before the change{where}:\n\n{fenced(record['pre'], language)}"
    messages = [{"role": "system", "content": system_prompt, "loss": False}] if system_prompt else []
    return [*messages, {"role": "user", "content": user, "loss": False},
            {"role": "assistant", "content": fenced(record["post"], language), "loss": True}]


def row_id(dataset: str, sha256: str) -> str:
    return f"dataset:{dataset}:{sha256[:16]}"


def sft_row(record: dict[str, Any], split: str, dataset_license: str | None, system_prompt: str) -> dict[str, Any]:
    """The sft row of one (already redacted) processed record; token counts are filled later, per batch."""
    tags = record.get("tags") or []
    licence = (tag_values(tags, "license") or [dataset_license])[0]
    session_id = row_id(record["dataset"], record["sha256"])
    provenance = {"source": "dataset", "session_id": session_id, "contributor_id": None, "raw_ids": [record["sha256"]],
                  "repos": tag_values(tags, "repo"), "commits": tag_values(tags, "commit"), "files": tag_values(tags, "path"),
                  "license": licence}
    return {"example_id": session_id, "source": "dataset", "session_id": session_id, "step": None, "split": split, "tier": None,
            "score": None, "messages": messages_of(record, system_prompt), "num_tokens": None, "loss_tokens": None, "reward": None,
            "model": None, "temperature": None, "seed": None, "provenance": provenance}


def taken(sha256: str, share: float) -> bool:
    """Whether a train record is in its dataset's `share`: the first 8 hex of its sha256 read as a fraction in [0, 1)."""
    return share >= 1 or int(sha256[:8], 16) / 0x100000000 < share


def messages_digest(messages: list[dict[str, Any]]) -> str:
    """The exact-duplicate key of a row: its rendered chat after redaction (16 bytes of a sha256, as hex)."""
    text = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def read_range(path: Path, start: int, end: int) -> list[bytes]:
    """The lines that start in [start, end) of a file whose ranges were cut just after newlines."""
    with open(path, "rb") as handle:
        handle.seek(start)
        lines = handle.read(end - start).split(b"\n")
    return lines[:-1] if lines and not lines[-1] else lines


def render_chunk(chunk: dict[str, Any], settings_json: str) -> dict[str, Any]:
    """Ray task: one byte range of a processed split -> its rows staged in one Parquet file; returns what the driver
    needs (row ids and duplicate keys in file order, counts, redactions, lines that are not records)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.build.process import _tools
    from pipelines.build.staging import STAGE_SCHEMAS
    from pipelines.build.tokens import count_sft_tokens
    from trajforge.atomic import replacing

    settings, redactor, counter, _ = _tools(settings_json)
    options = settings.datasets
    rows, bad, left_out, redactions = [], [], Counter(), Counter()
    offset = chunk["start"]
    for line in read_range(Path(chunk["path"]), chunk["start"], chunk["end"]):
        try:
            record = json.loads(line)
            if not (isinstance(record, dict) and all(isinstance(record.get(k), str) for k in ("instruction", "pre", "post", "language", "dataset", "sha256"))):
                raise ValueError("not a processed record")
        except ValueError:
            bad.append({"source": "datasets", "path": chunk["relative"], "offset": offset, "length": len(line) + 1,
                        "reason": "not a processed dataset record"})
            offset += len(line) + 1
            continue
        offset += len(line) + 1
        if chunk["split"] == "train" and not taken(record["sha256"], options.train_share.get(record["dataset"], 1.0)):
            left_out[record["dataset"]] += 1
            continue
        clean, found = redactor.redact_tree({key: record.get(key) for key in ("instruction", "pre", "post", "tags")})
        redactions.update(found)
        rows.append(sft_row({**record, **clean}, chunk["split"], chunk["licenses"].get(record["dataset"]), options.system_prompt))
    count_sft_tokens(rows, counter)
    for row in rows:
        row["_origin"] = chunk["origin"]
    with replacing(Path(chunk["target"])) as temporary:
        pq.write_table(pa.Table.from_pylist(rows, schema=STAGE_SCHEMAS["sft"]), temporary)
    return {"ids": [row["example_id"] for row in rows], "digests": [messages_digest(row["messages"]) for row in rows],
            "datasets": Counter(row["example_id"].split(":")[1] for row in rows), "left_out": left_out, "redactions": redactions,
            "quarantined": bad}
