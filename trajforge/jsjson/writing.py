"""Writing JSON byte for byte as JavaScript's JSON.stringify does."""

from __future__ import annotations

import json
import re
from typing import Any

from trajforge.jsjson.reading import _INFINITIES, _MAX_SAFE_INT, JSONRejected, _clip

try:  # the C encoder of the standard library, made once (json.dumps makes one per call)
    from json.encoder import c_encode_basestring as _c_string, c_make_encoder as _c_make_encoder
except ImportError:  # pragma: no cover - CPython always has _json
    _c_make_encoder = None
    _c_string = None


def _float_text(value: float) -> str:
    """ECMAScript Number::toString of a float, from Python's repr (the same shortest round-trip digits)."""
    text = repr(value)
    if "e" in text:
        mantissa, _, exp_text = text.partition("e")
        exponent = int(exp_text)
        if -7 < exponent < 21:  # Python writes 1e-5..1e-6 and 1e16..1e20 in exponent form, JavaScript does not
            sign = "-" if mantissa[0] == "-" else ""
            digits = mantissa.lstrip("-").replace(".", "")
            if exponent < 0:
                return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
            return sign + digits + "0" * (exponent + 1 - len(digits))
        return f"{mantissa}e{'+' if exponent > 0 else '-'}{abs(exponent)}"
    if text.endswith(".0"):
        return "0" if value == 0 else text[:-2]
    if text in ("inf", "-inf", "nan"):
        raise JSONRejected(f"{text} cannot be written as JSON (JSON has no NaN or Infinity)")
    return text


def js_number(value: int | float) -> str:
    """A number as JavaScript writes it: integers are doubles there, so big ones are rounded to one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{type(value).__name__} is not a number")
    if isinstance(value, int):
        if -_MAX_SAFE_INT < value < _MAX_SAFE_INT:
            return int.__repr__(value)
        try:
            value = float(value)
        except OverflowError:
            raise JSONRejected(f"integer {_clip(str(value))} does not fit a double") from None
    return _float_text(float(value))


def _no_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


if _c_make_encoder is not None:
    # No circular-reference markers: a reused marker dict would be left dirty by an exception; a cycle
    # ends in RecursionError instead, which js_stringify reports.
    _C_ENCODE = _c_make_encoder(None, _no_default, _c_string, None, ":", ",", False, False, False)

    def _encode(value: Any) -> str:
        return "".join(_C_ENCODE(value, 0))

else:  # pragma: no cover
    _ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_no_default)
    _encode = _ENCODER.encode


# Cheap scans of the C encoder's output for number tokens whose Python spelling may differ from
# JavaScript's. They also look inside strings, where a hit only costs the slower, exact path.
_PYTHON_ONLY_FLOAT = re.compile(rb"\.0[,\]}]")  # an integral float: 5.0, -0.0, 1234.0
_PYTHON_ONLY_EXPONENT = re.compile(rb"e(?:-0|\+1[6-9]|\+20)")  # 1e-05..9e-09 and 1e+16..1e+20
_FLATTEN_NUMBERS = bytes.maketrans(b":[0123456789", b",,0000000000")  # with '-' deleted
_BIG_INTEGER = b"," + b"0" * 16  # an integer token of 16 digits or more (|n| >= 2**53 has 16+)

# JavaScript objects list their array-index keys ("0".."4294967294", no leading zeros) first, in ascending
# numeric order, then the other keys in insertion order: JSON.stringify(JSON.parse('{"b":1,"1":2}')) is
# '{"1":2,"b":1}'. In compact JSON a string directly followed by ':' is a key, so this only finds keys.
_INDEX_KEY = re.compile(r'"(?:0|[1-9][0-9]{0,9})":')
_MAX_INDEX = 2**32 - 2
_CONTAINERS = (dict, list, tuple)

_STRING_TOKEN = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")')
_DELIMITERS_TO_COMMA = bytes.maketrans(b":[]{}\x00", b",,,,,,")
_DIGITS_AND_MINUS_TO_ZERO = bytes.maketrans(b"-0123456789", b"00000000000")
_NUMBER_START = frozenset(b"-0123456789")
_SURROGATES = re.compile("[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")


def _surrogate(match: re.Match[str]) -> str:
    text = match.group()
    if len(text) == 2:  # a pair JavaScript sees as one character: written raw
        return chr(0x10000 + ((ord(text[0]) - 0xD800) << 10) + (ord(text[1]) - 0xDC00))
    return f"\\u{ord(text):04x}"


def _is_index(key: Any) -> bool:
    return (
        type(key) is str
        and key.isascii()
        and key.isdigit()
        and (key == "0" or key[0] != "0")
        and len(key) <= 10
        and int(key) <= _MAX_INDEX
    )


def _js_ordered(value: Any) -> Any:
    """A copy of `value` whose dicts list their keys in JavaScript's property order."""
    if isinstance(value, dict):
        items = [(key, _js_ordered(item) if isinstance(item, _CONTAINERS) else item) for key, item in value.items()]
        index = [(int(key), key, item) for key, item in items if _is_index(key)]
        if index:
            index.sort()
            items = [(key, item) for _, key, item in index] + [(key, item) for key, item in items if not _is_index(key)]
        return dict(items)
    return [_js_ordered(item) if isinstance(item, _CONTAINERS) else item for item in value]


def _number_token(token: bytes) -> bytes:
    if b"." in token or b"e" in token:
        return _float_text(float(token)).encode()
    return js_number(int(token)).encode()


def _token_end(flat: bytes, position: int) -> int:
    end = flat.find(b",", position)
    return len(flat) if end < 0 else end


def _rewrite_numbers(out: bytes) -> bytes:
    """Rewrite the number tokens of compact JSON `out` that Python may spell differently, strings untouched.

    String tokens are set aside first; in what is left every number lies between two delimiters, which
    become commas in `flat` (same length). The tokens to rewrite are found with C-speed substring
    searches (an `e`, a `.0,`, a run of 16 digits), so a long array of ordinary floats costs little.
    """
    parts = _STRING_TOKEN.split(out)  # even indices: text between strings; odd: string tokens
    outside = b"\x00".join(parts[0::2])  # NUL never appears raw in JSON text outside strings
    flat = outside.translate(_DELIMITERS_TO_COMMA)
    spans: set[tuple[int, int]] = set()
    position = flat.find(b"e")
    while position >= 0:  # exponent form, or the e of true/false
        start = flat.rfind(b",", 0, position) + 1
        end = _token_end(flat, position)
        if flat[start] in _NUMBER_START:
            spans.add((start, end))
        position = flat.find(b"e", end)
    position = flat.find(b".0,")
    while position >= 0:  # an integral float
        spans.add((flat.rfind(b",", 0, position) + 1, position + 2))
        position = flat.find(b".0,", position + 3)
    digits = flat.translate(_DIGITS_AND_MINUS_TO_ZERO)
    long_run = b"," + b"0" * 16
    position = digits.find(long_run)
    while position >= 0:  # an integer of 16 digits or more
        end = _token_end(flat, position + 1)
        spans.add((position + 1, end))
        position = digits.find(long_run, end)
    if not spans:
        return out
    pieces: list[bytes] = []
    last = 0
    for start, end in sorted(spans):
        pieces.append(outside[last:start])
        pieces.append(_number_token(outside[start:end]))
        last = end
    pieces.append(outside[last:])
    parts[0::2] = b"".join(pieces).split(b"\x00")
    return b"".join(parts)


def _container(value: Any) -> bytes:
    try:
        text = _encode(value)
        if _INDEX_KEY.search(text) is not None:
            text = _encode(_js_ordered(value))
    except ValueError as exc:
        message = str(exc)
        if "Out of range float" in message:
            raise JSONRejected("NaN and Infinity cannot be written as JSON") from None
        raise JSONRejected(f"cannot be written as JSON: {message}") from None
    except RecursionError:
        raise JSONRejected("cannot be written as JSON: nested too deeply or circular") from None
    try:
        out = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: JSON.stringify escapes them
        out = _SURROGATES.sub(_surrogate, text).encode("utf-8")
    if (
        _PYTHON_ONLY_FLOAT.search(out) is not None
        or _PYTHON_ONLY_EXPONENT.search(out) is not None
        or _BIG_INTEGER in out.translate(_FLATTEN_NUMBERS, b"-")
    ):
        return _rewrite_numbers(out)
    return out


def _scalar(value: Any) -> bytes:
    if isinstance(value, str):
        text = _c_string(value) if _c_string is not None else json.dumps(value, ensure_ascii=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATES.sub(_surrogate, text).encode("utf-8")
    if value is None:
        return b"null"
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if isinstance(value, (int, float)):
        return js_number(value).encode()
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


def js_stringify(value: Any) -> bytes:
    """UTF-8 bytes of JavaScript's `JSON.stringify(value)` (no indentation).

    `value` is made of dict (str keys, insertion order), list or tuple, str, int, float, bool and None,
    as `loads_strict` returns or a client builds by hand. NaN, Infinity and integers past a double raise
    JSONRejected; other types raise TypeError. Keys that are not str are written as Python's json writes
    them (JavaScript object keys are always strings).
    """
    if isinstance(value, (dict, list, tuple)):
        return _container(value)
    return _scalar(value)


def canonical_without(obj: dict[str, Any], key: str) -> bytes:
    """`js_stringify` of `obj` without its top-level `key`: the bytes an envelope's HMAC covers."""
    if key in obj:
        obj = {name: item for name, item in obj.items() if name != key}  # top level only, values shared
    return js_stringify(obj)
