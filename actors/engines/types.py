"""The one generation interface every engine implements: `generate(requests) -> completions`."""

from __future__ import annotations

import json
import re
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InvalidRequest(ValueError):
    """A request an engine cannot serve as given (a prompt over its context, an unusable JSON schema): the caller's
    to fix, answered 400 by the HTTP front, not an engine failure. `code` names the kind where OpenAI has one."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


def render_chat(tokenizer: Any, request: GenerationRequest, **options: Any) -> Any:
    """`apply_chat_template` for a chat request, with its generation-prompt flags and its template's variables. A
    template that refuses the messages (its `raise_exception`, as Qwen3's does for messages without a user query, or a
    variable it cannot use) is the request's fault: InvalidRequest, answered 400 as vLLM's server does, not a 500. So is
    a TypeError or ValueError while rendering (a `chat_template_kwargs` value or a message field of a type the template
    cannot compute with, a model without a chat template), as vLLM's server also answers them."""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template([m.model_dump() for m in request.messages],
                                             add_generation_prompt=request.add_generation_prompt and not request.continue_final_message,
                                             continue_final_message=request.continue_final_message,
                                             **({"tools": request.tools} if request.tools else {}),
                                             **options, **(request.chat_template_kwargs or {}))
    except TemplateError as exc:
        raise InvalidRequest(f"the model's chat template refused these messages: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"the model's chat template could not render these messages ({type(exc).__name__}: {exc}); "
                             "check the messages' fields and chat_template_kwargs' values") from exc


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str


# apply_chat_template's own arguments, which the engines set from the request: not the template's variables.
RESERVED_TEMPLATE_KWARGS = frozenset({"conversation", "tools", "documents", "chat_template", "add_generation_prompt",
                                      "continue_final_message", "tokenize", "padding", "truncation", "max_length",
                                      "return_tensors", "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs"})


class StructuredOutput(BaseModel):
    """What the answer must be, exactly one of: JSON valid against a schema, text a regex matches whole, or one of some
    strings (vLLM's structured outputs `json`, `regex`, `choice`). Not grammars: vLLM reads a grammar per its backend
    (xgrammar's EBNF, guidance's Lark), so one text would not mean the same to every engine here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    """A regular expression the whole answer matches (the common syntax of Python's `re` and Rust's `regex`)."""
    choice: list[str] | None = Field(default=None, min_length=1)
    """The answer is exactly one of these strings."""

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutput:
        given = [name for name in ("json_schema", "regex", "choice") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of json_schema, regex or choice, got {given or 'none'}")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from None
        return self

    def holds(self, text: str) -> bool:
        """Whether `text` is what this asks for: valid JSON, a whole match of the regex, one of the choices."""
        if self.regex is not None:
            return re.fullmatch(self.regex, text) is not None
        if self.choice is not None:
            return text in self.choice
        import jsonschema

        try:
            jsonschema.validate(json.loads(text), self.json_schema)
            return True
        except (ValueError, jsonschema.ValidationError):
            return False


class GenerationRequest(BaseModel):
    """A prompt or chat messages, and how to sample the answer."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    prompt_token_ids: list[int] | None = Field(default=None, min_length=1)
    """The prompt as token ids of the engine's tokenizer, taken as they are (OpenAI's token-id `prompt`)."""
    messages: list[Message] | None = Field(default=None, min_length=1)
    """Chat messages, at least one (as OpenAI's and vLLM's servers refuse an empty list)."""
    max_tokens: int = Field(default=256, ge=0, le=32768)
    """0 only with `prompt_logprobs`: the prompt scored, nothing sampled (vLLM's echo with max_tokens 0)."""
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    structured_output: StructuredOutput | None = None
    """What the output must be (JSON valid against a schema, a regex's match, one of some strings), by guided decoding
    where the engine has it. `json_schema=` is taken for `structured_output={"json_schema": ...}`."""
    continue_final_message: bool = False
    """The last message is the start of the assistant's answer, to be continued (vLLM's `continue_final_message`),
    not a finished turn followed by a new one."""
    add_generation_prompt: bool = True
    """Chat: end the rendered prompt with the assistant's turn header (vLLM's `add_generation_prompt`)."""
    include_stop_str_in_output: bool = False
    """Keep the stop sequence that ended the answer at the end of its text (vLLM's `include_stop_str_in_output`)."""
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    """Subtracted from the logit of every token already in the answer (OpenAI's)."""
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    """Subtracted from a token's logit once per time it is already in the answer (OpenAI's)."""
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    """Divides the logits of tokens in the prompt or the answer (vLLM's and Hugging Face's; 1: none)."""
    top_k: int = Field(default=0, ge=0)
    """Sample only among the k likeliest tokens (0: not set; the engine's default, which for `transformers` is the
    model's generation_config, as vLLM's server applies it)."""
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    """Sample only tokens at least this fraction as likely as the likeliest (0: not set)."""
    logit_bias: dict[int, float] = Field(default_factory=dict)
    """Added to the logits of these token ids (-100 to 100; -100 bans a token), as OpenAI's `logit_bias`."""
    min_tokens: int = Field(default=0, ge=0)
    """Sample at least this many tokens before the end of text or a `stop_token_ids` token may end the answer (vLLM's)."""
    stop_token_ids: list[int] = Field(default_factory=list)
    """Token ids that end the answer, as a stop string does (vLLM's): the answer keeps the id, its text leaves the
    token out unless `include_stop_str_in_output`, and `stop_reason` is the id."""
    ignore_eos: bool = False
    """Go on past the model's end-of-text tokens, to `max_tokens`, a stop string or a `stop_token_ids` token (vLLM's)."""
    skip_special_tokens: bool = True
    """Leave special tokens out of the text (vLLM's; the token that ended the answer is left out either way)."""
    chat_template_kwargs: dict[str, Any] | None = None
    """Chat: extra variables for the model's chat template, as `apply_chat_template`'s keyword arguments (vLLM's), such
    as Qwen3's `enable_thinking`; one the template does not read changes nothing, as in vLLM and Hugging Face."""
    tools: list[dict[str, Any]] | None = None
    """Chat: the functions the model may call (OpenAI's `tools`), listed to it by the model's chat template (as
    `apply_chat_template(tools=...)`); the answer's calls are read from its text by the front (`tool_calls.py`)."""
    top_logprobs: int = Field(default=0, ge=0, le=20)
    """With each sampled token, this many of the most likely tokens at its position and their log-probabilities."""
    prompt_logprobs: int | None = Field(default=None, ge=0, le=20)
    """The log-probability of each prompt token after the ones before it, and the top N there (vLLM's; None: not asked).
    The first prompt token has none."""
    request_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _json_schema_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "json_schema" in data:
            data = dict(data)
            schema = data.pop("json_schema")
            if schema is not None and data.get("structured_output") is not None:
                raise ValueError("give json_schema or structured_output, not both")
            if schema is not None:
                data["structured_output"] = {"json_schema": schema}
        return data

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The JSON schema the output must validate against, if that is what `structured_output` asks."""
        return self.structured_output.json_schema if self.structured_output is not None else None

    @model_validator(mode="after")
    def _one_input(self) -> GenerationRequest:
        if any(not -100 <= bias <= 100 for bias in self.logit_bias.values()):
            raise ValueError("logit_bias values must be from -100 to 100")
        if sum(given is not None for given in (self.prompt, self.prompt_token_ids, self.messages)) != 1:
            raise ValueError("give exactly one of prompt, prompt_token_ids or messages")
        if self.prompt_token_ids and min(self.prompt_token_ids) < 0:
            raise ValueError("prompt_token_ids must be token ids (integers from 0)")
        if self.max_tokens == 0 and self.prompt_logprobs is None:
            raise ValueError("max_tokens must be at least 1 (0 only with prompt_logprobs, to score the prompt alone)")
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens must be at most max_tokens ({self.max_tokens}), got {self.min_tokens}")
        if any(token < 0 for token in self.stop_token_ids):
            raise ValueError("stop_token_ids must be token ids (integers from 0)")
        if self.messages is None and (self.chat_template_kwargs is not None or self.tools is not None):
            raise ValueError(f"{'tools' if self.tools is not None else 'chat_template_kwargs'} is for messages (chat) only")
        if reserved := sorted(RESERVED_TEMPLATE_KWARGS & set(self.chat_template_kwargs or {})):
            raise ValueError(f"chat_template_kwargs may not set {reserved[0]!r}: the engine sets it (use the request's own field where "
                             "there is one)")
        if self.continue_final_message and not (self.messages and self.messages[-1].role == "assistant"):
            raise ValueError("continue_final_message needs messages whose last one is the assistant's")
        return self


# Sampling options beyond the basic ones, each off at its default: OpenAI's penalties and logit_bias, vLLM's extras.
SAMPLING_EXTRAS = ("presence_penalty", "frequency_penalty", "repetition_penalty", "top_k", "min_p", "logit_bias",
                   "min_tokens", "stop_token_ids", "ignore_eos", "skip_special_tokens")


def sampling_extras(request: GenerationRequest) -> dict[str, Any]:
    """The extra options this request sets away from their defaults: what an engine passes on to its backend."""
    fields = GenerationRequest.model_fields
    return {name: getattr(request, name) for name in SAMPLING_EXTRAS
            if getattr(request, name) != fields[name].get_default(call_default_factory=True)}


class Completion(BaseModel):
    """What came back, with the exact tokens sampled and their log-probabilities (for training later)."""

    text: str
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = Field(default_factory=list)
    """Per sampled token, the request's `top_logprobs` most likely tokens (id, log-probability), the likeliest first."""
    prompt_token_ids: list[int] = Field(default_factory=list)
    """With the request's `prompt_logprobs`: the prompt's token ids as the engine read them."""
    prompt_logprobs: list[float | None] = Field(default_factory=list)
    """With the request's `prompt_logprobs`: per prompt token, its log-probability after the ones before it (None for
    the first)."""
    prompt_top_logprobs: list[list[tuple[int, float]] | None] = Field(default_factory=list)
    """With the request's `prompt_logprobs` N: per prompt token, the N likeliest there (None for the first)."""
    finish_reason: Literal["stop", "length", "error"] = "stop"
    stop_reason: str | int | None = None
    """What ended an answer whose finish_reason is "stop", as vLLM names it: the stop string that matched, a stop token
    id, or None at the model's end of text (and at a length or error finish). Meaningful only with `stop_reason_known`."""
    stop_reason_known: bool = False
    """Whether the engine says what ended the answer: False for an OpenAI-compatible endpoint that sends no
    `stop_reason` (OpenAI's own, where "stop" is either a stop string or the end of text)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    engine: str = ""
    schema_valid: bool | None = None
    """Whether `text` is what the request's structured_output asks (JSON valid against its schema, a whole match of its
    regex, one of its choices); None when it asked for none."""
    error: str | None = None
    ignored: list[str] = Field(default_factory=list)
    """Sampling parameters of the request the upstream refused for its model and that were left out (the `openai`
    engine: `temperature`, `top_p`, `seed`, ...): the answer was sampled with the upstream's defaults for them."""
    invalid_request: bool = False
    """With finish_reason "error": the request itself was at fault (InvalidRequest), not the engine."""
    error_code: str | None = None
    """With invalid_request: the InvalidRequest's code (`context_length_exceeded`), as OpenAI's error `code`."""
    timed_out: bool = False
    """With finish_reason "error": no answer within the generation timeout (the engine may still be busy with it)."""
    latency_s: float = 0.0
    request_id: str | None = None


class Engine(Protocol):
    name: str
    model: str

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]: ...

    def health(self) -> dict[str, Any]: ...


def check_output(text: str, structured: StructuredOutput | None) -> bool | None:
    """None without a structured output asked for; else whether `text` is what it asks (StructuredOutput.holds)."""
    return None if structured is None else structured.holds(text)


def cut_at_stop(text: str, stops: list[str], keep: bool = False) -> tuple[str, str | None]:
    """Text up to the first stop sequence (through its end with `keep`), and that sequence (None when none was found)."""
    cuts = [(index, index + len(stop), stop) for stop in stops if stop and (index := text.find(stop)) >= 0]
    if not cuts:
        return text, None
    start, end, stop = min(cuts)
    return text[: end if keep else start], stop
