"""`trajforge stats`: what a curated build holds (tiers, models, domains, exclusions, redactions, SFT, ...).

The queries live in `pipelines.lake_stats` (the notebook uses the same ones); this module only prints them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from trajforge.cli.common import add_examples, nonblank
from trajforge.errors import LakeCorruption


EXAMPLES = """\
  trajforge stats
  trajforge stats --build latest:acme --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", type=nonblank, default="./lake", help="lake root (default ./lake)")
    parser.add_argument("--build", type=nonblank, default="latest", help="`latest` (default: the whole lake's newest build), `latest:<org>` (the newest --org build), a build id, or a build folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object (summary and every table) instead of text tables")
    add_examples(parser, EXAMPLES)


def run_command(args: argparse.Namespace) -> int:
    import duckdb

    from pipelines import lake_stats
    from trajforge.lake import Lake

    build_dir = Lake.at(args.lake).resolve_build(args.build)
    lake_stats.check_files(build_dir)
    try:
        stats = lake_stats.all_stats(build_dir)
    except duckdb.Error as exc:
        lake_stats.check_files(build_dir, checksum=True)  # names the damaged file when its sha256 tells it
        reason = "".join(char if char.isprintable() else "?" for char in str(exc).splitlines()[0])
        raise LakeCorruption(f"{build_dir} cannot be read ({reason}); restore its files or rebuild with `trajforge build --full`") from None
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
        return 0
    print(format_summary(stats["build"]))
    for name, (title, _) in lake_stats.TABLE_QUERIES.items():
        print(f"\n{title}\n{format_table(stats['tables'][name])}")
    for name, key, value in (("exclusions", "reason", "sessions"), ("redactions", "kind", "count")):
        differing = lake_stats.disagreements(stats["tables"][name], key, value)
        if differing:
            print(f"\nnote: {name} counted from the rows differ from the manifest for: {', '.join(differing)}")
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    lines = [
        f"build       {summary['build_id']}  (parent {summary['parent_build_id'] or '-'})",
        f"created     {summary['created_at']}  code {summary['code_version']}  config {summary['config_hash']}",
        f"tokenizer   {summary['tokenizer']}  embeddings {summary['embedding_model'] or 'off'}",
        f"path        {summary['path']}",
        "rows        " + "  ".join(f"{table} {count}" for table, count in rows.items()),
        f"quarantined {summary['quarantined']} record(s)",
    ]
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as aligned columns: numbers to the right, text to the left, None as `-`."""
    if not rows:
        return "  (none)"
    columns = list(rows[0])
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    numeric = [all(isinstance(row[column], (int, float)) or row[column] is None for row in rows) for column in columns]
    widths = [max(len(column), *(len(row_cells[i]) for row_cells in cells)) for i, column in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  " + "  ".join(v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(values) for values in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
