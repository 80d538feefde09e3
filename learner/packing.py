"""Packing examples into fixed-length rows without splitting any, and laying a micro-batch out as tensors' arrays.

Packing is best-fit decreasing over one window of examples: the longest first, each into the row
whose free space it fills best. A row holds whole examples; its tail, if any, is padding. Position
ids restart at 0 for every example (and for the padding), which is how the model's attention keeps
examples apart: Hugging Face derives a block-diagonal causal mask from restarting position ids for
sdpa, eager and flex attention (only when the forward pass has no KV cache: the trainer calls the decoder with
`use_cache=False`); the varlen kernels (flash-attention's, PyTorch's) get the same boundaries as cut points from the
trainer (`learner.attention.decoder_kwargs`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from learner.chat import IGNORE, Example

Row = tuple[Example, ...]


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of the items in each row, best-fit decreasing; every length must be <= capacity."""
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, row index), sorted
    for index in order:
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"an item of length {length} does not fit rows of {capacity}")
        at = bisect.bisect_left(free, (length, -1))
        if at < len(free):
            space, row = free.pop(at)
        else:
            space, row = capacity, len(rows)
            rows.append([])
        rows[row].append(index)
        if space - length > 0:
            bisect.insort(free, (space - length, row))
    return rows


def pack_examples(examples: Sequence[Example], capacity: int) -> list[Row]:
    return [tuple(examples[index] for index in row) for row in pack([len(example) for example in examples], capacity)]


def layout(rows: Sequence[Row | None], seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """`input_ids`, `position_ids`, `targets` of shape (len(rows), seq_len); a None row is all padding."""
    input_ids = np.full((len(rows), seq_len), pad_id, dtype=np.int64)
    position_ids = np.zeros((len(rows), seq_len), dtype=np.int64)
    targets = np.full((len(rows), seq_len), IGNORE, dtype=np.int64)
    for batch_index, row in enumerate(rows):
        offset = 0
        for example in row or ():
            end = offset + len(example)
            input_ids[batch_index, offset:end] = example.input_ids
            targets[batch_index, offset:end] = example.targets
            position_ids[batch_index, offset:end] = np.arange(len(example))
            offset = end
        position_ids[batch_index, offset:] = np.arange(seq_len - offset)
    return {"input_ids": input_ids, "position_ids": position_ids, "targets": targets}


def row_stats(rows: Sequence[Row | None]) -> dict[str, int]:
    """Real tokens, loss tokens and the sum of squared example lengths (attention FLOPs) of some rows."""
    examples = [example for row in rows for example in (row or ())]
    return {
        "tokens": sum(len(example) for example in examples),
        "loss_tokens": sum(example.loss_tokens for example in examples),
        "squared_lengths": sum(len(example) ** 2 for example in examples),
    }
