"""`trajforge lake info`: what a lake holds, at a glance: each raw source's files and bytes, the public datasets
ingested and processed, the builds (newest first, with their rows and which one `latest` names), where they were
published, and where the raw lake was synced to or pulled from. Read from the files and manifests only (no Ray, no
service), so it answers on a busy head node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trajforge.lake import Lake

BUILD_ROWS = ("trajectories", "sft", "behavior", "provenance")


def _usage(folder: Path) -> dict[str, int]:
    files = [path for path in folder.rglob("*") if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)]
    return {"files": len(files), "bytes": sum(path.stat().st_size for path in files)}


def _json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def raw_sources(lake: Lake) -> dict[str, dict[str, int]]:
    """Per folder of `lake/raw/`: how many files and bytes (temporary and partial files left out)."""
    if not lake.raw.is_dir():
        return {}
    return {folder.name: _usage(folder) for folder in sorted(lake.raw.iterdir()) if folder.is_dir() and not folder.name.startswith(".")}


def datasets(lake: Lake) -> dict[str, Any]:
    """The public datasets ingested (records, sha256, licence) and the processed splits' rows per language."""
    ingested = {}
    for folder in sorted(lake.raw_datasets.iterdir()) if lake.raw_datasets.is_dir() else []:
        meta = _json(folder / "_meta.json")
        if meta is not None:
            ingested[folder.name] = {"records": meta.get("num_records"), "version": meta.get("version"), "license": meta.get("license"),
                                     "sha256": str(meta.get("sha256", ""))[:12]}
    manifest = _json(lake.processed_datasets / "manifest.json") or {}
    splits: dict[str, dict[str, int]] = {}
    for entry in manifest.get("files") or []:
        if isinstance(entry, dict) and entry.get("rows"):
            language, _, split = str(entry.get("path", "")).rpartition("/")  # <language>/<split>.jsonl
            splits.setdefault(language, {})[split.removesuffix(".jsonl")] = int(entry["rows"])
    return {"ingested": ingested, "processed": splits}


def builds(lake: Lake, limit: int = 10) -> list[dict[str, Any]]:
    """The newest finished builds: id, when, org, parent, rows, and whether `latest` names it. A build whose manifest.json
    cannot be read is listed too, with `damaged` saying so (None for the others), rather than left out without a word."""
    latest = lake.latest_build_id()
    found = []
    for folder in sorted(lake.curated.iterdir(), reverse=True) if lake.curated.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith(".") or not (folder / "manifest.json").exists():
            continue
        manifest = _json(folder / "manifest.json")
        known = manifest or {}
        rows = known.get("rows") or {}
        found.append({"build_id": folder.name, "created_at": known.get("created_at"), "org": known.get("org"),
                      "parent": known.get("parent_build_id"), "rows": {table: rows.get(table, 0) for table in BUILD_ROWS},
                      "latest": folder.name == latest, "damaged": None if manifest is not None else "manifest.json cannot be read"})
        if len(found) == limit:
            break
    return found


def syncs(lake: Lake) -> list[dict[str, Any]]:
    """Where `trajforge lake sync` sent this lake, `lake pull` took it from (URI and files recorded), and `lake publish`
    put its builds (URI, how many, the newest)."""
    found = []
    published = _json(lake.root / "state" / "publish.json") or {}
    for uri, builds in sorted(published.items()):
        if isinstance(builds, list) and builds:
            found.append({"command": "publish", "uri": uri, "builds": len(builds), "newest": builds[-1]})
    for command in ("sync", "pull"):
        for path in sorted((lake.root / "state" / command).glob("*.json")):
            record = _json(path)
            if record is not None:
                found.append({"command": command, "uri": record.get("uri"), "files": len(record.get("files") or {})})
    return found


def lake_info(lake: Lake, limit: int = 10) -> dict[str, Any]:
    return {"lake": str(lake.root.resolve()), "raw": raw_sources(lake), "datasets": datasets(lake), "builds": builds(lake, limit),
            "syncs": syncs(lake)}


def summary(info: dict[str, Any]) -> str:
    lines = [f"lake {info['lake']}", "raw:"]
    lines += [f"  {name:<14} {usage['files']:>7} files {usage['bytes'] / 1e6:>10.1f} MB" for name, usage in info["raw"].items()] or ["  (empty)"]
    ingested, processed = info["datasets"]["ingested"], info["datasets"]["processed"]
    if ingested:
        lines.append("datasets: " + ", ".join(f"{name} {item['records']} ({item['license']})" for name, item in ingested.items()))
    if processed:
        lines.append("processed: " + "; ".join(f"{language} " + ", ".join(f"{split} {rows}" for split, rows in sorted(counts.items()))
                                               for language, counts in sorted(processed.items())))
    lines.append("builds (newest first):" if info["builds"] else "builds: none yet (trajforge build)")
    for build in info["builds"]:
        rows = f"{build['damaged']} (trajforge stats --lake {info['lake']} --build {build['build_id']} says why)" if build.get("damaged") else \
            ", ".join(f"{table} {count}" for table, count in build["rows"].items())
        marks = "".join([" <- latest" if build["latest"] else "", f" (org {build['org']})" if build["org"] else ""])
        lines.append(f"  {build['build_id']}  {build['created_at'] or '':<20}  {rows}{marks}")
    for item in info["syncs"]:
        if item["command"] == "publish":
            lines.append(f"publish: {item['uri']} ({item['builds']} builds, newest {item['newest']})")
        else:
            lines.append(f"{item['command']}: {item['uri']} ({item['files']} files recorded)")
    return "\n".join(lines)
