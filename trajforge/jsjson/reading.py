"""Reading JSON as JavaScript's JSON.parse accepts it, minus what JavaScript never produces."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_MAX_SAFE_INT = 2**53  # integers below this in magnitude are exact doubles, written the same by both
_INFINITIES = (float("inf"), float("-inf"))


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


def _checked_float(text: str) -> float:
    value = float(text)
    if value in _INFINITIES:
        raise JSONRejected(f"number {_clip(text)} does not fit a double (JavaScript would read it as Infinity)")
    return value


def _checked_int(text: str) -> int:
    value = int(text)
    if len(text) > 300:
        try:
            float(value)
        except OverflowError:
            raise JSONRejected(f"number {_clip(text)} does not fit a double (JavaScript would read it as Infinity)") from None
    return value


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:20] + "..." + text[-10:]


# Numbers parse with C `float`/`int` unless the text may hold one that overflows a double: that needs an
# exponent of three digits or more (`e308`, `E+400`) or a run of at least 210 digits before the point.
_FAST_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)
_CHECKED_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_constant=_constant, parse_float=_checked_float, parse_int=_checked_int
)
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_BIG_EXPONENT = re.compile(rb"e\+?[0-9]{3}")
_LONG_DIGIT_RUN = b"0" * 200


def _decoder_for(raw: bytes) -> json.JSONDecoder:
    if _BIG_EXPONENT.search(raw) is None and (len(raw) < 200 or _LONG_DIGIT_RUN not in raw):
        return _FAST_DECODER
    return _CHECKED_DECODER


def _pick_decoder(data: bytes | str) -> json.JSONDecoder:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    return _decoder_for(raw.translate(_DIGITS_TO_ZERO))


def _decode_text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONRejected(f"body is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None


def _rejection(exc: Exception) -> JSONRejected:
    if isinstance(exc, JSONRejected):
        return exc
    if isinstance(exc, json.JSONDecodeError):
        message = "unexpected data after the JSON value" if exc.msg == "Extra data" else exc.msg
        return JSONRejected(f"invalid JSON at line {exc.lineno} column {exc.colno}: {message}")
    if isinstance(exc, RecursionError):
        return JSONRejected("JSON nested too deeply")
    return JSONRejected(f"invalid JSON: {exc}")  # e.g. an integer of more than 4300 digits


def loads_strict(data: bytes | str) -> Any:
    """Parse JSON as `JSON.parse` would, refusing NaN/Infinity, duplicate keys and numbers past a double.

    Objects come back as dicts in document order. Bytes must be UTF-8 (a BOM is refused, as JSON.parse does).
    """
    text = _decode_text(data)
    if text.startswith("\ufeff"):
        raise JSONRejected("JSON text starts with a byte order mark (U+FEFF), which JSON.parse refuses")
    decoder = _pick_decoder(data)
    try:
        return decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        raise _rejection(exc) from None


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def iter_array_spans(text: str) -> Iterator[tuple[Any, int, int]]:
    """Each element of a JSON array text, parsed strictly, with its start and end offsets in `text`.

    `text[start:end]` is the exact source text of the element. Whitespace around the array and between
    tokens is allowed; anything else that JSON.parse would refuse raises JSONRejected.
    """
    skip = _WHITESPACE.match
    decoder = _pick_decoder(text)
    length = len(text)
    position = skip(text, 0).end()
    if position >= length or text[position] != "[":
        raise JSONRejected(f"expected a JSON array at offset {position}")
    position = skip(text, position + 1).end()
    if position < length and text[position] == "]":
        position += 1
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, position)
            except (ValueError, RecursionError) as exc:
                raise _rejection(exc) from None
            yield value, position, end
            position = skip(text, end).end()
            if position >= length:
                raise JSONRejected("the array is not closed: expected ',' or ']' at the end of the text")
            if text[position] == "]":
                position += 1
                break
            if text[position] != ",":
                raise JSONRejected(f"expected ',' or ']' after an array element at offset {position}")
            position = skip(text, position + 1).end()
            if position < length and text[position] == "]":
                raise JSONRejected(f"trailing comma before ']' at offset {position}")
    rest = skip(text, position).end()
    if rest != length:
        raise JSONRejected(f"unexpected data after the array at offset {rest}")
