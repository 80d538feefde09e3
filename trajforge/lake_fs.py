"""Builds on shared or object storage: a folder at a pyarrow filesystem URI (`s3://bucket/prefix`, `gs://...`,
`hdfs://...`, `file:///abs/path`), opened with `pyarrow.fs.FileSystem.from_uri`, and the few operations a published
build needs: read an object, hash it while streaming, upload a local file, download one.

Options come the way pyarrow takes them: in the URI's query (`s3://bucket/prefix?endpoint_override=minio:9000&scheme=http&region=eu-west-1`)
or from the environment pyarrow's S3 client reads (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE
and ~/.aws/credentials, AWS_REGION/AWS_DEFAULT_REGION, AWS_ENDPOINT_URL/AWS_ENDPOINT_URL_S3). The URI shown in
messages never carries the query (it may hold keys).

An upload to a local or HDFS path is written under a temporary name and renamed (fsync'd on a local disk), so a
file never exists half-written under its name; an object store's PUT is atomic already. Readers still check
every file's size and sha256 against the build's manifest, which its publisher writes last.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from trajforge.errors import ConfigError, TrajforgeError
from trajforge.storage_full import StorageFull, storage_full

log = logging.getLogger(__name__)
BLOCK = 8 << 20
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(text: str | os.PathLike) -> bool:
    """`s3://...`, `file:///...`: a location for pyarrow's filesystems rather than a local path or a build id."""
    return isinstance(text, str) and bool(SCHEME.match(text))


@dataclass(frozen=True)
class Remote:
    """A folder on a pyarrow filesystem: `fs` and its `path` there, `uri` to show (no query), `query` to pass on."""

    fs: object
    path: str
    uri: str
    query: str = ""

    def child(self, name: str) -> "Remote":
        return Remote(self.fs, f"{self.path}/{name}", f"{self.uri}/{name}", self.query)

    def parent(self) -> "Remote":
        return Remote(self.fs, self.path.rpartition("/")[0], self.uri.rpartition("/")[0], self.query)

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    def key(self, relative: str) -> str:
        return f"{self.path}/{relative}"

    def show(self, relative: str = "") -> str:
        return f"{self.uri}/{relative}" if relative else self.uri

    @property
    def kind(self) -> str:
        return getattr(self.fs, "type_name", "")


SECRETS = ("access_key", "secret_key", "session_token")


def redacted(uri: str) -> str:
    """`uri` with the values of key parameters in its query replaced by `...` (for messages and logs)."""
    split = urllib.parse.urlsplit(uri)
    if not split.query:
        return uri
    pairs = [(name, "..." if name in SECRETS else value) for name, value in urllib.parse.parse_qsl(split.query, keep_blank_values=True)]
    return urllib.parse.urlunsplit(split._replace(query=urllib.parse.urlencode(pairs, safe="./:")))


def with_name(uri: str, name: str) -> str:
    """`uri` with its last path segment replaced by `name`, its query kept (`.../latest?x=1` -> `.../<build id>?x=1`)."""
    split = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(split._replace(path=f"{split.path.rstrip('/').rpartition('/')[0]}/{name}"))


def open_uri(uri: str) -> Remote:
    """The folder `uri` names, on the filesystem pyarrow makes of it; a ConfigError naming the URI when it cannot."""
    import pyarrow as pa
    from pyarrow import fs as pafs

    split = urllib.parse.urlsplit(uri)
    shown = f"{split.scheme.lower()}://{split.netloc.rpartition('@')[2]}{split.path}".rstrip("/")
    if split.scheme.lower() in ("s3", "s3a", "gs", "gcs") and not split.netloc.rpartition("@")[2]:
        raise ConfigError(f"{uri}: names no bucket; write {split.scheme.lower()}://<bucket>/<prefix>")
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ConfigError(f"{shown}: pyarrow cannot open this URI ({_first_line(exc)}); {_options_hint(split.scheme.lower())}") from None
    return Remote(filesystem, path.rstrip("/") or path, shown, split.query)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _options_hint(scheme: str) -> str:
    if scheme in ("s3", "s3a"):
        return ("S3 takes its options in the query (?endpoint_override=HOST:PORT&scheme=http&region=REGION) or from AWS_ENDPOINT_URL, "
                "AWS_REGION and the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials)")
    if scheme in ("gs", "gcs"):
        return "GCS takes its credentials from GOOGLE_APPLICATION_CREDENTIALS (or the machine's service account)"
    if scheme in ("hdfs", "viewfs"):
        return "HDFS needs Java and libhdfs on this machine (JAVA_HOME, HADOOP_HOME, CLASSPATH)"
    if scheme == "file":
        return "write file:// URIs with an absolute path: file:///shared/builds"
    return "use s3://, gs://, hdfs:// or file:/// (pyarrow.fs.FileSystem.from_uri)"


def storage_error(exc: BaseException, uri: str, doing: str) -> TrajforgeError:
    """A pyarrow storage failure as one line that names the URI and the setting to look at."""
    text = str(exc)
    scheme = uri.partition("://")[0]
    if storage_full(exc):
        return StorageFull(f"{uri}: {doing} failed ({_first_line(exc)}); the storage there is full (or over its quota): free space, "
                           "then run the same command again, which goes on where this one stopped", uri)
    if re.search(r"NETWORK_CONNECTION|curlCode|Could not connect|Could not resolve|Connection refused|timed out", text, re.I):
        why = ("cannot reach the storage endpoint: check AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3), or endpoint_override=HOST:PORT "
               "(with scheme=http for a plain-HTTP server) in the URI's query, and the network" if scheme in ("s3", "s3a")
               else "cannot reach the storage: check the host in the URI and the network")
    elif re.search(r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken|InvalidToken|credentials|HTTP status 40[13]", text):
        why = (("the credentials were refused: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or AWS_PROFILE and "
                "~/.aws/credentials, and that they may read and write this bucket") if scheme in ("s3", "s3a")
               else f"access was refused: {_options_hint(scheme)}")
    elif re.search(r"NoSuchBucket|NO_SUCH_BUCKET|bucket does not exist|Bucket '.*' not found", text, re.I):
        why = "the bucket does not exist: create it first (trajforge never creates buckets)"
    elif re.search(r"PermanentRedirect|AuthorizationHeaderMalformed|region", text, re.I):
        why = "the bucket is in another region: set AWS_REGION, or region=REGION in the URI's query"
    elif scheme == "file" and uri.startswith("file:///"):  # absolute already: the path itself is what to look at
        why = "check the local path: that its folders exist or can be made, and that this user may read and write there"
    else:
        why = _options_hint(scheme)
    return TrajforgeError(f"{uri}: {doing} failed ({_first_line(exc)}); {why}")


@contextmanager
def storage(uri: str, doing: str) -> Iterator[None]:
    """Turn pyarrow's OSErrors in the block into `storage_error`s."""
    import pyarrow as pa

    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        if isinstance(exc, TrajforgeError):
            raise
        raise storage_error(exc, uri, doing) from exc


def size_of(remote: Remote, relative: str) -> int | None:
    """The object's size, or None when there is none."""
    from pyarrow import fs as pafs

    with storage(remote.show(relative), "looking it up"):
        info = remote.fs.get_file_info(remote.key(relative))
    return info.size if info.type == pafs.FileType.File else None


def read_bytes(remote: Remote, relative: str) -> bytes | None:
    """The whole object (a manifest, a LATEST marker), or None when there is none."""
    if size_of(remote, relative) is None:
        return None
    with storage(remote.show(relative), "reading it"), remote.fs.open_input_stream(remote.key(relative)) as stream:
        return stream.read()


def hash_remote(remote: Remote, relative: str, local: Path | None = None) -> tuple[int, str]:
    """(bytes, sha256) of the object, read once; with `local`, also written there (a download)."""
    digest, size = hashlib.sha256(), 0
    with storage(remote.show(relative), "reading it"), remote.fs.open_input_stream(remote.key(relative)) as stream, _LocalCopy(local) as out:
        while block := stream.read(BLOCK):
            digest.update(block)
            out.write(block)
            size += len(block)
    return size, digest.hexdigest()


class _LocalCopy:
    """Where a download goes (nowhere without a path). Its errors name the local file: a full local disk is not the
    storage's (`storage` would have said the storage there is full)."""

    def __init__(self, path: Path | None):
        self.path, self.handle = path, None

    def __enter__(self) -> _LocalCopy:
        if self.path is not None:
            self.handle = self._do(lambda: open(self.path, "wb"))
        return self

    def write(self, block: bytes) -> None:
        if self.handle is not None:
            self._do(lambda: self.handle.write(block))

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self._do(self.handle.close)

    def _do(self, action):
        try:
            return action()
        except OSError as exc:
            if storage_full(exc):
                raise StorageFull(f"{self.path}: writing it failed ({exc}); the disk here is full: free space, then run the same command "
                                  "again, which goes on where this one stopped", self.path) from exc
            raise TrajforgeError(f"{self.path}: writing it failed ({exc}); check that this user may write there") from exc


def upload(source: Path | bytes, remote: Remote, relative: str) -> tuple[int, str]:
    """Copy a local file (or bytes) to `remote/relative`; returns (bytes, sha256) of what was read and sent.

    Object stores (S3, GCS): one PUT, atomic; if it fails midway the object is removed again (best effort). Other
    filesystems (local, HDFS): a temporary sibling, renamed into place; on a local disk fsync'd first."""
    target = remote.key(relative)
    parent = target.rpartition("/")[0]
    atomic_put = remote.kind in ("s3", "gcs")
    written = target if atomic_put else f"{parent}/.{target.rpartition('/')[2]}.{secrets.token_hex(4)}.tmp"
    digest, size = hashlib.sha256(), 0
    with storage(remote.show(relative), "uploading it"):
        if not atomic_put:
            remote.fs.create_dir(parent, recursive=True)
        stream = remote.fs.open_output_stream(written)
        try:
            with (open(source, "rb") if isinstance(source, Path) else _Bytes(source)) as handle:
                while block := handle.read(BLOCK):
                    digest.update(block)
                    stream.write(block)
                    size += len(block)
            stream.close()
        except BaseException:
            _abandon(remote, stream, written)
            raise
        if not atomic_put:
            if remote.kind == "local":
                from trajforge.atomic import fsync_file

                fsync_file(Path(written))
            remote.fs.move(written, target)
            if remote.kind == "local":
                from trajforge.atomic import fsync_dir

                fsync_dir(Path(parent))
    return size, digest.hexdigest()


class _Bytes:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def read(self, count: int) -> bytes:
        block = self.data[self.at : self.at + count]
        self.at += len(block)
        return block


def _abandon(remote: Remote, stream, written: str) -> None:
    """After a failed upload: close the stream (pyarrow cannot abort one, so an object store may now hold a partial
    object) and remove what it wrote; a reader would refuse it by its sha256 anyway."""
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - the upload's own error is the one to report
        pass
    try:
        remote.fs.delete_file(written)
    except Exception:  # noqa: BLE001
        log.warning("could not remove %s after a failed upload; the next publish replaces it", remote.uri)


def delete(remote: Remote, relative: str) -> None:
    with storage(remote.show(relative), "removing it"):
        remote.fs.delete_file(remote.key(relative))


# A published build: `<prefix>/<build id>/` (its files, `manifest.json` written last) and `<prefix>/LATEST`
# (`LATEST.org=<org>` for an `--org` build) naming the newest build published there.

def marker_name(org: str | None) -> str:
    from trajforge.contracts.events import partition_name

    return "LATEST" if org is None else f"LATEST.org={partition_name(org)}"


def resolve_published(uri: str) -> Remote:
    """`<prefix>/<build id>`, `<prefix>/latest` or `<prefix>/latest:<org>` -> the build's folder at the URI (LATEST read)."""
    remote = open_uri(uri)
    name = remote.name
    if name != "latest" and not name.startswith("latest:"):
        return remote
    org = name.partition(":")[2] or None
    prefix = remote.parent()
    marker = marker_name(org)
    data = read_bytes(prefix, marker)
    build_id = data.decode("utf-8", "replace").strip() if data is not None else ""
    if not build_id:
        raise TrajforgeError(f"{prefix.show(marker)} does not exist: no {'build' if org is None else f'--org {org} build'} was published "
                             f"to {prefix.uri} yet; run `trajforge lake publish {'latest' if org is None else f'latest:{org}'} {prefix.uri}` on the "
                             f"machine that holds the lake (or `trajforge build --publish-to {prefix.uri}`)")
    if "/" in build_id or build_id.startswith("."):
        raise TrajforgeError(f"{prefix.show(marker)} names {build_id!r}, which is no build id; publish a build there again")
    return prefix.child(build_id)


def published_manifest(folder: Remote) -> tuple[dict, bytes]:
    """The manifest of the build published at `folder`, parsed, and its bytes; a TrajforgeError that says what to do when
    there is none (never published, or its publish was interrupted: the manifest is written last)."""
    import json

    from trajforge.errors import LakeCorruption

    data = read_bytes(folder, "manifest.json")
    if data is None:
        raise TrajforgeError(f"{folder.uri} has no manifest.json: build {folder.name} was not published there, or its publish was interrupted "
                             f"(the manifest is written last); run `trajforge lake publish {folder.name} {folder.parent().uri}` again on the "
                             "machine that holds the build, or name a published build")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise LakeCorruption(f"{folder.show('manifest.json')} cannot be read as JSON ({exc}); publish the build there again") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise LakeCorruption(f"{folder.show('manifest.json')} has no `files` list; publish the build there again")
    return manifest, data
