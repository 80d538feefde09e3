"""Synthetic ast-grep tasks, verified in the sandbox: a Ray Data job.

    trajforge synth-rules [--lake ./lake] [--workers 2]
    ray job submit --working-dir . -- python -m pipelines.synth_rules --lake /shared/lake

Candidates come from `pipelines/synth_templates.py` (templates x parameters x host snippets, in
Python, JavaScript/TypeScript and Java). Each candidate's gold action is applied in the jailed
sandbox to `pre`; only tasks whose result equals `post` exactly are kept. Output:
`<lake>/raw/tasks/synth_rules/tasks.jsonl` (sorted by task id) and `_meta.json` (source, version,
license, created_at, sha256, num_records, and what was dropped and why), both written atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from trajforge.errors import TrajforgeError

log = logging.getLogger("trajforge.synth_rules")
VERSION = "1"
SOURCE = "trajforge synthetic ast-grep templates"
LICENSE = "Apache-2.0 (snippets written for trajforge)"


class VerifyBatch:
    """Ray Data stage: apply each candidate's gold action in the sandbox and compare with `post`."""

    def __init__(self, workspaces_root: str | None = None):
        from sandbox.runner import Sandbox
        from sandbox.settings import load_sandbox_settings

        settings = load_sandbox_settings()
        if workspaces_root:
            settings = settings.model_copy(update={"workspaces_root": Path(workspaces_root)})
        self.sandbox = Sandbox(settings)

    def verify(self, task: dict[str, Any]) -> tuple[bool, str]:
        from sandbox.languages import EXTENSIONS

        name = "snippet" + EXTENSIONS[task["language"]][0]
        workspace = self.sandbox.prepare_workspace(task["task_id"], {name: task["pre"]})
        try:
            result = self.sandbox.apply_action(workspace, task["gold_action"])
            if not result.valid:
                return False, f"invalid gold action: {(result.error or '')[:200]}"
            got = (workspace / name).read_text(encoding="utf-8")
            return (True, "") if got == task["post"] else (False, "result differs from post")
        finally:
            self.sandbox.cleanup(workspace)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        outcomes = [self.verify({**row, "gold_action": json.loads(row["gold_action"])}) for row in rows]
        batch["verified"] = [ok for ok, _ in outcomes]
        batch["reason"] = [reason for _, reason in outcomes]
        return batch


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def run(lake: Path, workers: int = 2, limit: int | None = None, cpus_per_worker: float = 0.5, tasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    import ray

    from pipelines.synth_templates import candidates

    tasks = tasks if tasks is not None else candidates()
    tasks = tasks[:limit] if limit else tasks
    rows = [{**task, "gold_action": json.dumps(task["gold_action"]), "tags": json.dumps(task["tags"])} for task in tasks]
    ray.init(ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    from ray.data import ActorPoolStrategy

    verified = ray.data.from_items(rows).map_batches(
        VerifyBatch, fn_constructor_kwargs={"workspaces_root": str((lake / "tmp" / "sandbox").resolve())}, batch_size=16,
        batch_format="numpy", compute=ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
    ).take_all()
    kept = sorted((row for row in verified if row["verified"]), key=lambda row: row["task_id"])
    dropped = Counter(f"{row['template']}: {row['reason']}" for row in verified if not row["verified"])
    out_dir = lake / "raw" / "tasks" / "synth_rules"
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"task_id": r["task_id"], "instruction": r["instruction"], "pre": r["pre"], "post": r["post"], "language": r["language"],
                         "tags": json.loads(r["tags"]), "template": r["template"], "gold_action": json.loads(r["gold_action"])},
                        ensure_ascii=False, sort_keys=True) for r in kept]
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    _atomic_write(out_dir / "tasks.jsonl", data)
    meta = {"source": SOURCE, "version": VERSION, "license": LICENSE, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sha256": hashlib.sha256(data).hexdigest(), "num_records": len(kept), "candidates": len(verified),
            "by_language": dict(sorted(Counter(r["language"] for r in kept).items())),
            "by_template": dict(sorted(Counter(r["template"] for r in kept).items())), "dropped": dict(sorted(dropped.items()))}
    _atomic_write(out_dir / "_meta.json", (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return {**meta, "path": str(out_dir / "tasks.jsonl")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", type=Path, default=Path("./lake"), help="lake root (default ./lake)")
    parser.add_argument("--workers", type=int, default=2, help="sandbox actors verifying in parallel (default 2)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N candidates (quick runs)")


def run_command(args: argparse.Namespace) -> int:
    from trajforge.settings.job_paths import require_absolute_in_job

    require_absolute_in_job({"--lake": args.lake}, "--lake /shared/lake")
    report = run(args.lake, args.workers, args.limit)
    print(json.dumps({key: value for key, value in report.items() if key != "dropped"}, indent=2))
    if report["dropped"]:
        print("dropped (gold action did not give post):", json.dumps(report["dropped"], indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.synth_rules", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    try:
        return run_command(parser.parse_args(argv))
    except TrajforgeError as exc:
        print(f"pipelines.synth_rules: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
