"""Cutting what the client sends into pieces the service takes: steps into envelopes, envelopes into batch
requests, events into requests, each within a count and a byte budget, in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from trajforge.spool import Spooled


def runs(sizes: Sequence[int], max_count: int, budget: int) -> list[tuple[int, int]]:
    """Consecutive `(start, end)` runs over items of these sizes (each with its separator), in order, each of at most
    `max_count` items and `budget` bytes; an item too large even alone gets a run of its own (the service then
    refuses it alone, never holding up the rest). No items: one empty run."""
    cut, start, used = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= max_count or used + size > budget):
            cut.append((start, index))
            start, used = index, 0
        used += size
    cut.append((start, len(sizes)))
    return cut


def fitting(items: list[Spooled], max_body_bytes: int) -> list[Spooled]:
    """The longest head of `items` whose batch body (a JSON array of their bodies) fits `max_body_bytes`; at least
    one item, so an envelope too large even alone is sent and refused (413) on its own, never holding up the rest."""
    if not items:
        return []
    _, end = runs([len(item.body) + 1 for item in items], len(items), max_body_bytes - 1)[0]  # "[" and "," / "]"
    return items[:end]


def pieces(items: list[Any], serialize: Callable[[Any], bytes], max_count: int, budget: int) -> list[list[Any]]:
    """`items` cut in order into lists of at most `max_count` items whose JSON array (each item as `serialize` writes
    it) fits `budget` bytes; an item too large even alone goes alone. No items: one empty list."""
    return [items[start:end] for start, end in runs([len(serialize(item)) + 1 for item in items], max_count, budget - 1)]
