"""The adapters of the layouts that are not one record = one (instruction, pre, post) row under fixed field names.

- `opencodeedit`: OCEDataFT (github.com/zkzhang88/OpenCodeEdit, `datasets/ocedataft.jsonl`), JSON lines in ShareGPT
  form as `generation/generate_finetune_dataset.py` writes them: `messages` (system; user: `## Code Before:` the code,
  optionally fenced, `## Instruction:` the instruction, `## Code After:`; assistant: the fenced new code), plus `commit`,
  `instr_type` (`<model>_<lazy|descriptive>`), `old_code`, `new_code`. pre/post are `old_code`/`new_code`, else taken
  from the user and assistant turns; the Alpaca form (`instruction` = that user prompt, `output`) reads the same way.
- `agentpack`: nuprl/AgentPack, `train/*.jsonl.gz`, one commit a record: `event_id`, `agent`, `repo`, `sha`,
  `description` (the instruction), `patch` (a unified diff). A patch of one text file with one hunk becomes the hunk's
  two sides (`diffs.py`); any other is `Unconvertible` (multi_file_patch, multi_hunk_patch, binary_patch, ...).
- `marv`: MaRV's `MaRV.json`, an object refactoring type -> list of {`refactoring_id`, `commit_sha`, `commit_link`,
  `file_path`, `description`, `code_before`, `code_after`, `evaluations`: [{`vote`}]}; a refactoring not accepted by
  every vote is `Unconvertible` (not_validated), as MaRV's users keep only those both validators accepted.
- `smellycode`: HRI-EU/SmellyCodeDataset, `<Language>/Smelly{Annotated,Unannotated}/<Class>.<ext>` and
  `Analysis/GroundTruthLevel/GroundTruth.csv` (Language, Class, Code Smell #, Category, Code Smell, Method, Type). It
  has no refactored code: every annotated smell is `Unconvertible` (no_post_code), counted in the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.datasets.diffs import PatchError, parse_patch
from pipelines.datasets.readers import CorruptRecord, Unconvertible, read_records

FENCED = re.compile(r"\A\s*```[\w+#.-]*[ \t]*\n(.*?)\n?```\s*\Z", re.S)
BEFORE, INSTRUCTION, AFTER = "## Code Before:\n", "\n## Instruction:\n", "\n## Code After:"
GROUND_TRUTH = Path("Analysis") / "GroundTruthLevel" / "GroundTruth.csv"


def tags_of(name: str, path: Any, pairs: list[tuple[str, Any]]) -> list[str]:
    tags = [f"dataset:{name}"]
    if isinstance(path, str) and path:
        tags.append(f"path:{path}")
    return tags + [f"{key}:{value}" for key, value in pairs if value not in (None, "")]


def unfence(text: str) -> str:
    """The code inside one Markdown code fence (```python ... ```), or the text as it is."""
    match = FENCED.match(text)
    return match.group(1) if match else text


def _string(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) else None


def _turns(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the user turn, the assistant turn) of a ShareGPT record, or of an Alpaca one (instruction, output)."""
    messages = record.get("messages") or record.get("conversations")
    if isinstance(messages, list):
        by_role: dict[str, str] = {}
        for message in messages:
            if isinstance(message, dict):
                role = message.get("role") or message.get("from")
                content = message.get("content", message.get("value"))
                if isinstance(role, str) and isinstance(content, str):
                    by_role.setdefault({"human": "user", "gpt": "assistant"}.get(role, role), content)
        return by_role.get("user"), by_role.get("assistant")
    return _string(record, "instruction"), _string(record, "output")


def split_edit_prompt(text: str) -> tuple[str, str] | None:
    """(code before, instruction) of OpenCodeEdit's edit prompt, or None when the text is not one."""
    start, middle, end = text.find(BEFORE), text.rfind(INSTRUCTION), text.rfind(AFTER)
    if start < 0 or middle < start or end < middle:
        return None
    return unfence(text[start + len(BEFORE):middle]), text[middle + len(INSTRUCTION):end].strip()


def opencodeedit(name: str, language: str, record: dict[str, Any], where: str) -> dict[str, Any]:
    user, reply = _turns(record)
    parsed = split_edit_prompt(user) if user is not None else None
    if parsed is None:
        raise Unconvertible("no_edit_prompt", f"{where}: no user turn with OpenCodeEdit's '## Code Before:' / '## Instruction:' / "
                                              "'## Code After:' sections, so no instruction to take")
    before, instruction = parsed
    if not instruction:
        raise Unconvertible("no_instruction", f"{where}: the '## Instruction:' section is empty")
    pre = _string(record, "old_code")
    post = _string(record, "new_code")
    pre = before if pre is None else pre
    if post is None and reply is not None:
        post = unfence(reply)
    if post is None:
        raise Unconvertible("no_post_code", f"{where}: neither `new_code` nor an assistant turn holds the code after the edit")
    commit = record.get("commit")
    tags = tags_of(name, None, [("commit", commit if isinstance(commit, str) else None), ("instr_type", _string(record, "instr_type"))])
    return {"instruction": instruction, "pre": pre, "post": post, "language": language, "tags": tags}


def agentpack(name: str, language: str, record: dict[str, Any], where: str) -> dict[str, Any]:
    patch = _string(record, "patch")
    if not patch or not patch.strip():
        raise Unconvertible("no_patch", f"{where}: no `patch`")
    instruction = (_string(record, "description") or "").strip()
    if not instruction:
        raise Unconvertible("no_instruction", f"{where}: no `description` to use as the instruction")
    try:
        files = parse_patch(patch)
    except PatchError as exc:
        raise Unconvertible("malformed_patch", f"{where}: the patch does not parse: {exc}") from None
    if not files:
        raise Unconvertible("malformed_patch", f"{where}: the patch names no file")
    if len(files) > 1:
        raise Unconvertible("multi_file_patch", f"{where}: the patch changes {len(files)} files "
                                                f"({', '.join(str(f.path) for f in files[:3])}{', ...' if len(files) > 3 else ''}); "
                                                "one pre/post pair holds one file")
    [file] = files
    if file.binary:
        raise Unconvertible("binary_patch", f"{where}: {file.path} is a binary change")
    if not file.hunks:
        raise Unconvertible("no_content_change", f"{where}: {file.path} is renamed or its mode changed, its text is not")
    if len(file.hunks) > 1:
        raise Unconvertible("multi_hunk_patch", f"{where}: {file.path} changes in {len(file.hunks)} separate places "
                                                f"({', '.join(h.header for h in file.hunks[:3])}); their sides are not one text")
    [hunk] = file.hunks
    tags = tags_of(name, file.path, [("agent", record.get("agent")), ("repo", record.get("repo")), ("commit", record.get("sha")),
                                     ("event", record.get("event_id")), ("hunk", hunk.header.strip("@ "))])
    return {"instruction": instruction, "pre": hunk.pre, "post": hunk.post, "language": language, "tags": tags}


def marv(name: str, language: str, record: dict[str, Any], where: str) -> dict[str, Any]:
    evaluations = record.get("evaluations")
    if not isinstance(evaluations, list):
        raise CorruptRecord(f"{where}: no `evaluations` list; the record does not have MaRV's layout")
    votes = [item.get("vote") if isinstance(item, dict) else None for item in evaluations]
    if not votes or any(vote != 1 for vote in votes):
        raise Unconvertible("not_validated", f"{where}: the validators' votes {votes} do not all accept this refactoring")
    for key in ("code_before", "code_after"):
        if not isinstance(record.get(key), str):
            raise CorruptRecord(f"{where}: no `{key}` string; the record does not have MaRV's layout")
    group = record.get("group")
    instruction = (_string(record, "description") or "").strip() or (f"Apply the {group} refactoring" if group else "")
    if not instruction:
        raise Unconvertible("no_instruction", f"{where}: no `description` and no refactoring type")
    tags = tags_of(name, record.get("file_path"), [("refactoring_type", group), ("commit", record.get("commit_sha")),
                                                   ("refactoring_id", record.get("refactoring_id"))])
    return {"instruction": instruction, "pre": record["code_before"], "post": record["code_after"], "language": language, "tags": tags}


def smellycode_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ground-truth rows of a SmellyCodeDataset checkout (or of its GroundTruth.csv given alone)."""
    if path.is_file():
        yield from read_records(path, "csv")
        return
    table = path / GROUND_TRUTH
    if not table.is_file():
        found = sorted(path.rglob("GroundTruth.csv"))
        if not found:
            raise CorruptRecord(f"{path}: no {GROUND_TRUTH.as_posix()} (nor any GroundTruth.csv); not SmellyCodeDataset's layout")
        table = found[0]
    yield from read_records(table, "csv")


def smellycode(name: str, language: str, record: dict[str, Any], where: str) -> dict[str, Any]:
    smell = (record.get("Code Smell") or "").strip()
    if not smell or not (record.get("Language") or "").strip():
        raise CorruptRecord(f"{where}: no `Language` or `Code Smell` column; not SmellyCodeDataset's GroundTruth.csv")
    raise Unconvertible("no_post_code", f"{where}: {record.get('Language')} {record.get('Class')}.{record.get('Method')}: {smell}: "
                                        "SmellyCodeDataset holds the smelly code and this annotation only, no refactored version")


CONVERTERS = {"opencodeedit": opencodeedit, "agentpack": agentpack, "marv": marv, "smellycode": smellycode}
