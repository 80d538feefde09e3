"""JSON exactly as JavaScript reads and writes it.

The Central Command protocol signs `JSON.stringify(envelope without attestation)`. Python's `json`
differs from JavaScript in what it accepts (`NaN`, `Infinity`, duplicate keys, numbers past a double)
and in how it writes numbers (`1e-05` vs `0.00001`, `5.0` vs `5`, `1e+16` vs `10000000000000000`,
exact big integers vs doubles) and lone surrogates. `loads_strict` accepts what `JSON.parse` accepts
minus what JavaScript never produces; `js_stringify` writes what `JSON.stringify` writes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from json.encoder import encode_basestring
from typing import Any

_MAX_SAFE_INT = 2**53
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = " \t\n\r"


class JSONRejected(ValueError):
    """The text is not JSON that JavaScript would produce; the message says what and where."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONRejected(f"duplicate key {key!r} in object")
            seen.add(key)
    return result


def _constant(name: str) -> Any:
    raise JSONRejected(f"{name} is not valid JSON")


# Parsing every float through a Python hook costs ~0.5 us each (a 384-float embedding: 200 us), so the
# hooked decoder runs only when the text holds a number that could overflow a double.
# Overflowing numbers (`1e400`) parse to infinity here and are refused when written (`js_stringify`),
# which every signature check does: a per-float parse hook would cost ~0.5 us a number.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)


def _decode_text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONRejected(f"body is not valid UTF-8 (byte {exc.start})") from None


def loads_strict(data: bytes | str) -> Any:
    """Parse JSON, refusing NaN/Infinity and duplicate keys (numbers past a double are refused when written)."""
    text = _decode_text(data)
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JSONRejected(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise JSONRejected("JSON nested too deeply") from None


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in _WHITESPACE:
        position += 1
    return position


def iter_array_spans(text: str) -> Iterator[tuple[Any, int, int]]:
    """Each element of a JSON array text, parsed strictly, with its start and end offsets in `text`."""
    position = _skip(text, 0)
    if position >= len(text) or text[position] != "[":
        raise JSONRejected("expected a JSON array")
    position = _skip(text, position + 1)
    if position < len(text) and text[position] == "]":
        if _skip(text, position + 1) != len(text):
            raise JSONRejected(f"unexpected data after the array at offset {_skip(text, position + 1)}")
        return
    while True:
        try:
            value, end = _DECODER.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise JSONRejected(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise JSONRejected("JSON nested too deeply") from None
        yield value, position, end
        position = _skip(text, end)
        if position >= len(text):
            raise JSONRejected("the array is not closed")
        if text[position] == "]":
            break
        if text[position] != ",":
            raise JSONRejected(f"expected ',' or ']' at offset {position}")
        position = _skip(text, position + 1)
        if position < len(text) and text[position] == "]":
            raise JSONRejected(f"trailing comma before ']' at offset {position}")
    if _skip(text, position + 1) != len(text):
        raise JSONRejected(f"unexpected data after the array at offset {_skip(text, position + 1)}")


# ---- writing -------------------------------------------------------------------------------------


def _float_text(value: float) -> str:
    """ECMAScript Number::toString for a finite double, from Python's shortest round-trip digits."""
    if value == 0:
        return "0"
    if not math.isfinite(value):
        raise JSONRejected("a number does not fit a double (JavaScript would read it as Infinity)")
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    if fraction == "0":
        fraction = ""
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        exp = n - 1
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if exp >= 0 else "-") + str(abs(exp))
    return sign + text


def js_number(value: int | float) -> str:
    """A number as JavaScript writes it (integers are doubles there)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if -_MAX_SAFE_INT < value < _MAX_SAFE_INT:
            return str(value)
        try:
            return _float_text(float(value))
        except OverflowError:
            raise JSONRejected(f"integer {str(value)[:40]}... does not fit a double") from None
    return _float_text(value)


def _escape_surrogate(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"


def _string(text: str) -> str:
    encoded = encode_basestring(text)
    if not text.isascii() and _LONE_SURROGATE.search(text):
        encoded = _LONE_SURROGATE.sub(_escape_surrogate, encoded)
    return encoded


def _float_list(values: list) -> str:
    """A list of floats: C json.dumps, then only the tokens whose Python form differs from JavaScript's."""
    text = json.dumps(values, separators=(",", ":"), allow_nan=True)
    if "e" not in text and ".0," not in text and not text.endswith(".0]") and "N" not in text and "I" not in text:
        return text
    tokens = text[1:-1].split(",")
    return "[" + ",".join(token if "e" not in token and token[-2:] != ".0" and token[-1].isdigit() else _float_text(value) for token, value in zip(tokens, values)) + "]"


def _write(value: Any, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(_string(value))
    elif kind is dict:
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_string(key) if type(key) is str else _string(str(key)))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif kind is list or kind is tuple:
        if value and all(type(item) is float for item in value):
            out.append(_float_list(value))
            return
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif kind is int:
        out.append(str(value) if -_MAX_SAFE_INT < value < _MAX_SAFE_INT else js_number(value))
    elif kind is float:
        out.append(_float_text(value))
    elif isinstance(value, (int, float)):
        out.append(js_number(value))
    else:
        raise TypeError(f"{kind.__name__} cannot be written as JSON")


def js_stringify(value: Any) -> bytes:
    """UTF-8 bytes of `JSON.stringify(value)` for a value made of dict, list, str, int, float, bool, None."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")


def canonical_without(obj: dict[str, Any], key: str) -> bytes:
    """`js_stringify` of `obj` without its top-level `key`: the bytes an envelope's HMAC covers."""
    out: list[str] = ["{"]
    first = True
    for name, item in obj.items():
        if name == key:
            continue
        if not first:
            out.append(",")
        first = False
        out.append(_string(name))
        out.append(":")
        _write(item, out)
    out.append("}")
    return "".join(out).encode("utf-8")
