"""Append-only segment files of the raw lake.

A segment is a sequence of frames: `b"TFR1" | u32 header_len | u32 body_len | u32 crc32 | header | body`,
big-endian, where the header is compact JSON (server envelope id, received time, session, ...) and the
body the exact bytes received. One process writes a segment and holds an exclusive `flock` on it while
it does, so a segment whose lock can be taken has no live writer. A crash mid-write leaves a torn
tail (an incomplete or corrupt last frame); `scan` stops before it and `cut_torn_tail` moves those
bytes to the quarantine folder. Damage followed by valid frames is not a torn tail: it is reported as
LakeCorruption and nothing is cut.
"""

from __future__ import annotations

import fcntl
import json
import logging
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajforge.errors import LakeCorruption

MAGIC = b"TFR1"
_PREFIX = struct.Struct(">4sIII")
MAX_FRAME_PART = 64 * 1024 * 1024
log = logging.getLogger(__name__)


def encode_frame(header: dict[str, Any], body: bytes) -> bytes:
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    crc = zlib.crc32(body, zlib.crc32(header_bytes))
    return _PREFIX.pack(MAGIC, len(header_bytes), len(body), crc) + header_bytes + body


@dataclass(frozen=True)
class Frame:
    offset: int
    length: int
    header: dict[str, Any]
    body: bytes


def _frame_at(data: memoryview, offset: int) -> Frame | None:
    """The valid frame starting at `offset`, or None when the bytes there are not one."""
    end_of_prefix = offset + _PREFIX.size
    if end_of_prefix > len(data):
        return None
    magic, header_len, body_len, crc = _PREFIX.unpack_from(data, offset)
    if magic != MAGIC or header_len > MAX_FRAME_PART or body_len > MAX_FRAME_PART:
        return None
    end = end_of_prefix + header_len + body_len
    if end > len(data):
        return None
    header_bytes = data[end_of_prefix : end_of_prefix + header_len]
    body = data[end_of_prefix + header_len : end]
    if zlib.crc32(body, zlib.crc32(header_bytes)) != crc:
        return None
    try:
        header = json.loads(bytes(header_bytes))
    except ValueError:
        return None
    return Frame(offset, end - offset, header, bytes(body))


def decode_frame(data: bytes) -> Frame | None:
    """The frame that `data` holds exactly from its first byte (None when it is not a valid one)."""
    return _frame_at(memoryview(data), 0)


def scan(path: Path, start: int = 0, end: int | None = None) -> tuple[list[Frame], int]:
    """Frames from `start` up to `end` (default: end of file) and the offset where valid data stops.

    Raises LakeCorruption when a damaged region is followed by a valid frame.
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        data = memoryview(handle.read() if end is None else handle.read(end - start))
    frames: list[Frame] = []
    position = 0
    while position < len(data):
        frame = _frame_at(data, position)
        if frame is None:
            later = bytes(data[position + 1 :]).find(MAGIC)
            while later != -1:
                if _frame_at(data, position + 1 + later) is not None:
                    raise LakeCorruption(
                        f"{path}: damaged bytes at offset {start + position} are followed by valid frames; "
                        "this is not a torn tail, so nothing was cut. Inspect the file, then move it aside."
                    )
                later = bytes(data[position + 1 :]).find(MAGIC, later + 1)
            break
        frames.append(Frame(start + frame.offset, frame.length, frame.header, frame.body))
        position += frame.length
    return frames, start + position


def scan_clean(path: Path) -> list[tuple[int, int, memoryview, memoryview]] | None:
    """`(offset, length, header bytes, body bytes)` of every frame of an undamaged segment, checksums
    verified but headers not parsed; None when anything (damage, a torn tail, a header too large)
    needs `scan` or `salvage`. The fast path for readers of a whole sealed segment: the spans are views
    of the file mapped read-only, copied by nobody (the mapping lives as long as a view of it). Only the
    ingest service's start-up recovery shrinks a segment (it cuts a torn tail); a reader mapping that
    segment at that moment would die of SIGBUS, and the build's Ray task is then retried."""
    with Path(path).open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return []
        data = memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
    spans = []
    position, size, unpack, crc32 = 0, len(data), _PREFIX.unpack_from, zlib.crc32
    while position < size:
        if position + _PREFIX.size > size:
            return None
        magic, header_len, body_len, crc = unpack(data, position)
        start = position + _PREFIX.size
        end = start + header_len + body_len
        if magic != MAGIC or header_len > MAX_FRAME_PART or body_len > MAX_FRAME_PART or end > size:
            return None
        if crc32(data[start:end]) != crc:  # header and body lie back to back: one call checks both
            return None
        spans.append((position, end - position, data[start : start + header_len], data[start + header_len : end]))
        position = end
    return spans


def salvage(path: Path) -> tuple[list[Frame], list[tuple[int, int]], int]:
    """A damaged segment read as far as it can be: its valid frames, the damaged byte ranges between
    them (`(offset, length)`), and the length of a torn tail (bytes after the last frame, not followed
    by one: a write in progress or a crash the ingest service cuts on its next start)."""
    data = memoryview(Path(path).read_bytes())
    frames: list[Frame] = []
    damaged: list[tuple[int, int]] = []
    position = 0
    while position < len(data):
        frame = _frame_at(data, position)
        if frame is not None:
            frames.append(frame)
            position += frame.length
            continue
        later = bytes(data[position + 1 :]).find(MAGIC)
        while later != -1 and _frame_at(data, position + 1 + later) is None:
            later = bytes(data[position + 1 :]).find(MAGIC, later + 1)
        if later == -1:
            return frames, damaged, len(data) - position
        damaged.append((position, later + 1))
        position += later + 1
    return frames, damaged, 0


def iter_frames(path: Path, start: int = 0, end: int | None = None) -> Iterator[Frame]:
    frames, _ = scan(path, start, end)
    yield from frames


def read_frame(path: Path, offset: int, length: int) -> Frame:
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = memoryview(handle.read(length))
    frame = _frame_at(data, 0)
    if frame is None or frame.length != length:
        raise LakeCorruption(f"{path}: no valid frame of {length} bytes at offset {offset}")
    return Frame(offset, length, frame.header, frame.body)


def cut_torn_tail(path: Path, valid_end: int, quarantine_dir: Path) -> int:
    """Move the bytes after `valid_end` to the quarantine folder and truncate; returns how many were cut."""
    size = path.stat().st_size
    if size <= valid_end:
        return 0
    quarantine_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "r+b") as handle:
        handle.seek(valid_end)
        torn = handle.read()
        kept = quarantine_dir / f"{path.name}.torn-at-{valid_end}"
        kept.write_bytes(torn)
        handle.truncate(valid_end)
        handle.flush()
        os.fsync(handle.fileno())
    log.warning("cut a torn tail of %d bytes from %s at offset %d (kept in %s)", size - valid_end, path, valid_end, kept)
    return size - valid_end


def try_lock(path: Path) -> int | None:
    """An fd holding the exclusive lock of `path`, or None when a live writer holds it."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def append_whole(fd: int, data: bytes) -> None:
    """Append `data` to the O_APPEND file `fd` and fsync it, all or nothing: a short write (a disk filling up) is carried
    on, and one that fails is cut back off, so no half record is left for the next append to run into."""
    size = os.fstat(fd).st_size
    try:
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except OSError:
        os.ftruncate(fd, size)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentWriter:
    """The one writer of one segment file: appends frames, fsyncs, holds the file's lock while open."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = not path.exists()
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise LakeCorruption(f"{path} is locked by another writer") from None
        self.size = os.fstat(self._fd).st_size
        if created:
            fsync_dir(path.parent)

    def append(self, frames: list[bytes]) -> list[int]:
        """Write frames back to back; returns each frame's offset. Durable only after `sync()`."""
        offsets = []
        position = self.size
        for frame in frames:
            offsets.append(position)
            position += len(frame)
        payload = b"".join(frames)
        written = 0
        while written < len(payload):
            written += os.write(self._fd, payload[written:])
        self.size = position
        return offsets

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
