"""DomainTagger (seed 004): a text's three nearest domain prototypes, in the envelope's `domain_tags` shape.

The prototypes live in `configs/domains.yaml`. With an embedder, each prototype's description is
embedded once and a text's domains are ranked by cosine similarity; without one (no model, or the
embed service unreachable), keyword counts rank them instead, and the result says which method ran.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trajforge.settings import read_yaml, validate

DEFAULT_DOMAINS = Path(__file__).resolve().parents[1] / "configs" / "domains.yaml"
RANKS = ("primary", "secondary", "tertiary")
EmbedFn = Callable[[list[str]], Sequence[Sequence[float]]]
log = logging.getLogger(__name__)


class Domain(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    """Text embedded as the domain's prototype."""
    keywords: list[str] = []
    """Words or phrases counted by the keyword fallback, case aside, as whole words (a plural -s or -es counts too):
    `java` is not in "javascript", nor `ci` in "decision"."""


class DomainsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domains: dict[str, Domain] = Field(min_length=3)
    """Domain name -> prototype; at least three, since a tag names three."""


def load_domains(path: str | Path = DEFAULT_DOMAINS, given_by: str | None = None) -> DomainsConfig:
    """The prototypes file; `given_by`, the flag that named `path` (`--domains`), is named when the file is missing."""
    return validate(DomainsConfig, read_yaml(path, given_by, kind="domains file"), str(path))


def keyword_pattern(keyword: str) -> re.Pattern[str]:
    """`keyword` as a whole word of a lower-cased text: not inside a longer word (`pip` in "pipeline"), a plural -s or
    -es allowed. An end that is not a letter or digit (`.py`, `next.js`) needs no boundary there."""
    head = r"(?<![a-z0-9])" if keyword[:1].isalnum() else ""
    tail = r"(?:e?s)?(?![a-z0-9])" if keyword[-1:].isalnum() else ""
    return re.compile(head + re.escape(keyword.lower()) + tail)


def _tags(scored: list[tuple[str, float]], method: str) -> dict[str, Any]:
    ranked = sorted(scored, key=lambda item: (-item[1], item[0]))[:3]
    tags: dict[str, Any] = {rank: {"domain": name, "confidence": round(min(max(score, 0.0), 1.0), 4)} for rank, (name, score) in zip(RANKS, ranked)}
    tags["method"] = method
    return tags


class DomainTagger:
    def __init__(self, config: DomainsConfig | None = None, embed: EmbedFn | None = None):
        self.config = config or load_domains()
        self.names = list(self.config.domains)
        self._keywords = {name: [keyword_pattern(keyword) for keyword in domain.keywords if keyword.strip()]
                          for name, domain in self.config.domains.items()}
        self._embed = embed
        self._prototypes = None
        if embed is not None:
            try:
                self._prototypes = [list(vector) for vector in embed([domain.description for domain in self.config.domains.values()])]
            except Exception as exc:  # the specification's tagger falls back to keywords silently; we say so once
                log.warning("domain tagging falls back to keywords: the embedder failed (%s)", exc)
                self._embed = None

    @property
    def method(self) -> str:
        return "embedding" if self._prototypes is not None else "keywords"

    def tag_vector(self, vector: Sequence[float]) -> dict[str, Any]:
        """Tags for an already embedded (unit-norm) text."""
        if self._prototypes is None:
            raise ValueError("this tagger has no embedder; use tag(text)")
        scored = [(name, float(sum(a * b for a, b in zip(vector, prototype)))) for name, prototype in zip(self.names, self._prototypes)]
        return _tags(scored, "embedding")

    def tag_vectors(self, vectors) -> list[dict[str, Any]]:
        """`tag_vector` for a matrix of vectors at once (one matrix product)."""
        import numpy as np

        if self._prototypes is None:
            raise ValueError("this tagger has no embedder; use tag(text)")
        scores = np.asarray(vectors, dtype=np.float32) @ np.asarray(self._prototypes, dtype=np.float32).T
        return [_tags(list(zip(self.names, row.tolist())), "embedding") for row in scores]

    def tag(self, text: str) -> dict[str, Any]:
        """`{"primary": {"domain", "confidence"}, "secondary": ..., "tertiary": ..., "method": ...}` (by keywords, only the
        ranks of domains the text names)."""
        if self._embed is not None:
            try:
                return self.tag_vector(self._embed([text])[0])
            except Exception as exc:  # an embed service that went away: keywords for this text, still tagged
                log.warning("domain tagging falls back to keywords for one text: the embedder failed (%s)", exc)
        return self.tag_keywords(text)

    def tag_keywords(self, text: str) -> dict[str, Any]:
        """Ranks only the domains whose keywords the text has: a text with none gets no rank at all (no domain),
        never the alphabetically first domains with confidence 0."""
        lowered = text.lower()
        counts = {name: sum(len(pattern.findall(lowered)) for pattern in patterns) for name, patterns in self._keywords.items()}
        total = sum(counts.values())
        return _tags([(name, count / total) for name, count in counts.items() if count], "keywords")
