"""What the OpenAI-compatible front refuses before it parses a request, each a 400 in OpenAI's shape naming the `param`.

Refused: what the server would otherwise silently not do (the deprecated `functions` and `function_call`, unless
"none": send `tools`; `echo` on chat or streamed with `logprobs`, audio output, `best_of`, `suffix`), values OpenAI itself refuses (penalties
or `logit_bias` out of range, malformed `tools`, `tool_choice` without tools or naming a function not among them,
`stream_options` without `stream`, a number where a boolean belongs, a
seed past 64 bits), text that is not text (a lone UTF-16 surrogate, which JSON can carry but no tokenizer can encode),
and any field the route does not know (`CHAT_FIELDS`, `COMPLETION_FIELDS`), `reasoning_effort`, `verbosity` and
`web_search_options` among them: the answer would not be what they ask for. Accepted and ignored, because the answer
keeps its meaning: `user`, `store`, `metadata`, `service_tier`,
`prediction` (a latency hint), the `prompt_cache_*` hints, `safety_identifier`. `tools`, `tool_choice` and
`parallel_tool_calls` are applied (`tool_calls.py`). Penalties, `logit_bias`, and vLLM's `top_k`, `min_p`, `repetition_penalty`, `min_tokens`,
`stop_token_ids`, `ignore_eos`, `skip_special_tokens`, chat's `chat_template_kwargs` and the structured outputs
(`response_format`, vLLM's `structured_outputs` and `guided_json`/`_regex`/`_choice`: `structured_output.py`, which also
refuses `guided_grammar`) are applied by the engines.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from actors.engines.types import RESERVED_TEMPLATE_KWARGS
from serve_apps.http import HTTPError, lone_surrogate

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch's and vLLM's generators take

# The request fields each route knows (OpenAI's, and the vLLM extensions the engines apply); any other is refused by
# name, as OpenAI refuses an unrecognized argument, rather than ignored: a misspelt `max_token`, or a vLLM extension
# the engines do not apply (`prompt_logprobs`, `guided_whitespace_pattern`), would otherwise change the answer without a word.
COMMON_FIELDS = {"model", "n", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options",
                 "logprobs", "logit_bias", "presence_penalty", "frequency_penalty", "response_format", "user", "echo",
                 "top_k", "min_p", "repetition_penalty", "include_stop_str_in_output", "return_tokens_as_token_ids",
                 "min_tokens", "stop_token_ids", "ignore_eos", "skip_special_tokens",
                 "structured_outputs", "guided_json", "guided_regex", "guided_choice", "guided_grammar"}
CHAT_FIELDS = COMMON_FIELDS | {"messages", "top_logprobs", "tools", "tool_choice", "functions", "function_call", "modalities", "audio",
                               "continue_final_message", "add_generation_prompt", "parallel_tool_calls", "store", "metadata",
                               "service_tier", "prediction", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
                               "safety_identifier", "chat_template_kwargs", "include_reasoning"}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "best_of", "suffix"}


def invalid(message: str, param: str | None = None, code: str = "invalid_request_error") -> HTTPError:
    return HTTPError(400, code, message, param=param)


def check_body(body: dict[str, Any], chat: bool) -> None:
    unknown = sorted(set(body) - (CHAT_FIELDS if chat else COMPLETION_FIELDS))
    if unknown:
        route = "/v1/chat/completions" if chat else "/v1/completions"
        raise invalid(f'unrecognized request argument supplied: "{unknown[0]}" (not a field {route} takes here)', unknown[0])
    _check_text(body)
    _check_tools(body)
    _check_text_output(body)
    _check_echo(body, chat)
    if chat and not _flag(body.get("logprobs")):
        raise invalid('"logprobs" must be true or false here (the number of alternatives per token is "top_logprobs")', "logprobs")
    if body.get("best_of") not in (None, 1):
        raise invalid('"best_of" is not supported by this server; ask for "n" choices instead', "best_of")
    if not chat and body.get("suffix") not in (None, ""):
        raise invalid('"suffix" is not supported by this server', "suffix")
    for name in ("presence_penalty", "frequency_penalty"):
        if not _number_in(body.get(name), -2, 2, allow_none=True):
            raise invalid(f'"{name}" must be a number from -2 to 2', name)
    _check_logit_bias(body.get("logit_bias"))
    if body.get("stream") not in (None, True, False):
        raise invalid('"stream" must be true or false', "stream")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise invalid('"stream_options" is only allowed when "stream" is true', "stream_options")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not _flag(options.get("include_usage"))):
        raise invalid('"stream_options" must be an object whose "include_usage" is true or false', "stream_options")
    unknown = sorted(set(options or ()) - {"include_usage", "include_obfuscation"})  # OpenAI's obfuscation pads events: meaning kept
    if unknown:
        raise invalid(f'"stream_options.{unknown[0]}" is not supported by this server (vLLM\'s continuous_usage_stats included): '
                      'with "include_usage" the usage comes in the last event', f"stream_options.{unknown[0]}")
    _check_vllm_extras(body)
    for name in ("continue_final_message", "add_generation_prompt", "return_tokens_as_token_ids", "include_stop_str_in_output",
                 "ignore_eos", "skip_special_tokens", "include_reasoning"):
        if not _flag(body.get(name)):
            raise invalid(f'"{name}" must be true or false', name)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise invalid(f'"seed" must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}', "seed")


def _check_vllm_extras(body: dict[str, Any]) -> None:
    """vLLM's `min_tokens`, `stop_token_ids` and `chat_template_kwargs`, in the types vLLM's server takes (no coercion)."""
    min_tokens = body.get("min_tokens")
    if min_tokens is not None and (not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or min_tokens < 0):
        raise invalid('"min_tokens" must be an integer from 0', "min_tokens")
    stop_ids = body.get("stop_token_ids")
    if stop_ids is not None and (not isinstance(stop_ids, list) or
                                 not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in stop_ids)):
        raise invalid('"stop_token_ids" must be a list of token ids (integers from 0)', "stop_token_ids")
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise invalid('"chat_template_kwargs" must be an object of the chat template\'s variables, such as {"enable_thinking": false}',
                      "chat_template_kwargs")
    if reserved := sorted(RESERVED_TEMPLATE_KWARGS & set(kwargs or {})):
        raise invalid(f'"chat_template_kwargs" may not set {reserved[0]!r}: the server sets it from the request '
                      "(its own field where there is one)", "chat_template_kwargs")


def _check_text(body: dict[str, Any]) -> None:
    if (surrogate := lone_surrogate(body)) is not None:
        raise invalid(f"the body holds a lone UTF-16 surrogate ({surrogate}), which is not text: "
                      "send whole characters (a surrogate pair, or the character itself)")


def _check_tools(body: dict[str, Any]) -> None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is not None:
        if not isinstance(tools, list) or not all(
                isinstance(tool, dict) and tool.get("type", "function") == "function" and isinstance(tool.get("function"), dict)
                and isinstance(tool["function"].get("name"), str) and tool["function"]["name"] for tool in tools):
            raise invalid('"tools" must be a list of {"type": "function", "function": {"name": ..., "parameters": ...}}', "tools")
    if any(not isinstance(tool["function"].get("parameters") or {}, dict) for tool in tools or []):
        raise invalid('"tools": each function\'s "parameters" must be a JSON schema object', "tools")
    if not _flag(body.get("parallel_tool_calls")):
        raise invalid('"parallel_tool_calls" must be true or false', "parallel_tool_calls")
    if choice not in (None, "none") and not tools:
        raise invalid('"tool_choice" is only allowed when "tools" are given', "tool_choice")
    if choice not in (None, "none", "auto", "required"):
        function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid('"tool_choice" must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
                          "tool_choice")
        if function["name"] not in {tool["function"]["name"] for tool in tools}:
            raise invalid(f'"tool_choice" names the function {function["name"]!r}, which is not among "tools"', "tool_choice")
    # OpenAI's deprecated function calling: answered in text it would silently mean something else
    deprecated = ' is OpenAI\'s deprecated function calling, not served here: send the functions as "tools" (each {"type": ' \
                 '"function", "function": ...}) with "tool_choice"'
    if body.get("function_call") not in (None, "auto", "none"):
        raise invalid(f'"function_call"{deprecated}', "function_call")
    if body.get("functions") and body.get("function_call") != "none":
        raise invalid(f'"functions"{deprecated}', "functions")


def _check_echo(body: dict[str, Any], chat: bool) -> None:
    """Completions' `echo` (the prompt before each choice's text; with `logprobs`, the prompt's tokens and their
    log-probabilities before the sampled ones, as vLLM's server answers). Prompts given as token ids are echoed as text
    where the front has the model's tokenizer. Not streamed with `logprobs`: the answer is one reply."""
    echo = body.get("echo")
    if not _flag(echo):
        raise invalid('"echo" must be true or false', "echo")
    if echo and chat:
        raise invalid('"echo" is not supported on chat completions', "echo")
    if echo and body.get("stream") is True and body.get("logprobs") is not None and body.get("logprobs") is not False:
        raise invalid('"stream" with "echo" and "logprobs" is not supported by this server: ask without "stream" for the '
                      "prompt's log-probabilities", "stream")


def _check_text_output(body: dict[str, Any]) -> None:
    """Audio answers (`modalities` with "audio", `audio`): the models here answer in text only."""
    modalities = body.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or any(kind != "text" for kind in modalities)):
        raise invalid('"modalities" may only be ["text"] here: this server answers in text', "modalities")
    if body.get("audio") is not None:
        raise invalid('"audio" output is not supported by this server: it answers in text', "audio")


def _flag(value: Any) -> bool:
    """Absent, or a JSON boolean (not 0 or 1, which compare equal to them in Python)."""
    return value is None or isinstance(value, bool)


def _check_logit_bias(bias: Any) -> None:
    if bias is None:
        return
    if not isinstance(bias, dict) or not all(key.isdigit() and _number_in(value, -100, 100) for key, value in bias.items()):
        raise invalid('"logit_bias" must map token ids (as strings) to numbers from -100 to 100', "logit_bias")


def _number_in(value: Any, low: float, high: float, allow_none: bool = False) -> bool:
    if value is None:
        return allow_none
    return not isinstance(value, bool) and isinstance(value, (int, float)) and low <= value <= high


def validation_error(exc: ValidationError | TypeError) -> HTTPError:
    """A rejected field of the engine request, said in the request's own terms (its first problem, and its name)."""
    if isinstance(exc, TypeError):
        return invalid(f"invalid request: {exc}")
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first.get("loc", ()) if not isinstance(part, int)) or None
    field = {"top_logprobs": "logprobs"}.get(field, field)
    return invalid(f'"{field}": {first.get("msg", "invalid value")}' if field else f"invalid request: {first.get('msg')}", field)
