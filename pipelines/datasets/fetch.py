"""Getting a dataset's source into its `source/` folder untouched, and checking it against the official manifest.

A URL is downloaded (`download.py`: into a `.partial` file a cut download continues from), then its size and sha256
are compared with the config's; only a file that matches is kept. A local file is copied (hashed as it is read), a
local folder copied whole. A mismatch raises `IntegrityError` naming both hashes (or sizes) and removes what was fetched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipelines.datasets.download import CHUNK, download_file, hashed, partial_for
from pipelines.datasets.settings import DatasetSpec, DownloadSettings
from trajforge.errors import ConfigError, TrajforgeError

class IntegrityError(TrajforgeError, ValueError):
    """What was fetched is not what the official manifest names (sha256 or size)."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size: int


def local_path(spec: DatasetSpec) -> Path:
    url = urlparse(spec.source)
    return Path(unquote(url.path)) if url.scheme == "file" else Path(spec.source).expanduser()


def file_name(spec: DatasetSpec) -> str:
    if spec.is_url:
        return Path(unquote(urlparse(spec.source).path)).name or "download"
    return local_path(spec).name


def folder_digest(folder: Path) -> tuple[str, int]:
    """A folder's sha256 (over its files' relative paths and sha256s, sorted) and total size."""
    digest, total = hashlib.sha256(), 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        file_hash, size = file_digest(path)
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_hash}\n".encode())
        total += size
    return digest.hexdigest(), total


def file_digest(path: Path) -> tuple[str, int]:
    digest, size = hashed(path)
    return digest.hexdigest(), size


def source_digest(spec: DatasetSpec) -> tuple[str, int] | None:
    """The sha256 and size the source has now without fetching it: a URL's are the manifest's; None when a local
    source is missing."""
    if spec.is_url:
        return spec.sha256, spec.size
    path = local_path(spec)
    if path.is_dir():
        return folder_digest(path)
    return file_digest(path) if path.is_file() else None


def check(name: str, where: str, spec: DatasetSpec, sha256: str, size: int) -> None:
    """The fetched bytes against the manifest; an IntegrityError naming both values."""
    if spec.size is not None and size != spec.size:
        raise IntegrityError(f"{name}: {where} has {size} bytes, the manifest (datasets.catalog.{name}.size) says {spec.size}: "
                             "nothing was kept; a truncated download or a new release: check the source and the manifest")
    if spec.sha256 is not None and sha256 != spec.sha256:
        raise IntegrityError(f"{name}: {where} has sha256 {sha256}, the manifest (datasets.catalog.{name}.sha256) says "
                             f"{spec.sha256}: nothing was kept; a damaged download or a new release: check the source and the manifest")


def fetch(name: str, spec: DatasetSpec, source_dir: Path, download: DownloadSettings, downloads: Path, progress: bool = True) -> Fetched:
    """Put the dataset's source into `source_dir` (inside the unpublished staging folder) and check it; a download
    collects its bytes in `downloads` first, where a cut one is continued by the next run."""
    source_dir.mkdir(parents=True, exist_ok=True)
    if spec.is_url:
        target = source_dir / file_name(spec)
        sha256, size = download_file(spec.source, target, partial_for(downloads, name, spec.sha256), download,
                                     token=_token(name, spec), expected_size=spec.size, progress=progress)
        try:
            check(name, spec.source, spec, sha256, size)
        except IntegrityError:
            target.unlink(missing_ok=True)
            raise
        return Fetched(target, sha256, size)
    path = local_path(spec)
    if path.is_dir():
        target = source_dir / path.name
        shutil.copytree(path, target)
        sha256, size = folder_digest(target)
    elif path.is_file():
        target = source_dir / path.name
        sha256, size = _copy_hashed(path, target)
    else:
        raise ConfigError(f"datasets.catalog.{name}.source: {path} does not exist (no such file or folder in {Path.cwd()}): "
                          "check the path, or give an https URL")
    check(name, str(path), spec, sha256, size)
    return Fetched(target, sha256, size)


def _copy_hashed(path: Path, target: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as reader, target.open("wb") as writer:
        for block in iter(lambda: reader.read(CHUNK), b""):
            digest.update(block)
            writer.write(block)
            size += len(block)
    return digest.hexdigest(), size


def _token(name: str, spec: DatasetSpec) -> str | None:
    """The bearer token of a gated download: `$<token_env>`, else that key of a `.env` file where the command runs
    (seed 002 keeps credentials in `.env`; the file is read for this key only, not loaded into the environment)."""
    if spec.token_env is None:
        return None
    token = os.environ.get(spec.token_env) or dotenv_value(Path(".env"), spec.token_env)
    if not token:
        raise ConfigError(f"datasets.catalog.{name}.token_env: ${spec.token_env} is not set (nor in {Path.cwd() / '.env'}); this "
                          f"download needs its token: export {spec.token_env}=... or add it to .env")
    return token


def dotenv_value(path: Path, key: str) -> str | None:
    """`key`'s value in a `.env` file (`KEY=value`, `export KEY=value`, quotes stripped, `#` comments); None if absent."""
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and name.strip() == key:
            value = value.strip()
            if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 1:
                return value[1:-1]
            return value.split(" #", 1)[0].strip() or None
    return None
