"""The languages ast-grep knows, by canonical name, and the aliases users type.

Checked here before anything reaches `ast-grep-py`, which panics (a BaseException) on an unknown
language, or the CLI, which exits 2.
"""

from __future__ import annotations

CANONICAL = (
    "bash", "c", "cpp", "csharp", "css", "elixir", "go", "haskell", "hcl", "html", "java", "javascript", "json",
    "kotlin", "lua", "nix", "php", "python", "ruby", "rust", "scala", "solidity", "swift", "tsx", "typescript", "yaml",
)
ALIASES = {
    "py": "python", "python3": "python", "js": "javascript", "jsx": "javascript", "node": "javascript",
    "ts": "typescript", "c++": "cpp", "cs": "csharp", "c#": "csharp", "golang": "go", "rs": "rust", "rb": "ruby",
    "kt": "kotlin", "sh": "bash", "shell": "bash", "yml": "yaml", "ex": "elixir", "hs": "haskell", "terraform": "hcl",
}
EXTENSIONS = {
    "python": (".py", ".pyi"), "javascript": (".js", ".jsx", ".mjs", ".cjs"), "typescript": (".ts", ".mts", ".cts"),
    "tsx": (".tsx",), "java": (".java",),
}


def normalize_language(name: str) -> str:
    """`py` -> `python`; ValueError naming the supported languages for anything unknown."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in CANONICAL:
        raise ValueError(f"unknown language {name!r}; ast-grep supports {', '.join(CANONICAL)} (aliases: {', '.join(sorted(ALIASES))})")
    return key
