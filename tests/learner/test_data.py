"""The learner's data path without Ray: masking, packing, attention across packed examples, the loss, the stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sft_builds import conversation, rows, write_build

from learner.chat import IGNORE, ChatEncoder
from learner.loss import chunked_linear_cross_entropy, summed_loss
from learner.packing import layout, pack, pack_examples
from learner.sources import open_split, prepare_source
from learner.stream import Cursor, PackedStream
from trajforge.lake import Lake


def test_only_turns_marked_for_loss_have_targets(tokenizer):
    import random

    messages = conversation(7, random.Random(3))
    messages[1]["content"] = "USERSECRET please fix it"
    messages[3]["content"] = "TOOLSECRET exit 0"
    encoder = ChatEncoder(tokenizer, seq_len=1024)
    (example,) = encoder.encode([messages])
    trained = example.targets[example.targets != IGNORE]
    text = tokenizer.decode(trained)
    expected = "".join(m["content"] + tokenizer.eos_token for m in messages if m["loss"])
    assert text == expected  # every assistant turn and its end-of-turn token, nothing else
    assert "SECRET" not in text and "You are a coding agent" not in text
    # targets are the next tokens: where a target is set it equals the following input id
    positions = np.flatnonzero(example.targets != IGNORE)
    assert (example.targets[positions] == example.input_ids[positions + 1]).all()


@pytest.mark.parametrize("answer", ["a", "hi", "s", "assistant"])
def test_a_short_answer_that_the_role_header_also_spells_gets_the_loss_on_the_answer(tokenizer, answer):
    # "a" also occurs in "<|im_start|>assistant" just before the answer: the first occurrence put the loss on the header
    # (or none at all, and the example was dropped), never on the answer
    messages = [{"role": "user", "content": "start", "loss": False}, {"role": "assistant", "content": answer, "loss": True}]
    encoder = ChatEncoder(tokenizer, seq_len=256)
    (example,) = encoder.encode([messages])
    assert example is not None and not encoder.dropped
    assert tokenizer.decode(example.targets[example.targets != IGNORE]) == answer + tokenizer.eos_token


def test_masked_positions_get_no_gradient(tokenizer):
    """By construction: the summed loss's gradient is exactly zero at every position without a target."""
    encoder = ChatEncoder(tokenizer, seq_len=512)
    examples = [e for e in encoder.encode([r["messages"] for r in rows(3, seed=5)]) if e is not None]
    batch = layout(pack_examples(examples, 512), 512, tokenizer.pad_token_id)
    targets = torch.from_numpy(batch["targets"])
    hidden = torch.randn(*targets.shape, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(len(tokenizer), 16, dtype=torch.float64, requires_grad=True)
    summed_loss(hidden, weight, targets, implementation="chunked", chunk=7).backward()
    masked = targets == IGNORE
    assert masked.any() and (~masked).any()
    assert torch.count_nonzero(hidden.grad[masked]) == 0
    assert (hidden.grad[~masked].abs().sum(-1) > 0).all()


# The parts of Qwen3's chat template that reshape what the learner looks for: reasoning re-wrapped after the
# last user query and dropped before it, tool results shown as user turns in <tool_response>.
QWEN3_LIKE = (
    "{%- set ns = namespace(last=-1) %}{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}{%- set content = m.content %}{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
    "{%- if loop.index0 > ns.last and reasoning %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif m.role == 'tool' %}{{- '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
)


def test_a_template_that_reshapes_reasoning_keeps_the_loss_on_what_it_renders(tiny_model):
    from transformers import AutoTokenizer

    qwen_like = AutoTokenizer.from_pretrained(str(tiny_model))
    qwen_like.chat_template = QWEN3_LIKE
    messages = [
        {"role": "system", "content": "sys", "loss": False},
        {"role": "user", "content": "first task", "loss": False},
        {"role": "assistant", "content": "<think>\nold plan\n</think>", "loss": True},  # before the last query: not rendered
        {"role": "assistant", "content": "<think>\nold reason\n</think>\nold answer", "loss": True},  # rendered as the answer only
        {"role": "user", "content": "second task", "loss": False},
        {"role": "assistant", "content": "<think>\nplan\n</think>", "loss": True},
        {"role": "tool", "content": "TOOL OUTPUT", "loss": False},
        {"role": "assistant", "content": "<think>\n\nreason\n</think>\nanswer", "loss": True},
    ]
    encoder = ChatEncoder(qwen_like, seq_len=1024)
    (example,) = encoder.encode([messages])
    trained = qwen_like.decode(example.targets[example.targets != IGNORE])
    end = qwen_like.eos_token
    assert trained == f"old answer{end}<think>\nplan\n</think>\n\n{end}<think>\nreason\n</think>\n\nanswer{end}"
    assert encoder.turns_not_rendered == 1


def test_an_example_with_no_rendered_loss_turn_is_dropped(tokenizer):
    class Silent:
        eos_token = tokenizer.eos_token

        def apply_chat_template(self, messages, tokenize=False):
            return "".join(f"<{m['role']}>" for m in messages)

        def __call__(self, texts, **kwargs):
            return tokenizer(texts, **kwargs)

    encoder = ChatEncoder(Silent(), seq_len=256)
    assert encoder.encode([[{"role": "user", "content": "hi", "loss": False}, {"role": "assistant", "content": "done", "loss": True}]]) == [None]
    assert encoder.dropped["no_loss_turn_rendered"] == 1 and encoder.turns_not_rendered == 1


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunked_loss_matches_full_logits(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(37, 24, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(101, 24, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 101, (37,))
    expected = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    grad_hidden, grad_weight = torch.autograd.grad(expected * 0.5, (hidden, weight))
    got = chunked_linear_cross_entropy(hidden, weight, targets, chunk)
    mine_hidden, mine_weight = torch.autograd.grad(got * 0.5, (hidden, weight))
    assert torch.allclose(got.double(), expected, rtol=1e-6)
    assert torch.allclose(mine_hidden, grad_hidden, atol=1e-9) and torch.allclose(mine_weight, grad_weight, atol=1e-9)


def test_packing_keeps_examples_whole_and_rows_within_length():
    lengths = [70, 10, 33, 64, 1, 50, 50, 99, 2, 30]
    packed = pack(lengths, capacity=100)
    assert sorted(i for row in packed for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 100 for row in packed)
    assert len(packed) == -(-sum(lengths) // 100)  # best fit reaches the lower bound here
    with pytest.raises(ValueError):
        pack([101], capacity=100)


def test_position_ids_restart_per_example_and_padding_is_ignored(tokenizer):
    encoder = ChatEncoder(tokenizer, seq_len=400)
    examples = [e for e in encoder.encode([r["messages"] for r in rows(4, seed=2)]) if e is not None]
    packed = pack_examples(examples, 400)
    batch = layout(packed, 400, tokenizer.pad_token_id)
    for index, row in enumerate(packed):
        offset = 0
        for example in row:
            assert batch["position_ids"][index, offset] == 0
            assert (batch["position_ids"][index, offset : offset + len(example)] == np.arange(len(example))).all()
            assert batch["targets"][index, offset + len(example) - 1] == IGNORE  # never predicts the next example
            offset += len(example)
        assert (batch["targets"][index, offset:] == IGNORE).all() and (batch["input_ids"][index, offset:] == tokenizer.pad_token_id).all()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_attention_does_not_cross_packed_examples(tiny_model, tokenizer, attention):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32, attn_implementation=attention).eval()
    encoder = ChatEncoder(tokenizer, seq_len=512)
    first, second = [e for e in encoder.encode([r["messages"] for r in rows(2, seed=9)])]
    batch = {name: torch.from_numpy(value) for name, value in layout([(first, second)], 512, tokenizer.pad_token_id).items()}
    with torch.no_grad():  # without a cache, as the trainer calls it (a KV cache turns the packed-mask detection off)
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = [model(input_ids=torch.from_numpy(e.input_ids)[None], use_cache=False).logits[0] for e in (first, second)]
        continued = model(input_ids=batch["input_ids"], position_ids=torch.arange(512)[None], use_cache=False).logits[0]
    split = len(first)
    assert torch.allclose(packed[:split], alone[0], atol=1e-4)
    assert torch.allclose(packed[split : split + len(second)], alone[1], atol=1e-4)
    # the check can fail: without restarting positions, the second example does see the first
    assert not torch.allclose(continued[split : split + len(second)], alone[1], atol=1e-2)


@pytest.fixture
def two_builds(tmp_path, tiny_model):
    lake = tmp_path / "lake"
    write_build(lake, "b-small", rows(10, dev=2, seed=1))
    write_build(lake, "b-big", rows(30, dev=0, seed=2), files=2)
    return Lake.at(lake), tmp_path / "cache"


def test_stream_resumes_at_the_exact_row(two_builds, tokenizer):
    lake, cache = two_builds
    sources = [prepare_source(lake, "b-small", 1.0, cache), prepare_source(lake, "b-big", 3.0, cache)]
    tables = [open_split(s, "train") for s in sources]

    def stream(cursor=Cursor()):
        return PackedStream(tables, [1.0, 3.0], ChatEncoder(tokenizer, 256), window=8, seed=4, cursor=cursor)

    whole = stream()
    expected = whole.take(7) + whole.take(9)
    first = stream()
    head = first.take(7)
    resumed = stream(first.cursor)
    tail = resumed.take(9)
    assert [[e.input_ids.tolist() for e in row] for row in head + tail] == [[e.input_ids.tolist() for e in row] for row in expected]
    for s in (whole, first, resumed):
        s.close()


def test_builds_are_mixed_by_weight(two_builds):
    from learner.stream import Mixture

    mixture = Mixture([8, 30], [1.0, 3.0], window=400, seed=0)
    picks = [source for k in range(5) for source, _ in mixture.window_rows(k)]
    share = picks.count(1) / len(picks)
    assert 0.72 < share < 0.78
    rows_of_small = [row for k in range(5) for source, row in mixture.window_rows(k) if source == 0]
    assert sorted(rows_of_small[:8]) == list(range(8))  # one pass over a build is a permutation of it


def test_each_window_is_tokenized_once(two_builds, tokenizer):
    lake, cache = two_builds
    source = prepare_source(lake, "b-big", 1.0, cache)
    encoder = ChatEncoder(tokenizer, 256)
    calls = []
    encode = encoder.encode
    encoder.encode = lambda batch: calls.append(len(batch)) or encode(batch)
    stream = PackedStream([open_split(source, "train")], [1.0], encoder, window=20, seed=0)
    for _ in range(6):
        stream.take(1)
    stream.close()
    assert len(calls) <= 2  # window 0, and window 1 prepared ahead


def test_a_seq_len_that_cuts_off_every_loss_turn_says_to_raise_it(two_builds, tokenizer):
    lake, cache = two_builds
    source = prepare_source(lake, "b-small", 1.0, cache)
    encoder = ChatEncoder(tokenizer, 16)  # shorter than the system and user turns that come before the first loss turn
    stream = PackedStream([open_split(source, "train")], [1.0], encoder, window=4, seed=0)
    with pytest.raises(RuntimeError, match=r"begin after the first learner\.data\.seq_len \(16\) tokens.*raise it"):
        stream.take(1)
    stream.close()
    assert set(encoder.dropped) == {"loss_after_seq_len"}
