"""The loss covers the token the chat template ends an assistant turn with, whatever the tokenizer calls its eos token."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from learner.chat import IGNORE, ChatEncoder

MESSAGES = [{"role": "user", "content": "fix the parser", "loss": False}, {"role": "assistant", "content": "patched it", "loss": True}]


def _trained_text(tokenizer) -> str:
    (example,) = ChatEncoder(tokenizer, seq_len=256).encode([MESSAGES])
    return tokenizer.decode(example.targets[example.targets != IGNORE])


def test_a_base_models_eos_token_does_not_take_the_end_of_turn_out_of_the_loss(tiny_model):
    # Qwen3-14B-Base (as Qwen2.5's base models) ships the ChatML template with eos_token <|endoftext|>: the turns end with
    # <|im_end|>, which the model must learn to write, or it never stops
    base = AutoTokenizer.from_pretrained(str(tiny_model))
    base.eos_token = "<|endoftext|>"
    assert _trained_text(base) == "patched it<|im_end|>"


@pytest.mark.parametrize("template", [
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}",  # ChatML: eos is its end of turn
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}{% endif %}{% endfor %}",
    "{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system turn first') }}{% endif %}",
], ids=["chatml", "closes-nothing", "refuses-the-probe"])
def test_the_end_of_turn_is_the_eos_token_where_the_template_closes_with_it_with_nothing_or_cannot_say(tiny_model, template):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    tokenizer.chat_template = template
    assert ChatEncoder(tokenizer, seq_len=256).end_of_turn == "<|im_end|>"
