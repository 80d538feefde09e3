"""Dataset ingestion (pipelines/datasets): the _meta.json contract, the config, the adapters on the sample layouts,
integrity checks (local and over HTTP with the real download code), skipping, and a SIGKILL mid-write."""

from __future__ import annotations

import functools
import gzip
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from datasets_lake import REPO, SAMPLES, config, edit, fields_dataset, read_lines, sample_catalog, sha256, write_jsonl

from pipelines.datasets.adapters import CorruptRecord, normalize, read_records
from pipelines.datasets.download import DownloadError
from pipelines.datasets.readers import jsonl_ranges, read_jsonl_range
from pipelines.datasets.fetch import IntegrityError
from pipelines.datasets.ingest import ingest_all, ingest_dataset
from pipelines.datasets.meta import MetaError, parse_meta, read_meta
from pipelines.datasets.settings import DatasetSpec, load_datasets_settings
from trajforge.errors import ConfigError

GOOD_META = {"source": "commitpackft", "version": "2023-08-10", "license": "MIT", "downloaded_at": "2026-12-07T04:00:00Z",
             "sha256": "a" * 64, "num_records": 12345}


def test_a_meta_with_every_field_reads_and_writes_the_same_contract():
    meta = parse_meta(json.dumps(GOOD_META), "x/_meta.json")
    assert json.loads(meta.to_json()) == GOOD_META


@pytest.mark.parametrize("field", sorted(GOOD_META))
def test_a_meta_missing_a_field_names_it(field):
    data = {key: value for key, value in GOOD_META.items() if key != field}
    with pytest.raises(MetaError, match=rf"x/_meta.json: .*\b{field}: missing"):
        parse_meta(json.dumps(data), "x/_meta.json")


@pytest.mark.parametrize("field,value", [
    ("sha256", "abc"), ("sha256", "A" * 64), ("num_records", "12"), ("num_records", -1), ("num_records", 1.5), ("num_records", True),
    ("downloaded_at", "yesterday"), ("downloaded_at", "2026-12-07T04:00:00"), ("license", "not a licence"), ("version", ""),
    ("source", None),
])
def test_a_malformed_meta_field_is_named_with_its_value(field, value):
    with pytest.raises(MetaError, match=rf"{field}: .*got {value!r}".replace("(", r"\(").replace(")", r"\)")):
        parse_meta(json.dumps({**GOOD_META, field: value}), "x/_meta.json")


def test_a_meta_with_another_field_or_not_json_or_absent_is_refused(tmp_path):
    with pytest.raises(MetaError, match="size: not a field of the contract"):
        parse_meta(json.dumps({**GOOD_META, "size": 3}), "x")
    with pytest.raises(MetaError, match="not JSON"):
        parse_meta('{"source": ', "x")
    with pytest.raises(MetaError, match="missing; the dataset was never ingested completely"):
        read_meta(tmp_path)


@pytest.mark.parametrize("spec,message", [
    ({"source": "https://example.org/a.jsonl", "size": 3}, "needs the sha256 and size"),
    ({"source": "http://example.org/a.jsonl", "sha256": "a" * 64, "size": 3}, "plain http is taken only from this machine"),
    ({"source": "ftp://example.org/a.jsonl"}, "unsupported scheme"),
    ({"license": "Apache 2"}, "not an SPDX"),
    ({"adapter": "fields"}, "needs a `fields:` mapping"),
    ({"sha256": "xyz"}, "sha256"),
    ({"adapter": "hub"}, "adapter"),
])
def test_a_bad_dataset_entry_names_its_field(tmp_path, spec, message):
    entry = {"source": "a.jsonl", "adapter": "commitpackft", "license": "MIT", "version": "1", **spec}
    with pytest.raises(ConfigError, match=rf"datasets\.catalog\.x(\.\w+)?.*{message}"):
        load_datasets_settings(config(tmp_path, {"x": entry}))


def test_settings_errors_across_fields_and_names(tmp_path, monkeypatch):
    path = config(tmp_path, {"Bad Name": fields_dataset(tmp_path / "a.jsonl")})
    with pytest.raises(ConfigError, match="dataset name 'Bad Name'"):
        load_datasets_settings(path)
    path = config(tmp_path, {})
    with pytest.raises(ConfigError, match=r"datasets\.splits.*train \+ dev \+ test must be 1"):
        load_datasets_settings(path, [("datasets.splits.train", 0.5)])
    with pytest.raises(ConfigError, match=r"datasets\.languages.*'ruby' cannot be confirmed"):
        load_datasets_settings(path, [("datasets.languages.ruby", ["ruby"])])
    monkeypatch.setenv("TRAJFORGE__DATASETS__MAX_INPUT_TOKENS", "0")
    with pytest.raises(ConfigError, match=r"datasets\.max_input_tokens \(set by TRAJFORGE__DATASETS__MAX_INPUT_TOKENS\)"):
        load_datasets_settings(path)


def _spec(name: str) -> DatasetSpec:
    return DatasetSpec.model_validate(sample_catalog()[name])


def test_commitpackft_layout_becomes_the_common_form_with_provenance_tags():
    spec = _spec("commitpackft")
    where, record = next(read_records(SAMPLES / "commitpackft" / "data.jsonl"))
    assert where.endswith("data.jsonl:1")
    assert normalize("commitpackft", spec, record, where) == {
        "instruction": "Use sum() to total the cart", "pre": record["old_contents"], "post": record["new_contents"], "language": "python",
        "tags": ["dataset:commitpackft", "path:shop/cart.py", "license:mit", f"commit:{record['commit']}", "repo:example-org/sample-repo"]}


def test_editpackft_parquet_takes_its_instruction_field_and_the_fields_adapter_maps_a_json_array(tmp_path):
    spec = _spec("editpackft")
    rows = [normalize("editpackft", spec, record, where) for where, record in read_records(SAMPLES / "editpackft" / "train-00000-of-00001.parquet")]
    assert rows[2]["instruction"] == "Replace the index loop with Array.prototype.map"  # `instruction`, not `subject`
    assert [row["language"] for row in rows] == ["python", "python", "javascript"]
    source = tmp_path / "refactorings.json"
    source.write_text(json.dumps([{"kind": "Extract Method", "about": "Extract the check", "file": "src/Order.java", "before": "a", "after": "b"}]))
    mapped = DatasetSpec.model_validate({"source": str(source), "adapter": "fields", "language": "java", "license": "MIT", "version": "1",
                                         "fields": {"instruction": ["about", "kind"], "pre": "before", "post": "after", "path": "file",
                                                    "tags": ["kind"]}})
    [(where, record)] = read_records(source)
    assert normalize("x", mapped, record, where) == {"instruction": "Extract the check", "pre": "a", "post": "b", "language": "java",
                                                     "tags": ["dataset:x", "path:src/Order.java", "kind:Extract Method"]}


def test_a_damaged_line_or_a_record_of_another_layout_names_the_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"subject": "a"}\n{"subject": \n', encoding="utf-8")
    with pytest.raises(CorruptRecord, match=rf"{path}:2: not a JSON record"):
        list(read_records(path))
    where, record = next(read_records(path))
    with pytest.raises(CorruptRecord, match=rf"{path}:1: no pre \(looked for old_contents\)"):
        normalize("x", _spec("commitpackft"), record, where)


@pytest.mark.parametrize("lang", [["Python"], 3, {"name": "Python"}])
def test_a_language_field_that_is_not_a_string_names_the_file_and_line(lang):
    where, record = next(read_records(SAMPLES / "commitpackft" / "data.jsonl"))
    with pytest.raises(CorruptRecord, match=rf"^{where}: language \(lang\) must be a string, got {type(lang).__name__}$"):
        normalize("x", _spec("commitpackft"), {**record, "lang": lang}, where)
    assert normalize("x", _spec("commitpackft"), {**record, "lang": "Python"}, where)["language"] == "python"


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz"])
def test_a_line_that_is_not_utf8_or_not_json_names_its_file_and_line_once(tmp_path, name):
    path = tmp_path / name
    body = b'{"subject": "a"}\n{"subject": "\xff\xfe"}\n'
    path.write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    with pytest.raises(CorruptRecord, match=rf"^{path}:2: not UTF-8 \(byte 14 of the line\)"):
        list(read_records(path))
    path = tmp_path / "plain.jsonl"
    path.write_bytes(b'{"subject": "a"}\n[1]\n')
    with pytest.raises(CorruptRecord) as raised:
        list(read_records(path))
    assert str(raised.value) == f"{path}:2: a record must be a JSON object, got list"
    for start, end, first in jsonl_ranges(path, 4):
        if first == 2:
            with pytest.raises(CorruptRecord, match=rf"^{path}:2: a record must be a JSON object, got list$"):
                list(read_jsonl_range(path, start, end, first))


def _ingest(tmp_path, catalog, name, **kwargs):
    settings = load_datasets_settings(config(tmp_path, catalog, records_per_shard=3))
    return ingest_dataset(name, settings.catalog[name], settings, **kwargs), settings


def test_a_local_file_is_stored_untouched_normalized_in_shards_with_its_meta_and_a_rerun_skips(tmp_path):
    result, settings = _ingest(tmp_path, sample_catalog(), "commitpackft", progress=False)
    folder = settings.lake / "raw" / "datasets" / "commitpackft"
    assert result.status == "ingested" and result.num_records == 7
    assert (folder / "source" / "data.jsonl").read_bytes() == (SAMPLES / "commitpackft" / "data.jsonl").read_bytes()
    assert [path.name for path in sorted((folder / "normalized").iterdir())] == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    assert sum(len(read_lines(path)) for path in (folder / "normalized").iterdir()) == 7
    meta = read_meta(folder)
    assert (meta.source, meta.license, meta.num_records, meta.sha256) == ("commitpackft", "MIT", 7, sha256(SAMPLES / "commitpackft" / "data.jsonl"))
    stamp = (folder / "_meta.json").stat().st_mtime_ns
    again, _ = _ingest(tmp_path, sample_catalog(), "commitpackft", progress=False)
    assert again.status == "skipped" and (folder / "_meta.json").stat().st_mtime_ns == stamp
    forced, _ = _ingest(tmp_path, sample_catalog(), "commitpackft", force=True, progress=False)
    assert forced.status == "ingested" and (folder / "_meta.json").stat().st_mtime_ns != stamp
    assert [path.name for path in folder.parent.iterdir()] == ["commitpackft"]  # no leftovers beside it


def test_a_sha256_mismatch_names_both_hashes_and_publishes_nothing(tmp_path):
    catalog = sample_catalog()
    catalog["commitpackft"]["sha256"] = "0" * 64
    with pytest.raises(IntegrityError) as caught:
        _ingest(tmp_path, catalog, "commitpackft", progress=False)
    assert "0" * 64 in str(caught.value) and sha256(SAMPLES / "commitpackft" / "data.jsonl") in str(caught.value)
    assert not (tmp_path / "lake" / "raw" / "datasets").exists() or not list((tmp_path / "lake" / "raw" / "datasets").iterdir())


@pytest.fixture
def http_files(tmp_path):
    """A local HTTP server (http.server in a thread) serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_url_is_downloaded_checked_and_stored(tmp_path, http_files):
    www, base = http_files
    data = (SAMPLES / "commitpackft" / "data.jsonl").read_bytes()
    (www / "data.jsonl").write_bytes(data)
    catalog = sample_catalog()
    catalog["commitpackft"]["source"] = f"{base}/data.jsonl"
    result, settings = _ingest(tmp_path, catalog, "commitpackft", progress=False)
    folder = settings.lake / "raw" / "datasets" / "commitpackft"
    assert result.status == "ingested" and (folder / "source" / "data.jsonl").read_bytes() == data
    assert read_meta(folder).sha256 == sha256(www / "data.jsonl") and not list(folder.rglob("*.partial"))
    (www / "data.jsonl").write_bytes(b"changed")  # the manifest's sha256 is what a skip compares: nothing is fetched
    assert _ingest(tmp_path, catalog, "commitpackft", progress=False)[0].status == "skipped"


@pytest.mark.parametrize("damage,message", [("bytes", "has sha256 .* the manifest .* says"), ("size", "bytes, the manifest .* says 3315")])
def test_a_download_that_differs_from_the_manifest_is_refused_and_nothing_stays(tmp_path, http_files, damage, message):
    www, base = http_files
    data = bytearray((SAMPLES / "commitpackft" / "data.jsonl").read_bytes())
    if damage == "bytes":
        data[10] ^= 1
    else:
        data += b"\n"
    (www / "data.jsonl").write_bytes(bytes(data))
    catalog = sample_catalog()
    catalog["commitpackft"]["source"] = f"{base}/data.jsonl"
    with pytest.raises(IntegrityError, match=message) as caught:
        _ingest(tmp_path, catalog, "commitpackft", progress=False)
    if damage == "bytes":
        assert sha256(www / "data.jsonl") in str(caught.value) and catalog["commitpackft"]["sha256"] in str(caught.value)
    assert not list((tmp_path / "lake").rglob("*")) or not list((tmp_path / "lake").rglob("*.jsonl*"))


def test_a_missing_url_says_the_status(tmp_path, http_files):
    _, base = http_files
    catalog = sample_catalog()
    catalog["commitpackft"]["source"] = f"{base}/nothing.jsonl"
    with pytest.raises(DownloadError, match="HTTP 404: check the URL"):
        _ingest(tmp_path, catalog, "commitpackft", progress=False)


INGEST_AND_DIE = """
import os, signal, sys
from pipelines.datasets import ingest, normalize
from pipelines.datasets.settings import load_datasets_settings

real = normalize.write_shard
def write_and_die(out, index, lines):  # SIGKILL once the second shard is on disk: mid-write of the dataset
    path = real(out, index, lines)
    if index == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

normalize.write_shard = write_and_die
settings = load_datasets_settings(sys.argv[1])
ingest.ingest_all(settings, force=True, progress=False)
"""


def _killed_ingest(path: Path) -> None:
    died = subprocess.run([sys.executable, "-c", INGEST_AND_DIE, str(path)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert died.returncode == -9, died.stderr[-2000:]


def test_a_run_killed_mid_write_leaves_no_dataset_that_looks_complete_and_keeps_the_previous_one(tmp_path):
    records = [edit(f"change {index}", f"x = {index}\n", f"x = {index + 1}\n") for index in range(7)]
    source = write_jsonl(tmp_path / "data" / "edits.jsonl", records)
    path = config(tmp_path, {"edits": fields_dataset(source)}, records_per_shard=2)
    folder = tmp_path / "lake" / "raw" / "datasets" / "edits"
    _killed_ingest(path)
    assert not folder.exists()  # the first ingest died: nothing published under the dataset's name
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".edits.new-")]  # only its work folder
    with pytest.raises(MetaError, match="missing"):
        read_meta(folder)
    settings = load_datasets_settings(path)
    assert ingest_all(settings, progress=False)[0].status == "ingested"
    assert [p.name for p in folder.parent.iterdir()] == ["edits"]  # the killed run's work folder removed
    published = {p.name: p.read_bytes() for p in sorted((folder / "normalized").iterdir())}
    write_jsonl(source, records + [edit("change 99", "y = 1\n", "y = 2\n")])  # a new release, killed while ingested
    _killed_ingest(path)
    assert read_meta(folder).num_records == 7 and read_meta(folder).sha256 != sha256(source)
    assert {p.name: p.read_bytes() for p in sorted((folder / "normalized").iterdir())} == published


def test_a_folder_source_is_copied_whole_read_in_name_order_and_hashed_by_its_files(tmp_path):
    """CommitPackFT's release is a folder of `data/<language>/data.jsonl` files."""
    from pipelines.datasets.fetch import folder_digest

    data = tmp_path / "release" / "data"
    lines = (SAMPLES / "commitpackft" / "data.jsonl").read_text().splitlines(keepends=True)
    (data / "python").mkdir(parents=True)
    (data / "java").mkdir()
    (data / "python" / "data.jsonl").write_text("".join(lines[:1]))
    (data / "java" / "data.jsonl").write_text("".join(lines[3:4]))
    digest, size = folder_digest(data)
    catalog = {"commitpackft": {**sample_catalog()["commitpackft"], "source": str(data), "sha256": digest, "size": size}}
    result, settings = _ingest(tmp_path, catalog, "commitpackft", progress=False)
    folder = settings.lake / "raw" / "datasets" / "commitpackft"
    assert result.num_records == 2 and folder_digest(folder / "source" / "data") == (digest, size)
    shards = sorted((folder / "normalized").glob("part-*.jsonl"))  # each file starts its shard, in name order
    assert [[row["language"] for row in read_lines(shard)] for shard in shards] == [["java"], ["python"]]
    (data / "java" / "data.jsonl").write_text("".join(lines[3:5]))  # the folder changed: refused against the manifest
    with pytest.raises(IntegrityError, match="bytes, the manifest"):
        _ingest(tmp_path, catalog, "commitpackft", progress=False)
    assert read_meta(folder).sha256 == digest  # the published dataset is untouched


def test_a_gated_download_sends_the_token_from_the_environment_or_dotenv_and_says_which_is_missing(tmp_path, monkeypatch):
    data = (SAMPLES / "commitpackft" / "data.jsonl").read_bytes()
    seen = []

    class Gated(SimpleHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != "Bearer s3cret":
                self.send_error(401)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gated)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        catalog = sample_catalog()
        catalog["commitpackft"].update(source=f"http://127.0.0.1:{server.server_address[1]}/data.jsonl", token_env="AGENTPACK_TOKEN")
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("AGENTPACK_TOKEN", raising=False)
        with pytest.raises(ConfigError, match=r"\$AGENTPACK_TOKEN is not set"):
            _ingest(tmp_path, catalog, "commitpackft", progress=False)
        monkeypatch.setenv("AGENTPACK_TOKEN", "wrong")
        with pytest.raises(DownloadError, match="HTTP 401: the server wants credentials"):
            _ingest(tmp_path, catalog, "commitpackft", progress=False)
        monkeypatch.delenv("AGENTPACK_TOKEN")
        (tmp_path / ".env").write_text("# tokens\nOTHER=x\nexport AGENTPACK_TOKEN=\"s3cret\"\n")
        assert _ingest(tmp_path, catalog, "commitpackft", progress=False)[0].status == "ingested"
        assert seen == ["Bearer wrong", "Bearer s3cret"]
    finally:
        server.shutdown()
        server.server_close()
