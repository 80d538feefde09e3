"""Synthetic ast-grep tasks: enough per language, every kept task verified, a wrong `post` dropped."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

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
    report = run(tmp_path / "lake", workers=1, cpus_per_worker=0.05, tasks=[*sample, broken],
                 sandbox_assignments=[("sandbox.logs_dir", str(tmp_path / "sandbox-logs"))])
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
    assert len(list((tmp_path / "sandbox-logs").glob("*.jsonl"))) == len(sample) + 1  # the stage's jails got the --set values


def test_sandbox_settings_are_applied_and_a_bad_one_stops_the_job_before_it_starts(tmp_path, capsys):
    from pipelines.synth_rules import main as module_main
    from trajforge.cli.main import main

    assert main(["synth-rules", "--lake", str(tmp_path / "lake"), "--set", "sandbox.wall_time_s=-1"]) == 2
    assert "sandbox.wall_time_s" in capsys.readouterr().err
    assert module_main(["--lake", str(tmp_path / "lake"), "--set", "sandbox.jail=chroot"]) == 2
    assert "sandbox.jail" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_a_run_that_verifies_nothing_fails_and_keeps_the_lakes_tasks(serve_url, tmp_path, capsys):
    from pipelines.synth_rules import NothingVerified, run

    lake = tmp_path / "lake"
    good = [task for index, task in enumerate(candidates()) if index % 100 == 0]
    run(lake, workers=1, cpus_per_worker=0.05, tasks=good)
    out = lake / "raw" / "tasks" / "synth_rules"
    before = {name: (out / name).read_bytes() for name in ("tasks.jsonl", "_meta.json")}
    broken = [dict(task, post=task["post"] + "# not what the action gives\n") for task in good]
    with pytest.raises(NothingVerified, match="left as it was: .*differs from post"):
        run(lake, workers=1, cpus_per_worker=0.05, tasks=broken)
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("argument,value", [("--workers", "0"), ("--limit", "-5"), ("--limit", "x")])
def test_counts_below_one_are_refused_by_the_parser(tmp_path, capsys, argument, value):
    from trajforge.cli.main import main

    with pytest.raises(SystemExit) as caught:
        main(["synth-rules", "--lake", str(tmp_path / "lake"), argument, value])
    assert caught.value.code == 2 and argument in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_every_template_verifies_in_every_host_snippet(serve_url, tmp_path):
    """One parameter set per template, in each host snippet of its language: multi-line statements (the loop of
    loop-to-comprehension) keep the host's indentation, so every one of them verifies."""
    from pipelines.synth_rules import run

    first = {}
    for task in candidates():
        first.setdefault((task["template"], task["task_id"].rsplit("-", 1)[1]), task)
    sample = list(first.values())
    assert {"loop-to-comprehension", "rename-call", "println-to-logger"} <= {task["template"] for task in sample}
    run(tmp_path / "lake", workers=1, cpus_per_worker=0.05, tasks=sample)
    kept = (tmp_path / "lake" / "raw" / "tasks" / "synth_rules" / "tasks.jsonl").read_text().splitlines()
    assert len(kept) == len(sample)
