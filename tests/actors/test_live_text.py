"""LiveText: text released while tokens arrive is final, whatever the token boundaries."""

from __future__ import annotations

import pytest

from actors.engines.live_text import LiveText


@pytest.fixture(scope="module")
def tokenizer(small_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(small_model)


def _stream(tokenizer, text: str, stops: list[str]) -> tuple[list[str], LiveText]:
    live = LiveText(tokenizer, stops)
    return [live.add(token) for token in tokenizer.encode(text, add_special_tokens=False)], live


@pytest.mark.parametrize("text", ["def load_user(id):\n    return db.get(id)", "naïve café ✓ — ünïcode 日本語 🙂 end"])
def test_pieces_join_to_the_decoded_text_and_never_split_a_character(tokenizer, text):
    pieces, live = _stream(tokenizer, text, [])
    assert "".join(pieces) + live.finish(text) == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert len([piece for piece in pieces if piece]) > 3  # released as it comes, not all at the end


def test_nothing_at_or_after_a_stop_sequence_is_released(tokenizer):
    text = "plan: rename it <action>{\"rewrite\": 1}</action> trailing words"
    pieces, live = _stream(tokenizer, text, ["</action>"])
    released = "".join(pieces)
    assert released == text[: text.index("</action>")] and live.stopped
    assert live.finish(released) == ""


def test_a_possible_stop_prefix_is_held_until_it_cannot_be_one(tokenizer):
    live = LiveText(tokenizer, ["</state_update>"])
    held = "".join(live.add(token) for token in tokenizer.encode("done </state", add_special_tokens=False))
    assert "</state" not in held and not live.stopped
    rest = "".join(live.add(token) for token in tokenizer.encode("ment> more text here", add_special_tokens=False))
    assert (held + rest).startswith("done </statement>")
