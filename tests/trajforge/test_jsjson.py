"""trajforge.jsjson against JavaScript itself: JSON.stringify(JSON.parse(input)) computed by Node.

The committed vectors come from tests/fixtures/js_vectors.mjs (seed 20260422); when Node is installed a
fresh set with another seed is generated and checked as well.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from trajforge.jsjson import JSONRejected, canonical_without, iter_array_spans, js_number, js_stringify, loads_strict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GENERATOR = FIXTURES / "js_vectors.mjs"
VECTORS = json.loads((FIXTURES / "js_stringify_vectors.json").read_text(encoding="utf-8"))
ENVELOPES = [vector for vector in VECTORS if vector["name"].startswith("envelope ")]


def mismatches(vectors: list[dict]) -> list[str]:
    """Names (with both outputs) of the vectors where Python does not give JavaScript's bytes."""
    failures = []
    for vector in vectors:
        got = js_stringify(loads_strict(vector["input"])).decode("utf-8")
        if got != vector["expected_stringify"]:
            failures.append(f"{vector['name']}:\n  python:     {got[:400]}\n  javascript: {vector['expected_stringify'][:400]}")
    return failures


# ---- against JavaScript -------------------------------------------------------------------------


def test_the_fixture_covers_what_it_should():
    names = {vector["name"] for vector in VECTORS}
    assert len(ENVELOPES) >= 200
    assert sum('"vector"' in vector["input"] for vector in ENVELOPES) >= 20  # some carry a 384-float embedding
    for name in ("number 1e-7", "number 1e21", "number 5.0", "number -0.0", "number 12345678901234567890",
                 "every control character", "lone high surrogate", "emoji as escaped pairs", "index-like keys are ordered first"):
        assert name in names


@pytest.mark.parametrize("vector", [v for v in VECTORS if not v["name"].startswith("envelope ")], ids=lambda v: v["name"])
def test_edge_vectors_match_javascript(vector):
    assert js_stringify(loads_strict(vector["input"])).decode("utf-8") == vector["expected_stringify"]


def test_random_envelopes_match_javascript():
    assert mismatches(ENVELOPES) == []


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_fresh_vectors_from_node_match(tmp_path):
    out = tmp_path / "vectors.json"
    subprocess.run(["node", str(GENERATOR), "--seed", str(random.randrange(1, 2**31)), "--envelopes", "150", "--out", str(out)],
                   check=True, timeout=120)
    fresh = json.loads(out.read_text(encoding="utf-8"))
    assert len(fresh) > 150
    assert mismatches(fresh) == []


def test_python_json_differs_from_javascript_where_js_stringify_does_not():
    """Why this module exists: compact json.dumps gives other bytes for many envelopes, even ones Node wrote."""
    def python(vector):
        return json.dumps(json.loads(vector["input"]), ensure_ascii=False, separators=(",", ":"))

    differs = [vector for vector in ENVELOPES if python(vector) != vector["expected_stringify"]]
    assert len(differs) / len(ENVELOPES) > 0.5
    # Even an envelope exactly as JSON.stringify wrote it (what a Node client sends) comes back different.
    node_written = [vector for vector in ENVELOPES if vector["input"] == vector["expected_stringify"]]
    assert len(node_written) >= 50
    assert sum(python(vector) != vector["input"] for vector in node_written) / len(node_written) > 0.5
    assert mismatches(differs) == []
    # The classic differences, one by one.
    assert json.dumps([1e-05, 1e-07, 5.0, -0.0, 1e16]) == "[1e-05, 1e-07, 5.0, -0.0, 1e+16]"
    assert js_stringify([1e-05, 1e-07, 5.0, -0.0, 1e16]) == b"[0.00001,1e-7,5,0,10000000000000000]"


# ---- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"), (-0.0, "0"), (0.0, "0"), (5.0, "5"), (-5.0, "-5"), (1e-4, "0.0001"), (1e-5, "0.00001"), (1e-6, "0.000001"),
        (1e-7, "1e-7"), (-1e-7, "-1e-7"), (1.5e-10, "1.5e-10"), (2.5e-8, "2.5e-8"), (1.234e-5, "0.00001234"),
        (1e15, "1000000000000000"), (1e16, "10000000000000000"), (1.5e17, "150000000000000000"),
        (1e20, "100000000000000000000"), (1e21, "1e+21"), (-1e21, "-1e+21"), (1.7976931348623157e308, "1.7976931348623157e+308"),
        (5e-324, "5e-324"), (0.1 + 0.2, "0.30000000000000004"), (1745794234.567, "1745794234.567"),
        (2**53 - 1, "9007199254740991"), (2**53, "9007199254740992"), (2**53 + 1, "9007199254740992"),
        (12345678901234567890, "12345678901234567000"), (-(2**64), "-18446744073709552000"), (10**21, "1e+21"),
        (1234567890123456.8, "1234567890123456.8"),
    ],
)
def test_js_number(value, expected):
    assert js_number(value) == expected
    assert js_stringify(value) == expected.encode()
    assert js_stringify([value]) == f"[{expected}]".encode()
    assert js_stringify({"n": value}) == f'{{"n":{expected}}}'.encode()


def test_numbers_that_javascript_cannot_write_are_refused():
    for value in (math.nan, math.inf, -math.inf, [1.0, math.nan], {"a": {"b": math.inf}}):
        with pytest.raises(JSONRejected, match="NaN|Infinity|inf|nan"):
            js_stringify(value)
    with pytest.raises(JSONRejected, match="does not fit a double"):
        js_stringify([10**400])
    with pytest.raises(TypeError):
        js_number(True)
    with pytest.raises(TypeError):
        js_stringify({"when": object()})


def test_hand_built_values_like_the_client_sdk_signs():
    envelope = {"timestamp": 1745794234.567, "ratio": 1e-5, "whole": 3.0, "count": 7, "big": 2**63, "tiny": [0.0, -0.0, 1e-9]}
    assert js_stringify(envelope) == (
        b'{"timestamp":1745794234.567,"ratio":0.00001,"whole":3,"count":7,"big":9223372036854776000,"tiny":[0,0,1e-9]}'
    )
    assert js_stringify(((1.0, 2.5), [])) == b"[[1,2.5],[]]"  # tuples are arrays


# ---- strings and keys ---------------------------------------------------------------------------


def test_strings_are_escaped_like_json_stringify():
    controls = "".join(chr(code) for code in range(32))
    expected = '"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f' + "".join(
        f"\\u{code:04x}" for code in range(16, 32)
    ) + '"'
    assert js_stringify(controls).decode() == expected
    assert js_stringify('"\\/').decode() == '"\\"\\\\/"'
    assert js_stringify("\u2028\u2029\x7f\x85é日本😀").decode() == '"\u2028\u2029\x7f\x85é日本😀"'
    assert js_stringify(["\ud800", "a\udc00b", "\udc00\ud800"]).decode() == '["\\ud800","a\\udc00b","\\udc00\\ud800"]'
    assert js_stringify({"\udfff": "\ud83d\ude00"}).decode() == '{"\\udfff":"😀"}'  # a raw pair is one character
    assert js_stringify("1.0, e-05") == b'"1.0, e-05"'  # number-like text inside strings is left alone


def test_array_index_keys_come_first_as_in_javascript():
    value = loads_strict('{"b": 1, "10": 2, "a": {"2": 0, "x": 1.0, "1": 2}, "0": 3, "01": 4, "4294967295": 5, "4294967294": 6}')
    assert list(value) == ["b", "10", "a", "0", "01", "4294967295", "4294967294"]  # Python keeps the document order
    assert js_stringify(value) == b'{"0":3,"10":2,"4294967294":6,"b":1,"a":{"1":2,"2":0,"x":1},"01":4,"4294967295":5}'


# ---- parsing ------------------------------------------------------------------------------------


def test_loads_strict_keeps_document_order_and_types():
    value = loads_strict(b'{"z": 1, "a": [1.5, 2, "x", null, true], "m": {"k": -0.0}}')
    assert list(value) == ["z", "a", "m"]
    assert value["a"] == [1.5, 2, "x", None, True] and type(value["a"][1]) is int
    assert math.copysign(1, value["m"]["k"]) == -1
    assert loads_strict("1e-400") == 0.0  # underflow is fine: JavaScript reads 0 too
    assert loads_strict("1.7976931348623158e308") == 1.7976931348623157e308  # rounds to the largest double
    assert loads_strict("[" + "1" * 250 + "]") == [int("1" * 250)]  # long, but a double


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("NaN", "NaN is not valid JSON"),
        ('{"a": [Infinity]}', "Infinity is not valid JSON"),
        ("[-Infinity]", "-Infinity is not valid JSON"),
        ('{"step": 1, "step": 2}', "duplicate key 'step' in object"),
        ('{"a": {"b": [{"c": 1, "d": 2, "c": 3}]}}', "duplicate key 'c' in object"),
        ("1e400", "1e400 does not fit a double"),
        ('{"x": [1, -2.5E+999]}', "does not fit a double"),
        ("[1" + "0" * 400 + "]", "does not fit a double"),
        ("[1" + "0" * 250 + "e99]", "does not fit a double"),
        (b'{"a": "\xff"}', "body is not valid UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "body is not valid UTF-8"),  # a surrogate encoded in UTF-8
        ('{"a": [1, 2', "invalid JSON at line 1 column 12: Expecting \',\' delimiter"),
        ('{"a": ', "invalid JSON at line 1 column 7: Expecting value"),
        ("", "Expecting value"),
        ('{"a": 1} x', "unexpected data after the JSON value"),
        ("[1, 2]]", "unexpected data after the JSON value"),
        ("[1,]", "Expecting value"),
        ("{'a': 1}", "Expecting property name"),
        ('"tab\there"', "Invalid control character"),
        ("\ufeff{}", "byte order mark"),
        ("01", "unexpected data"),
    ],
)
def test_loads_strict_rejects(data, message):
    with pytest.raises(JSONRejected) as caught:
        loads_strict(data)
    assert message in str(caught.value)


def test_deep_nesting_is_rejected_not_crashing():
    with pytest.raises(JSONRejected, match="nested too deeply"):
        loads_strict("[" * 100_000 + "]" * 100_000)


# ---- array spans --------------------------------------------------------------------------------


def test_iter_array_spans_gives_exact_source_text():
    elements = ['{"a" :\t1.0 , "é": "😀\\u00e9"}', "1e-5", '"x, ] y"', "[ [ ], { } ]", "null", "-0", '"\u2028"', "12345678901234567890"]
    text = " \n\t[\r\n " + "  ,\n\t".join(elements) + " \n] \r\n"
    spans = list(iter_array_spans(text))
    assert [text[start:end] for _, start, end in spans] == elements
    assert [value for value, _, _ in spans] == [loads_strict(element) for element in elements]
    assert list(iter_array_spans("[]")) == [] and list(iter_array_spans(" [ \n ] ")) == []
    inputs = [vector["input"] for vector in ENVELOPES[:40]]
    batch = "[\n" + " ,\r\n\t".join(inputs) + "\n]"
    assert [batch[start:end] for _, start, end in iter_array_spans(batch)] == inputs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a JSON array"),
        ('{"a": 1}', "expected a JSON array"),
        ("1", "expected a JSON array"),
        ("[1, 2", "not closed"),
        ("[1 2]", "expected ',' or ']'"),
        ("[1,]", "trailing comma"),
        ("[1, 2,\n ]", "trailing comma"),
        ("[,1]", "Expecting value"),
        ("[1,,2]", "Expecting value"),
        ("[1] x", "unexpected data after the array"),
        ("[1][2]", "unexpected data after the array"),
        ('[{"a": 1, "a": 2}]', "duplicate key 'a'"),
        ("[NaN]", "NaN is not valid JSON"),
        ("[1, 1e400]", "does not fit a double"),
        ("[", "Expecting value"),
    ],
)
def test_iter_array_spans_rejects_malformed_arrays(text, message):
    with pytest.raises(JSONRejected) as caught:
        list(iter_array_spans(text))
    assert message in str(caught.value)


# ---- the signed bytes ---------------------------------------------------------------------------


def test_canonical_without_removes_only_the_top_level_key():
    envelope = loads_strict(ENVELOPES[0]["input"])
    envelope["metadata"]["attestation"] = {"nested": 1.0}  # a nested key of the same name stays
    envelope["attestation"] = {"session_hmac": "ab" * 32, "sequence": 3}
    before = json.dumps(envelope)
    signed = canonical_without(envelope, "attestation")
    copy = {key: value for key, value in envelope.items() if key != "attestation"}
    assert signed == js_stringify(copy)
    assert b'"attestation":{"nested":1}' in signed and b"session_hmac" not in signed
    assert json.dumps(envelope) == before  # the input is left as it was
    assert canonical_without(copy, "attestation") == signed  # no key to remove
    assert canonical_without({"b": 1.0, "a": 2, "1": 3}, "a") == b'{"1":3,"b":1}'


def test_canonical_without_matches_javascript_for_every_envelope():
    for vector in ENVELOPES:
        envelope = loads_strict(vector["input"])
        envelope["attestation"] = {"session_hmac": "0" * 64, "sequence": 1}
        assert canonical_without(envelope, "attestation").decode("utf-8") == vector["expected_stringify"], vector["name"]
