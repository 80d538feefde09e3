"""The bytes of a sampled token, as OpenAI's `logprobs.content[].bytes` gives them.

A byte-level BPE tokenizer (Qwen's, GPT-2's, the embedded small model's) may cut a character: a token can hold the
first byte of `é` alone. Its text then decodes to U+FFFD, whose UTF-8 is not what was sampled; `bytes` is where a
client finds the real bytes and joins the pieces into the character. Such tokenizers spell each byte as one printable
character (GPT-2's table: printable Latin-1 stands for itself, every other byte for chr(256 + its rank)).
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _byte_of_stand_in() -> dict[str, int]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    return {**{chr(byte): byte for byte in printable}, **{chr(256 + rank): byte for rank, byte in enumerate(others)}}


def token_bytes(token_id: int, text: str, tokenizer: Any) -> list[int]:
    """The token's own bytes where the tokenizer spells it byte by byte; else its text's UTF-8 (a tokenizer that is not
    byte-level, or none: then a token that is part of a character gives U+FFFD's bytes)."""
    if tokenizer is not None:
        piece = tokenizer.convert_ids_to_tokens(token_id)
        table = _byte_of_stand_in()
        if isinstance(piece, str) and piece and all(char in table for char in piece):
            return [table[char] for char in piece]
    return list(text.encode("utf-8"))
