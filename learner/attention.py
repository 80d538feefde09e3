"""Attention over packed rows that skips the pairs across examples, on GPUs without `flash_attn`.

With `sdpa`, Hugging Face turns restarting position ids into a dense block-diagonal mask, and a
masked SDPA call cannot use the flash kernel: it computes every pair of the row (4096 x 4096) where
the examples need only their own causal triangles. `varlen` hands the rows to PyTorch's own varlen
flash kernel (`torch.nn.attention.varlen.varlen_attn`) as one sequence of examples, cut where the
position ids restart. PyTorch has had two signatures for it (`is_causal=` and later
`window_size=`, `scale=`, `enable_gqa=`); both are handled. Where the kernel is missing, or fails a
check against SDPA at start (outputs and gradients), the same attention runs as one causal SDPA
call per example: correct, and how it is tested on CPU.

The trainer computes the cut points once per micro-batch (`packed_segments`) and passes them to the
decoder as keyword arguments, which Hugging Face forwards to every attention call (`decoder_kwargs`).
`flash_attention_2` gets them too, under Hugging Face's names: its flash path finds the examples from
restarting position ids only in a micro-batch of one row, and with more rows it attends across every
example of a row.
"""

from __future__ import annotations

import inspect
import logging
import math
from functools import cache

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

NAME = "trajforge_varlen"
"""The attention implementation's name as registered with Hugging Face (`attn_implementation`)."""


def packed_segments(position_ids: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """The examples of a micro-batch as cut points into its rows laid end to end: every row starts an
    example, and so does every position id 0 (padding is one example of its own)."""
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).flatten()
    bounds = torch.cat([starts, starts.new_tensor([flat.numel()])]).to(torch.int32)
    return {"packed_cu_seqlens": bounds, "packed_max_length": int((bounds[1:] - bounds[:-1]).max())}


def decoder_kwargs(implementation: str, position_ids: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """What the decoder needs besides the position ids to keep a micro-batch's packed examples apart with this attention
    (sdpa, eager and flex attention: nothing, Hugging Face builds their block-diagonal mask from the position ids)."""
    if implementation == NAME:
        return packed_segments(position_ids)
    if implementation == "flash_attention_2":
        segments = packed_segments(position_ids)
        bounds, longest = segments["packed_cu_seqlens"], segments["packed_max_length"]
        return {"cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": longest, "max_length_k": longest}
    return {}


def per_example_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bounds: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention within each example: q (T, Hq, D), k and v (T, Hkv, D) -> (T, Hq, D)."""
    groups = q.shape[1] // k.shape[1]
    pieces = []
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        qs, ks, vs = (x[start:end].transpose(0, 1) for x in (q, k, v))
        if groups > 1:
            ks, vs = ks.repeat_interleave(groups, dim=0), vs.repeat_interleave(groups, dim=0)
        pieces.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale).transpose(0, 1))
    return torch.cat(pieces)


def _torch_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bounds: torch.Tensor, max_length: int, scale: float) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    options: dict = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    if "scale" in params:
        options["scale"] = scale
    elif not math.isclose(scale, q.shape[-1] ** -0.5):
        raise ValueError(f"this PyTorch's varlen_attn has no scale argument and the model's scale is {scale}")
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        if "enable_gqa" in params:
            options["enable_gqa"] = True
        else:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return varlen_attn(q, k, v, bounds, bounds, max_length, max_length, **options)


@cache
def kernel_works(device: str) -> bool:
    """Whether PyTorch's varlen kernel runs here and agrees with per-example SDPA, forward and backward."""
    if not device.startswith("cuda"):
        return False
    try:
        generator = torch.Generator(device=device).manual_seed(0)
        shape = {"q": (96, 4, 128), "k": (96, 2, 128), "v": (96, 2, 128)}
        tensors = {name: torch.randn(size, device=device, dtype=torch.bfloat16, generator=generator) for name, size in shape.items()}
        bounds = torch.tensor([0, 40, 77, 96], device=device, dtype=torch.int32)
        results = []
        for fn in (lambda q, k, v: _torch_varlen(q, k, v, bounds, 40, 128**-0.5), lambda q, k, v: per_example_sdpa(q, k, v, bounds, 128**-0.5)):
            leaves = {name: t.clone().requires_grad_(True) for name, t in tensors.items()}
            out = fn(leaves["q"], leaves["k"], leaves["v"])
            out.float().square().sum().backward()
            results.append([out.float(), *(leaves[name].grad.float() for name in ("q", "k", "v"))])
        worst = max((a - b).abs().max().item() / max(b.abs().max().item(), 1e-6) for a, b in zip(*results))
        if worst > 0.05:
            log.warning("varlen attention: PyTorch's kernel differs from SDPA by %.3f (relative); using sdpa", worst)
            return False
        return True
    except Exception as exc:  # missing module, other signature, no kernel for this GPU
        log.warning("varlen attention: PyTorch's kernel is not usable here (%s: %s); using sdpa", type(exc).__name__, exc)
        return False


def varlen_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask, scaling: float | None = None,
                     dropout: float = 0.0, packed_cu_seqlens: torch.Tensor | None = None, packed_max_length: int | None = None, **kwargs):
    """Hugging Face's attention interface: (batch, heads, seq, dim) in, ((batch, seq, heads, dim), None) out."""
    if packed_cu_seqlens is None:
        raise RuntimeError(f"attention {NAME!r} needs the micro-batch's packed_segments() as keyword arguments of the decoder")
    if dropout:
        raise ValueError(f"attention {NAME!r} has no dropout; the model asks for {dropout}")
    batch, heads, length, dim = query.shape
    scale = scaling if scaling is not None else dim**-0.5
    q, k, v = (x.transpose(1, 2).reshape(batch * length, x.shape[1], dim) for x in (query, key, value))
    if kernel_works(str(query.device)):
        out = _torch_varlen(q, k, v, packed_cu_seqlens, packed_max_length, scale)
    else:
        out = per_example_sdpa(q, k, v, packed_cu_seqlens, scale)
    return out.reshape(batch, length, heads, dim), None


def register() -> None:
    """Make `attn_implementation=NAME` known to Hugging Face (no mask is built for it)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention)
