"""learner/attention.py: packed rows attended example by example, through the model and the trainer's wrapper."""

from __future__ import annotations

import pytest
import torch
from sft_builds import rows

from learner import attention
from learner.chat import ChatEncoder
from learner.model import SFTModel
from learner.packing import layout


def test_segments_cut_rows_where_positions_restart():
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])
    segments = attention.packed_segments(position_ids)
    assert segments["packed_cu_seqlens"].tolist() == [0, 3, 5, 6, 10, 12]
    assert segments["packed_cu_seqlens"].dtype == torch.int32
    assert segments["packed_max_length"] == 4


def test_the_kernel_is_not_used_off_gpus():
    assert attention.kernel_works("cpu") is False


@pytest.fixture(scope="module")
def packed_batch(tokenizer):
    encoder = ChatEncoder(tokenizer, seq_len=512)
    first, second, third = encoder.encode([r["messages"] for r in rows(3, seed=5)])
    batch = layout([(first, second), (third,)], 512, tokenizer.pad_token_id)
    return {name: torch.from_numpy(value) for name, value in batch.items()}, (first, second, third)


def _model(tiny_model, implementation: str):
    from transformers import AutoModelForCausalLM

    if implementation == attention.NAME:
        attention.register()
    return AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32, attn_implementation=implementation)


def test_varlen_attention_keeps_packed_examples_apart(tiny_model, packed_batch):
    batch, (first, second, third) = packed_batch
    model = _model(tiny_model, attention.NAME).eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                       **attention.packed_segments(batch["position_ids"])).logits
        alone = [model(input_ids=torch.from_numpy(e.input_ids)[None], use_cache=False,
                       **attention.packed_segments(torch.arange(len(e))[None])).logits[0] for e in (first, second, third)]
    assert torch.allclose(packed[0, : len(first)], alone[0], atol=1e-4)
    assert torch.allclose(packed[0, len(first) : len(first) + len(second)], alone[1], atol=1e-4)
    assert torch.allclose(packed[1, : len(third)], alone[2], atol=1e-4)


def test_varlen_attention_without_its_segments_fails_with_the_reason(tiny_model, packed_batch):
    batch, _ = packed_batch
    model = _model(tiny_model, attention.NAME).eval()
    with pytest.raises(RuntimeError, match="packed_segments"):
        model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)


def test_the_trainers_loss_and_gradients_match_sdpa(tiny_model, packed_batch):
    batch, _ = packed_batch
    results = {}
    for implementation in ("sdpa", attention.NAME):
        torch.manual_seed(0)
        wrapper = SFTModel(_model(tiny_model, implementation), loss="chunked", chunk_tokens=256)
        loss = wrapper(batch["input_ids"], batch["position_ids"], batch["targets"])
        loss.backward()
        grads = {name: p.grad.clone() for name, p in wrapper.named_parameters() if p.grad is not None}
        results[implementation] = (loss.detach(), grads)
    (sdpa_loss, sdpa_grads), (varlen_loss, varlen_grads) = results["sdpa"], results[attention.NAME]
    assert torch.allclose(sdpa_loss, varlen_loss, rtol=1e-5)
    assert sdpa_grads.keys() == varlen_grads.keys() and len(sdpa_grads) > 10
    for name, grad in sdpa_grads.items():
        assert torch.allclose(grad, varlen_grads[name], atol=1e-5, rtol=1e-3), name


def _fake_kernel(calls: list[dict], new_api: bool):
    """A stand-in for torch.nn.attention.varlen.varlen_attn with one of its two signatures, computing per example."""
    if new_api:
        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1), enable_gqa=False):
            calls.append({"window_size": window_size, "scale": scale, "enable_gqa": enable_gqa, "kv_heads": key.shape[1]})
            return attention.per_example_sdpa(query, key, value, cu_seq_q, scale)
    else:
        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
            calls.append({"is_causal": is_causal, "kv_heads": key.shape[1]})
            return attention.per_example_sdpa(query, key, value, cu_seq_q, query.shape[-1] ** -0.5)
    return varlen_attn


@pytest.mark.parametrize("new_api", [True, False])
def test_both_signatures_of_pytorchs_kernel_get_causal_grouped_attention(monkeypatch, new_api):
    from torch.nn.attention import varlen

    calls: list[dict] = []
    monkeypatch.setattr(varlen, "varlen_attn", _fake_kernel(calls, new_api))
    q, k, v = torch.randn(10, 4, 16), torch.randn(10, 2, 16), torch.randn(10, 2, 16)
    bounds = torch.tensor([0, 6, 10], dtype=torch.int32)
    out = attention._torch_varlen(q, k, v, bounds, 6, 16**-0.5)
    assert torch.allclose(out, attention.per_example_sdpa(q, k, v, bounds, 16**-0.5), atol=1e-6)
    if new_api:
        assert calls == [{"window_size": (-1, 0), "scale": 16**-0.5, "enable_gqa": True, "kv_heads": 2}]
    else:  # no GQA argument: the key/value heads are repeated; no scale argument: only the default scale is accepted
        assert calls == [{"is_causal": True, "kv_heads": 4}]
        with pytest.raises(ValueError, match="no scale argument"):
            attention._torch_varlen(q, k, v, bounds, 6, 0.5)
