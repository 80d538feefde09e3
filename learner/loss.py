"""Summed next-token cross-entropy straight from hidden states and the output embedding, never the full logits.

A plain causal LM head materializes logits of (tokens x vocabulary): 4 x 4096 x 151,936 in fp32 is
10 GB for one micro-batch, and as much again for their gradient. Here only the positions that carry
a target are used at all (the masked turns never reach the head), and their logits exist a chunk at
a time: on GPUs through Liger's fused Triton kernel when `liger_kernel` is installed, elsewhere
through `ChunkedLinearCrossEntropy`, which computes each chunk's loss and its gradients (for the
hidden states and the weight) in the forward pass and keeps only those gradients for the backward.
Both return the sum over tokens; the trainer divides by the step's loss tokens.
"""

from __future__ import annotations

import torch

from learner.chat import IGNORE


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T, target_i) with logits of at most `chunk` rows alive at once."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        accumulate = torch.promote_types(hidden.dtype, torch.float32)  # bf16/fp16 logits are upcast, fp64 kept
        total = torch.zeros((), dtype=accumulate, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if needs_grad else None
        grad_weight = torch.zeros_like(weight) if needs_grad else None
        for start in range(0, hidden.shape[0], chunk):
            part, wanted = hidden[start : start + chunk], targets[start : start + chunk]
            logits = (part @ weight.t()).to(accumulate)
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, wanted[:, None]).squeeze(1)).sum()
            if needs_grad:
                # d(sum CE)/d(logits) = softmax - one_hot, computed in place over the chunk's logits
                probabilities = logits.sub_(log_norm[:, None]).exp_()
                probabilities[torch.arange(len(wanted), device=wanted.device), wanted] -= 1.0
                probabilities = probabilities.to(hidden.dtype)
                grad_hidden[start : start + chunk] = probabilities @ weight
                grad_weight.addmm_(probabilities.t(), part)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output.to(grad_hidden.dtype)
        return grad_hidden * scale, grad_weight * scale, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk)


def liger_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum")(weight, hidden, targets).float()


def liger_available() -> bool:
    try:
        import liger_kernel.transformers.fused_linear_cross_entropy  # noqa: F401
    except ImportError:
        return False
    return True


def summed_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, implementation: str, chunk: int) -> torch.Tensor:
    """Sum of the CE over the positions whose target is not IGNORE; hidden is (..., d), targets (...)."""
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    keep = flat_targets != IGNORE
    if not bool(keep.any()):
        # Still touch the weight and hidden states so every worker's backward runs the same collectives.
        return (flat_hidden[:0].sum() + weight[:0].sum()).float()
    selected, wanted = flat_hidden[keep], flat_targets[keep]
    if implementation == "liger":
        return liger_linear_cross_entropy(selected, weight, wanted, chunk)
    return chunked_linear_cross_entropy(selected, weight, wanted, chunk)
