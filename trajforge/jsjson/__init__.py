"""JSON exactly as JavaScript reads and writes it.

The Central Command protocol signs `uint32BE(sequence) || JSON.stringify(envelope without attestation)`,
so the server must rebuild, byte for byte, what `JSON.stringify(JSON.parse(body))` gives in JavaScript.
Python's `json` differs from JavaScript:

- in what it accepts: `NaN`, `Infinity`, `-Infinity`, and numbers past a double (`1e400`, which
  JavaScript turns into `Infinity` and writes as `null`); duplicate keys (JavaScript silently keeps the
  last one). `loads_strict` refuses all of these with `JSONRejected`.
- in how it writes numbers: JavaScript has only doubles and writes them with ECMAScript
  Number::toString: `0.00001` (Python `1e-05`), `1e-7` (`1e-07`), `10000000000000000` (`1e+16`), `5`
  (`5.0`), `0` (`-0.0`), and integers past 2**53 rounded to a double (`12345678901234567890` is written
  `12345678901234567000`).
- in lone surrogates, which ES2019 `JSON.stringify` writes as `\\udxxx` escapes.
- in key order: a JavaScript object lists its array-index keys ("0".."4294967294") first, in ascending
  numeric order, then the other keys in insertion order.

`js_stringify` writes what `JSON.stringify` writes. Fast path: the C encoder of the standard library
(`ensure_ascii=False`, compact separators, no NaN) writes strings exactly as JavaScript does, so the only
possible differences are number tokens and lone surrogates. A few cheap scans of the output look for
any number token whose Python spelling can differ from JavaScript's (`.0` before a delimiter, an
exponent `e-0x` or `e+1x`/`e+20`, an integer of 16 digits or more) or an array-index key, and a lone
surrogate makes the UTF-8 encoding fail. Only then is the output rewritten: dicts with index keys are
reordered, lone surrogates escaped, and, with string tokens set aside, the flagged number tokens (and
only those) rewritten from their exact double.
"""

from trajforge.jsjson.reading import JSONRejected, iter_array_spans, loads_strict
from trajforge.jsjson.writing import canonical_without, js_number, js_stringify

__all__ = ["JSONRejected", "canonical_without", "iter_array_spans", "js_number", "js_stringify", "loads_strict"]
