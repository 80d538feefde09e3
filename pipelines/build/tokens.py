"""Counting sft tokens with a named tokenizer (`build.tokenizer`), without loading any model.

`packaged` is all-MiniLM-L6-v2's WordPiece (always present); a model directory with a
`tokenizer.json` (Qwen3-14B's, the learner's small model's) gives that model's counts. The learner
re-tokenizes with its own model; these counts are for stats, filtering and packing estimates.
"""

from __future__ import annotations

from pathlib import Path

from trajforge.embedding import resolve_model
from trajforge.errors import ConfigError


class TokenCounter:
    def __init__(self, name: str = "packaged"):
        from tokenizers import Tokenizer

        directory = Path(resolve_model(name))
        path = directory / "tokenizer.json" if directory.is_dir() else directory
        if not path.is_file():
            raise ConfigError(f"build.tokenizer: no tokenizer.json at {path}; name a model directory or `packaged`")
        self.name = name
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(encoding.ids) for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False)]


def count_sft_tokens(rows: list[dict], counter: TokenCounter) -> None:
    """Fill each sft row's `num_tokens` and `loss_tokens` (its messages with loss), in one tokenizer call."""
    counts = iter(counter.count([message["content"] for row in rows for message in row["messages"]]))
    for row in rows:
        sizes = [next(counts) for _ in row["messages"]]
        row["num_tokens"] = sum(sizes)
        row["loss_tokens"] = sum(size for size, message in zip(sizes, row["messages"]) if message["loss"])
