"""A stand-in for the parts of vLLM's API that `actors/engines/vllm_engine.py` uses (vLLM installs only with CUDA).

It mirrors vLLM 0.34 (checked against its wheel's source): `AsyncLLMEngine` is the V1 `AsyncLLM`, whose
`from_engine_args` builds it, `get_tokenizer()` is plain (not a coroutine), `generate(prompt, sampling_params,
request_id)` is an async generator of cumulative `RequestOutput`s and `abort(request_id)` a coroutine that ends
every request made with that id. A prompt is text (tokenized with the tokenizer's special tokens, as vLLM's
completions are) or a `{"prompt_token_ids": [...]}` dict. Bad requests raise `vllm.exceptions.VLLMValidationError`
(a VLLMClientError, not a ValueError) from the first step of `generate`, with vLLM's messages: a prompt over
max_model_len, a JSON schema the grammar backends refuse. `CompletionOutput.logprobs` is a list of
{token id: Logprob} per position, the sampled token's and the `logprobs` likeliest, or a `FlatLogprobs` with
`SamplingParams(flat_logprobs=True)`; `RequestOutput.prompt_logprobs`, with `SamplingParams(prompt_logprobs=N)`, is None
then one such dict per prompt token after the first, on every output (vLLM's default CUMULATIVE output kind; only
DELTA pops them, which the stand-in does not speak). SamplingParams and StructuredOutputsParams refuse what vLLM's
refuse when built (`max_tokens` under 1, an empty stop string, no or several constraints...) with its
VLLMValidationError. Quantization methods are vLLM 0.34's (bitsandbytes is gone), and a deprecated one (fbgemm_fp8)
fails the engine's start as vLLM's does. `errored` is True once a test marks the engine core dead (`dead`), and then
`generate` raises EngineDeadError, as vLLM's. The "model"
samples token ids from a seeded generator, so the adapter's mapping, streaming and abort are tested without a GPU.
"""

from __future__ import annotations

import asyncio
import enum
import random
import re
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jsonschema

QUANTIZATION_METHODS = ["awq", "auto_awq", "fp8", "w4afp8", "fbgemm_fp8", "modelopt", "modelopt_fp4", "modelopt_mxfp8",
                        "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin", "humming", "compressed-tensors",
                        "experts_int8", "quark", "moe_wna16", "torchao", "inc", "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8",
                        "online", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only",
                        "nvfp4_per_token", "mxfp8", "lut_b_moe", "mxfp4_hadamard32"]
DEPRECATED_QUANTIZATION_METHODS = ["fbgemm_fp8"]


class VLLMError(Exception):
    pass


class VLLMClientError(VLLMError):
    pass


class VLLMServerError(VLLMError):
    pass


class EngineDeadError(VLLMServerError):
    def __init__(self):
        super().__init__("EngineCore encountered an issue. See stack trace (above) for the root cause.")


class VLLMValidationError(VLLMClientError):
    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None):
        super().__init__(message)
        self.parameter, self.value = parameter, value

    def __str__(self) -> str:
        extras = [f"{name}={value}" for name, value in (("parameter", self.parameter), ("value", self.value)) if value is not None]
        return f"{super().__str__()} ({', '.join(extras)})" if extras else super().__str__()


@dataclass
class StructuredOutputsParams:
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None

    def __post_init__(self):  # as vLLM's: exactly one constraint, else its VLLMValidationError
        count = sum(value is not None for value in (self.json, self.regex, self.choice, self.grammar))
        if count != 1:
            raise VLLMValidationError(f"You {'can only' if count else 'must'} use one kind of structured outputs constraint "
                                      f"but {'multiple are' if count else 'none are'} specified: {self.__dict__}")


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    logit_bias: dict[int, float] | None = None
    flat_logprobs: bool = False
    include_stop_str_in_output: bool = False
    min_tokens: int = 0
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    structured_outputs: StructuredOutputsParams | None = None

    def __post_init__(self):
        """Some of vLLM's checks, made where vLLM makes them (when the params are built), with its messages."""
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.max_tokens is not None and self.max_tokens < 1:
            raise VLLMValidationError(f"max_tokens must be at least 1, got {self.max_tokens}.", parameter="max_tokens",
                                      value=self.max_tokens)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise VLLMValidationError(f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, got "
                                      f"{self.min_tokens}.")
        if any(not stop for stop in self.stop or []):
            raise VLLMValidationError("stop cannot contain an empty string.")


@dataclass
class AsyncEngineArgs:
    model: str = "Qwen/Qwen3-0.6B"
    load_format: str = "auto"
    max_model_len: int | None = None
    distributed_executor_backend: str | None = None
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool | None = None
    gpu_memory_utilization: float | None = None
    quantization: str | None = None
    allow_deprecated_quantization: bool = False
    enable_log_requests: bool = False


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class FlatLogprobs:
    """vLLM's flattened logprobs: indexing or iterating gives the same {token id: Logprob} per position as the list."""

    start_indices: list[int] = field(default_factory=list)
    end_indices: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ranks: list[int | None] = field(default_factory=list)
    decoded_tokens: list[str | None] = field(default_factory=list)

    def append(self, position: dict[int, Logprob] | None) -> None:
        self.start_indices.append(len(self.logprobs))
        for token, logprob in (position or {}).items():
            self.token_ids.append(token)
            self.logprobs.append(logprob.logprob)
            self.ranks.append(logprob.rank)
            self.decoded_tokens.append(logprob.decoded_token)
        self.end_indices.append(len(self.logprobs))

    def __len__(self) -> int:
        return len(self.start_indices)

    def __getitem__(self, index: int) -> dict[int, Logprob]:
        if not isinstance(index, int):
            raise TypeError(f"Invalid index type: {type(index)}")
        return {self.token_ids[i]: Logprob(self.logprobs[i], self.ranks[i], self.decoded_tokens[i])
                for i in range(self.start_indices[index], self.end_indices[index])}

    def __iter__(self):
        for position in range(len(self)):
            yield self[position]


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | FlatLogprobs | None
    routed_experts: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool


class AsyncLLM:
    instances: list[AsyncLLM] = []

    def __init__(self, args: AsyncEngineArgs):
        from transformers import AutoTokenizer

        if args.quantization is not None and args.quantization not in QUANTIZATION_METHODS:
            raise ValueError(f"Unknown quantization method: {args.quantization}. Must be one of {QUANTIZATION_METHODS}.")
        if args.quantization in DEPRECATED_QUANTIZATION_METHODS and not args.allow_deprecated_quantization:
            raise ValueError(f"The quantization method {args.quantization} is deprecated and will be removed in future "
                             "versions of vLLM. To bypass, set `--allow-deprecated-quantization`.")
        self.args, self.tokenizer = args, AutoTokenizer.from_pretrained(args.model)
        self.max_model_len = args.max_model_len or 2048
        self.aborted: set[str] = set()
        self.seen_params: list[SamplingParams] = []
        self.seen_prompts: list[Any] = []
        self.seen_ids: list[str] = []
        self.dead = False  # set by a test: the engine core process died
        AsyncLLM.instances.append(self)

    @property
    def errored(self) -> bool:
        return self.dead

    @classmethod
    def from_engine_args(cls, engine_args: AsyncEngineArgs, start_engine_loop: bool = True, usage_context: Any = None,
                         stat_loggers: Any = None) -> AsyncLLM:
        return cls(engine_args)

    def get_tokenizer(self):
        return self.tokenizer

    async def abort(self, request_id: str | Iterable[str], internal: bool = False) -> None:
        self.aborted.update([request_id] if isinstance(request_id, str) else request_id)

    def _prompt_ids(self, prompt: Any) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=True)
        if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            return list(prompt["prompt_token_ids"])
        if isinstance(prompt, dict) and "prompt" in prompt:
            return self.tokenizer.encode(prompt["prompt"], add_special_tokens=True)
        raise TypeError("Prompt should be a string, list of tokens, or dictionary")

    def _validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """vLLM's request checks, with its messages (renderers/params.py, v1/engine/input_processor.py, backend_guidance.py)."""
        length, limit = len(prompt_ids), self.max_model_len
        if length == 0:
            raise VLLMValidationError("The decoder prompt cannot be empty")
        if length > limit:
            raise VLLMValidationError(f"This model's maximum context length is {limit} tokens. However, your prompt contains "
                                      f"{length} input tokens, which exceeds this limit even without any output tokens. "
                                      "Please reduce the length of the input prompt.", parameter="input_tokens", value=length)
        if length == limit:
            raise VLLMValidationError(f"The decoder prompt (length {length}) plus the number of requested output tokens (at "
                                      f"least 1) is longer than the maximum model length of {limit}. Make sure that "
                                      "`max_model_len` is no smaller than the number of text tokens "
                                      "(prompt + requested output tokens).")
        structured = params.structured_outputs
        if structured is not None and structured.regex is not None:
            try:
                re.compile(structured.regex)
                if "(?=" in structured.regex or "(?!" in structured.regex:  # vLLM's backends take no lookaround
                    raise re.error("look-around is not supported")
            except re.error as exc:
                raise VLLMValidationError(f"Error in regex: {exc}") from None
        schema = structured.json if structured is not None else None
        if schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise VLLMValidationError(f"Grammar error: {exc.message}") from None

    async def generate(self, prompt: Any, sampling_params: SamplingParams, request_id: str, *, lora_request: Any = None,
                       tokenization_kwargs: dict[str, Any] | None = None, priority: int = 0):
        if self.dead:
            raise EngineDeadError()
        params, prompt_ids = sampling_params, self._prompt_ids(prompt)
        if params.output_kind is not RequestOutputKind.CUMULATIVE:
            raise NotImplementedError("the stand-in speaks vLLM's default CUMULATIVE output kind only")
        self.seen_params.append(params)
        self.seen_prompts.append(prompt)
        self.seen_ids.append(request_id)
        self._validate(prompt_ids, params)
        rng, token_ids, steps, stop_token = random.Random(params.seed), [], [], None
        prompt_logprobs = None if params.prompt_logprobs is None else [None, *(
            self._position(token, -rng.random(), params.prompt_logprobs, rng) for token in prompt_ids[1:])]
        for _ in range(params.max_tokens):
            await asyncio.sleep(0.001)
            finish = None
            if request_id in self.aborted:
                finish = "abort"  # vLLM's abort puts a last output, with no new token, in the request's queue
            else:
                token = rng.randrange(10, 2000)
                token = next((forced for forced, bias in (params.logit_bias or {}).items() if bias >= 100), token)  # a certain token
                ends = {*(params.stop_token_ids or []), *([] if params.ignore_eos else [self.tokenizer.eos_token_id])}
                if len(token_ids) < params.min_tokens and token in ends | {self.tokenizer.eos_token_id}:
                    token = 10 if 10 not in ends else 11  # vLLM masks every end token before min_tokens
                token_ids.append(token)
                if token == self.tokenizer.eos_token_id and not params.ignore_eos:
                    finish = "stop"  # the end of text: vLLM's stop_reason None
                elif token in (params.stop_token_ids or []):
                    finish, stop_token = "stop", token  # vLLM's stop_reason: the stop token id
                steps.append(self._position(token, -rng.random(), params.logprobs or 0, rng))
                if len(token_ids) == params.max_tokens:
                    finish = "length"
            logprobs: list[dict[int, Logprob]] | FlatLogprobs = list(steps)
            if params.flat_logprobs:
                logprobs = FlatLogprobs()
                for step in steps:
                    logprobs.append(step)
            # the token that ended the answer is left out of its text unless include_stop_str_in_output
            shown = token_ids[:-1] if finish == "stop" and not params.include_stop_str_in_output else token_ids
            text = self.tokenizer.decode(shown, skip_special_tokens=params.skip_special_tokens)
            stops = params.stop or []
            stop_string = min(((text.find(stop), stop) for stop in stops if stop in text), default=(0, None))[1]
            if stop_string is not None and finish != "abort":  # the first stop string in the text ends it, named
                finish, text = "stop", text[:text.find(stop_string) + (len(stop_string) if params.include_stop_str_in_output else 0)]
            stop_reason = stop_string if stop_string is not None else stop_token if finish == "stop" else None
            # CUMULATIVE, as vLLM's output processor: every output carries the prompt's log-probabilities, all of them
            yield RequestOutput(request_id, prompt if isinstance(prompt, str) else None, prompt_ids, prompt_logprobs,
                                [CompletionOutput(index=0, text=text, token_ids=list(token_ids), cumulative_logprob=None,
                                                  logprobs=logprobs, finish_reason=finish, stop_reason=stop_reason)],
                                finish is not None)
            if finish is not None:
                return


    @staticmethod
    def _position(token: int, value: float, others: int, rng: random.Random) -> dict[int, Logprob]:
        """A position's {token: Logprob}: the token's, and with `logprobs: N` (or `prompt_logprobs: N`) the N likeliest,
        as vLLM adds them: here N others, likelier."""
        return {token: Logprob(value, rank=others + 1 + rng.randrange(50)),
                **{token + k: Logprob(value * k / (others + 1), rank=others + 1 - k) for k in range(1, others + 1)}}


AsyncLLMEngine = AsyncLLM

CONTENTS = {"vllm": ["AsyncEngineArgs", "AsyncLLMEngine", "SamplingParams"],
            "vllm.sampling_params": ["SamplingParams", "StructuredOutputsParams", "RequestOutputKind"],
            "vllm.exceptions": ["VLLMError", "VLLMClientError", "VLLMServerError", "VLLMValidationError"],
            "vllm.v1.engine.exceptions": ["EngineDeadError"],
            "vllm.logprobs": ["Logprob", "FlatLogprobs"], "vllm.outputs": ["CompletionOutput", "RequestOutput"],
            "vllm.model_executor.layers.quantization": ["QUANTIZATION_METHODS", "DEPRECATED_QUANTIZATION_METHODS"]}


def install() -> None:
    """Make `import vllm` and the submodules named in CONTENTS resolve to this module's classes."""
    for name, attributes in CONTENTS.items():
        module = sys.modules[name] = types.ModuleType(name)
        for attribute in attributes:
            setattr(module, attribute, globals()[attribute])
