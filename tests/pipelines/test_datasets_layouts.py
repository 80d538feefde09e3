"""The real layouts of OCEDataFT, AgentPack, MaRV and SmellyCode (pipelines/datasets/layouts.py): each sample in
examples/datasets normalizes to the expected records, and what cannot become pre/post is counted by reason."""

from __future__ import annotations

import json

import pytest
from datasets_lake import SAMPLES, config, sample_catalog

from pipelines.datasets.adapters import CorruptRecord, Unconvertible, normalize, source_records
from pipelines.datasets.diffs import PatchError, parse_patch
from pipelines.datasets.ingest import ingest_dataset
from pipelines.datasets.report import render
from pipelines.datasets.settings import DatasetSpec, load_datasets_settings


def _spec(name: str) -> DatasetSpec:
    return DatasetSpec.model_validate(sample_catalog()[name])


def _normalized(name: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """The sample's normalized records, and (reason, location) of those not converted."""
    spec, done, skipped = _spec(name), [], []
    for where, record in source_records(spec, SAMPLES / spec.source.split("examples/datasets/", 1)[1]):
        try:
            done.append(normalize(name, spec, record, where))
        except Unconvertible as exc:
            skipped.append((exc.reason, where))
    return done, skipped


def test_ocedataft_sharegpt_records_give_the_instruction_of_the_prompt_and_the_old_and_new_code():
    rows, skipped = _normalized("oce_dataft")
    assert rows[0] == {"instruction": "return 0.0 for an empty list", "pre": "def mean(values):\n    return sum(values) / len(values)",
                       "post": "def mean(values):\n    if not values:\n        return 0.0\n    return sum(values) / len(values)",
                       "language": "python", "tags": ["dataset:oce_dataft", "commit:a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0",
                                                      "instr_type:qwen3_lazy"]}
    assert rows[1]["instruction"].startswith("Rename the parameters w and h") and rows[1]["pre"] == "def area(w, h):\n    r = w * h\n    return r"
    # no old_code/new_code: the code before comes out of the prompt's fence, the code after out of the assistant's
    assert rows[2]["pre"] == "def load(path):\n    handle = open(path)\n    data = handle.read()\n    handle.close()\n    return data"
    assert rows[2]["post"] == "def load(path):\n    with open(path) as handle:\n        return handle.read()"
    assert [(reason, where.rsplit(":", 1)[1]) for reason, where in skipped] == [("no_edit_prompt", "4")]


def test_an_alpaca_opencodeedit_record_reads_like_the_sharegpt_one():
    record = {"instruction": "## Code Before:\nx = 1\n## Instruction:\nname it count\n## Code After:\n /no_think", "output": "```python\ncount = 1\n```"}
    assert normalize("oce", _spec("oce_dataft"), record, "f:1") == {
        "instruction": "name it count", "pre": "x = 1", "post": "count = 1", "language": "python", "tags": ["dataset:oce"]}


def test_agentpack_patches_of_one_file_and_one_hunk_become_its_two_sides_and_the_others_are_counted():
    rows, skipped = _normalized("agentpack")
    assert rows[0] == {
        "instruction": "Log the exception in run instead of swallowing it\n\nA failing job used to vanish silently; it now leaves a traceback in the log.",
        "pre": "def run(job):\n    try:\n        job()\n    except Exception:\n        pass\n",
        "post": 'import logging\n\nlog = logging.getLogger(__name__)\n\ndef run(job):\n    try:\n        job()\n    except Exception:\n        log.exception("job failed")\n',
        "language": "", "tags": ["dataset:agentpack", "path:worker/run.py", "agent:claude", "repo:example-org/jobs",
                                 "commit:e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4", "event:evt-0001", "hunk:-1,5 +1,9"]}
    assert rows[1]["pre"] == "" and rows[1]["post"].startswith("export function withTimeout") and "path:sync/timeout.ts" in rows[1]["tags"]
    assert [reason for reason, _ in skipped] == ["multi_file_patch", "multi_hunk_patch"]
    assert all(".jsonl.gz:" in where for _, where in skipped)  # the shard and line of each


@pytest.mark.parametrize("patch,reason", [
    ("", "no_patch"),
    ("diff --git a/logo.png b/logo.png\nindex 1..2 100644\nBinary files a/logo.png and b/logo.png differ\n", "binary_patch"),
    ("diff --git a/a.py b/b.py\nsimilarity index 100%\nrename from a.py\nrename to b.py\n", "no_content_change"),
    ("diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1,3 +1,3 @@\n-x = 1\n+x = 2\n", "malformed_patch"),
    ("diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ one @@\n-x\n", "malformed_patch"),
])
def test_an_agentpack_patch_that_gives_no_pair_says_why(patch, reason):
    record = {"event_id": "e", "agent": "codex", "repo": "o/r", "sha": "s", "description": "change it", "patch": patch}
    with pytest.raises(Unconvertible) as caught:
        normalize("agentpack", _spec("agentpack"), record, "train/x.jsonl.gz:7")
    assert caught.value.reason == reason and str(caught.value).startswith("train/x.jsonl.gz:7: ")


def test_a_patch_file_with_mail_headers_and_missing_final_newlines_parses_to_the_exact_sides():
    patch = ("From 0123 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] bump\n---\n a.py | 2 +-\n\n"
             "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1,2 +1,2 @@\n x = 1\n-y = 2\n\\ No newline at end of file\n+y = 3\n"
             "\\ No newline at end of file\n")
    [file] = parse_patch(patch)
    assert (file.old_path, file.new_path, file.hunks[0].pre, file.hunks[0].post) == ("a.py", "a.py", "x = 1\ny = 2", "x = 1\ny = 3")
    with pytest.raises(PatchError, match="a hunk before any file header"):
        parse_patch("@@ -1 +1 @@\n-a\n+b\n")


def test_marv_type_keyed_refactorings_keep_those_every_validator_accepted():
    rows, skipped = _normalized("marv")
    assert rows[0]["instruction"].startswith("Extract Method private validate(quantity int)") and rows[0]["language"] == "java"
    assert rows[0]["tags"] == ["dataset:marv", "path:src/main/java/shop/Order.java", "refactoring_type:Extract Method",
                               "commit:2828282828282828282828282828282828282828", "refactoring_id:1"]
    assert "int total = 0;" in rows[1]["post"] and "int t = 0;" in rows[1]["pre"]
    assert [(reason, where.rsplit(":", 1)[1]) for reason, where in skipped] == [("not_validated", "Remove Parameter row 1")]
    with pytest.raises(CorruptRecord, match="no `evaluations` list"):
        normalize("marv", _spec("marv"), {"code_before": "a", "code_after": "b"}, "MaRV.json:Extract Method row 9")


def test_smellycode_has_no_refactored_code_so_every_smell_is_counted_not_converted(tmp_path):
    rows, skipped = _normalized("smellycode")
    assert rows == [] and [reason for reason, _ in skipped] == ["no_post_code", "no_post_code"]
    assert skipped[0][1].endswith("GroundTruth.csv:2")  # the CSV line of the smell
    with pytest.raises(CorruptRecord, match="no Analysis/GroundTruthLevel/GroundTruth.csv"):
        list(source_records(_spec("smellycode"), tmp_path))


def test_ingestion_counts_what_was_not_converted_in_ingest_json_the_result_and_the_report(tmp_path):
    settings = load_datasets_settings(config(tmp_path, sample_catalog()))
    result = ingest_dataset("agentpack", settings.catalog["agentpack"], settings, progress=False)
    assert (result.num_records, result.not_converted) == (2, {"multi_file_patch": 1, "multi_hunk_patch": 1})
    folder = settings.lake / "raw" / "datasets" / "agentpack"
    made = json.loads((folder / "_ingest.json").read_text())
    assert made["records"] == 2 and made["not_converted"] == {"multi_file_patch": 1, "multi_hunk_patch": 1}
    assert [item["reason"] for item in made["not_converted_examples"]] == ["multi_file_patch", "multi_hunk_patch"]
    assert "changes 2 files (app/config.py, docs/config.md)" in made["not_converted_examples"][0]["message"]
    assert made["not_converted_examples"][0]["message"].startswith(f"{folder}/source/train/sample-00000.jsonl.gz:3: ")  # not its staging
    again = ingest_dataset("agentpack", settings.catalog["agentpack"], settings, progress=False)
    assert again.status == "skipped" and again.not_converted == result.not_converted
    smelly = ingest_dataset("smellycode", settings.catalog["smellycode"], settings, progress=False)
    assert (smelly.num_records, smelly.not_converted) == (0, {"no_post_code": 2})
    stats = {"meta": {key: "x" for key in ("source", "version", "license", "downloaded_at", "sha256", "num_records")}, "records": 2,
             "kept": 2, "dropped": {}, "duplicate_of": {}, "languages": {}, "splits": {}, "input_tokens": 0, "all_input_tokens": 0,
             "samples": [], "not_converted": result.not_converted}
    text = render("agentpack", stats, 2048, "packaged")
    assert "2 source records could not be turned into pre/post" in text
    assert "- **multi_file_patch** (1): the patch changes more than one file" in text
