"""The vLLM engine's adapter code against a stand-in that speaks vLLM's Python API (vLLM needs CUDA)."""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

import pytest

import fake_vllm
from actors.engines.types import GenerationRequest


@pytest.fixture(scope="module")
def vllm_engine(small_model):
    saved = {name: sys.modules.get(name) for name in ("vllm", "vllm.sampling_params", "actors.engines.vllm_engine")}
    fake_vllm.install()
    sys.modules.pop("actors.engines.vllm_engine", None)
    from actors.engines.vllm_engine import VllmEngine

    settings = SimpleNamespace(quantization="awq", gpu_memory_utilization=0.5, max_model_len=4096, enable_prefix_caching=True)
    yield VllmEngine(small_model, settings)
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def test_completions_keep_vllms_tokens_logprobs_and_options(vllm_engine):
    schema = {"type": "object"}
    requests = [GenerationRequest(prompt="def main(", max_tokens=7, seed=3),
                GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=5, seed=4, json_schema=schema)]
    plain, guided = vllm_engine.generate(requests)
    backend = fake_vllm.AsyncLLMEngine.instances[-1]
    assert backend.args.distributed_executor_backend == "mp" and backend.args.enable_prefix_caching and backend.args.quantization == "awq"
    assert plain.completion_tokens == len(plain.token_ids) == len(plain.logprobs) == 7 and plain.finish_reason == "length"
    assert all(value <= 0 for value in plain.logprobs) and plain.prompt_tokens > 0 and plain.engine == "vllm"
    assert guided.schema_valid is False  # the stand-in samples no JSON; the schema went to vLLM's structured outputs:
    assert backend.seen_params[-1].structured_outputs.json == schema and backend.seen_params[-1].logprobs == 0


def test_top_logprobs_are_the_likeliest_of_vllms_per_position_dicts(vllm_engine):
    (completion,) = vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=4, seed=3, top_logprobs=3)])
    assert fake_vllm.AsyncLLMEngine.instances[-1].seen_params[-1].logprobs == 3
    assert len(completion.top_logprobs) == 4
    for (token, sampled), top in zip(zip(completion.token_ids, completion.logprobs), completion.top_logprobs):
        values = [value for _, value in top]
        assert len(top) == 3 and values == sorted(values, reverse=True) and min(values) > sampled  # the stand-in's others are likelier
        assert token not in [candidate for candidate, _ in top]


def test_streaming_hands_over_every_token_and_cancelling_aborts_the_request(vllm_engine):
    request = GenerationRequest(prompt="class Order:", max_tokens=40, seed=9)
    (whole,) = vllm_engine.generate([request])
    streamed = []
    assert vllm_engine.generate_streaming(request, streamed.append).token_ids == whole.token_ids == streamed

    cancelled, seen = threading.Event(), []

    def on_token(token: int) -> None:
        seen.append(token)
        if len(seen) == 5:
            cancelled.set()

    partial = vllm_engine.generate_streaming(request.model_copy(update={"request_id": "r-cancel"}), on_token, cancelled)
    assert partial.token_ids == whole.token_ids[:5] and "r-cancel" in fake_vllm.AsyncLLMEngine.instances[-1].aborted
