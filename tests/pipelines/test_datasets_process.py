"""Processing the ingested datasets (pipelines/datasets): language confirmation, cross-dataset dedup, the token
filter, deterministic splits, the reports, and the CLI end to end (a Ray Data job on the session's Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from datasets_lake import REPO, config, edit, fields_dataset, read_lines, sample_catalog, write_jsonl

from pipelines.datasets.cli import main as datasets_main
from pipelines.datasets.ingest import ingest_all
from pipelines.datasets.meta import MetaError
from pipelines.datasets.languages import confirm, has_syntax_error
from pipelines.datasets.process import process, split_of
from pipelines.datasets.report import write_reports
from pipelines.datasets.settings import load_datasets_settings
from trajforge.errors import ConfigError, LakeCorruption

PY = "def f(x):\n    return x\n"


@pytest.mark.parametrize("language,path,pre,post,expected", [
    ("python", "a/b.py", PY, PY.replace("x", "y"), ("python", None)),
    ("python", None, PY, PY, ("python", None)),  # no file name: the parse alone decides
    ("", "a/b.java", "class A {}\n", "class B {}\n", ("java", None)),  # no claim: the extension's language
    ("typescript", "ui/App.tsx", "const a = <div/>;\n", "const a = <span/>;\n", ("typescript", None)),  # TSX parses as tsx
    ("python", "a/b.py", PY, "def f(x:\n    return x\n", (None, "parse_error")),  # a MISSING `)`, no ERROR node
    ("java", "A.java", "class A { void f() { int x = ; } }", "class A {}", (None, "parse_error")),  # an ERROR node
    ("javascript", "src/config.py", "const a = 1;\n", "const a = 2;\n", (None, "extension_mismatch")),
    ("javascript", "lib/a.rb", "const a = 1;\n", "const a = 2;\n", (None, "extension_mismatch")),
    ("ruby", "lib/a.rb", "puts 1\n", "puts 2\n", (None, "unsupported_language")),
    ("", "README", "text", "text", (None, "no_language")),
])
def test_language_is_confirmed_by_extension_and_an_ast_grep_parse(language, path, pre, post, expected):
    assert confirm(language, [f"path:{path}"] if path else [], pre, post) == expected


def test_python_that_the_claimed_language_cannot_parse_is_not_confirmed_but_an_empty_file_is():
    assert has_syntax_error("def f(:\n  pass", "python") and not has_syntax_error("", "python")
    assert has_syntax_error("if ready\n    go()\n", "python") and has_syntax_error("const = 1;", "javascript")


def test_split_of_is_a_stable_hash_with_the_configured_ratios():
    keys = [f"{index:064x}" for index in range(20000)]
    first = [split_of(key, "salt", 0.8, 0.1) for key in keys]
    assert first == [split_of(key, "salt", 0.8, 0.1) for key in keys]
    counts = Counter(first)
    assert abs(counts["train"] / 20000 - 0.8) < 0.02 and abs(counts["dev"] / 20000 - 0.1) < 0.02 and abs(counts["test"] / 20000 - 0.1) < 0.02
    assert first != [split_of(key, "other salt", 0.8, 0.1) for key in keys]


def _run(tmp_path, catalog, **settings):
    settings = load_datasets_settings(config(tmp_path, catalog, **settings))
    ingest_all(settings, progress=False)
    manifest = process(settings, list(settings.catalog), progress=False)
    return settings, manifest


def _rows(settings, language=None):
    root = settings.lake / "processed" / "datasets"
    return [row for path in sorted(root.glob(f"{language or '*'}/*.jsonl")) for row in read_lines(path)]


@pytest.mark.usefixtures("serve_url")
def test_identical_instruction_and_pre_are_kept_once_across_datasets_by_catalog_order(tmp_path):
    shared = edit("Return early", "def f(x):\n    if x:\n        return 1\n    return 0\n", "def f(x):\n    return 1 if x else 0\n")
    first = write_jsonl(tmp_path / "a.jsonl", [shared, edit("Rename x", "x = 1\n", "y = 1\n"), {**shared, "post": "def f(x):\n    return int(bool(x))\n"}])
    second = write_jsonl(tmp_path / "b.jsonl", [{**shared, "post": "pass\n"}, edit("Rename z", "z = 1\n", "w = 1\n")])
    settings, manifest = _run(tmp_path, {"alpha": fields_dataset(first), "beta": fields_dataset(second)})
    kept = _rows(settings)
    assert sorted((row["dataset"], row["instruction"]) for row in kept) == [("alpha", "Rename x"), ("alpha", "Return early"), ("beta", "Rename z")]
    assert next(row for row in kept if row["instruction"] == "Return early")["post"] == shared["post"]  # the first of them
    assert manifest["datasets"]["alpha"]["dropped"] == {"duplicate": 1} and manifest["datasets"]["beta"]["dropped"] == {"duplicate": 1}
    assert manifest["datasets"]["beta"]["duplicate_of"] == {"alpha": 1}
    reversed_settings, _ = _run(tmp_path / "reversed", {"beta": fields_dataset(second), "alpha": fields_dataset(first)})
    assert next(row for row in _rows(reversed_settings) if row["instruction"] == "Return early")["dataset"] == "beta"


@pytest.mark.usefixtures("serve_url")
def test_inputs_over_the_token_limit_are_left_out_with_the_projects_tokenizer(tmp_path):
    from pipelines.build.tokens import TokenCounter

    short = edit("Add one", "x = 1\n", "x = 2\n")
    long = edit("Sum the values", "".join(f"value_{index} = {index}\n" for index in range(700)), "total = 0\n")
    tokens = TokenCounter("packaged").count([f"{r['instruction']}\n{r['pre']}" for r in (short, long)])
    assert tokens[0] <= 2048 < tokens[1]
    settings, manifest = _run(tmp_path, {"edits": fields_dataset(write_jsonl(tmp_path / "e.jsonl", [short, long]))})
    [row] = _rows(settings)
    assert row["instruction"] == "Add one" and row["num_tokens"] == tokens[0]
    assert manifest["datasets"]["edits"]["dropped"] == {"too_long": 1}
    _, lower = _run(tmp_path / "lower", {"edits": fields_dataset(write_jsonl(tmp_path / "e.jsonl", [short, long]))},
                    max_input_tokens=tokens[0] - 1)
    assert lower["datasets"]["edits"]["dropped"] == {"too_long": 2}


@pytest.mark.usefixtures("serve_url")
def test_splits_are_deterministic_per_language_and_follow_the_salt(tmp_path):
    records = [edit(f"Set the value to {index}", f"value = {index}\n", f"value = {index + 1}\n") for index in range(40)]
    records += [edit(f"Count {index}", f"let n = {index};\n", f"let n = {index + 1};\n", "javascript", "src/n.js") for index in range(20)]
    source = write_jsonl(tmp_path / "data.jsonl", records)
    catalog = {"edits": fields_dataset(source)}
    settings, manifest = _run(tmp_path, catalog, splits={"train": 0.5, "dev": 0.25, "test": 0.25})
    root = settings.lake / "processed" / "datasets"
    first = {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*.jsonl"))}
    assert sorted(first) == [f"{lang}/{split}.jsonl" for lang in ("java", "javascript", "python") for split in ("dev", "test", "train")]
    assert all(len(first[f"python/{split}.jsonl"].splitlines()) > 2 for split in ("train", "dev", "test"))
    assert {row["language"] for row in _rows(settings, "javascript")} == {"javascript"} and len(_rows(settings, "python")) == 40
    _, again = _run(tmp_path, catalog, splits={"train": 0.5, "dev": 0.25, "test": 0.25})
    assert {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*.jsonl"))} == first
    assert [item["sha256"] for item in again["files"]] == [item["sha256"] for item in manifest["files"]]
    _, salted = _run(tmp_path, catalog, splits={"train": 0.5, "dev": 0.25, "test": 0.25}, split_salt="another")
    assert [item["sha256"] for item in salted["files"]] != [item["sha256"] for item in manifest["files"]]
    assert sum(item["rows"] for item in salted["files"]) == 60


@pytest.mark.usefixtures("serve_url")
def test_the_samples_report_counts_tokens_languages_and_what_was_dropped_and_why(tmp_path):
    settings, manifest = _run(tmp_path, sample_catalog())
    [commitpack] = write_reports(manifest, settings.reports)[:1]
    text = commitpack.read_text()
    assert "| read | 7 | 100.0% |" in text and "| kept | 4 | 57.1% |" in text
    for reason in ("extension_mismatch", "out_of_scope_language", "parse_error"):
        assert f"| dropped: {reason} | 1 | 14.3% |" in text
    assert "| python | 1 | 25.0% |" in text and "| typescript | 1 | 25.0% |" in text
    assert f"| sha256 | `{manifest['inputs']['commitpackft']['sha256']}` |" in text
    stats = manifest["datasets"]["commitpackft"]
    assert f"{stats['input_tokens'] / 4:.1f} over the kept records" in text
    agentpack = (settings.reports / "agentpack.md").read_text()  # what ingestion could not convert, by reason
    assert "## Not converted, and why" in agentpack and "- **multi_hunk_patch** (1):" in agentpack and "| read | 2 | 100.0% |" in agentpack
    editpack = (settings.reports / "editpackft.md").read_text()
    assert "| dropped: duplicate | 1 | 33.3% |" in editpack and "commitpackft 1" in editpack
    for row in _rows(settings):  # the teacher and rollouts read a split as a tasks file
        assert row["task_id"] == f"{row['dataset']}-{row['sha256'][:16]}" and row["tags"][0] == f"dataset:{row['dataset']}"


def test_the_command_says_what_to_do_for_a_dataset_never_ingested_and_a_bad_set(tmp_path, capsys):
    path = config(tmp_path, {"edits": fields_dataset(tmp_path / "none.jsonl")})
    assert datasets_main(["--config", str(path), "--stage", "process", "--no-progress"]) == 2
    assert "run `trajforge datasets --stage ingest --only edits` first" in capsys.readouterr().err
    assert datasets_main(["--config", str(path), "--stage", "ingest", "--no-progress"]) == 2
    assert "datasets.catalog.edits.source" in capsys.readouterr().err
    assert datasets_main(["--config", str(path), "--set", "build.workers=2"]) == 2
    assert "reads no config section 'build'" in capsys.readouterr().err


def test_trajforge_datasets_end_to_end_in_a_process(tmp_path):
    """`trajforge datasets` as a user runs it (its own local Ray): the samples in, the splits and reports out."""
    path = config(tmp_path, sample_catalog())
    done = subprocess.run([sys.executable, "-m", "trajforge", "datasets", "--config", str(path), "--no-progress", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": "local"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert [item["status"] for item in result["ingested"]] == ["ingested"] * 6
    assert sum(item["rows"] for item in result["processed"]["files"]) == 13
    datasets = result["processed"]["datasets"]
    assert {name: stats["kept"] for name, stats in datasets.items()} == {
        "commitpackft": 4, "editpackft": 2, "oce_dataft": 3, "agentpack": 2, "marv": 2, "smellycode": 0}
    assert {name: stats["not_converted"] for name, stats in datasets.items() if stats["not_converted"]} == {
        "oce_dataft": {"no_edit_prompt": 1}, "agentpack": {"multi_file_patch": 1, "multi_hunk_patch": 1},
        "marv": {"not_validated": 1}, "smellycode": {"no_post_code": 2}}
    assert [item["not_converted"] for item in result["ingested"]][-1] == {"no_post_code": 2}
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == sorted(f"{name}.md" for name in sample_catalog())


def test_processing_refuses_a_dataset_whose_meta_is_malformed_naming_the_field(tmp_path):
    settings = load_datasets_settings(config(tmp_path, {"edits": fields_dataset(write_jsonl(tmp_path / "e.jsonl", [edit("a", "x = 1\n", "x = 2\n")]))}))
    ingest_all(settings, progress=False)
    meta = settings.lake / "raw" / "datasets" / "edits" / "_meta.json"
    meta.write_text(meta.read_text().replace('"num_records": 1', '"num_records": "one"'))
    with pytest.raises(MetaError, match=rf"{meta}: invalid dataset metadata: num_records: .*got 'one'"):
        process(settings, ["edits"], progress=False)


@pytest.mark.usefixtures("serve_url")
def test_a_damaged_normalized_line_names_the_file_and_line_and_publishes_nothing(tmp_path):
    records = [edit(f"change {index}", f"x = {index}\n", f"x = {index + 1}\n") for index in range(4)]
    settings, _ = _run(tmp_path, {"edits": fields_dataset(write_jsonl(tmp_path / "e.jsonl", records))})
    before = (settings.lake / "processed" / "datasets" / "manifest.json").read_bytes()
    shard = settings.lake / "raw" / "datasets" / "edits" / "normalized" / "part-00000.jsonl"
    shard.write_text(shard.read_text().replace('"pre": "x = 2\\n"', '"pre": 2'))
    with pytest.raises(LakeCorruption, match=rf"{shard}:3: not a normalized record"):
        process(settings, ["edits"], progress=False)
    assert (settings.lake / "processed" / "datasets" / "manifest.json").read_bytes() == before
    assert [path.name for path in (settings.lake / "processed").iterdir()] == ["datasets"]


def test_processing_covers_every_enabled_dataset_whatever_only_names(tmp_path):
    catalog = {name: {**spec, "enabled": name != "marv"} for name, spec in sample_catalog().items()}
    settings = load_datasets_settings(config(tmp_path, catalog))
    assert settings.to_process(["commitpackft"]) == ["commitpackft", "editpackft", "oce_dataft", "agentpack", "smellycode"]
    assert settings.to_process(["marv"]) == list(catalog)
    with pytest.raises(ConfigError, match="--only nope: not in datasets.catalog"):
        settings.to_process(["nope"])
