"""The model a worker trains, as `learner.model.load_model` hands it to DeepSpeed (here without ZeRO, in one process)."""

from __future__ import annotations

import torch
from sft_builds import rows

from learner.chat import ChatEncoder
from learner.model import load_model
from learner.packing import layout
from learner.settings import TrainSettings


def test_gradient_checkpointing_recomputes_the_layers_from_the_first_step(tiny_model, tokenizer, monkeypatch):
    """from_pretrained returns the model in eval mode, where checkpointing is skipped: it began only after the first evaluation."""
    from transformers.models.qwen3 import modeling_qwen3

    model, _ = load_model(tiny_model, TrainSettings(gradient_checkpointing=True), {"zero_optimization": {"stage": 0}}, on_gpu=False)
    examples = ChatEncoder(tokenizer, 512).encode([row["messages"] for row in rows(2)])
    batch = {name: torch.from_numpy(array) for name, array in layout([tuple(examples)], 512, tokenizer.pad_token_id).items()}
    calls = []
    forward = modeling_qwen3.Qwen3MLP.forward
    monkeypatch.setattr(modeling_qwen3.Qwen3MLP, "forward", lambda self, x: calls.append(1) or forward(self, x))
    loss = model(**batch)
    layers = model.causal_lm.config.num_hidden_layers
    assert len(calls) == layers
    loss.backward()
    assert len(calls) == 2 * layers  # each layer ran again in the backward pass
