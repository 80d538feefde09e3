"""Deduplication: exact by a normalized content hash, near-duplicates by MinHash-LSH over step text.

A session's text is its steps' types, contents and tool arguments, lower-cased with whitespace
collapsed (timestamps and step numbers left out, so a replay of the same work hashes the same); the
exact hash covers every step. Near-duplicate shingles (`shingle_size` consecutive words) come from the
action, edit, observation and error steps only: the same work narrated in other words (the recorded
example 07 rewords 06's prose: 0.53 Jaccard over all steps, 0.86 over the work steps) is a
near-duplicate, while unrelated sessions stay under 0.05. Signatures are computed in the processing
tasks with numpy (multiply-shift hashes over crc32-based shingle hashes, far faster than datasketch's
sha1 per shingle); the driver only clusters, with `datasketch.MinHashLSH`: exact groups first, then LSH
candidates whose estimated Jaccard reaches `threshold`, joined transitively. In each group the
best-scored session is kept (ties: the smaller session id) and every other one is recorded with
the session it duplicated.
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
SCHEME = "affine32"  # the label datasketch's LSH wants for 32-bit hash values
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


def _rank(candidate: Candidate) -> tuple[float, str]:
    return (-candidate.score, candidate.session_id)


def find_duplicates(candidates: list[Candidate], threshold: float, num_perm: int, seed: int) -> list[Dropped]:
    """Every session to drop, with the kept session it duplicates; deterministic for a given input."""
    from datasketch import LeanMinHash, MinHashLSH

    dropped: list[Dropped] = []
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.content_hash, []).append(candidate)
    representatives = []
    for group in groups.values():
        group.sort(key=_rank)
        best = group[0]
        representatives.append(best)
        dropped += [Dropped(other.session_id, best.session_id, "exact", 1.0, other.score, best.score) for other in group[1:]]

    representatives.sort(key=lambda candidate: candidate.session_id)
    # LSH bands tuned for a lower threshold find almost every pair at `threshold` (at 0.8, bands for
    # 0.8 miss a quarter of the pairs at 0.86); each candidate is then checked on its full signature.
    lsh = MinHashLSH(threshold=max(threshold * LSH_RECALL_FACTOR, 0.2), num_perm=num_perm)
    parent = {candidate.session_id: candidate.session_id for candidate in representatives}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    by_id = {candidate.session_id: candidate for candidate in representatives}
    for candidate in representatives:
        minhash = LeanMinHash(seed=seed, hashvalues=np.frombuffer(candidate.signature, "<u4"), scheme=SCHEME)
        for other in lsh.query(minhash):
            if similarity(candidate.signature, by_id[other].signature) >= threshold:
                a, b = root(candidate.session_id), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        lsh.insert(candidate.session_id, minhash)

    clusters: dict[str, list[Candidate]] = {}
    for candidate in representatives:
        clusters.setdefault(root(candidate.session_id), []).append(candidate)
    for members in clusters.values():
        if len(members) < 2:
            continue
        members.sort(key=_rank)
        best = members[0]
        dropped += [Dropped(other.session_id, best.session_id, "near", similarity(other.signature, best.signature), other.score, best.score)
                    for other in members[1:]]
    return sorted(dropped, key=lambda item: item.dropped)
