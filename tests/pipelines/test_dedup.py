"""MinHash-LSH deduplication: the banded candidate search finds what comparing every pair finds."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from pipelines.build.dedup import Candidate, band_layout, candidate_pairs, content_hash, find_duplicates, signature, similarity

NUM_PERM, SEED, THRESHOLD = 128, 1, 0.8


def _reference_clusters(candidates: list[Candidate]) -> set[frozenset[str]]:
    """Connected components of 'same content, or estimated Jaccard >= threshold' over every pair."""
    parent = {c.session_id: c.session_id for c in candidates}

    def root(key):
        while parent[key] != key:
            key = parent[key]
        return key

    for a, b in itertools.combinations(candidates, 2):
        if a.content_hash == b.content_hash or similarity(a.signature, b.signature) >= THRESHOLD:
            first, second = root(a.session_id), root(b.session_id)
            parent[max(first, second)] = min(first, second)
    clusters: dict[str, set[str]] = {}
    for c in candidates:
        clusters.setdefault(root(c.session_id), set()).add(c.session_id)
    return {frozenset(members) for members in clusters.values() if len(members) > 1}


def _planted(count: int) -> list[Candidate]:
    """Unrelated texts plus copies with a few words changed (near) and verbatim copies (exact)."""
    rng = np.random.default_rng(7)
    vocabulary = [f"word{i}" for i in range(3000)]
    texts: list[str] = []
    for index in range(count):
        if index % 7 == 3:
            words = texts[int(rng.integers(0, len(texts)))].split(" ")
            for position in rng.integers(0, len(words), size=max(1, len(words) // 60)):
                words[position] = vocabulary[int(rng.integers(0, len(vocabulary)))]
            texts.append(" ".join(words))
        elif index % 11 == 5:
            texts.append(texts[-1])
        else:
            texts.append(" ".join(rng.choice(vocabulary, size=int(rng.integers(80, 200)))))
    return [Candidate(f"s{i:04d}", content_hash(text), float(i % 5), signature(text, 5, NUM_PERM, SEED)) for i, text in enumerate(texts)]


def test_banded_search_finds_the_same_duplicate_clusters_as_every_pair():
    candidates = _planted(300)
    hashes = {c.session_id: c.content_hash for c in candidates}
    dropped = find_duplicates(candidates, THRESHOLD, NUM_PERM)
    clusters: dict[str, set[str]] = {}
    for item in dropped:
        clusters.setdefault(item.kept, {item.kept}).add(item.dropped)
        assert item.kind == ("exact" if hashes[item.dropped] == hashes[item.kept] else "near")
    reference = _reference_clusters(candidates)
    assert len(reference) >= 20
    assert {frozenset(members) for members in clusters.values()} == reference
    assert {"exact", "near"} <= {item.kind for item in dropped}


def test_every_group_keeps_its_best_member_a_training_eligible_one_first():
    candidates = [dataclasses.replace(c, eligible=i % 3 != 0) for i, c in enumerate(_planted(200))]  # every third cannot train
    rank = {c.session_id: (not c.eligible, -c.score, c.session_id) for c in candidates}
    dropped = find_duplicates(candidates, THRESHOLD, NUM_PERM)
    assert dropped and any(rank[item.kept][1] > rank[item.dropped][1] for item in dropped)  # a lower score kept for its eligibility
    for item in dropped:
        assert rank[item.kept] < rank[item.dropped]
        assert item.kept not in {other.dropped for other in dropped}


def test_candidate_pairs_are_exactly_the_pairs_sharing_a_whole_band():
    rng = np.random.default_rng(3)
    bands, rows = 6, 4
    signatures = rng.integers(0, 4, size=(60, bands * rows), dtype=np.uint32)  # small values: many bands match by chance
    expected = {(i, j) for i, j in itertools.combinations(range(len(signatures)), 2)
                if any(np.array_equal(signatures[i, b * rows : (b + 1) * rows], signatures[j, b * rows : (b + 1) * rows]) for b in range(bands))}
    found = candidate_pairs(signatures, bands, rows)
    assert expected and {tuple(pair) for pair in found.tolist()} == expected
    assert len(found) == len(expected)


def test_band_layout_uses_at_most_the_permutations_and_lowers_rows_with_the_threshold():
    layouts = {threshold: band_layout(threshold, NUM_PERM) for threshold in (0.3, 0.6, 0.9)}
    assert all(bands * rows <= NUM_PERM for bands, rows in layouts.values())
    assert layouts[0.3][1] < layouts[0.6][1] < layouts[0.9][1]
    bands, rows = layouts[0.6]
    assert 1 - (1 - 0.8**rows) ** bands > 0.98  # at the build's 0.8 threshold, under 2% of the pairs are missed


def _template_family(count: int, changes: list[int]) -> list[Candidate]:
    """`count` copies of one text, copy i with `changes[i % len(changes)]` words replaced: one band bucket holds most of them."""
    rng = np.random.default_rng(11)
    vocabulary = [f"word{i}" for i in range(3000)]
    template = list(rng.choice(vocabulary, size=300))
    candidates = []
    for index in range(count):
        words = list(template)
        for position in rng.integers(0, len(words), size=changes[index % len(changes)]):
            words[position] = f"changed{index}x{position}"
        text = " ".join(words)
        candidates.append(Candidate(f"t{index:04d}", content_hash(text), float(index % 5), signature(text, 5, NUM_PERM, SEED)))
    return candidates


def test_a_bucket_of_many_near_copies_is_joined_without_comparing_every_pair_of_it(monkeypatch):
    # 4,000 copies of one template took 181 s and 3.6 GB on the build's driver: every pair of a band bucket was formed,
    # for each of the 18 bands, before any was checked; now a large bucket is joined member by member
    import pipelines.build.dedup as dedup

    compared = []
    real = dedup._similar_pairs
    monkeypatch.setattr(dedup, "_similar_pairs", lambda signatures, pairs, threshold: compared.append(len(pairs)) or real(signatures, pairs, threshold))
    candidates = _template_family(400, [1, 2, 12, 25])  # near copies, and copies that share bands yet fall under the threshold
    dropped = find_duplicates(candidates, THRESHOLD, NUM_PERM)
    clusters: dict[str, set[str]] = {}
    for item in dropped:
        clusters.setdefault(item.kept, {item.kept}).add(item.dropped)
    assert {frozenset(members) for members in clusters.values()} == _reference_clusters(candidates)
    assert len(dropped) > 150 and sum(compared) < 400 * dedup.LARGE_BUCKET
