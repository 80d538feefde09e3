"""Packed rows under `flash_attention_2` (the GPU default when flash-attn is installed), checked on CPU.

Hugging Face's flash path is run for real; only flash-attn's two kernels are replaced by SDPA stand-ins that compute
what they compute: `flash_attn_func` causal attention over each whole row, `flash_attn_varlen_func` causal attention
within each sequence that `cu_seqlens` delimits.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sft_builds import rows

from learner.attention import per_example_sdpa
from learner.chat import ChatEncoder
from learner.model import SFTModel
from learner.packing import layout


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
    """(batch, seq, heads, dim) in and out, attention over each whole row."""
    groups = q.shape[2] // k.shape[2]
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=softmax_scale).transpose(1, 2)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None,
                           causal=False):
    """(tokens, heads, dim) in and out, attention within each sequence of cu_seqlens."""
    assert causal and torch.equal(cu_seqlens_q, cu_seqlens_k)
    return per_example_sdpa(q, k, v, cu_seqlens_q, softmax_scale)


@pytest.fixture
def flash_model(tiny_model, monkeypatch):
    """The tiny model with attn_implementation flash_attention_2, its kernels the stand-ins above."""
    from transformers import AutoModelForCausalLM
    from transformers import modeling_flash_attention_utils as flash_utils

    monkeypatch.setattr(flash_utils, "_lazy_imports", lambda *args, **kwargs: (flash_attn_func, flash_attn_varlen_func, None, None, None))
    monkeypatch.setattr(flash_utils, "_loaded_implementation", None)
    causal_lm = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32, attn_implementation="sdpa")
    causal_lm.config._attn_implementation = "flash_attention_2"  # what loading with flash-attn installed sets
    return SFTModel(causal_lm, loss="chunked", chunk_tokens=64)


def _tensors(rows_, seq_len, pad_id):
    return {name: torch.from_numpy(array) for name, array in layout(rows_, seq_len, pad_id).items()}


@pytest.mark.parametrize("micro_batch", [1, 3])
def test_flash_attention_keeps_the_packed_examples_of_every_row_apart(flash_model, tokenizer, micro_batch):
    examples = ChatEncoder(tokenizer, seq_len=512).encode([r["messages"] for r in rows(5, seed=7)])
    packed_rows = [(examples[0], examples[1]), (examples[2], examples[3]), (examples[4],)][:micro_batch]
    with torch.no_grad():
        packed = flash_model(**_tensors(packed_rows, 512, tokenizer.pad_token_id))
        alone = sum(flash_model(**_tensors([(example,)], len(example), tokenizer.pad_token_id)) for row in packed_rows for example in row)
    # with 3 rows Hugging Face's flash path no longer reads the examples from the position ids: each row was one sequence
    assert torch.allclose(packed, alone, rtol=1e-5), (float(packed), float(alone))
