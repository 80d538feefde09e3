"""OpenAI's request and answer shapes for `/v1/chat/completions` and `/v1/completions`.

`parse` turns a request body into the engine's `GenerationRequest`s (one per choice: `n` choices of
each prompt), accepting what OpenAI clients send: prompts as text or token ids, content as a list of text
parts, the `developer` role, `stop` as a string or a list, vLLM's `add_generation_prompt`,
`include_stop_str_in_output`, `chat_template_kwargs` and sampling extras, `response_format` `json_object` or `json_schema`
and vLLM's structured outputs (`structured_output.py`),
`max_completion_tokens`, `stream_options.include_usage`, completions' `echo` (with `logprobs`, the prompt's tokens and
their log-probabilities first, as vLLM's server gives them; with `max_tokens` 0, the prompt alone). `answer` and the
`*_chunk` functions build
the replies, with the sampled tokens' log-probabilities (as `token_id:N` when the client asks with
vLLM's `return_tokens_as_token_ids`) so a client can recover exactly what was sampled, and the
likeliest alternatives per token when asked (`top_logprobs`, or completions' `logprobs: N`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from actors.engines.live_text import LiveText
from actors.engines.types import SAMPLING_EXTRAS, Completion, GenerationRequest
from serve_apps.generate import chat_message, reasoning, tool_calls
from serve_apps.generate.openai_checks import check_body, invalid, validation_error
from serve_apps.generate.structured_output import structured_output
from serve_apps.generate.token_bytes import token_bytes
from serve_apps.http import HTTPError
from trajforge.constants import EMBEDDING_MODEL_NAME

# What OpenAI's API samples with when a request leaves them out (the engines' own defaults differ).
OPENAI_DEFAULTS = {"temperature": 1.0, "top_p": 1.0}
# Legacy completions stop at 16 tokens unless told otherwise, as OpenAI's and vLLM's do. Chat has no such
# default there (the rest of the context); here it is the engines' 256, to keep an unbounded answer from a
# small model from holding a replica for minutes.
COMPLETIONS_MAX_TOKENS = 16

# Chat roles OpenAI clients send, as the engines' chat templates know them.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


@dataclass
class Parsed:
    """A request body, understood: the engine requests (prompt-major, `n` per prompt) and how to answer."""

    chat: bool
    requests: list[GenerationRequest]
    stream: bool = False
    include_usage: bool = False
    token_ids: bool = False
    logprobs: bool = False
    """The client asked for log-probabilities (`logprobs: true` in chat, a number in completions)."""
    hide_logprobs: bool = False
    """The client said `logprobs: false`, or asked for `echo` without `logprobs`: choices carry `logprobs: null` (left
    out, they carry them, to keep token ids)."""
    echo: bool = False
    """Completions' `echo`: each choice's text starts with its prompt."""
    tool_use: tool_calls.ToolUse | None = None
    """Chat with `tools` (and a `tool_choice` other than "none"): how the answers' tool calls are read."""
    reasoning: bool = False
    """Chat on a front with a reasoning parser: the answers' thinking is split off as `reasoning` (`reasoning.py`)."""
    include_reasoning: bool = True
    """vLLM's `include_reasoning`: false leaves the split-off reasoning out (null)."""
    thinks: bool = True
    """The answers are read as thinking first (not when `chat_template_kwargs` say `enable_thinking: false`)."""
    n: int = 1
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))


def _content(value: Any, index: int) -> str:
    """A message's content: a string, null (an assistant turn that only called tools), or text parts."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise invalid(f"messages[{index}].content: only text parts are supported here, got {kind!r}", "messages")
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(f"messages[{index}].content must be a string or a list of text parts", "messages")


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise invalid('"messages" must be a non-empty list of {"role", "content"} objects', "messages")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise invalid(f"messages[{index}] must be an object with role and content", "messages")
        role = ROLES.get(message.get("role"))
        if role is None:
            raise invalid(f"messages[{index}].role must be one of {sorted(ROLES)}, got {message.get('role')!r}", "messages")
        messages.append({"role": role, "content": _content(message.get("content"), index), **tool_calls.history(message, index)})
    return messages


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def _prompts(value: Any) -> list[dict[str, Any]]:
    """Completions' `prompt`: a string, a list of strings, token ids, or a list of token-id lists, as OpenAI takes them."""
    if _token_ids(value):
        return [{"prompt_token_ids": value}]
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) or _token_ids(p) for p in prompts):
        raise invalid('"prompt" must be a string, a list of strings, a list of token ids (integers from 0), or a list of '
                      "token-id lists", "prompt")
    if not all(prompts):
        raise invalid('"prompt" must not be empty: the model needs at least one token to continue from', "prompt")
    return [{"prompt": p} if isinstance(p, str) else {"prompt_token_ids": p} for p in prompts]


def _stop(value: Any) -> list[str]:
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
        raise invalid('"stop" must be a string or a list of strings', "stop")
    return [stop for stop in stops if stop]  # an empty stop sequence would end every answer at once


def parse(body: Any, chat: bool, *, model_name: str, max_tokens_limit: int, max_choices: int, reasoning_parser: str | None = None) -> Parsed:
    """The engine requests for a body; HTTPError (OpenAI's error shape) for what cannot be served. `reasoning_parser`
    (the front's `generate.reasoning_parser`): chat answers' thinking is given apart."""
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    if body.get("model") == EMBEDDING_MODEL_NAME:
        raise HTTPError(404, "model_not_found", f"model {EMBEDDING_MODEL_NAME!r} only embeds: POST /v1/embeddings, or ask {model_name!r} here")
    if body.get("model") not in (None, model_name):
        raise HTTPError(404, "model_not_found", f"model {body.get('model')!r} is not served here; /v1/models lists {model_name!r}")
    check_body(body, chat)
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise invalid('"n" must be a positive integer', "n")
    inputs: list[dict[str, Any]] = (
        [{"messages": _messages(body.get("messages"))}] if chat else _prompts(body.get("prompt"))
    )
    if n * len(inputs) > max_choices:
        raise invalid(f"{n * len(inputs)} choices asked (n x prompts); this server gives at most {max_choices} per request", "n")
    limit_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(limit_name)
    echo = not chat and body.get("echo") is True
    least = 0 if echo else 1  # as vLLM: 0 with echo is the prompt alone (scored, with logprobs), nothing sampled
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not least <= max_tokens <= max_tokens_limit):
        raise invalid(f'"{limit_name}" must be an integer from {least} to {max_tokens_limit} (this server\'s limit)'
                      f'{"" if echo else " (0 only with echo)"}, got {max_tokens!r}', limit_name)
    tool_use = tool_calls.tool_use(body) if chat else None
    sampling = {"max_tokens": max_tokens, "temperature": body.get("temperature"),
                "top_p": body.get("top_p"), "stop": _stop(body.get("stop")),
                "structured_output": structured_output(body, tool_use),
                **{name: body.get(name) for name in SAMPLING_EXTRAS}}  # top level, or an SDK's extra_body
    if sampling["top_k"] == -1:  # vLLM's "all tokens"
        sampling["top_k"] = 0
    if isinstance(sampling["logit_bias"], dict):  # checked by openai_checks: token ids as strings
        sampling["logit_bias"] = {int(token): bias for token, bias in sampling["logit_bias"].items()}
    defaults = OPENAI_DEFAULTS if chat else {**OPENAI_DEFAULTS, "max_tokens": COMPLETIONS_MAX_TOKENS}
    sampling = {**defaults, **{key: value for key, value in sampling.items() if value is not None}}
    top = _top_logprobs(body, chat)
    if top:
        sampling["top_logprobs"] = top
    asked_logprobs = body.get("logprobs") is not None and body.get("logprobs") is not False
    if echo and (asked_logprobs or max_tokens == 0):  # the echoed prompt's log-probabilities (engines need them for 0 tokens)
        sampling["prompt_logprobs"] = top
    if chat and body.get("continue_final_message") is True:  # vLLM's extension (with add_generation_prompt false)
        sampling["continue_final_message"] = True
    elif chat and body.get("add_generation_prompt") is False:  # vLLM's: the prompt ends without the assistant's header
        sampling["add_generation_prompt"] = False
    if body.get("include_stop_str_in_output") is True:  # vLLM's
        sampling["include_stop_str_in_output"] = True
    if chat and body.get("chat_template_kwargs") is not None:  # vLLM's
        sampling["chat_template_kwargs"] = body["chat_template_kwargs"]
    if tool_use is not None:  # the chat template lists them ("none" leaves them out: the model cannot call them)
        sampling["tools"] = tool_use.tools
    limit = sampling.get("max_tokens", GenerationRequest.model_fields["max_tokens"].default)
    if sampling.get("min_tokens", 0) > limit:  # vLLM's bound, named here (the engine request's check names no field)
        raise invalid(f'"min_tokens" must be at most max_tokens ({limit}), got {sampling["min_tokens"]}', "min_tokens")
    seed = body.get("seed")
    requests = []
    try:
        for given in inputs:
            for choice in range(n):
                choice_seed = seed + choice if isinstance(seed, int) and not isinstance(seed, bool) else seed
                requests.append(GenerationRequest(**given, **sampling, seed=choice_seed))
    except (ValidationError, TypeError) as exc:
        raise validation_error(exc) from None
    options = body.get("stream_options") or {}
    return Parsed(chat=chat, requests=requests, stream=bool(body.get("stream")),
                  include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
                  token_ids=bool(body.get("return_tokens_as_token_ids")), n=n,
                  logprobs=asked_logprobs, hide_logprobs=body.get("logprobs") is False or (echo and not asked_logprobs), echo=echo,
                  tool_use=tool_use, reasoning=chat and reasoning_parser is not None,
                  include_reasoning=body.get("include_reasoning") is not False,
                  thinks=reasoning.thinks(body.get("chat_template_kwargs")))


def _top_logprobs(body: dict[str, Any], chat: bool) -> int:
    """How many alternatives per token the client asks for: chat's `top_logprobs` (0-20, with `logprobs: true`),
    the number completions' `logprobs` gives (0-5), as OpenAI bounds them."""
    if chat:
        top = body.get("top_logprobs")
        if top is None:
            return 0
        if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20:
            raise invalid('"top_logprobs" must be an integer from 0 to 20', "top_logprobs")
        if top and body.get("logprobs") is not True:
            raise invalid('"logprobs" must be true when "top_logprobs" is used', "logprobs")
        return top
    asked = body.get("logprobs")
    if asked is None or isinstance(asked, bool):
        return 0
    if not isinstance(asked, int) or not 0 <= asked <= 5:
        raise invalid('"logprobs" must be an integer from 0 to 5', "logprobs")
    return asked


def echoed(parsed: Parsed, index: int, tokenizer: Any) -> str:
    """What `echo` puts before choice `index`'s text: its prompt, token ids decoded with the model's tokenizer (the
    front checks it has one before it generates)."""
    if not parsed.echo:
        return ""
    request = parsed.requests[index]
    return request.prompt if request.prompt is not None else tokenizer.decode(request.prompt_token_ids)


def _token_name(token: int, tokenizer: Any, as_ids: bool) -> str:
    return f"token_id:{token}" if as_ids or tokenizer is None else tokenizer.decode([token])


def usage(parsed: Parsed, completions: list[Completion]) -> dict[str, int]:
    """Token counts; a prompt with `n` choices is counted once, as OpenAI does."""
    prompt_tokens = sum(completion.prompt_tokens for completion in completions[:: parsed.n])
    completion_tokens = sum(completion.completion_tokens for completion in completions)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def _logprobs(parsed: Parsed, completion: Completion, tokenizer: Any, with_prompt: bool = False) -> dict[str, Any]:
    """OpenAI's `logprobs` of a choice: chat's `content` entries, or completions' parallel lists (`top_logprobs`
    null unless asked for, `text_offset` where each token's text starts). `with_prompt` (completions' echo): the
    prompt's tokens first, the first one's log-probability and alternatives null, as vLLM's server answers."""
    def name(token: int) -> str:
        return _token_name(token, tokenizer, parsed.token_ids)

    token_ids, values = completion.token_ids, completion.logprobs
    tops: list[Any] = completion.top_logprobs or [[] for _ in token_ids]
    if with_prompt and completion.prompt_logprobs:
        token_ids, values = completion.prompt_token_ids + token_ids, completion.prompt_logprobs + values
        tops = completion.prompt_top_logprobs + tops
    names = [name(token) for token in token_ids]
    if parsed.chat:
        return {"content": [{"token": text, "logprob": value, "bytes": token_bytes(token, text, tokenizer),
                             "top_logprobs": [{"token": name(other), "logprob": other_value, "bytes": token_bytes(other, name(other), tokenizer)}
                                              for other, other_value in top]}
                            for token, text, value, top in zip(completion.token_ids, names, completion.logprobs, tops)]}
    offsets, position = [], 0
    for token in names:
        offsets.append(position)
        position += len(token)
    # as OpenAI's legacy completions: the N likeliest and always the sampled token, so up to N + 1 entries (with
    # `logprobs: 0`, the sampled token alone, as vLLM's server answers)
    top_dicts = [None if top is None else {**{name(other): other_value for other, other_value in top}, token: value}
                 for top, token, value in zip(tops, names, values)] if parsed.logprobs or any(tops) else None
    return {"tokens": names, "token_logprobs": values, "top_logprobs": top_dicts, "text_offset": offsets}


def _envelope(parsed: Parsed, model: str, chunk: bool) -> dict[str, Any]:
    prefix, kind = ("chatcmpl", "chat.completion") if parsed.chat else ("cmpl", "text_completion")
    return {"id": f"{prefix}-{parsed.id}", "object": f"{kind}.chunk" if chunk and parsed.chat else kind, "created": parsed.created, "model": model}


def answer(parsed: Parsed, completions: list[Completion], model: str, tokenizer: Any) -> dict[str, Any]:
    """The whole reply of a request that did not ask to stream."""
    choices = []
    for index, completion in enumerate(completions):
        choice: dict[str, Any] = {"index": index, "finish_reason": completion.finish_reason, **stop_reason(completion),
                                  "logprobs": None if parsed.hide_logprobs else _logprobs(parsed, completion, tokenizer, parsed.echo)}
        if parsed.chat:
            choice["message"], choice["finish_reason"] = chat_message.message(completion.text, parsed, completion.finish_reason)
        else:
            choice["text"] = echoed(parsed, index, tokenizer) + completion.text
        choices.append(choice)
    return {**_envelope(parsed, model, chunk=False), "choices": choices, "usage": usage(parsed, completions)}


def stop_reason(completion: Completion) -> dict[str, Any]:
    """vLLM's `stop_reason` of a choice (the stop string that ended it, a stop token id, or null at the end of text),
    where the engine knows it: without the key a client cannot tell a matched stop string from the model's end."""
    return {"stop_reason": completion.stop_reason} if completion.stop_reason_known else {}


def delta_chunk(parsed: Parsed, model: str, index: int, text: str, *, first: bool = False, logprobs: dict[str, Any] | None = None,
                ended: Completion | None = None, finish_reason: str | None = None, delta: dict[str, Any] | None = None) -> dict[str, Any]:
    """One streamed event of a choice: new text (the first chat event also names the role), another chat `delta` (tool
    calls), or its end (`ended`, with its finish_reason unless another is given)."""
    finish_reason = finish_reason or (ended.finish_reason if ended is not None else None)
    choice: dict[str, Any] = {"index": index}
    if delta is not None:
        choice["delta"] = delta
    elif parsed.chat:
        choice["delta"] = {"role": "assistant", "content": text} if first else ({"content": text} if text or finish_reason is None else {})
    else:
        choice["text"] = text
    choice["logprobs"] = logprobs
    choice["finish_reason"] = finish_reason
    if ended is not None:
        choice.update(stop_reason(ended))
    # with include_usage, OpenAI's chunks all carry `usage`: null, but for the last, which has it
    return {**_envelope(parsed, model, chunk=True), "choices": [choice], **({"usage": None} if parsed.include_usage else {})}


def token_chunks(parsed: Parsed, model: str, index: int, completion: Completion, tokenizer: Any) -> list[dict[str, Any]]:
    """A finished completion as a stream: one event per sampled token, each with its log-probability.

    The texts are the completion's text cut where the decoded tokens end, so they join back to exactly
    `completion.text` (a token that decodes to part of a character carries no text of its own).
    """
    if parsed.chat and (parsed.tool_use is not None or parsed.reasoning):
        said, finish_reason = chat_message.message(completion.text, parsed, completion.finish_reason)
        if chat_message.has_parts(said):
            return message_chunks(parsed, model, index, completion, said, finish_reason, tokenizer)
    logprobs = _logprobs(parsed, completion, tokenizer)
    entries = logprobs["content"] if parsed.chat else [
        {"tokens": [token], "token_logprobs": [value], "top_logprobs": None if logprobs["top_logprobs"] is None else [logprobs["top_logprobs"][i]],
         "text_offset": [logprobs["text_offset"][i]]} for i, (token, value) in enumerate(zip(logprobs["tokens"], logprobs["token_logprobs"]))]
    events = [delta_chunk(parsed, model, index, "", first=True)] if parsed.chat else \
        [delta_chunk(parsed, model, index, echoed(parsed, index, tokenizer))] if parsed.echo else []
    sent = 0
    request = parsed.requests[index]
    live = LiveText(tokenizer, [], skip_special_tokens=request.skip_special_tokens, stop_token_ids=request.stop_token_ids) \
        if tokenizer is not None else None
    for position, entry in enumerate(entries):
        if live is not None:
            live.add(completion.token_ids[position])
        end = min(live.sent, len(completion.text)) if live is not None else len(completion.text)
        piece = {"content": [entry]} if parsed.chat else entry
        events.append(delta_chunk(parsed, model, index, completion.text[sent:end], logprobs=None if parsed.hide_logprobs else piece))
        sent = end
    if sent < len(completion.text) or not entries:
        events.append(delta_chunk(parsed, model, index, completion.text[sent:]))
    events.append(delta_chunk(parsed, model, index, "", ended=completion))
    return events


def message_chunks(parsed: Parsed, model: str, index: int, completion: Completion, said: dict[str, Any], finish_reason: str,
                   tokenizer: Any) -> list[dict[str, Any]]:
    """A finished chat completion with reasoning or tool calls, as a stream: the role (with every token's
    log-probability), its reasoning, its content, one event per call, then its end."""
    logprobs = None if parsed.hide_logprobs else _logprobs(parsed, completion, tokenizer)
    parts = [{"reasoning": said["reasoning"]}] if said.get("reasoning") else []
    parts += [{"content": said["content"]}] if said["content"] else []
    return [delta_chunk(parsed, model, index, "", first=True, logprobs=logprobs),
            *(delta_chunk(parsed, model, index, "", delta=delta) for delta in parts + tool_calls.deltas(said.get("tool_calls", []))),
            delta_chunk(parsed, model, index, "", ended=completion, finish_reason=finish_reason)]


def usage_chunk(parsed: Parsed, model: str, completions: list[Completion]) -> dict[str, Any]:
    """The last event when the client asked `stream_options.include_usage`: no choices, the usage."""
    return {**_envelope(parsed, model, chunk=True), "choices": [], "usage": usage(parsed, completions)}
