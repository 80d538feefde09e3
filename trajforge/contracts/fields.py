"""Field types with the protocol's limits. String lengths count UTF-16 code units, as JavaScript does."""

from __future__ import annotations

import math
import time
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, ValidationInfo
from pydantic_core import PydanticCustomError

from trajforge import constants as c

Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{32}$")]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
NonNegInt = Annotated[int, Field(ge=0)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=200)]


def js_length(text: str) -> int:
    """Length as JavaScript's `String.prototype.length` counts it (UTF-16 code units)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def max_js_chars(limit: int):
    def check(text: str) -> str:
        # A UTF-16 length is at most twice the code-point length: short strings need no count.
        if 2 * len(text) > limit and js_length(text) > limit:
            raise PydanticCustomError(
                "string_too_long", "at most {limit} characters allowed, got {length}", {"limit": limit, "length": js_length(text)}
            )
        return text

    return AfterValidator(check)


def _check_timestamp(value: float, info: ValidationInfo) -> float:
    if not math.isfinite(value):
        raise PydanticCustomError("finite_number", "timestamp must be a finite number of seconds since the epoch")
    now = (info.context or {}).get("now") or time.time()
    if value < now - c.MAX_TIMESTAMP_AGE_S:
        raise PydanticCustomError("timestamp_too_old", "timestamp is more than 7 days in the past")
    if value > now + c.MAX_TIMESTAMP_AHEAD_S:
        raise PydanticCustomError("timestamp_in_future", "timestamp is more than 1 hour in the future")
    return value


Timestamp = Annotated[float, AfterValidator(_check_timestamp)]
StepContent = Annotated[str, max_js_chars(c.MAX_STEP_CONTENT_CHARS)]
AgentRole = Annotated[str, max_js_chars(c.MAX_AGENT_ROLE_CHARS)]
AgentId = Annotated[str, max_js_chars(c.MAX_AGENT_ID_CHARS)]
GrooveVersion = Annotated[str, max_js_chars(c.MAX_GROOVE_VERSION_CHARS)]
Sequence = Annotated[int, Field(ge=0, le=c.MAX_SEQUENCE)]
