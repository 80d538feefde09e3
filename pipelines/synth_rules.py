"""Synthetic ast-grep tasks, verified in the sandbox: a Ray Data job.

    trajforge synth-rules [--lake ./lake] [--workers 2] [--set sandbox.wall_time_s=10]
    ray job submit --working-dir . -- python -m pipelines.synth_rules --lake /shared/lake

Candidates come from `pipelines/synth_templates.py` (templates x parameters x host snippets, in
Python, JavaScript/TypeScript and Java). Each candidate's gold action is applied in the jailed
sandbox to `pre`; only tasks whose result equals `post` exactly are kept. Output:
`<lake>/raw/tasks/synth_rules/tasks.jsonl` (sorted by task id) and `_meta.json` (source, version,
license, created_at, sha256, num_records, and what was dropped and why), published together: the
folder is filled under a temporary name and renamed into place (`trajforge.atomic.staged_dir`), so a
reader finds the old pair or the new one, never one of each (a kill between its two renames leaves no
folder and the old pair in `.synth_rules.old-<host>-<pid>`). The next run removes what killed runs left
beside it (`trajforge.atomic.remove_leftovers`: the old pairs, and this host's temporary folders).
`--set sandbox.*` changes the jail policy of the verifying sandboxes (configs/sandbox.yaml).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trajforge.atomic import staged_dir
from trajforge.cli.common import nonblank_path, positive_int
from trajforge.cluster import init_ray
from trajforge.errors import TrajforgeError
from trajforge.lake import Lake, refuse_a_file
from trajforge.settings import parse_assignment

if TYPE_CHECKING:
    from sandbox.settings import SandboxSettings

log = logging.getLogger("trajforge.synth_rules")
VERSION = "1.0.0"  # semver, as seed 002 section 3.1 asks of a _meta.json ("<semver or commit hash>")
SOURCE = "trajforge synthetic ast-grep templates"
LICENSE = "Apache-2.0"  # SPDX identifier, as seed 002 section 3.1 asks: every snippet is written for trajforge


class NothingVerified(TrajforgeError, RuntimeError):
    """No candidate's gold action gave its `post`: the tasks already in the lake are left as they were."""


def tasks_file(lake: Path) -> Path:
    """Where the job writes the lake's verified tasks (the teacher and rollouts read them from there by default)."""
    return Lake(Path(lake)).synthetic_tasks


class VerifyBatch:
    """Ray Data stage: apply each candidate's gold action in the sandbox and compare with `post`."""

    def __init__(self, settings: SandboxSettings):
        from sandbox.runner import Sandbox

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


def run(lake: Path, workers: int = 2, limit: int | None = None, cpus_per_worker: float = 0.5, tasks: list[dict[str, Any]] | None = None,
        sandbox_assignments: Sequence[tuple[str, Any]] = ()) -> dict[str, Any]:
    """Verify the candidates (or `tasks`) and write the kept ones; `sandbox_assignments` (`sandbox.x`, value)
    apply to configs/sandbox.yaml after the default workspaces root, `<lake>/tmp/sandbox`. The verifying actors get
    the jails' folders absolute: they run in a folder of their own (`ray start`'s, on a cluster)."""
    import ray

    from pipelines.synth_templates import candidates
    from sandbox.settings import absolute_sandbox_settings

    sandbox = absolute_sandbox_settings(None, [("sandbox.workspaces_root", str((lake / "tmp" / "sandbox").resolve())), *sandbox_assignments])

    tasks = tasks if tasks is not None else candidates()
    tasks = tasks[:limit] if limit else tasks
    rows = [{**task, "gold_action": json.dumps(task["gold_action"]), "tags": json.dumps(task["tags"])} for task in tasks]
    init_ray()
    from ray.data import ActorPoolStrategy

    verified = ray.data.from_items(rows).map_batches(
        VerifyBatch, fn_constructor_kwargs={"settings": sandbox}, batch_size=16,
        batch_format="numpy", compute=ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
    ).take_all()
    kept = sorted((row for row in verified if row["verified"]), key=lambda row: row["task_id"])
    dropped = Counter(f"{row['template']}: {row['reason']}" for row in verified if not row["verified"])
    if not kept:
        reasons = "; ".join(f"{reason} ({count})" for reason, count in dropped.most_common(5))
        raise NothingVerified(f"none of the {len(verified)} candidates verified, so {tasks_file(lake)} was left as it was: {reasons}")
    lines = [json.dumps({"task_id": r["task_id"], "instruction": r["instruction"], "pre": r["pre"], "post": r["post"], "language": r["language"],
                         "tags": json.loads(r["tags"]), "template": r["template"], "gold_action": json.loads(r["gold_action"])},
                        ensure_ascii=False, sort_keys=True) for r in kept]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    meta = {"source": SOURCE, "version": VERSION, "license": LICENSE, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sha256": hashlib.sha256(data).hexdigest(), "num_records": len(kept), "candidates": len(verified),
            "by_language": dict(sorted(Counter(r["language"] for r in kept).items())),
            "by_template": dict(sorted(Counter(r["template"] for r in kept).items())), "dropped": dict(sorted(dropped.items()))}
    publish(tasks_file(lake).parent, data, meta)
    return {**meta, "path": str(tasks_file(lake))}


def publish(out_dir: Path, data: bytes, meta: dict[str, Any]) -> None:
    """`out_dir` (…/synth_rules) becomes a folder of `tasks.jsonl` (`data`) and `_meta.json` (`meta`) in one rename
    (`staged_dir`), which also removes what killed runs left beside it (`remove_leftovers`)."""
    with staged_dir(out_dir) as staging:
        (staging / "tasks.jsonl").write_bytes(data)
        (staging / "_meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


EPILOG = """\
Writes <lake>/raw/tasks/synth_rules/tasks.jsonl (the verified tasks, sorted by id: what `trajforge teacher`
reads by default) and _meta.json beside it (source, license, sha256, counts by language and template, and
what was dropped and why), published together in one folder rename; a run that verifies nothing leaves
them as they were and exits 2. --set sandbox.* changes the verifying jails' policy (configs/sandbox.yaml, e.g.
--set sandbox.wall_time_s=10)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--lake", type=nonblank_path, default=Path("./lake"), help="lake root (default ./lake)")
    parser.add_argument("--workers", type=positive_int, default=2, help="sandbox actors verifying in parallel (default 2)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="only the first N candidates (quick runs; the lake's tasks file then holds only those)")


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    """The sections `--set` may name: the sandbox's (the verifying jails' policy)."""
    return ("sandbox",)


def run_command(args: argparse.Namespace) -> int:
    from trajforge.settings.job_paths import absolute_data_paths

    for _, path in absolute_data_paths({"--lake": args.lake}, "--lake /shared/lake"):
        args.lake = Path(path)
    refuse_a_file(args.lake, "--lake", "the lake to write the tasks into")
    report = run(args.lake, args.workers, args.limit, sandbox_assignments=[parse_assignment(text) for text in getattr(args, "assignments", [])])
    print(json.dumps({key: value for key, value in report.items() if key != "dropped"}, indent=2))
    if report["dropped"]:
        print("dropped (gold action did not give post):", json.dumps(report["dropped"], indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    from trajforge.cli.common import module_main

    return module_main("pipelines.synth_rules", __doc__.split("\n\nCandidates")[0], add_arguments, config_roots, run_command, argv)

if __name__ == "__main__":
    raise SystemExit(main())
