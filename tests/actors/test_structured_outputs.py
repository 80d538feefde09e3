"""vLLM's structured outputs (`structured_outputs` `json`/`regex`/`choice`, the older `guided_json`/`_regex`/`_choice`)
through the front on the small model, honoured by the transformers engine, checked by `schema_valid`, and sent on by the
openai engine; what cannot be honoured is a 400 naming its field."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from test_prompt_forms import post

from actors.engines.openai_engine import OpenAIEngine
from actors.engines.types import GenerationRequest, StructuredOutput, check_output

CHAT = {"messages": [{"role": "user", "content": "how many files?"}], "max_tokens": 12, "temperature": 1.0}
COMPLETION = {"prompt": "def handler(event):", "max_tokens": 12, "temperature": 1.0}
# choices a Lark rule must quote right: a space, a quote, a backslash, a character beyond ASCII
CHOICES = ["rename it", 'say "no"', "a\\b", "café"]
VERDICT = {"type": "object", "additionalProperties": False, "required": ["verdict", "done"],
           "properties": {"verdict": {"enum": ["pass", "fail"]}, "done": {"type": "boolean"}}}


@pytest.fixture(scope="module")
def service(engine):
    from serve_apps.generate.service import GenerateService
    from serve_apps.generate.settings import GenerateSettings

    return GenerateService(GenerateSettings(served_model_name="small", embed_app=None), engine=engine)


def texts(service, path: str, body: dict, seeds=range(3)) -> list[str]:
    answers = []
    for seed in seeds:
        status, answer = post(service, path, {**body, "seed": seed})
        assert status == 200, answer
        choice = answer["choices"][0]
        answers.append(choice["message"]["content"] if "message" in choice else choice["text"])
    return answers


@pytest.mark.parametrize("path, body", [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)])
@pytest.mark.parametrize("constraint", [{"guided_regex": "[0-9]{3}"}, {"structured_outputs": {"regex": "[0-9]{3}"}}])
def test_a_regex_gives_exactly_its_match(service, path, body, constraint):
    assert all(re.fullmatch("[0-9]{3}", text) for text in texts(service, path, {**body, **constraint}))
    assert not any(re.fullmatch("[0-9]{3}", text) for text in texts(service, path, body, seeds=[0]))  # the model alone writes no such thing


@pytest.mark.parametrize("path, body", [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)])
@pytest.mark.parametrize("name", ["guided_choice", "structured_outputs"])
def test_a_choice_gives_one_of_the_choices(service, path, body, name):
    constraint = {name: CHOICES} if name == "guided_choice" else {name: {"choice": CHOICES}}
    assert all(text in CHOICES for text in texts(service, path, {**body, **constraint}, seeds=range(6)))


@pytest.mark.parametrize("constraint", [{"guided_json": VERDICT}, {"guided_json": json.dumps(VERDICT)},  # vLLM takes its text too
                                        {"structured_outputs": {"json": VERDICT}}])
def test_guided_json_gives_a_valid_document(service, constraint):
    import jsonschema

    for text in texts(service, "/v1/chat/completions", {**CHAT, "max_tokens": 24, **constraint}):
        jsonschema.validate(json.loads(text), VERDICT)


@pytest.mark.parametrize("extra, param, words", [
    ({"guided_regex": "[0-9"}, "guided_regex", "regex does not compile"),
    ({"structured_outputs": {"regex": "("}}, "structured_outputs", "regex does not compile"),
    ({"guided_regex": 5}, "guided_regex", "must be a regular expression"),
    ({"guided_choice": []}, "guided_choice", "non-empty list of strings"),
    ({"structured_outputs": {"choice": ["a", 1]}}, "structured_outputs", "non-empty list of strings"),
    ({"guided_json": "{not json"}, "guided_json", "must be a JSON schema"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs", "exactly one of"),
    ({"structured_outputs": {"grammar": "start: \"a\""}}, "structured_outputs", "grammars are not supported"),
    ({"structured_outputs": {"whitespace_pattern": " "}}, "structured_outputs", "structured_outputs.whitespace_pattern"),
    ({"guided_grammar": "root ::= \"a\""}, "guided_grammar", "grammars are not supported"),
    ({"response_format": {"type": "json_object"}, "guided_regex": "a+"}, "guided_regex", "only one kind of structured output"),
    ({"structured_outputs": {"choice": ["a"]}, "guided_json": {"type": "object"}}, "guided_json", "only one kind"),
])
@pytest.mark.parametrize("path, body", [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)])
def test_what_cannot_be_honoured_is_a_400_naming_the_field(service, path, body, extra, param, words):
    status, answer = post(service, path, {**body, **extra})
    assert status == 400 and answer["error"]["param"] == param and words in answer["error"]["message"], answer


def test_a_regex_the_engines_grammar_refuses_is_the_requests_fault(service):
    status, answer = post(service, "/v1/completions", {**COMPLETION, "guided_regex": "(?=a)a"})  # Python's, not llguidance's
    assert status == 400 and "regex is not usable" in answer["error"]["message"], answer


def test_schema_valid_is_a_whole_match_or_a_choice_and_none_without_a_constraint(engine):
    assert check_output("123", StructuredOutput(regex="[0-9]{3}")) and not check_output("1234", StructuredOutput(regex="[0-9]{3}"))
    assert check_output("b", StructuredOutput(choice=["a", "b"])) and not check_output("ab", StructuredOutput(choice=["a", "b"]))
    assert check_output("x", None) is None
    cut, whole = engine.generate([GenerationRequest(prompt="x", max_tokens=2, seed=1, structured_output={"regex": "[a-z]{40}"}),
                                  GenerationRequest(prompt="x", max_tokens=12, seed=1, structured_output={"regex": "[a-z]{6}"})])
    assert cut.finish_reason == "length" and cut.schema_valid is False  # an answer cut by max_tokens
    assert whole.finish_reason == "stop" and whole.schema_valid is True and len(whole.text) == 6


def test_a_request_holds_one_structured_output_and_json_schema_is_its_schema():
    request = GenerationRequest(prompt="x", json_schema={"type": "object"})
    assert request.structured_output == StructuredOutput(json_schema={"type": "object"}) and request.json_schema == {"type": "object"}
    assert GenerationRequest(prompt="x", structured_output={"regex": "a"}).json_schema is None
    with pytest.raises(ValueError, match="exactly one of"):
        StructuredOutput(regex="a", choice=["a"])
    with pytest.raises(ValueError, match="not both"):
        GenerationRequest(prompt="x", json_schema={"type": "object"}, structured_output={"regex": "a"})


def test_the_openai_engine_sends_structured_outputs_only_when_set():
    sent = []

    def upstream(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        answer = {"text": "123", "message": {"content": "123"}, "finish_reason": "stop"}
        return httpx.Response(200, json={"model": "m", "choices": [answer]})

    engine = OpenAIEngine("http://upstream/v1", "m", api_key_env=None, transport=httpx.MockTransport(upstream))
    try:
        chat = [{"role": "user", "content": "x"}]
        answers = engine.generate([GenerationRequest(prompt="x", max_tokens=3, structured_output={"regex": "[0-9]{3}"}),
                                   GenerationRequest(messages=chat, structured_output={"choice": ["123", "4"]}),
                                   GenerationRequest(prompt="x", max_tokens=3),
                                   GenerationRequest(prompt="x", max_tokens=3, json_schema={"type": "integer"})])
    finally:
        engine.close()
    regex, choice, plain, schema = sorted(sent, key=lambda body: ("structured_outputs" not in body, "messages" in body,
                                                                  "response_format" in body))
    assert regex["structured_outputs"] == {"regex": "[0-9]{3}"} and choice["structured_outputs"] == {"choice": ["123", "4"]}
    assert "structured_outputs" not in plain and "response_format" not in plain
    # a prompt's schema is sent too, as vLLM's server takes response_format on completions (it was left out)
    assert schema["response_format"]["json_schema"]["schema"] == {"type": "integer"} and "structured_outputs" not in schema
    assert [answer.schema_valid for answer in answers] == [True, True, None, True]
