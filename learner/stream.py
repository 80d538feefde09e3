"""The training stream: an endless, deterministic sequence of packed rows, and a cursor that says where it is.

Window k holds `window` examples drawn from the builds by weight (a draw seeded by (seed, k)); each
build is read in a fresh seeded permutation per pass over it. The window is tokenized and packed, and
its rows are shuffled (seeded too). Everything is a function of (seed, k), so the cursor
(window, rows of it already taken) is the whole data position: a resumed run re-creates window k
alone and skips the rows it had taken, without reading anything before it. Every worker computes
the same stream and takes its own slice of each step's rows; the next window is prepared in a
background thread while the current one trains (the tokenizer releases the GIL).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from learner.chat import ChatEncoder
from learner.packing import Row, pack_examples

EMPTY_WINDOWS_LIMIT = 8


@dataclass(frozen=True)
class Cursor:
    window: int = 0
    offset: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"window": self.window, "offset": self.offset}


class Mixture:
    """Which (source, row) each example of window k is: draws by weight, rows by per-pass permutations."""

    def __init__(self, sizes: list[int], weights: list[float], window: int, seed: int):
        self.sizes, self.window, self.seed = sizes, window, seed
        total = float(sum(weights))
        self.probabilities = np.asarray([weight / total for weight in weights])
        self._starts: list[np.ndarray] = [np.zeros(len(sizes), dtype=np.int64)]  # per window: rows taken before it, per source
        self._permutations: dict[tuple[int, int], np.ndarray] = {}

    def _choices(self, k: int) -> np.ndarray:
        if len(self.sizes) == 1:
            return np.zeros(self.window, dtype=np.int64)
        return np.random.default_rng([self.seed, k, 0]).choice(len(self.sizes), size=self.window, p=self.probabilities)

    def _start(self, k: int) -> np.ndarray:
        while len(self._starts) <= k:
            done = len(self._starts) - 1
            self._starts.append(self._starts[done] + np.bincount(self._choices(done), minlength=len(self.sizes)))
        return self._starts[k]

    def _row(self, source: int, position: int) -> int:
        size = self.sizes[source]
        key = (source, position // size)
        if key not in self._permutations:
            if len(self._permutations) > 4 * len(self.sizes):
                self._permutations.clear()
            self._permutations[key] = np.random.default_rng([self.seed, source, key[1], 1]).permutation(size)
        return int(self._permutations[key][position % size])

    def window_rows(self, k: int) -> list[tuple[int, int]]:
        choices = self._choices(k)
        position = self._start(k).copy()
        rows = []
        for source in choices:
            rows.append((int(source), self._row(int(source), int(position[source]))))
            position[source] += 1
        return rows


def encode_rows(tables: list[pa.Table], picks: list[tuple[int, int]], encoder: ChatEncoder) -> list:
    """The examples of some (source, row) picks, in pick order (None where the encoder dropped one)."""
    messages: list = [None] * len(picks)
    for source, table in enumerate(tables):
        wanted = [(at, row) for at, (chosen, row) in enumerate(picks) if chosen == source]
        if wanted:
            fetched = table.column("messages").take(pa.array([row for _, row in wanted])).to_pylist()
            for (at, _), value in zip(wanted, fetched):
                messages[at] = value
    return encoder.encode(messages)


class PackedStream:
    def __init__(self, tables: list[pa.Table], weights: list[float], encoder: ChatEncoder, *, window: int, seed: int,
                 cursor: Cursor = Cursor()):
        self.tables, self.encoder, self.seed = tables, encoder, seed
        self.mixture = Mixture([table.num_rows for table in tables], weights, window, seed)
        self.cursor = cursor
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pack")
        self._pending: dict[int, Future] = {}
        self._current: tuple[int, list[Row]] | None = None

    def _window(self, k: int) -> list[Row]:
        examples = [example for example in encode_rows(self.tables, self.mixture.window_rows(k), self.encoder) if example is not None]
        rows = pack_examples(examples, self.encoder.seq_len)
        order = np.random.default_rng([self.seed, k, 2]).permutation(len(rows))
        return [rows[index] for index in order]

    def _rows_of(self, k: int) -> list[Row]:
        """Window k's rows (kept while it is being consumed); asks for window k + 1 in the background."""
        if self._current is not None and self._current[0] == k:
            return self._current[1]
        future = self._pending.pop(k, None) or self._executor.submit(self._window, k)
        self._pending = {k + 1: self._pending.get(k + 1) or self._executor.submit(self._window, k + 1)}
        self._current = (k, future.result())
        return self._current[1]

    def take(self, count: int) -> list[Row]:
        """The next `count` packed rows; the cursor moves past them."""
        taken: list[Row] = []
        window, offset, empty = self.cursor.window, self.cursor.offset, 0
        rows = self._rows_of(window)
        while len(taken) < count:
            if offset >= len(rows):
                empty = empty + 1 if not rows else 0
                if empty >= EMPTY_WINDOWS_LIMIT:
                    raise RuntimeError(f"{EMPTY_WINDOWS_LIMIT} windows in a row gave no trainable example "
                                       f"(dropped so far: {dict(self.encoder.dropped)}); {self._advice()}")
                window, offset = window + 1, 0
                rows = self._rows_of(window)
                continue
            grab = rows[offset : offset + count - len(taken)]
            taken += grab
            offset += len(grab)
        self.cursor = Cursor(window, offset)
        return taken

    def _advice(self) -> str:
        if self.encoder.dropped["loss_after_seq_len"]:
            return (f"the turns marked for loss begin after the first learner.data.seq_len ({self.encoder.seq_len}) tokens, "
                    "where examples are cut: raise it")
        return "check the builds and the chat template"

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def dev_rows(tables: list[pa.Table], encoder: ChatEncoder, *, limit: int, window: int) -> list[Row]:
    """Up to `limit` packed rows of the dev splits (the same every evaluation): the builds' rows taken in turn, each build's
    in file order, so that every build of a mixture is evaluated (the first build's rows alone filled the first window),
    and each window's packed rows in a seeded shuffle, as training's are (packing lays out the longest examples first, and
    the first rows alone were the evaluation)."""
    rows: list[Row] = []
    picks = sorted(((source, row) for source, table in enumerate(tables) for row in range(table.num_rows)), key=lambda pick: (pick[1], pick[0]))
    for start in range(0, len(picks), window):
        examples = [example for example in encode_rows(tables, picks[start : start + window], encoder) if example is not None]
        packed = pack_examples(examples, encoder.seq_len)
        rows += [packed[index] for index in np.random.default_rng([start, 3]).permutation(len(packed))]
        if len(rows) >= limit:
            break
    return rows[:limit]
