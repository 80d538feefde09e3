"""The vLLM engine's adapter code against a stand-in that speaks vLLM 0.34's Python API (vLLM needs CUDA)."""

from __future__ import annotations

import functools
import sys
import threading
from types import SimpleNamespace

import pytest

import fake_vllm
from actors.engines.types import GenerationRequest
from trajforge.errors import ConfigError


def settings(**changes):
    return SimpleNamespace(**{"quantization": "awq", "gpu_memory_utilization": 0.5, "max_model_len": 4096,
                              "enable_prefix_caching": True, **changes})


@pytest.fixture(scope="module")
def vllm_module():
    saved = {name: sys.modules.get(name) for name in (*fake_vllm.CONTENTS, "actors.engines.vllm_engine")}
    fake_vllm.install()
    sys.modules.pop("actors.engines.vllm_engine", None)
    import actors.engines.vllm_engine as module

    yield module
    for name, previous in saved.items():
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous


@pytest.fixture(scope="module")
def vllm_engine(vllm_module, small_model):
    return vllm_module.VllmEngine(small_model, settings())


def backend() -> fake_vllm.AsyncLLM:
    return fake_vllm.AsyncLLM.instances[-1]


def test_completions_keep_vllms_tokens_logprobs_and_options(vllm_engine):
    schema = {"type": "object"}
    messages = [{"role": "user", "content": "hi"}]
    requests = [GenerationRequest(prompt="def main(", max_tokens=7, seed=3),
                GenerationRequest(messages=messages, max_tokens=5, seed=4, json_schema=schema)]
    plain, guided = vllm_engine.generate(requests)
    args = backend().args
    assert (args.distributed_executor_backend, args.tensor_parallel_size) == ("mp", 1)
    assert (args.quantization, args.load_format) == ("awq", "auto")
    assert args.enable_prefix_caching and args.max_model_len == 4096 and args.gpu_memory_utilization == 0.5
    assert plain.completion_tokens == len(plain.token_ids) == len(plain.logprobs) == 7 and plain.finish_reason == "length"
    assert all(value <= 0 for value in plain.logprobs) and plain.prompt_tokens > 0 and plain.engine == "vllm"
    assert guided.schema_valid is False  # the stand-in samples no JSON; the schema went to vLLM's structured outputs:
    assert backend().seen_params[-1].structured_outputs.json == schema and backend().seen_params[-1].logprobs == 0


def test_penalties_and_vllms_sampling_extras_reach_sampling_params(vllm_engine):
    vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=2, seed=1, presence_penalty=0.5, frequency_penalty=-0.5,
                                            repetition_penalty=1.2, top_k=5, min_p=0.1, logit_bias={7: -100.0})])
    params = backend().seen_params[-1]
    assert (params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (0.5, -0.5, 1.2)
    assert (params.top_k, params.min_p, params.logit_bias) == (5, 0.1, {7: -100.0})
    vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=2, seed=1)])
    unset = backend().seen_params[-1]  # off values are not sent: vLLM's own defaults stand
    assert (unset.top_k, unset.min_p, unset.logit_bias) == (0, 0.0, None)


def test_chat_goes_as_the_templates_token_ids_without_added_special_tokens(vllm_engine):
    tokenizer = vllm_engine.tokenizer
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure, "}]
    (completion,) = vllm_engine.generate([GenerationRequest(messages=messages, max_tokens=3, seed=1, continue_final_message=True)])
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False, continue_final_message=True)
    assert text.endswith("Sure, ")
    expected = tokenizer.encode(text, add_special_tokens=False)
    assert backend().seen_prompts[-1] == {"prompt_token_ids": expected} and completion.prompt_tokens == len(expected)
    vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=1)])
    assert backend().seen_prompts[-1] == "def main("  # plain prompts go as text: vLLM tokenizes them as its completions do


def test_chat_template_kwargs_render_the_chat_and_vllms_extras_reach_sampling_params(vllm_engine, monkeypatch):
    tokenizer = vllm_engine.tokenizer
    monkeypatch.setattr(tokenizer, "chat_template", tokenizer.chat_template + "{% if enable_thinking is false %}<think></think>{% endif %}")
    messages = [{"role": "user", "content": "hi"}]
    vllm_engine.generate([GenerationRequest(messages=messages, max_tokens=1, chat_template_kwargs={"enable_thinking": False})])
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert text.endswith("<think></think>")
    assert backend().seen_prompts[-1] == {"prompt_token_ids": tokenizer.encode(text, add_special_tokens=False)}
    eos = tokenizer.eos_token_id
    (ignored,) = vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=4, logit_bias={eos: 100}, ignore_eos=True,
                                                          min_tokens=2, skip_special_tokens=False)])
    params = backend().seen_params[-1]
    assert (params.ignore_eos, params.min_tokens, params.skip_special_tokens) == (True, 2, False)
    assert ignored.token_ids == [10, 10, eos, eos] and ignored.text.endswith(tokenizer.eos_token * 2)  # eos held off by min_tokens
    (stopped,) = vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=4, seed=2, stop_token_ids=[eos, 11],
                                                          logit_bias={11: 100})])
    assert backend().seen_params[-1].stop_token_ids == [eos, 11]
    assert (stopped.token_ids, stopped.stop_reason, stopped.text) == ([11], 11, "")
    vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=1)])
    unset = backend().seen_params[-1]  # off values are not sent: vLLM's own defaults stand
    assert (unset.ignore_eos, unset.min_tokens, unset.stop_token_ids, unset.skip_special_tokens) == (False, 0, None, True)


def test_token_ids_a_kept_stop_and_no_generation_prompt_reach_vllm(vllm_engine):
    tokenizer = vllm_engine.tokenizer
    vllm_engine.generate([GenerationRequest(prompt_token_ids=[5, 6, 7], max_tokens=2, stop=["x"], include_stop_str_in_output=True)])
    assert backend().seen_prompts[-1] == {"prompt_token_ids": [5, 6, 7]} and backend().seen_params[-1].include_stop_str_in_output
    messages = [{"role": "user", "content": "hi"}]
    vllm_engine.generate([GenerationRequest(messages=messages, max_tokens=1, add_generation_prompt=False)])
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert backend().seen_prompts[-1] == {"prompt_token_ids": tokenizer.encode(text, add_special_tokens=False)}
    assert not backend().seen_params[-1].include_stop_str_in_output


@pytest.mark.parametrize("flat", [False, True], ids=["list-of-dicts", "FlatLogprobs"])
def test_top_logprobs_are_the_likeliest_of_vllms_per_position_logprobs(vllm_module, vllm_engine, monkeypatch, flat):
    if flat:  # vLLM answers FlatLogprobs when asked with flat_logprobs; the engine reads either container
        monkeypatch.setattr(vllm_module, "SamplingParams", functools.partial(fake_vllm.SamplingParams, flat_logprobs=True))
    (completion,) = vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=4, seed=3, top_logprobs=3)])
    assert isinstance(backend().seen_params[-1], fake_vllm.SamplingParams)
    assert backend().seen_params[-1].logprobs == 3 and backend().seen_params[-1].flat_logprobs is flat
    assert len(completion.top_logprobs) == len(completion.logprobs) == 4
    for (token, sampled), top in zip(zip(completion.token_ids, completion.logprobs), completion.top_logprobs):
        values = [value for _, value in top]
        assert len(top) == 3 and values == sorted(values, reverse=True) and min(values) > sampled  # the stand-in's others are likelier
        assert token not in [candidate for candidate, _ in top] and sampled < 0
    if flat:
        monkeypatch.undo()
        (as_list,) = vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=4, seed=3, top_logprobs=3)])
        assert (as_list.token_ids, as_list.logprobs, as_list.top_logprobs) == (completion.token_ids, completion.logprobs,
                                                                                completion.top_logprobs)


def test_prompt_logprobs_go_to_vllm_and_come_back_with_none_first(vllm_engine):
    (completion,) = vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=3, seed=3, prompt_logprobs=2)])
    assert completion.error is None and backend().seen_params[-1].prompt_logprobs == 2 and len(completion.token_ids) == 3
    prompt_ids = backend().tokenizer.encode("def main(", add_special_tokens=True)
    assert completion.prompt_token_ids == prompt_ids and len(completion.prompt_logprobs) == len(prompt_ids)
    assert completion.prompt_logprobs[0] is None and completion.prompt_top_logprobs[0] is None
    for token, value, top in zip(prompt_ids[1:], completion.prompt_logprobs[1:], completion.prompt_top_logprobs[1:]):
        assert value < 0 and len(top) == 2 and token not in [candidate for candidate, _ in top]
    # max_tokens 0 scores the prompt alone: vLLM takes no 0, so one token is sampled and left out, as its server does
    (scored,) = vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=0, prompt_logprobs=2, seed=3)])
    assert backend().seen_params[-1].max_tokens == 1 and (scored.text, scored.token_ids, scored.completion_tokens) == ("", [], 0)
    assert scored.prompt_logprobs == completion.prompt_logprobs and scored.finish_reason == "length"


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
    assert partial.token_ids == whole.token_ids[:5] and partial.request_id == "r-cancel" and partial.finish_reason == "stop"
    (aborted,) = backend().aborted & {backend().seen_ids[-1]}
    assert aborted.startswith("r-cancel-")  # vLLM's id for it: the caller's, made unique


def test_a_cancelled_batch_is_aborted_in_vllm_and_answers_what_it_had(vllm_engine):
    """The actor stops a batch that outlived its timeout, or whose caller went away, through `generate(cancelled=)`."""
    import inspect

    assert "cancelled" in inspect.signature(vllm_engine.generate).parameters  # what the actor looks for
    requests = [GenerationRequest(prompt=prompt, max_tokens=40, seed=2, request_id=f"batch-{i}") for i, prompt in enumerate(["def a(", "def b("])]
    cancelled = threading.Event()
    cancelled.set()
    answers = vllm_engine.generate(requests, cancelled=cancelled)
    assert [answer.request_id for answer in answers] == ["batch-0", "batch-1"]
    assert all(answer.finish_reason != "error" and len(answer.token_ids) < 40 for answer in answers)
    assert {name.rsplit("-", 1)[0] for name in backend().aborted} >= {"batch-0", "batch-1"}


def test_requests_sharing_an_id_get_distinct_vllm_ids(vllm_engine):
    # vLLM aborts every request made with an id (older ones refuse a repeated one): each gets its own
    requests = [GenerationRequest(prompt="x = ", max_tokens=3, seed=seed, request_id="same") for seed in (1, 2)]
    first, second = vllm_engine.generate(requests)
    ids = backend().seen_ids[-2:]
    assert first.finish_reason == second.finish_reason == "length" and first.request_id == second.request_id == "same"
    assert len(set(ids)) == 2 and all(vllm_id.startswith("same-") for vllm_id in ids)


def test_a_prompt_over_max_model_len_is_an_invalid_request_that_fails_alone(vllm_engine):
    long = GenerationRequest(prompt="word " * 5000, max_tokens=4, request_id="long")
    too_long, fine = vllm_engine.generate([long, GenerationRequest(prompt="def main(", max_tokens=2)])
    assert too_long.finish_reason == "error" and too_long.invalid_request and too_long.request_id == "long"
    assert too_long.error.startswith("InvalidRequest: This model's maximum context length is 4096 tokens")
    # OpenAI's code, as the transformers engine's
    assert too_long.error_code == "context_length_exceeded" and fine.error_code is None
    assert fine.finish_reason == "length" and not fine.invalid_request and len(fine.token_ids) == 2
    streamed = vllm_engine.generate_streaming(long, lambda token: None)
    assert streamed.finish_reason == "error" and streamed.invalid_request and "4096" in streamed.error
    assert streamed.error_code == "context_length_exceeded"
    # a prompt that fills max_model_len exactly: vLLM names no parameter, its message says "maximum model length"
    (full,) = vllm_engine.generate([GenerationRequest(prompt_token_ids=[5] * 4096, max_tokens=1)])
    assert full.invalid_request and "maximum model length of 4096" in full.error and full.error_code == "context_length_exceeded"
    (schema,) = vllm_engine.generate([GenerationRequest(prompt="{", max_tokens=3, json_schema={"type": "nonsense"})])
    assert schema.invalid_request and schema.error_code is None


def test_an_empty_stop_string_is_refused_by_vllms_sampling_params_as_the_requests_fault(vllm_engine):
    (refused,) = vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=3, stop=["", "x"])])
    assert refused.finish_reason == "error" and refused.invalid_request and "stop cannot contain an empty string" in refused.error


def test_a_request_vllm_aborts_by_itself_fails_instead_of_ending_as_a_short_answer(vllm_engine):
    def on_token(token: int) -> None:  # on the engine's loop: vLLM aborts it (a paused engine, a shutdown), not the caller
        if len(seen) == 3:
            backend().aborted.add(backend().seen_ids[-1])
        seen.append(token)

    seen: list[int] = []
    aborted = vllm_engine.generate_streaming(GenerationRequest(prompt="class Order:", max_tokens=40, seed=9), on_token)
    assert aborted.finish_reason == "error" and not aborted.invalid_request and "(aborted)" in aborted.error
    assert len(seen) == 4 and aborted.token_ids == []


def test_a_schema_vllm_cannot_compile_is_an_invalid_request(vllm_engine):
    (completion,) = vllm_engine.generate([GenerationRequest(prompt="{", max_tokens=3, json_schema={"type": "nonsense"})])
    assert completion.finish_reason == "error" and completion.invalid_request
    assert completion.error.startswith("InvalidRequest: Grammar error:") and completion.token_ids == []


def test_a_quantization_this_vllm_lacks_is_a_config_error_before_the_engine_starts(vllm_module, small_model):
    started = len(fake_vllm.AsyncLLM.instances)
    with pytest.raises(ConfigError, match=r"actors\.vllm\.quantization 'bitsandbytes' is not a method of this vLLM.*awq"):
        vllm_module.VllmEngine(small_model, settings(quantization="bitsandbytes"))
    # vLLM 0.34 lists fbgemm_fp8 but refuses it at start unless allow_deprecated_quantization (named as a CLI flag)
    with pytest.raises(ConfigError, match=r"'fbgemm_fp8' is not a method of this vLLM \(deprecated there\)") as refused:
        vllm_module.VllmEngine(small_model, settings(quantization="fbgemm_fp8"))
    assert "fbgemm_fp8" not in str(refused.value).split(";")[1] and "awq" in str(refused.value)
    assert len(fake_vllm.AsyncLLM.instances) == started


def test_health_is_not_ok_once_vllms_engine_core_died_and_requests_fail_as_the_engines_fault(vllm_module, small_model):
    engine = vllm_module.VllmEngine(small_model, settings())
    fake_vllm.AsyncLLM.instances.remove(engine.llm)  # the other tests' backend() stays the shared engine's
    assert engine.health()["ok"] is True
    engine.llm.dead = True
    (failed,) = engine.generate([GenerationRequest(prompt="def main(", max_tokens=2)])
    assert engine.health() == {"engine": "vllm", "model": str(small_model), "ok": False}
    assert failed.finish_reason == "error" and not failed.invalid_request and failed.error.startswith("EngineDeadError")


def test_the_stand_in_answers_as_vllms_cumulative_outputs_and_refuses_as_its_params_do(vllm_engine):
    async def outputs():
        params = fake_vllm.SamplingParams(max_tokens=3, prompt_logprobs=1, seed=1)
        return [output async for output in backend().generate({"prompt_token_ids": [5, 6, 7]}, params, "fidelity")]

    answers = vllm_engine._run(outputs())
    # vLLM's default output kind is CUMULATIVE: every output carries all the prompt's log-probabilities (only DELTA pops them)
    assert len(answers) == 3 and all(answer.prompt_logprobs == answers[0].prompt_logprobs for answer in answers)
    assert answers[0].prompt_logprobs[0] is None and len(answers[0].prompt_logprobs) == 3
    assert answers[-1].outputs[0].routed_experts is None and answers[-1].outputs[0].finish_reason == "length"
    for constraints in ({}, {"regex": "a", "choice": ["a"]}):  # exactly one, or vLLM's VLLMValidationError (not a ValueError)
        with pytest.raises(fake_vllm.VLLMValidationError, match="one kind of structured outputs constraint") as refused:
            fake_vllm.StructuredOutputsParams(**constraints)
        assert not isinstance(refused.value, ValueError)
    with pytest.raises(fake_vllm.VLLMValidationError, match="max_tokens must be at least 1"):
        fake_vllm.SamplingParams(max_tokens=0)


def test_vllms_stop_reason_says_which_stop_string_ended_an_answer_or_none_at_the_end_of_text(vllm_engine):
    (whole,) = vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=8, seed=3)])
    stop = whole.text[len(whole.text) // 2:][:3]
    eos = vllm_engine.tokenizer.eos_token_id
    stopped, ended = vllm_engine.generate([GenerationRequest(prompt="def main(", max_tokens=8, seed=3, stop=[stop]),
                                           GenerationRequest(prompt="def main(", max_tokens=8, stop=["</action>"], logit_bias={eos: 100.0})])
    assert (stopped.finish_reason, stopped.stop_reason, stopped.stop_reason_known) == ("stop", stop, True)
    assert stopped.text == whole.text[:whole.text.find(stop)]
    assert (ended.finish_reason, ended.stop_reason, ended.stop_reason_known, ended.token_ids) == ("stop", None, True, [eos])
    assert (whole.finish_reason, whole.stop_reason, whole.stop_reason_known) == ("length", None, True)


def test_a_regex_or_choice_goes_to_vllms_structured_outputs_and_a_bad_regex_is_the_requests_fault(vllm_engine):
    regex, choice = vllm_engine.generate([GenerationRequest(prompt="x", max_tokens=2, structured_output={"regex": "[0-9]{3}"}),
                                          GenerationRequest(prompt="x", max_tokens=2, structured_output={"choice": ["yes", "no"]})])
    sent = [params.structured_outputs for params in backend().seen_params[-2:]]
    assert sent == [fake_vllm.StructuredOutputsParams(regex="[0-9]{3}"), fake_vllm.StructuredOutputsParams(choice=["yes", "no"])]
    assert regex.schema_valid is False and choice.schema_valid is False  # the stand-in samples neither
    (refused,) = vllm_engine.generate([GenerationRequest(prompt="x", max_tokens=2, structured_output={"regex": "(?=a)a"})])
    assert refused.finish_reason == "error" and refused.invalid_request and "Error in regex" in refused.error
