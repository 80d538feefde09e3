"""Resumable dataset downloads (pipelines/datasets/download.py) against a local HTTP server that cuts a response short:
the next attempt, or the next run, asks for the rest with a Range header; a server without ranges, a stale or foreign
partial file and a second download of the same release are handled without keeping a wrong byte."""

from __future__ import annotations

import fcntl
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from datasets_lake import SAMPLES, config, sample_catalog

from pipelines.datasets.download import DownloadError, download_file, partial_for
from pipelines.datasets.fetch import IntegrityError
from pipelines.datasets.ingest import DOWNLOADS, ingest_dataset
from pipelines.datasets.meta import read_meta
from pipelines.datasets.settings import DownloadSettings, load_datasets_settings

DATA = (SAMPLES / "commitpackft" / "data.jsonl").read_bytes()
CUT = 1000  # bytes a cut response sends before the connection drops


class Release:
    """What the server serves and how: `cuts` responses are cut after CUT bytes; `ranges` says whether it honours Range."""

    def __init__(self, data: bytes = DATA, cuts: int = 0, ranges: bool = True):
        self.data, self.cuts, self.ranges = data, cuts, ranges
        self.asked: list[str | None] = []  # the Range header of every request, in order


@pytest.fixture
def server():
    release = Release()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - http.server's name
            asked = self.headers.get("Range")
            release.asked.append(asked)
            start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and release.ranges else 0
            if start >= len(release.data) and asked and release.ranges:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(release.data)}")
                self.end_headers()
                return
            body = release.data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(release.data) - 1}/{len(release.data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if release.cuts:
                release.cuts -= 1
                self.wfile.write(body[:CUT])
                self.wfile.flush()
                self.connection.shutdown(2)  # the connection drops mid-body
                return
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield release, f"http://127.0.0.1:{httpd.server_address[1]}/data.jsonl"
    httpd.shutdown()
    httpd.server_close()


def settings_with(tmp_path, url: str, retries: int):
    catalog = sample_catalog()
    catalog["commitpackft"]["source"] = url
    return load_datasets_settings(config(tmp_path, catalog, download={"retries": retries, "timeout_s": 10}))


def test_a_cut_download_is_continued_by_the_next_attempt_from_its_last_byte(tmp_path, server):
    release, url = server
    release.cuts = 1
    target, partial = tmp_path / "data.jsonl", tmp_path / "dl" / "data.partial"
    sha, size = download_file(url, target, partial, DownloadSettings(retries=2, timeout_s=10), expected_size=len(DATA), progress=False)
    assert release.asked == [None, f"bytes={CUT}-"]
    assert target.read_bytes() == DATA and size == len(DATA) and not partial.exists()
    assert sha == __import__("hashlib").sha256(DATA).hexdigest()


def test_a_run_that_ran_out_of_retries_leaves_its_bytes_and_the_next_run_asks_only_for_the_rest(tmp_path, server):
    release, url = server
    release.cuts = 1
    settings = settings_with(tmp_path, url, retries=0)
    with pytest.raises(DownloadError, match=f"the {CUT} bytes so far stay in .*commitpackft-3d852ca81cf5c832.partial"):
        ingest_dataset("commitpackft", settings.catalog["commitpackft"], settings, progress=False)
    partial = settings.lake / "raw" / "datasets" / DOWNLOADS / "commitpackft-3d852ca81cf5c832.partial"
    assert partial.read_bytes() == DATA[:CUT] and not (settings.lake / "raw" / "datasets" / "commitpackft").exists()

    result = ingest_dataset("commitpackft", settings.catalog["commitpackft"], settings, progress=False)
    assert release.asked == [None, f"bytes={CUT}-"]
    folder = settings.lake / "raw" / "datasets" / "commitpackft"
    assert result.status == "ingested" and (folder / "source" / "data.jsonl").read_bytes() == DATA and not partial.exists()
    assert read_meta(folder).num_records == 7


def test_a_server_without_ranges_sends_it_all_again_and_the_old_bytes_are_dropped(tmp_path, server):
    release, url = server
    release.ranges = False
    partial = tmp_path / "data.partial"
    partial.write_bytes(b"bytes of something else")
    sha, size = download_file(url, tmp_path / "data.jsonl", partial, DownloadSettings(retries=0), expected_size=len(DATA), progress=False)
    assert release.asked == ["bytes=23-"] and (tmp_path / "data.jsonl").read_bytes() == DATA and size == len(DATA)


def test_a_partial_as_long_as_the_release_is_checked_without_asking_and_a_longer_one_starts_again(tmp_path, server):
    release, url = server
    whole, longer = tmp_path / "whole.partial", tmp_path / "longer.partial"
    whole.write_bytes(DATA)  # a run killed between the last byte and the rename
    download_file(url, tmp_path / "a.jsonl", whole, DownloadSettings(retries=0), expected_size=len(DATA), progress=False)
    assert release.asked == [] and (tmp_path / "a.jsonl").read_bytes() == DATA
    longer.write_bytes(DATA + b"more")
    download_file(url, tmp_path / "b.jsonl", longer, DownloadSettings(retries=0), expected_size=len(DATA), progress=False)
    assert release.asked == [None] and (tmp_path / "b.jsonl").read_bytes() == DATA


def test_a_partial_that_is_no_prefix_of_the_release_is_refused_whole_and_removed_then_fetched_clean(tmp_path, server):
    release, url = server
    settings = settings_with(tmp_path, url, retries=0)
    partial = partial_for(settings.lake / "raw" / "datasets" / DOWNLOADS, "commitpackft", settings.catalog["commitpackft"].sha256)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"X" * CUT)  # a damaged disk, or bytes of another file: the resumed file cannot match
    with pytest.raises(IntegrityError, match="has sha256 .* the manifest .* says"):
        ingest_dataset("commitpackft", settings.catalog["commitpackft"], settings, progress=False)
    assert not partial.exists() and not list((settings.lake / "raw" / "datasets").rglob("data.jsonl"))
    assert ingest_dataset("commitpackft", settings.catalog["commitpackft"], settings, progress=False).status == "ingested"
    assert release.asked == [f"bytes={CUT}-", None]


def test_a_second_download_of_the_same_release_is_told_another_one_writes_it(tmp_path, server):
    _, url = server
    partial = tmp_path / "data.partial"
    holder = os.open(partial, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(DownloadError, match="being written by another download of the same release"):
            download_file(url, tmp_path / "data.jsonl", partial, DownloadSettings(retries=0), progress=False)
    finally:
        os.close(holder)
    assert not (tmp_path / "data.jsonl").exists()
