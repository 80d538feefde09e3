"""A unified diff (`git diff`, a GitHub `.diff`/`.patch`) parsed into its files and hunks, and each hunk's two sides.

A hunk's `pre` is its context and removed lines, its `post` its context and added lines: the text of that region of
the file before and after the change (the whole file when the hunk covers it, as a new file's does). Lines before the
first file header (a `.patch` file's mail headers, a commit message) are skipped. A `\\ No newline at end of file`
marker takes the newline off the side(s) of the line it follows. A hunk whose lines do not add up to its header's
counts, or a header that does not parse, is a `PatchError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
NULL = "/dev/null"


class PatchError(ValueError):
    """The text is not a unified diff this parser can follow; the message says where."""


@dataclass
class Hunk:
    header: str
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    pre: str = ""
    post: str = ""


@dataclass
class FileDiff:
    old_path: str | None = None
    new_path: str | None = None
    binary: bool = False
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def path(self) -> str | None:
        return self.new_path or self.old_path


def _path(value: str) -> str | None:
    value = value.split("\t", 1)[0].strip()
    if value == NULL:
        return None
    return value[2:] if value[:2] in ("a/", "b/") else value


def parse_patch(text: str) -> list[FileDiff]:
    """The files of a unified diff, in order; a PatchError for a damaged one."""
    lines = text.splitlines()
    files: list[FileDiff] = []
    current: FileDiff | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("diff --git "):
            current = FileDiff()
            files.append(current)
            parts = line[len("diff --git "):].split(" b/", 1)
            if len(parts) == 2:
                current.old_path, current.new_path = _path(parts[0]), parts[1]
        elif line.startswith("--- ") and index + 1 < len(lines) and lines[index + 1].startswith("+++ "):
            if current is None or current.hunks:
                current = FileDiff()
                files.append(current)
            current.old_path, current.new_path = _path(line[4:]), _path(lines[index + 1][4:])
            index += 1
        elif current is not None and (line.startswith("Binary files ") or line == "GIT binary patch"):
            current.binary = True
        elif current is not None and line.startswith("new file mode"):
            current.old_path = None
        elif current is not None and line.startswith("deleted file mode"):
            current.new_path = None
        elif line.startswith("@@"):
            if current is None:
                raise PatchError(f"line {index + 1}: a hunk before any file header")
            index = _hunk(lines, index, current)
            continue
        index += 1
    return files


def _hunk(lines: list[str], index: int, into: FileDiff) -> int:
    """Reads the hunk whose header is lines[index] into `into`; returns the index of the line after it."""
    match = HUNK.match(lines[index])
    if not match:
        raise PatchError(f"line {index + 1}: not a hunk header: {lines[index][:80]!r}")
    old_start, old_len, new_start, new_len = (int(value) if value is not None else 1 for value in match.groups())
    hunk = Hunk(lines[index][:match.end()], old_start, old_len, new_start, new_len)
    pre: list[str] = []
    post: list[str] = []
    old_left, new_left, last = old_len, new_len, ""
    index += 1
    while index < len(lines) and (old_left > 0 or new_left > 0 or lines[index].startswith("\\")):
        line = lines[index]
        mark, body = line[:1], line[1:]
        if mark == "\\":  # "\ No newline at end of file": the previous line's side(s) end without one
            for side, sign in ((pre, "-"), (post, "+")):
                if side and last in (sign, " ") and side[-1].endswith("\n"):
                    side[-1] = side[-1][:-1]
        elif mark in (" ", "") and old_left > 0 and new_left > 0:  # a context line ("" is an empty one some tools trim)
            pre.append(body + "\n")
            post.append(body + "\n")
            old_left, new_left = old_left - 1, new_left - 1
        elif mark == "-" and old_left > 0:
            pre.append(body + "\n")
            old_left -= 1
        elif mark == "+" and new_left > 0:
            post.append(body + "\n")
            new_left -= 1
        else:
            break
        last = mark or " "
        index += 1
    if old_left or new_left:
        raise PatchError(f"hunk {hunk.header}: {old_left} old and {new_left} new lines missing (a truncated patch)")
    hunk.pre, hunk.post = "".join(pre), "".join(post)
    into.hunks.append(hunk)
    return index
