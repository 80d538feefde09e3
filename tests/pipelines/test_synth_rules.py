"""Synthetic ast-grep tasks: enough per language, every kept task verified, a wrong `post` dropped."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

from pipelines.synth_templates import candidates, templates


def test_templates_cover_three_languages_and_at_least_200_candidates():
    assert len({t.name for t in templates()}) >= 10
    tasks = candidates()
    languages = Counter("javascript" if t["language"] == "typescript" else t["language"] for t in tasks)
    assert len(tasks) >= 200 and set(languages) == {"python", "javascript", "java"}
    assert len({t["task_id"] for t in tasks}) == len(tasks)


def test_job_keeps_verified_tasks_and_drops_a_wrong_post(serve_url, tmp_path):
    from pipelines.synth_rules import run

    sample = [task for index, task in enumerate(candidates()) if index % 12 == 0]  # every template family, fast
    broken = dict(sample[0], task_id="synth-broken", post=sample[0]["post"].replace("(", "[", 1))
    report = run(tmp_path / "lake", workers=1, cpus_per_worker=0.05, tasks=[*sample, broken])
    out = tmp_path / "lake" / "raw" / "tasks" / "synth_rules"
    lines = (out / "tasks.jsonl").read_bytes()
    meta = json.loads((out / "_meta.json").read_text())
    kept = [json.loads(line) for line in lines.splitlines()]
    assert meta["num_records"] == len(kept) == len(sample) and meta["candidates"] == len(sample) + 1
    assert meta["sha256"] == hashlib.sha256(lines).hexdigest() and meta["license"] and meta["source"]
    assert "synth-broken" not in {task["task_id"] for task in kept}
    assert list(meta["dropped"].values()) == [1] and "differs from post" in next(iter(meta["dropped"]))
    assert [task["task_id"] for task in kept] == sorted(task["task_id"] for task in kept)
    assert set(kept[0]) >= {"instruction", "pre", "post", "language", "tags", "gold_action"}
    assert report["path"].endswith("tasks.jsonl")
