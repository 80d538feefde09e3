"""The `vllm` engine: vLLM's async engine inside the actor's process (GPU machines, the `gpu` extra).

Importing this module imports vllm; `actors.engines.factory` turns its absence into a clear ConfigError. Written
against vLLM 0.34 (V1's AsyncLLM, which AsyncLLMEngine names), kept working back to 0.11. One GPU: tensor parallel
1 on vLLM's multiprocessing executor (never its Ray executor, which would fight the actor's placement; in a Ray actor
vLLM spawns its processes by itself; the model runs in a worker process of its own), prefix caching, the configured quantization (checked
against this vLLM's methods: recent ones have no bitsandbytes), structured outputs for requests with a JSON schema, a
regex or choices.
Sampled tokens' log-probabilities, and the top ones when asked, come with every completion, read from vLLM's list
of dicts or its FlatLogprobs alike; the prompt's, when asked (`prompt_logprobs`), from its RequestOutput's. What
vLLM refuses as the request's fault (a prompt over max_model_len, a schema it cannot compile) becomes InvalidRequest
(code context_length_exceeded for the prompt, as the transformers engine's); a request vLLM aborts by itself
(finish_reason "abort") fails as "error" does, not as a short answer; `health` is not ok once vLLM's engine core died.
Not run by the CPU tests (vLLM needs CUDA): tests/actors/fake_vllm.py mirrors the API used here (checked against the
vLLM 0.34.0 wheel's source), and the GPU machine runs the real one through `benchmarks/actors.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams  # ImportError here is reported by the factory

from actors.engines.types import (Completion, GenerationRequest, InvalidRequest, StructuredOutput, check_output, render_chat,
                                  sampling_extras)
from trajforge.errors import ConfigError

try:  # vLLM raises VLLMClientError (VLLMValidationError) for a bad request; older ones a ValueError
    from vllm.exceptions import VLLMClientError as _ClientError
except ImportError:
    _ClientError = ValueError


def _structured(structured: StructuredOutput | None) -> dict[str, Any]:
    """Sampling options for a structured output (its one of json, regex, choice): structured_outputs, or an older
    vLLM's guided_decoding, which takes the same three."""
    if structured is None:
        return {}
    constraint = {name: value for name, value in (("json", structured.json_schema), ("regex", structured.regex),
                                                  ("choice", structured.choice)) if value is not None}
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(**constraint)}
    return {"structured_outputs": StructuredOutputsParams(**constraint)}


def _quantization(method: str | None) -> dict[str, Any]:
    try:
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS as known
    except ImportError:  # moved: vLLM checks the name itself when the engine starts
        known = None
    try:  # vLLM refuses these at start unless allow_deprecated_quantization, naming a CLI flag
        from vllm.model_executor.layers.quantization import DEPRECATED_QUANTIZATION_METHODS as deprecated
    except ImportError:
        deprecated = []
    if method is not None and ((known is not None and method not in known) or method in deprecated):
        usable = [name for name in known or [] if name not in deprecated]
        raise ConfigError(f"actors.vllm.quantization {method!r} is not a method of this vLLM"
                          f"{' (deprecated there)' if method in deprecated else ''}; use null (none)"
                          f"{' or one of ' + ', '.join(usable) if usable else ''}")
    # older vLLM wanted bitsandbytes' load format named too (0.11 sets it itself)
    return {"quantization": method, **({"load_format": "bitsandbytes"} if method == "bitsandbytes" else {})}


def _error_code(exc: BaseException) -> str | None:
    """OpenAI's code for a prompt longer than the context: vLLM names the parameter (input_tokens, input_text); where
    the prompt fills max_model_len exactly, and in older vLLM, its message says "maximum model length"."""
    message = str(exc)
    if getattr(exc, "parameter", None) in ("input_tokens", "input_text") or "maximum model length" in message \
            or "maximum context length" in message:
        return "context_length_exceeded"
    return None


def _read_logprobs(steps, token_ids: list[int], top: int) -> tuple[list[float], list[list[tuple[int, float]]]]:
    """Sampled tokens' log-probabilities and each position's `top` likeliest, from vLLM's {token: Logprob} per position."""
    steps = list(steps or [])  # a list of dicts, or FlatLogprobs, whose positions read as the same dicts
    sampled = [float(step[token].logprob) for step, token in zip(steps, token_ids)]
    # a position's dict holds the `top` likeliest tokens plus the sampled one: the likeliest `top` are the top
    likeliest = [sorted(((int(t), float(p.logprob)) for t, p in step.items()), key=lambda pair: -pair[1])[:top]
                 for step in steps] if top else []
    return sampled, likeliest


def _prompt_scores(steps, prompt_ids: list[int] | None, top: int) -> dict[str, Any]:
    """The Completion's prompt fields from vLLM's prompt_logprobs: None for the first token, then a position's
    {token: Logprob} as for sampled tokens."""
    prompt_ids = [int(token) for token in prompt_ids or []]
    if steps is None:
        raise RuntimeError("vLLM sent no prompt_logprobs for a request that asked for them")
    sampled, likeliest = _read_logprobs(list(steps)[1:], prompt_ids[1:], top)
    return {"prompt_token_ids": prompt_ids, "prompt_logprobs": [None, *sampled],
            "prompt_top_logprobs": [None, *(likeliest or [[] for _ in sampled])]}


class VllmEngine:
    name = "vllm"

    def __init__(self, model: str | Path, settings: Any):
        self.model = str(model)
        args = AsyncEngineArgs(model=self.model, tensor_parallel_size=1, distributed_executor_backend="mp",
                               gpu_memory_utilization=settings.gpu_memory_utilization, max_model_len=settings.max_model_len,
                               enable_prefix_caching=settings.enable_prefix_caching, **_quantization(settings.quantization))
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="vllm-loop", daemon=True).start()
        try:
            self.llm = self._run(self._start(args))
            tokenizer = self.llm.get_tokenizer()  # a coroutine in vLLM 0.11, plain in 0.32 on
            self.tokenizer = self._run(tokenizer) if inspect.iscoroutine(tokenizer) else tokenizer
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def _start(self, args):  # on the loop, so that vLLM's output handler runs there
        return AsyncLLMEngine.from_engine_args(args)

    def _prompt(self, request: GenerationRequest) -> str | dict[str, list[int]]:
        """Token ids go as they are; a plain prompt goes as text (vLLM adds the tokenizer's special tokens, as the transformers engine does); chat
        goes as token ids of the rendered template, as vLLM's own chat path sends it (text would get a second BOS)."""
        if request.prompt_token_ids is not None:
            return {"prompt_token_ids": request.prompt_token_ids}
        if request.messages is None:
            return request.prompt
        text = render_chat(self.tokenizer, request, tokenize=False)
        return {"prompt_token_ids": self.tokenizer.encode(text, add_special_tokens=False)}

    async def _one(self, request: GenerationRequest, on_token: Callable[[int], None] | None = None,
                   cancelled: threading.Event | None = None) -> Completion:
        started = time.perf_counter()
        # vLLM's own id, unique: vLLM aborts every request sharing an id (and older ones refuse a repeated one)
        final, seen, vllm_id = None, 0, f"{request.request_id or 'trajforge'}-{uuid.uuid4().hex}"
        prompt_steps = None  # vLLM sends the prompt's log-probabilities once, with the first output
        try:
            # max_tokens 0 (the prompt scored alone) samples one token, left out, as vLLM's server does for echo
            params = SamplingParams(max_tokens=request.max_tokens or 1, temperature=request.temperature, top_p=request.top_p,
                                    seed=request.seed, stop=request.stop or None, logprobs=request.top_logprobs,
                                    include_stop_str_in_output=request.include_stop_str_in_output,
                                    **({"prompt_logprobs": request.prompt_logprobs} if request.prompt_logprobs is not None else {}),
                                    **sampling_extras(request),
                                    **_structured(request.structured_output))
            async with contextlib.aclosing(self.llm.generate(self._prompt(request), params, request_id=vllm_id)) as outputs:
                async for output in outputs:
                    final = output
                    if prompt_steps is None and getattr(output, "prompt_logprobs", None) is not None:
                        prompt_steps = output.prompt_logprobs
                    if on_token is not None:
                        for token in output.outputs[0].token_ids[seen:]:
                            on_token(int(token))
                        seen = len(output.outputs[0].token_ids)
                    if cancelled is not None and cancelled.is_set():
                        await self.llm.abort(vllm_id)
                        break
        except (ValueError, _ClientError) as exc:
            if final is None:  # refused before any output: the prompt is over max_model_len, the schema does not compile, ...
                raise InvalidRequest(str(exc), _error_code(exc)) from exc
            raise
        choice = final.outputs[0] if final is not None else None
        # "error": vLLM's retryable internal failure; "abort": vLLM stopped it (a cancel here breaks before that output)
        if choice is None or choice.finish_reason in ("error", "abort"):
            raise RuntimeError(f"vLLM ended request {vllm_id} without an answer"
                               f"{' (aborted)' if choice is not None and choice.finish_reason == 'abort' else ''}")
        scored = _prompt_scores(prompt_steps, final.prompt_token_ids, request.prompt_logprobs) \
            if request.prompt_logprobs is not None else {}
        if request.max_tokens == 0:
            return Completion(text="", finish_reason="length", prompt_tokens=len(final.prompt_token_ids or []), model=self.model,
                              engine=self.name, latency_s=round(time.perf_counter() - started, 4), request_id=request.request_id,
                              **scored)
        token_ids = [int(token) for token in choice.token_ids]
        logprobs, top = _read_logprobs(choice.logprobs, token_ids, request.top_logprobs)
        return Completion(text=choice.text, token_ids=token_ids, logprobs=logprobs, top_logprobs=top, **scored,
                          finish_reason="length" if choice.finish_reason == "length" else "stop",
                          stop_reason=choice.stop_reason, stop_reason_known=True,  # the stop string, a stop token id, None at EOS
                          prompt_tokens=len(final.prompt_token_ids or []), completion_tokens=len(token_ids), model=self.model,
                          engine=self.name, schema_valid=check_output(choice.text, request.structured_output),
                          latency_s=round(time.perf_counter() - started, 4), request_id=request.request_id)

    def _failed(self, request: GenerationRequest, exc: BaseException) -> Completion:
        return Completion(text="", finish_reason="error", error=f"{type(exc).__name__}: {exc}", engine=self.name,
                          model=self.model, request_id=request.request_id, invalid_request=isinstance(exc, InvalidRequest),
                          error_code=getattr(exc, "code", None))

    async def _many(self, requests: list[GenerationRequest], cancelled: threading.Event | None = None) -> list[Completion]:
        results = await asyncio.gather(*(self._one(request, cancelled=cancelled) for request in requests), return_exceptions=True)
        return [result if isinstance(result, Completion) else self._failed(request, result)
                for request, result in zip(requests, results)]

    def generate(self, requests: list[GenerationRequest], cancelled: threading.Event | None = None) -> list[Completion]:
        """All requests at once: vLLM batches them continuously and shares their cached prefixes; each fails alone.
        Setting `cancelled` (the actor's timeout, a caller that went away) aborts each in vLLM at its next output, so
        the GPU stops working on them; each answers what it had."""
        return self._run(self._many(requests, cancelled))

    def generate_streaming(self, request: GenerationRequest, on_token: Callable[[int], None] | None = None,
                           cancelled: threading.Event | None = None) -> Completion:
        """One request; `on_token` gets each token id as vLLM samples it, and setting `cancelled` aborts it."""
        try:
            return self._run(self._one(request, on_token, cancelled))
        except Exception as exc:  # fails alone, as in generate
            return self._failed(request, exc)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def health(self) -> dict[str, Any]:
        """Not ok once vLLM's engine core has died (its `errored`): every request would fail with EngineDeadError."""
        return {"engine": self.name, "model": self.model, "ok": not getattr(self.llm, "errored", False)}
