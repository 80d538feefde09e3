"""The `transformers` engine: a Hugging Face causal LM in this process, on the CPU or a GPU.

Sampling is per request (its own seed); the completion keeps the sampled token ids and their
log-probabilities under the model's raw distribution (log-softmax of the logits, before temperature
and top-p), as vLLM reports them. A request's `structured_output` (JSON schema, regex or choice) guides the
sampling (`guided.py`), and the text is still checked against it afterwards (`schema_valid`: a document cut by
`max_tokens` is not).
vLLM's `min_tokens`, `stop_token_ids`, `ignore_eos` and `skip_special_tokens` act as in vLLM (the token that ended an
answer is not in its text); `min_tokens` with stop strings is refused (vLLM matches none before `min_tokens`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.engines.types import Completion, GenerationRequest, InvalidRequest, check_output, cut_at_stop, render_chat


def _scores(distributions, chosen, top: int) -> tuple[list[float], list[list[tuple[int, float]]]]:
    """Per position of `distributions` (log-softmax rows), the chosen token's log-probability and, with `top`, the `top`
    likeliest (id, log-probability) there, the likeliest first (an empty list without `top`); rounded to 6 places."""
    logprobs = [round(value, 6) for value in distributions.gather(1, chosen.unsqueeze(1)).squeeze(1).tolist()]
    if not top:
        return logprobs, []
    values, indices = distributions.topk(top, dim=-1)
    return logprobs, [[(token, round(value, 6)) for token, value in zip(row_ids, row_values)]
                      for row_ids, row_values in zip(indices.tolist(), values.tolist())]


class TransformersEngine:
    name = "transformers"

    def __init__(self, model: str | Path, device: str | None = None, dtype: str = "auto", max_input_tokens: int = 8192):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"model directory {path} not found (a local Hugging Face model directory; no hub at run time)")
        self.model = str(path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = {"auto": torch.bfloat16 if self.device.startswith("cuda") else torch.float32,
                       "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(self.device).eval()
        self.max_input_tokens = max_input_tokens
        # prompt and answer together: the model's positions (as vLLM's max_model_len defaults to them)
        self.context_tokens: int | None = getattr(self.lm.config, "max_position_embeddings", None)
        self._lock = threading.Lock()  # one generate at a time: the global RNG carries the seed
        self._guide = None  # the grammar compiler for this tokenizer, made at the first request with a structured output
        # the tokens `generate` ends an answer at: the tokenizer's end of text and the generation_config's
        configured = self.lm.generation_config.eos_token_id
        self._end_ids = {self.tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {None}

    def _input_ids(self, request: GenerationRequest):
        import torch

        if request.messages is not None:
            ids = render_chat(self.tokenizer, request, return_tensors="pt", return_dict=True)["input_ids"]
        elif request.prompt_token_ids is not None:
            vocabulary = self.lm.get_input_embeddings().num_embeddings
            if max(request.prompt_token_ids) >= vocabulary:
                raise InvalidRequest(f"prompt token id {max(request.prompt_token_ids)} is out of vocabulary "
                                     f"(this model's ids are 0 to {vocabulary - 1})")
            ids = torch.tensor([request.prompt_token_ids], dtype=torch.long)
        else:
            ids = self.tokenizer(request.prompt, return_tensors="pt")["input_ids"]
        if ids.shape[1] > self.max_input_tokens:
            raise InvalidRequest(f"prompt of {ids.shape[1]} tokens; this engine takes at most {self.max_input_tokens}",
                                 "context_length_exceeded")
        if self.context_tokens and ids.shape[1] + request.max_tokens > self.context_tokens:
            raise InvalidRequest(f"This model's maximum context length is {self.context_tokens} tokens. However, you requested "
                                 f"{ids.shape[1] + request.max_tokens} tokens ({ids.shape[1]} in the prompt, {request.max_tokens} "
                                 "in the completion). Please reduce the length of the prompt or completion.", "context_length_exceeded")
        return ids.to(self.device)

    def _one(self, request: GenerationRequest, on_token: Callable[[int], None] | None = None,
             cancelled: threading.Event | None = None) -> Completion:
        import torch

        started = time.perf_counter()
        if request.min_tokens and request.stop:
            raise InvalidRequest("min_tokens with stop strings is not supported by the transformers engine (vLLM matches no stop "
                                 "string before min_tokens): leave one of them out")
        ids = self._input_ids(request)
        # what ends the answer: the model's end of text (unless ignore_eos) and the request's stop_token_ids
        ends = sorted(set(request.stop_token_ids) | (set() if request.ignore_eos else self._end_ids))
        sample = request.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": request.max_tokens, "do_sample": sample, "return_dict_in_generate": True,
                                   "output_logits": True, "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id}
        if sample:  # top_k and min_p only when asked: else the model's generation_config stands, as vLLM's server does
            options.update(temperature=request.temperature, top_p=request.top_p,
                           **{name: value for name, value in (("top_k", request.top_k), ("min_p", request.min_p)) if value})
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        options["eos_token_id"] = ends or None  # None: no token ends it (ignore_eos without stop_token_ids)
        if request.repetition_penalty != 1.0:
            options["repetition_penalty"] = request.repetition_penalty
        if request.logit_bias:
            options["sequence_bias"] = {(token,): bias for token, bias in request.logit_bias.items()}
        if request.stop:
            options.update(stop_strings=request.stop, tokenizer=self.tokenizer)
        if on_token is not None:
            options["streamer"] = _TokenSink(on_token)
        if cancelled is not None:
            options["stopping_criteria"] = _stop_when(cancelled)
        processors = []
        if request.presence_penalty or request.frequency_penalty:
            processors.append(_penalties(ids.shape[1], request.presence_penalty, request.frequency_penalty))
        if request.min_tokens:  # as vLLM: the end of text is held off too with ignore_eos
            from transformers.generation.logits_process import MinNewTokensLengthLogitsProcessor

            processors.append(MinNewTokensLengthLogitsProcessor(ids.shape[1], request.min_tokens, sorted(self._end_ids | set(ends)),
                                                                device=self.device))
        if request.structured_output is not None:
            processors.append(self._output_guide().processor(request.structured_output))
        if processors:
            from transformers import LogitsProcessorList

            options["logits_processor"] = LogitsProcessorList(processors)
        prompt_scores = self._prompt_logprobs(ids, request.prompt_logprobs) if request.prompt_logprobs is not None else {}
        if request.max_tokens == 0:  # the prompt scored, nothing sampled
            return Completion(text="", finish_reason="length", prompt_tokens=int(ids.shape[1]), model=self.model, engine=self.name,
                              latency_s=round(time.perf_counter() - started, 4), request_id=request.request_id, **prompt_scores)
        with self._lock, torch.inference_mode():
            if request.seed is not None:
                torch.manual_seed(request.seed)
            out = self.lm.generate(ids, attention_mask=torch.ones_like(ids), **options)
        new = out.sequences[0, ids.shape[1]:]
        distributions = torch.log_softmax(torch.stack(out.logits, dim=1)[0].float(), dim=-1)
        logprobs, top = _scores(distributions, new, request.top_logprobs)
        token_ids = new.tolist()
        ended = bool(token_ids) and token_ids[-1] in ends
        # as vLLM: the token that ended the answer is not in its text (unless include_stop_str_in_output)
        shown = token_ids[:-1] if ended and not request.include_stop_str_in_output else token_ids
        raw = self.tokenizer.decode(shown, skip_special_tokens=request.skip_special_tokens)
        text, stop = cut_at_stop(raw, request.stop, keep=request.include_stop_str_in_output)
        if ended and stop is None and (request.ignore_eos or token_ids[-1] not in self._end_ids):
            stop = token_ids[-1]  # a stop_token_ids token: vLLM's stop_reason is its id (None at the end of text)
        known = stop is not None or ended or len(token_ids) >= request.max_tokens
        if not known:  # stopped early: a stop string `generate` matched across the prompt's end, or cancelled
            whole = self.tokenizer.decode(out.sequences[0].tolist(), skip_special_tokens=True)
            stop = next((candidate for candidate in request.stop if candidate and whole.endswith(candidate)), None)
            known = stop is not None
        return Completion(
            text=text, token_ids=token_ids, logprobs=logprobs, top_logprobs=top,
            finish_reason="stop" if stop is not None or ended or len(token_ids) < request.max_tokens else "length",
            stop_reason=stop, stop_reason_known=known,  # None: the model's end of text (or its token limit)
            prompt_tokens=int(ids.shape[1]), completion_tokens=len(token_ids), model=self.model, engine=self.name,
            schema_valid=check_output(text, request.structured_output), latency_s=round(time.perf_counter() - started, 4),
            request_id=request.request_id, **prompt_scores,
        )

    def _prompt_logprobs(self, ids, top: int) -> dict[str, Any]:
        """One forward pass over the prompt: token i's log-probability is position i-1's log-softmax at it (the model's
        raw distribution, as vLLM's prompt_logprobs), with the `top` likeliest there; the first token has none."""
        import torch

        with torch.inference_mode():
            distributions = torch.log_softmax(self.lm(ids).logits[0, :-1].float(), dim=-1)
        scores, tops = _scores(distributions, ids[0, 1:], top)
        return {"prompt_token_ids": ids[0].tolist(), "prompt_logprobs": [None, *scores],
                "prompt_top_logprobs": [None, *(tops or [[] for _ in scores])]}

    def generate(self, requests: list[GenerationRequest], cancelled: threading.Event | None = None) -> list[Completion]:
        """One after another; setting `cancelled` ends the running one early and the rest at their first token."""
        return [self.generate_streaming(request, cancelled=cancelled) for request in requests]

    def generate_streaming(self, request: GenerationRequest, on_token: Callable[[int], None] | None = None,
                           cancelled: threading.Event | None = None) -> Completion:
        """One request; `on_token` gets each token id as it is sampled, and setting `cancelled` ends the generation early."""
        try:
            return self._one(request, on_token, cancelled)
        except Exception as exc:  # one bad request fails alone
            return Completion(text="", finish_reason="error", error=f"{type(exc).__name__}: {exc}", model=self.model,
                              engine=self.name, request_id=request.request_id, invalid_request=isinstance(exc, InvalidRequest),
                              error_code=getattr(exc, "code", None))

    def _output_guide(self):
        if self._guide is None:
            from actors.engines.guided import OutputGuide

            self._guide = OutputGuide(self.tokenizer, self.lm.config.vocab_size)
        return self._guide

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def health(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model, "device": self.device, "ok": True}


class _TokenSink:
    """A `generate` streamer (put/end) that hands each sampled token id to a callback; the prompt's put is skipped."""

    def __init__(self, on_token: Callable[[int], None]):
        self.on_token = on_token
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.on_token(int(token))

    def end(self) -> None:
        pass


def _penalties(prompt_tokens: int, presence: float, frequency: float):
    """OpenAI's presence and frequency penalties over the tokens sampled so far (not the prompt's)."""
    import torch
    from transformers import LogitsProcessor

    class Penalties(LogitsProcessor):
        def __call__(self, input_ids, scores):
            answer = input_ids[:, prompt_tokens:]
            if not answer.shape[1]:
                return scores
            counts = torch.zeros_like(scores).scatter_add_(1, answer, torch.ones_like(answer, dtype=scores.dtype))
            return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)

    return Penalties()


def _stop_when(cancelled: threading.Event):
    """A stopping criterion that ends the generation once `cancelled` is set (the client went away)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Cancelled()])
