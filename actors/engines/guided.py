"""Guided JSON for the `transformers` engine: the output follows the request's JSON schema.

The schema is compiled to a grammar by llguidance (the library vLLM also offers for structured
outputs); before each sampling step the tokens that cannot continue a valid document get -inf,
ahead of temperature and top-p, and once the document is complete only end-of-sequence remains.
The log-probabilities the engine reports stay those of the model's raw distribution.
"""

from __future__ import annotations

import json
from typing import Any

from transformers import LogitsProcessor

from actors.engines.types import InvalidRequest

# Documents laid out as json.dumps writes them (no free whitespace for a model to wander in), and
# schema keywords the compiler does not implement (formats, $schema...) ignored rather than refused.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}


class SchemaGuide:
    """One tokenizer's grammar compiler; `processor(schema)` gives a fresh per-request logits processor."""

    def __init__(self, tokenizer: Any, vocab_size: int):
        import llguidance.hf

        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)

    def processor(self, schema: dict[str, Any]):
        """A `generate` logits processor for one request; InvalidRequest names what is wrong with the schema."""
        from llguidance import LLMatcher

        try:
            grammar = LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_STYLE)
        except ValueError as exc:
            raise InvalidRequest(f"json_schema is not usable: {exc}") from None
        matcher = LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(f"json_schema is not usable: {matcher.get_error()}")
        return _Processor(matcher)


class _Processor(LogitsProcessor):
    """Masks, at each step, what the grammar does not allow after the tokens sampled so far (batch of one)."""

    def __init__(self, matcher: Any):
        self.matcher = matcher
        self.started = False  # the first call sees the prompt; each later one, the token sampled since

    def __call__(self, input_ids, scores):
        import numpy as np
        import torch

        if self.started:
            self.matcher.consume_token(int(input_ids[0, -1]))
        self.started = True
        allowed = np.frombuffer(self.matcher.compute_logit_bias(), dtype=np.uint8)[: scores.shape[-1]]
        blocked = torch.ones(scores.shape[-1], dtype=torch.bool)
        blocked[: allowed.shape[0]] = torch.from_numpy(allowed == 0)
        return scores.masked_fill(blocked.to(scores.device), float("-inf"))
