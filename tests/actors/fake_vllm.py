"""A stand-in for the parts of vLLM's API that `actors/engines/vllm_engine.py` uses (vLLM installs only with CUDA).

It speaks the same protocol: `AsyncLLMEngine.generate` is an async generator of cumulative
`RequestOutput`s (token ids, text, per-step logprob dicts, finish reason), `abort` ends a request,
`SamplingParams` carries the options. The "model" samples token ids from a seeded generator, so the
adapter's mapping, streaming and abort are tested without a GPU.
"""

from __future__ import annotations

import asyncio
import random
import sys
import types
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    logprobs: int | None = None
    structured_outputs: Any = None


@dataclass
class StructuredOutputsParams:
    json: Any = None


@dataclass
class AsyncEngineArgs:
    model: str
    tensor_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    quantization: str | None = None
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enable_prefix_caching: bool = False


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, Logprob]] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]


class AsyncLLMEngine:
    instances: list[AsyncLLMEngine] = []

    def __init__(self, args: AsyncEngineArgs):
        from transformers import AutoTokenizer

        self.args, self.tokenizer, self.aborted, self.seen_params = args, AutoTokenizer.from_pretrained(args.model), set(), []
        AsyncLLMEngine.instances.append(self)

    @classmethod
    def from_engine_args(cls, args: AsyncEngineArgs) -> AsyncLLMEngine:
        return cls(args)

    def get_tokenizer(self):
        return self.tokenizer

    async def abort(self, request_id: str) -> None:
        self.aborted.add(request_id)

    async def generate(self, prompt: str, params: SamplingParams, request_id: str):
        self.seen_params.append(params)
        rng, output = random.Random(params.seed), CompletionOutput()
        prompt_ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        for _ in range(params.max_tokens):
            await asyncio.sleep(0.001)
            if request_id in self.aborted:
                return
            token = rng.randrange(10, 2000)
            output.token_ids.append(token)
            sampled = -rng.random()  # with `logprobs: N`, vLLM adds the N likeliest tokens: here N others, likelier than the sampled one
            others = params.logprobs or 0
            output.logprobs.append({token: Logprob(sampled), **{token + k: Logprob(sampled * k / (others + 1)) for k in range(1, others + 1)}})
            output.text = self.tokenizer.decode(output.token_ids, skip_special_tokens=True)
            if len(output.token_ids) == params.max_tokens:
                output.finish_reason = "length"
            yield RequestOutput(request_id, prompt_ids, [CompletionOutput(output.text, list(output.token_ids), list(output.logprobs),
                                                                          output.finish_reason)])


def install() -> None:
    """Make `import vllm` (and `vllm.sampling_params`) resolve to this module's classes."""
    package = types.ModuleType("vllm")
    package.AsyncEngineArgs, package.AsyncLLMEngine, package.SamplingParams = AsyncEngineArgs, AsyncLLMEngine, SamplingParams
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = StructuredOutputsParams
    package.sampling_params = sampling
    sys.modules.update({"vllm": package, "vllm.sampling_params": sampling})
