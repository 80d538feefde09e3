"""Downloading a dataset's release over HTTP(S), resumable.

The bytes go to a `.partial` file named after the release's sha256 (`partial_for`), kept outside the unpublished
staging folder, so a download cut short (a dropped connection, a 5xx, Ctrl-C, a killed run) is continued, not started
again: the next attempt, or the next `trajforge datasets`, hashes what is there and asks for the rest with
`Range: bytes=<size>-`. A server that answers the whole file instead (200) or cannot give the range (416) starts it
from the beginning; a partial as long as the release is checked without asking the server at all. The caller checks the
finished file against the manifest's sha256 and size, so a resumed file that does not match is refused and removed
like any other. One download of a release at a time: a second one waiting on the same partial is told so.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path

from pipelines.datasets.settings import DownloadSettings
from trajforge.errors import TrajforgeError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class DownloadError(TrajforgeError, OSError):
    """The server did not give the file (HTTP status, connection) after the retries."""


def partial_for(folder: Path, name: str, sha256: str | None) -> Path:
    """Where the download of dataset `name`'s release with this sha256 collects its bytes (another release: another file)."""
    return folder / f"{name}-{(sha256 or 'unknown')[:16]}.partial"


def hashed(path: Path) -> tuple[hashlib._Hash, int]:
    """The sha256 (still open to more bytes) and size of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
    return digest, size


def _locked(partial: Path) -> int:
    partial.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DownloadError(f"{partial} is being written by another download of the same release (another `trajforge datasets`?): "
                            "wait for it to finish, then run again") from None
    return fd


def download_file(url: str, target: Path, partial: Path, settings: DownloadSettings, *, token: str | None = None,
                  expected_size: int | None = None, progress: bool = True) -> tuple[str, int]:
    """Download `url` into `partial` (continuing what it holds), then rename it to `target`; its sha256 and size.
    Transport errors and 5xx answers are retried `settings.retries` times, each from where the last stopped; a 4xx is not."""
    fd = _locked(partial)
    try:
        last: Exception | None = None
        for attempt in range(settings.retries + 1):
            if attempt:
                time.sleep(min(2**attempt, 30) * 0.5)
            try:
                digest, size = _attempt(url, partial, settings, token, expected_size, progress)
            except Exception as exc:
                if not _retryable(exc):
                    raise
                last = exc
                log.warning("download of %s stopped (attempt %d of %d, %d bytes kept in %s): %s", url, attempt + 1,
                            settings.retries + 1, partial.stat().st_size if partial.exists() else 0, partial, exc)
                continue
            os.replace(partial, target)
            return digest.hexdigest(), size
    except BaseException:
        if partial.exists():
            log.info("%d bytes of %s kept in %s: the next run continues from there", partial.stat().st_size, url, partial)
        raise
    finally:
        os.close(fd)
    raise DownloadError(f"GET {url} failed after {settings.retries + 1} attempts: {last}; check the network and the URL "
                        f"(the {partial.stat().st_size if partial.exists() else 0} bytes so far stay in {partial} for the next run)")


def _retryable(exc: Exception) -> bool:
    import httpx

    return isinstance(exc, (httpx.TransportError, httpx.HTTPStatusError))


def _attempt(url: str, partial: Path, settings: DownloadSettings, token: str | None, expected_size: int | None,
             progress: bool) -> tuple[hashlib._Hash, int]:
    import httpx
    from tqdm import tqdm

    digest, have = hashed(partial)
    if expected_size is not None and have >= expected_size:
        if have == expected_size:
            log.info("%s: the %d bytes of a finished download are here already: checking them", partial.name, have)
            return digest, have
        os.truncate(partial, 0)  # longer than the release: not one of its prefixes
        digest, have = hashlib.sha256(), 0
    headers = {"Accept-Encoding": "identity"}  # the file's own bytes, which a range counts and the sha256 covers
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if have:
        headers["Range"] = f"bytes={have}-"
    with httpx.stream("GET", url, headers=headers, timeout=settings.timeout_s, follow_redirects=True) as response:
        status = response.status_code
        if status == 416 and have:  # the server cannot give that range: the partial is no prefix of this file
            os.truncate(partial, 0)
            raise httpx.HTTPStatusError(f"GET {url}: HTTP 416 for bytes {have}-: starting it again", request=response.request, response=response)
        if status >= 400:
            message = f"GET {url}: HTTP {status}"
            if status in (401, 403):
                raise DownloadError(f"{message}: the server wants credentials; set token_env for this dataset")
            if status < 500:
                raise DownloadError(f"{message}: check the URL")
            raise httpx.HTTPStatusError(message, request=response.request, response=response)
        if have and not (status == 206 and response.headers.get("content-range", "").startswith(f"bytes {have}-")):
            log.info("%s: the server sent the whole file (HTTP %d), not the rest from byte %d: starting again", url, status, have)
            digest, have = hashlib.sha256(), 0
        elif have:
            log.info("%s: continuing the download at byte %d", url, have)
        length = int(response.headers.get("content-length") or 0) or None
        with open(partial, "r+b") as handle, tqdm(total=length and length + have, initial=have, unit="B", unit_scale=True,
                                                  desc=partial.name, disable=not progress) as bar:
            handle.truncate(have)
            handle.seek(have)
            try:
                for block in response.iter_bytes():  # as they arrive: a cut keeps every byte that came
                    digest.update(block)
                    handle.write(block)
                    have += len(block)
                    bar.update(len(block))
            finally:
                handle.flush()
                os.fsync(handle.fileno())  # what arrived is kept for the next attempt, whatever stopped it
    return digest, have
