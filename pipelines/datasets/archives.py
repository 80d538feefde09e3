"""Dataset releases that come as archives (`.zip`, `.tar`, `.tar.gz`/`.tgz`, `.tar.xz`, `.tar.bz2`), such as a
repository's GitHub archive (SmellyCode) or a zipped data folder.

The archive itself is what `source/` keeps and what the sha256 covers; for normalizing it is unpacked into a scratch
folder in the dataset's staging folder and removed afterwards, so the lake holds it once. Unpacking is safe: a member
that would land outside the folder (an absolute path, `..`), a link, a device or a total size over what the disk has
free refuses the archive. `archive_path` picks the folder or file inside to read; without it the whole archive is read,
entering a single top folder (GitHub's `<repo>-<commit>/`). Record locations name the archive and the member
(`SmellyCodeDataset-main.zip!Python/SmellyUnannotated/Shop.py`), never the scratch folder.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from pipelines.datasets.readers import CorruptRecord
from trajforge.errors import ConfigError

ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
SCRATCH = "unpacked"


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVES)


def _members(archive: Path) -> list[tuple[str, int, bool]]:
    """(name, size, is a plain file or folder) of every member; CorruptRecord when it is no readable archive."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as opened:
                return [(info.filename, info.file_size, not _zip_link(info)) for info in opened.infolist()]
        with tarfile.open(archive) as opened:
            return [(member.name, member.size, member.isfile() or member.isdir()) for member in opened.getmembers()]
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise CorruptRecord(f"{archive}: not a readable {archive.suffix or 'tar'} archive ({exc}); fetch it again") from None


def _zip_link(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000  # a symlink stored by Info-ZIP


def _check(archive: Path, into: Path) -> None:
    members = _members(archive)
    for name, _, plain in members:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name:
            raise CorruptRecord(f"{archive}: member {name!r} would be unpacked outside its folder; the archive is refused")
        if not plain:
            raise CorruptRecord(f"{archive}: member {name!r} is a link or a special file; the archive is refused")
    total, free = sum(size for _, size, _ in members), shutil.disk_usage(into).free
    if total > free:
        raise CorruptRecord(f"{archive}: unpacks to {total} bytes, more than the {free} free in {into}: free some space, "
                            "or point the lake at a larger disk")


def _unpack(archive: Path, into: Path) -> None:
    _check(archive, into)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(into)
        else:
            with tarfile.open(archive) as opened:
                opened.extractall(into, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise CorruptRecord(f"{archive}: could not be unpacked ({exc}); fetch it again") from None


def _root(folder: Path, archive: Path, inner: str | None) -> Path:
    if inner is None:
        entries = list(folder.iterdir())
        return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder
    entries = list(folder.iterdir())
    for base in [folder] + (entries if len(entries) == 1 and entries[0].is_dir() else []):
        if (candidate := base / inner).exists():
            return candidate
    top = sorted(entry.name for entry in entries)
    raise ConfigError(f"archive_path {inner!r} is not in {archive.name} (it holds {', '.join(top[:10]) or 'nothing'}"
                      f"{' ...' if len(top) > 10 else ''}): give a folder or file inside it")


@contextmanager
def readable_source(source: Path, scratch: Path, inner: str | None) -> Iterator[tuple[Path, dict[str, str]]]:
    """The path to read the records from, and the location prefix to show instead of it: `source` itself unless it is
    an archive, else the unpacked folder (or `inner` in it), removed when the block ends."""
    if not is_archive(source.name):
        if inner is not None:
            raise ConfigError(f"archive_path is for an archive source ({', '.join(ARCHIVES)}), and {source.name} is none")
        yield source, {}
        return
    folder = scratch / SCRATCH
    folder.mkdir(parents=True)
    try:
        _unpack(source, folder)
        yield _root(folder, source, inner), {str(folder) + "/": f"{source.name}!", str(folder): f"{source.name}!"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def shown(where: str, names: dict[str, str]) -> str:
    """A record location with the scratch folder named as the archive it came from."""
    for path, label in names.items():
        if path in where:
            return where.replace(path, label)
    return where
