"""Splitting a job's records into the peers' ranges (seed 001's `peers.ts`): contiguous, in index order, sizes
differing by at most one, the first peers taking the remainder; every index in exactly one range."""

from __future__ import annotations


def peer_ids(count: int) -> list[str]:
    return [f"peer-{index}" for index in range(count)]


def split_ranges(total: int, peers: int) -> list[tuple[int, int]]:
    """`peers` half-open ranges [start, end) covering 0..total-1 exactly; with fewer records than peers, only as many
    peers as records (no peer gets an empty range)."""
    if total < 1 or peers < 1:
        raise ValueError(f"need at least one record and one peer, got {total} records and {peers} peers")
    peers = min(peers, total)
    size, extra = divmod(total, peers)
    ranges, start = [], 0
    for index in range(peers):
        end = start + size + (1 if index < extra else 0)
        ranges.append((start, end))
        start = end
    return ranges
