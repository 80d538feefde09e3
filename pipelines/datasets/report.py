"""The Markdown report of each dataset (seed 002 section 3.2 step 6): `reports/datasets/<dataset>.md`.

Records the adapter could not turn into pre/post at ingestion (by reason), counts (read, kept, dropped by reason,
duplicates by the dataset that kept the first copy), average input tokens,
language ratios, the records per output split, the `_meta.json` contract and a few sample hashes (section 3.4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trajforge.atomic import write_atomic

REASONS = {
    "duplicate": "the same (instruction, pre) pair came first in this or an earlier dataset",
    "too_long": "the input (instruction and pre) has more tokens than datasets.max_input_tokens",
    "parse_error": "pre or post does not parse in the language (a tree-sitter ERROR or MISSING node)",
    "extension_mismatch": "the file's extension names another language than the record claims",
    "unsupported_language": "ast-grep cannot confirm the claimed language",
    "out_of_scope_language": "the language is in none of datasets.languages' folders",
    "no_language": "neither a language field nor a known file extension",
}
NOT_CONVERTED = {
    "multi_file_patch": "the patch changes more than one file; a pre/post pair holds one",
    "multi_hunk_patch": "the patch changes one file in several separate places; their sides are not one text",
    "binary_patch": "the patch changes a binary file",
    "no_content_change": "the patch renames a file or changes its mode, not its text",
    "malformed_patch": "the patch does not parse as a unified diff (or is truncated)",
    "no_patch": "the record has no patch",
    "no_instruction": "the record has no instruction (description) to use",
    "no_edit_prompt": "no user turn with the dataset's '## Code Before / Instruction / Code After' prompt",
    "no_post_code": "the record has no code after the edit (SmellyCode: smelly code and annotations only)",
    "not_validated": "the dataset's validators did not all accept the refactoring",
}


def _ratio(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def render(name: str, stats: dict[str, Any], max_tokens: int, tokenizer: str) -> str:
    meta, records, kept = stats["meta"], stats["records"], stats["kept"]
    lines = [f"# {name}", "", "| field | value |", "| --- | --- |"]
    lines += [f"| {key} | `{meta[key]}` |" for key in ("source", "version", "license", "downloaded_at", "sha256", "num_records")]
    average_kept = stats["input_tokens"] / kept if kept else 0
    average_all = stats["all_input_tokens"] / records if records else 0
    skipped = stats.get("not_converted") or {}
    if skipped:
        lines += ["", "## Not converted, and why", "", f"{sum(skipped.values())} source records could not be turned into pre/post at "
                  "ingestion and are not in the counts below (`_ingest.json` names the first few):", ""]
        lines += [f"- **{reason}** ({count}): {NOT_CONVERTED.get(reason, reason)}" for reason, count in sorted(skipped.items())]
    lines += ["", "## Counts", "", "| | records | share |", "| --- | ---: | ---: |",
              f"| read | {records} | 100.0% |", f"| kept | {kept} | {_ratio(kept, records)} |"]
    lines += [f"| dropped: {reason} | {count} | {_ratio(count, records)} |" for reason, count in sorted(stats["dropped"].items())]
    lines += ["", f"Average input tokens ({tokenizer} tokenizer; input = instruction and pre): {average_kept:.1f} over the kept "
              f"records, {average_all:.1f} over all read (limit {max_tokens}).", ""]
    if stats["dropped"]:
        lines += ["## Dropped, and why", ""]
        lines += [f"- **{reason}** ({count}): {REASONS.get(reason, reason)}" for reason, count in sorted(stats["dropped"].items())]
        if stats["duplicate_of"]:
            lines.append("- duplicates, by the dataset that kept the first copy: "
                         + ", ".join(f"{other} {count}" for other, count in sorted(stats["duplicate_of"].items())))
        lines.append("")
    lines += ["## Languages (kept)", "", "| language | records | share |", "| --- | ---: | ---: |"]
    lines += [f"| {language} | {count} | {_ratio(count, kept)} |" for language, count in sorted(stats["languages"].items())] or ["| - | 0 | - |"]
    lines += ["", "## Splits", "", "| file | records |", "| --- | ---: |"]
    lines += [f"| {where}.jsonl | {count} |" for where, count in sorted(stats["splits"].items())] or ["| - | 0 |"]
    lines += ["", "## Sample hashes", "", "The first kept records' task ids (`<dataset>-<first 16 hex of the record's sha256>`):", ""]
    lines += [f"- `{task}`" for task in stats["samples"]] or ["- none kept"]
    return "\n".join(lines) + "\n"


def write_reports(manifest: dict[str, Any], folder: Path) -> list[Path]:
    settings = manifest["settings"]
    written = []
    for name, stats in manifest["datasets"].items():
        path = Path(folder) / f"{name}.md"
        write_atomic(path, render(name, stats, settings["max_input_tokens"], settings["tokenizer"]))
        written.append(path)
    return written
