"""Guided decoding for the `transformers` engine: the output follows the request's structured output (a JSON
schema, a regex the whole answer matches, or one of some strings).

Each is compiled to a grammar by llguidance (the library vLLM also offers for structured outputs): a schema by its
JSON-schema compiler, a regex as it is, choices as a Lark rule of string literals. Before each sampling step the
tokens that cannot continue a valid answer get -inf, ahead of temperature and top-p, and once the answer is complete
only end-of-sequence remains. A regex takes llguidance's (Rust) syntax: no look-around or back-references.
The log-probabilities the engine reports stay those of the model's raw distribution.
"""

from __future__ import annotations

import json
from typing import Any

from transformers import LogitsProcessor

from actors.engines.types import InvalidRequest, StructuredOutput

# Documents laid out as json.dumps writes them (no free whitespace for a model to wander in), and
# schema keywords the compiler does not implement (formats, $schema...) ignored rather than refused.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}


class OutputGuide:
    """One tokenizer's grammar compiler; `processor(structured)` gives a fresh per-request logits processor."""

    def __init__(self, tokenizer: Any, vocab_size: int):
        import llguidance.hf

        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)

    def processor(self, structured: StructuredOutput):
        """A `generate` logits processor for one request; InvalidRequest names what is wrong with the constraint."""
        from llguidance import LLMatcher

        kind = "json_schema" if structured.json_schema is not None else "regex" if structured.regex is not None else "choice"
        try:
            if structured.json_schema is not None:
                grammar = LLMatcher.grammar_from_json_schema(json.dumps(structured.json_schema), defaults=JSON_STYLE)
            elif structured.regex is not None:
                grammar = LLMatcher.grammar_from_regex(structured.regex)
            else:  # JSON's string escapes are also Lark's
                grammar = LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(option) for option in structured.choice))
        except ValueError as exc:
            raise InvalidRequest(f"{kind} is not usable: {exc}") from None
        matcher = LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(f"{kind} is not usable: {matcher.get_error()}")
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
