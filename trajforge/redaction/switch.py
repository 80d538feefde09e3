"""`TELEMETRY_REDACT`, Starcode's switch (seed 000): redaction is on unless it says false. The build and the client's
telemetry SDK both read it here."""

from __future__ import annotations

import os

from trajforge.errors import ConfigError

REDACT_ENV = "TELEMETRY_REDACT"
_ON, _OFF = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def redaction_on() -> bool:
    """False only when TELEMETRY_REDACT says false (false, 0, no, off); a value that is neither is a ConfigError."""
    raw = os.environ.get(REDACT_ENV, "").strip().lower()
    if raw and raw not in _ON + _OFF:
        raise ConfigError(f"{REDACT_ENV}={os.environ[REDACT_ENV]!r} is neither true nor false: unset it (redaction on) or set it to false")
    return raw not in _OFF
