"""The `vllm` engine: vLLM's async engine inside the actor's process (GPU machines, the `gpu` extra).

Importing this module imports vllm; `actors.engines.factory` turns its absence into a clear
ConfigError, so nothing else depends on vLLM being installed. The engine uses vLLM's multiprocessing
executor (not its Ray executor, which would fight the actor's own placement), tensor parallel 1,
prefix caching, the configured quantization (bitsandbytes 4-bit or AWQ), and guided JSON decoding for
requests with a schema. Log-probabilities of the sampled tokens come back with every completion.

Not exercised by the CPU test suite (vLLM installs only with CUDA); the GPU machine runs it through
`benchmarks/actors.py` where vLLM can be installed.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import vllm  # noqa: F401  (ImportError here is reported by the factory)
from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams

from actors.engines.types import Completion, GenerationRequest, InvalidRequest, check_schema


def _guided(schema: dict[str, Any] | None) -> dict[str, Any]:
    """Sampling options for a JSON schema, across vLLM versions (structured_outputs, then guided_decoding)."""
    if schema is None:
        return {}
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}


class VllmEngine:
    name = "vllm"

    def __init__(self, model: str | Path, settings: Any):
        self.model = str(model)
        args = AsyncEngineArgs(model=self.model, tensor_parallel_size=1, distributed_executor_backend="mp",
                               quantization=settings.quantization, gpu_memory_utilization=settings.gpu_memory_utilization,
                               max_model_len=settings.max_model_len, enable_prefix_caching=settings.enable_prefix_caching)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="vllm-loop", daemon=True).start()
        self.llm = asyncio.run_coroutine_threadsafe(self._start(args), self.loop).result()
        self.tokenizer = asyncio.run_coroutine_threadsafe(self._tokenizer(), self.loop).result()

    async def _start(self, args):
        return AsyncLLMEngine.from_engine_args(args)

    async def _tokenizer(self):
        tokenizer = self.llm.get_tokenizer()
        return await tokenizer if asyncio.iscoroutine(tokenizer) else tokenizer

    def _prompt(self, request: GenerationRequest) -> str:
        if request.messages is None:
            return request.prompt
        return self.tokenizer.apply_chat_template([m.model_dump() for m in request.messages], tokenize=False,
                                                  add_generation_prompt=not request.continue_final_message,
                                                  continue_final_message=request.continue_final_message)

    async def _one(self, request: GenerationRequest, on_token: Callable[[int], None] | None = None,
                   cancelled: threading.Event | None = None) -> Completion:
        started = time.perf_counter()
        params = SamplingParams(max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p, seed=request.seed,
                                stop=request.stop or None, logprobs=request.top_logprobs, **_guided(request.json_schema))
        final, seen, request_id = None, 0, request.request_id or uuid.uuid4().hex
        async for output in self.llm.generate(self._prompt(request), params, request_id=request_id):
            final = output
            if on_token is not None:
                for token in output.outputs[0].token_ids[seen:]:
                    on_token(int(token))
                seen = len(output.outputs[0].token_ids)
            if cancelled is not None and cancelled.is_set():
                await self.llm.abort(request_id)
                break
        choice = final.outputs[0]
        token_ids = list(choice.token_ids)
        logprobs = [float(step[token].logprob) for step, token in zip(choice.logprobs or [], token_ids)]
        # vLLM's dict per position holds its top `logprobs` tokens plus the sampled one: the likeliest N are the top
        top = [sorted(((int(t), float(p.logprob)) for t, p in step.items()), key=lambda pair: -pair[1])[: request.top_logprobs]
               for step in (choice.logprobs or [])] if request.top_logprobs else []
        return Completion(text=choice.text, token_ids=token_ids, logprobs=logprobs, top_logprobs=top,
                          finish_reason="length" if choice.finish_reason == "length" else "stop",
                          prompt_tokens=len(final.prompt_token_ids or []), completion_tokens=len(token_ids), model=self.model,
                          engine=self.name, schema_valid=check_schema(choice.text, request.json_schema),
                          latency_s=round(time.perf_counter() - started, 4), request_id=request.request_id)

    async def _many(self, requests: list[GenerationRequest]) -> list[Completion]:
        results = await asyncio.gather(*(self._one(request) for request in requests), return_exceptions=True)
        return [result if isinstance(result, Completion) else
                Completion(text="", finish_reason="error", error=f"{type(result).__name__}: {result}", engine=self.name,
                           model=self.model, request_id=request.request_id, invalid_request=isinstance(result, InvalidRequest))
                for request, result in zip(requests, results)]

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """All requests at once: vLLM batches them continuously and shares their cached prefixes."""
        return asyncio.run_coroutine_threadsafe(self._many(requests), self.loop).result()

    def generate_streaming(self, request: GenerationRequest, on_token: Callable[[int], None] | None = None,
                           cancelled: threading.Event | None = None) -> Completion:
        """One request; `on_token` gets each token id as vLLM samples it, and setting `cancelled` aborts it."""
        try:
            return asyncio.run_coroutine_threadsafe(self._one(request, on_token, cancelled), self.loop).result()
        except Exception as exc:  # fails alone, as in generate
            return Completion(text="", finish_reason="error", error=f"{type(exc).__name__}: {exc}", engine=self.name,
                              model=self.model, request_id=request.request_id, invalid_request=isinstance(exc, InvalidRequest))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def health(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model, "ok": True}
