"""Every key of the Serve file says what it is: a comment on its line, the line above or its section's line, or the
README naming it (the other configs point at the settings module that documents every field)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEY = re.compile(r"^(\s*)(?:-\s+)?([A-Za-z_]\w*):")


def undocumented(config: Path, readme: str) -> list[str]:
    lines, found, stack = config.read_text().splitlines(), [], []
    for number, line in enumerate(lines):
        match = KEY.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        commented = "#" in line or (number and lines[number - 1].lstrip().startswith("#")) or any(above for _, _, above in stack)
        stack.append((indent, key, "#" in line))
        if not commented and not re.search(rf"\b{re.escape(key)}\b", readme):
            found.append(".".join(name for _, name, _ in stack))
    return found


def test_every_key_of_the_serve_file_is_explained():
    """segment_max_bytes, group_commit_max_envelopes, secret_key_env, max_inputs, ... had no word anywhere but the code."""
    assert undocumented(REPO / "configs" / "serve.yaml", (REPO / "README.md").read_text()) == []
