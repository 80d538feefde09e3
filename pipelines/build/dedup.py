"""Deduplication: exact by a normalized content hash, near-duplicates by MinHash-LSH over step text.

A session's text is its steps' types, contents and tool arguments, lower-cased with whitespace
collapsed (timestamps and step numbers left out, so a replay of the same work hashes the same); the
exact hash covers every step. Near-duplicate shingles (`shingle_size` consecutive words) come from the
action, edit, observation and error steps only: the same work narrated in other words (the recorded
example 07 rewords 06's prose: 0.53 Jaccard over all steps, 0.86 over the work steps) is a
near-duplicate, while unrelated sessions stay under 0.05. Signatures are computed in the processing
tasks with numpy (multiply-shift hashes over crc32-based shingle hashes, far faster than datasketch's
sha1 per shingle); the driver only clusters, with numpy banding (LSH): exact groups first, then the pairs
sharing a whole band whose estimated Jaccard reaches `threshold`, joined transitively (a band bucket of more than
LARGE_BUCKET sessions, the near-copies of one template, member by member: no quadratic list of pairs). In each group the
best session is kept (a training-eligible one before any other, then the best-scored, then the smaller
session id), so a copy that could become an sft row is never dropped for one that cannot; every other is recorded with
the session that stays in its place, so `kept_session_id` is always a curated row: `exact` when the
content is the same, `near` otherwise (an exact copy of a near-duplicate points past it).
"""

from __future__ import annotations

import functools
import hashlib
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

_SPACE = re.compile(r"\s+")
LSH_RECALL_FACTOR = 0.75


def normalized_text(parts: list[str]) -> str:
    return _SPACE.sub(" ", " ".join(parts)).strip().lower()


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_WORD_MIX = 0x9E3779B1  # combines a shingle's word hashes (polynomial, mod 2**32)


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd multipliers
    return a, generator.randint(0, 1 << 63, size=num_perm, dtype=np.uint64)


def shingle_hashes(text: str, size: int) -> np.ndarray:
    """32-bit hashes of the text's distinct `size`-word shingles, computed from crc32 word hashes with numpy."""
    words = text.split(" ")
    cache: dict[str, int] = {}
    hashed = np.fromiter((cache.setdefault(word, zlib.crc32(word.encode("utf-8"))) for word in words), dtype=np.uint64, count=len(words))
    if len(words) <= size:
        return np.array([zlib.crc32(text.encode("utf-8"))], dtype=np.uint64)
    combined = np.zeros(len(words) - size + 1, dtype=np.uint64)
    for offset in range(size):
        combined = (combined * np.uint64(_WORD_MIX) + hashed[offset : offset + len(combined)]) & np.uint64(0xFFFFFFFF)
    return np.unique(combined)


def signature(text: str, size: int, num_perm: int, seed: int) -> bytes:
    """The MinHash signature of the text's shingles: for each of `num_perm` random multiply-shift hashes
    `(a * h + b) mod 2**64 >> 32` (universal, no modulo to compute), the smallest value, as little-endian uint32."""
    a, b = _permutations(num_perm, seed)
    hashes = shingle_hashes(text, size)
    values = np.full(num_perm, 0xFFFFFFFF, dtype=np.uint64)
    for start in range(0, len(hashes), 512):  # bounded memory for very long sessions
        block = hashes[start : start + 512]
        permuted = (a[:, None] * block[None, :] + b[:, None]) >> np.uint64(32)
        values = np.minimum(values, permuted.min(axis=1))
    return values.astype("<u4").tobytes()


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity: the share of equal signature values."""
    return float(np.mean(np.frombuffer(a, "<u4") == np.frombuffer(b, "<u4")))


@dataclass(frozen=True)
class Candidate:
    session_id: str
    content_hash: str
    score: float
    signature: bytes
    eligible: bool = True  # training_eligible: a copy that can become an sft row beats one that cannot, whatever the scores


@dataclass(frozen=True)
class Dropped:
    dropped: str
    kept: str
    kind: str  # exact | near
    similarity: float
    dropped_score: float
    kept_score: float

    def as_row(self) -> dict[str, Any]:
        return {"dropped_session_id": self.dropped, "kept_session_id": self.kept, "kind": self.kind,
                "similarity": round(self.similarity, 6), "dropped_score": self.dropped_score, "kept_score": self.kept_score}


def _rank(candidate: Candidate) -> tuple[bool, float, str]:
    return (not candidate.eligible, -candidate.score, candidate.session_id)


def band_layout(threshold: float, num_perm: int) -> tuple[int, int]:
    """The LSH banding (bands, rows per band; bands * rows <= num_perm) for a similarity threshold.

    Two signatures become candidates when any band matches whole, with probability
    1 - (1 - s**rows)**bands at similarity s; the layout minimizes the false-positive area below the
    threshold plus the false-negative area above it, the usual choice (datasketch's among them).
    """
    grid = np.linspace(0.0, 1.0, 2001)
    step = grid[1] - grid[0]
    below = grid <= threshold
    best, layout = np.inf, (1, num_perm)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            chance = 1.0 - (1.0 - grid**rows) ** bands
            misses = np.where(below, chance, 1.0 - chance)
            error = float(np.sum((misses[1:] + misses[:-1]) / 2) * step)
            if error < best:
                best, layout = error, (bands, rows)
    return layout


_BAND_MIX = np.uint64(0x9E3779B97F4A7C15)  # folds a band's values into one 64-bit key


def _buckets(signatures: np.ndarray, band: int, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of `signatures` ordered by their key in one band, and where each run of equal keys starts and how long it is."""
    keys = np.zeros(len(signatures), dtype=np.uint64)
    for column in range(band * rows, (band + 1) * rows):
        keys = keys * _BAND_MIX + signatures[:, column].astype(np.uint64)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return order, starts, np.diff(np.r_[starts, len(ordered)])


def _bucket_pairs(order: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Every pair (i < j) within each run of more than one row."""
    found = []
    for size in np.unique(lengths[lengths > 1]):
        first, second = np.triu_indices(int(size), 1)
        runs = starts[lengths == size][:, None]
        found.append(np.sort(np.stack([order[runs + first].ravel(), order[runs + second].ravel()], axis=1), axis=1))
    return found


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Index pairs (i < j, sorted, distinct) of the rows of `signatures` (n x num_perm uint32) that share a whole band."""
    found = [np.empty((0, 2), dtype=np.int64)]
    for band in range(bands):
        found += _bucket_pairs(*_buckets(signatures, band, rows))
    return np.unique(np.concatenate(found), axis=0)


def _similar_pairs(signatures: np.ndarray, pairs: np.ndarray, threshold: float) -> np.ndarray:
    keep = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), 65536):  # bounded memory: one chunk of pairs compared at a time
        chunk = pairs[start : start + 65536]
        keep[start : start + len(chunk)] = (signatures[chunk[:, 0]] == signatures[chunk[:, 1]]).mean(axis=1) >= threshold
    return pairs[keep]


LARGE_BUCKET = 64  # rows sharing one band key beyond which a bucket is joined row by row instead of pair by pair


def _roots(parent: np.ndarray, items: np.ndarray) -> np.ndarray:
    roots = parent[items]
    while not np.array_equal(up := parent[roots], roots):
        roots = up
    parent[items] = roots
    return roots


def _join(parent: np.ndarray, roots: set[int]) -> None:
    parent[list(roots)] = min(roots)


def _join_bucket(parent: np.ndarray, signatures: np.ndarray, members: np.ndarray, threshold: float) -> None:
    """Join the members of one large bucket as its verified pairs would, without forming its pairs: each member is
    compared with the earlier members of the groups it is not in yet, first with one member of each group (a match
    joins the whole group), then with the rest of the groups that did not match. Thousands of near-copies of one
    template cost a comparison each, not one per pair (a quadratic number, gigabytes of pairs)."""
    if len(np.unique(_roots(parent, members))) == 1:
        return
    for position in range(1, len(members)):
        earlier, roots = members[:position], _roots(parent, members[:position])
        own = int(_roots(parent, members[position : position + 1])[0])
        others = roots != own
        if not others.any():
            continue
        candidates, their_roots = earlier[others], roots[others]
        groups, first = np.unique(their_roots, return_index=True)
        signature = signatures[members[position]]
        agree = (signatures[candidates[first]] == signature).mean(axis=1) >= threshold
        matched = set(groups[agree].tolist())
        rest = ~np.isin(their_roots, groups[agree])
        rest[first] = False
        if rest.any():
            near = (signatures[candidates[rest]] == signature).mean(axis=1) >= threshold
            matched.update(their_roots[rest][near].tolist())
        if matched:
            _join(parent, matched | {own})


def groups_of(signatures: np.ndarray, bands: int, rows: int, threshold: float) -> np.ndarray:
    """Each row's group (its smallest member): rows sharing a whole band whose signatures agree on at least `threshold`
    of their values, joined transitively. Buckets of up to LARGE_BUCKET rows go pair by pair, larger ones `_join_bucket`."""
    parent = np.arange(len(signatures))
    small = [np.empty((0, 2), dtype=np.int64)]
    for band in range(bands):
        order, starts, lengths = _buckets(signatures, band, rows)
        large = lengths > LARGE_BUCKET
        small += _bucket_pairs(order, starts, np.where(large, 0, lengths))
        for start, length in zip(starts[large].tolist(), lengths[large].tolist()):
            _join_bucket(parent, signatures, order[start : start + length], threshold)
    for a, b in _similar_pairs(signatures, np.unique(np.concatenate(small), axis=0), threshold).tolist():
        first, second = _roots(parent, np.array([a, b]))
        if first != second:
            _join(parent, {int(first), int(second)})
    return _roots(parent, np.arange(len(signatures)))


def find_duplicates(candidates: list[Candidate], threshold: float, num_perm: int) -> list[Dropped]:
    """Every session to drop, with the kept session it duplicates; deterministic for a given input."""
    dropped: list[Dropped] = []
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.content_hash, []).append(candidate)
    for group in groups.values():
        group.sort(key=_rank)
    representatives = [group[0] for group in groups.values()]

    representatives.sort(key=lambda candidate: candidate.session_id)
    signatures = np.frombuffer(b"".join(c.signature for c in representatives), dtype="<u4").reshape(len(representatives), num_perm)
    # Bands laid out for a lower threshold find almost every pair at `threshold` (at 0.8, bands for
    # 0.8 miss a quarter of the pairs at 0.86); each candidate pair is then checked on its full signature.
    bands, rows = band_layout(max(threshold * LSH_RECALL_FACTOR, 0.2), num_perm)
    clusters: dict[int, list[Candidate]] = {}
    for group, candidate in zip(groups_of(signatures, bands, rows, threshold).tolist(), representatives):
        clusters.setdefault(group, []).append(candidate)
    survivor: dict[str, Candidate] = {}
    for members in clusters.values():
        members.sort(key=_rank)
        survivor.update((member.session_id, members[0]) for member in members)
    # Every dropped session points at the copy that stays, even when its exact group's best is itself a near-duplicate.
    for group in groups.values():
        best = survivor[group[0].session_id]
        for other in group if best is not group[0] else group[1:]:
            dropped.append(Dropped(other.session_id, best.session_id, "exact" if other.content_hash == best.content_hash else "near",
                                   similarity(other.signature, best.signature), other.score, best.score))
    return sorted(dropped, key=lambda item: item.dropped)
