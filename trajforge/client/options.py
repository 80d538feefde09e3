"""The checks of what a caller gives `IngestClient`, `open_session` and a session's sending calls: a wrong type or
value fails at once with a message naming the argument, instead of later as an unrelated error (no scheme read as "no
service answers", a negative timeout as every request failing, a contributor id or metadata the service would refuse
in every envelope of the session, steps that are not dicts signed, sent and refused)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, TypeAdapter, ValidationError

from trajforge.contracts.envelope import EnvelopeRejected, Metadata, rejection_from
from trajforge.contracts.fields import Hex32, Hex64

_HEX32, _HEX64 = TypeAdapter(Hex32), TypeAdapter(Hex64)


def service_url(base_url: Any) -> str:
    """`base_url` without its trailing "/"; TypeError or ValueError unless it is an http:// or https:// URL with a host."""
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be the service's URL as a str, such as 'http://127.0.0.1:8000' (got {type(base_url).__name__})")
    split = urlsplit(base_url.strip())
    if split.scheme.lower() not in ("http", "https") or not split.hostname:
        raise ValueError(f"base_url must be an http:// or https:// URL with a host, such as 'http://127.0.0.1:8000' (got {base_url!r})")
    return base_url.strip().rstrip("/")


def _number(name: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds (got {type(value).__name__} {value!r})")
    if math.isnan(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'more than' if positive else 'at least'} 0 seconds (got {value!r})")


def _count(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number (got {type(value).__name__} {value!r})")
    if value < least:
        raise ValueError(f"{name} must be at least {least} (got {value!r})")


def _check_chunking(chunk_size: int, chunk_timeout_s: float | None, max_queue_size: int | None) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a whole number of steps, at least 1 (got {chunk_size!r})")
    if chunk_timeout_s is not None and not chunk_timeout_s > 0:
        raise ValueError(f"chunk_timeout_s must be more than 0 seconds, or None for no timeout (got {chunk_timeout_s!r})")
    if max_queue_size is not None and (not isinstance(max_queue_size, int) or max_queue_size < 1):
        raise ValueError(f"max_queue_size must be a whole number of envelopes, at least 1, or None for no limit (got {max_queue_size!r})")


_AT_LEAST = {"max_retries": 0, "batch_size": 1, "max_body_bytes": 1, "max_steps_per_envelope": 1, "max_events_per_request": 1}
_SECONDS = {"timeout_s": True, "session_timeout_s": True, "offline_probe_s": False, "backoff_base_s": False, "backoff_max_s": False}


def check_client_options(*, chunk_size: Any, chunk_timeout_s: Any, max_queue_size: Any, **options: Any) -> None:
    """IngestClient's numeric options: the chunk policy's, the seconds in `_SECONDS` (True: more than 0) and the
    whole numbers in `_AT_LEAST`."""
    _check_chunking(chunk_size, chunk_timeout_s, max_queue_size)
    for name, value in options.items():
        if name in _SECONDS:
            _number(name, value, positive=_SECONDS[name])
        else:
            _count(name, value, _AT_LEAST[name])


def check_interval(interval_s: Any) -> None:
    _number("interval_s", interval_s, positive=True)


def check_session(*, provider: Any, model: Any, contributor_id: Any, session_id: Any, version_hash: Any, metadata: Any) -> None:
    """`open_session`'s arguments, before the service is asked: what every envelope of the session would carry is
    checked against the envelope schema (EnvelopeRejected, a ValueError, names the field), so a session whose every
    envelope the service would refuse is not opened."""
    for name, value in (("provider", provider), ("model", model)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a non-empty str (got {type(value).__name__} {value!r})")
    if session_id is not None and not isinstance(session_id, str):
        raise TypeError(f"session_id must be a str or None (got {type(session_id).__name__})")
    if not isinstance(contributor_id, str) or not _valid(_HEX32, contributor_id):
        raise EnvelopeRejected("contributor_id", "string_pattern_mismatch", f"must be 32 hex characters, as contributor_id_for('alice') "
                               f"makes (got {contributor_id!r}); the service refuses every envelope with another")
    if version_hash is not None and (not isinstance(version_hash, str) or not _valid(_HEX64, version_hash)):
        raise EnvelopeRejected("attestation.app_version_hash", "string_pattern_mismatch", f"version_hash must be 64 hex characters "
                               f"(a sha256), as app_version_hash() makes (got {version_hash!r})")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of the envelopes' metadata fields, or None (got {type(metadata).__name__})")
    schema_checked("metadata", Metadata, {**(metadata or {}), "provider": provider, "model_engine": model})


def schema_checked(name: str, model: type[BaseModel], value: Any) -> Any:
    """`value` if the envelope schema's `model` takes it; EnvelopeRejected naming `name.field` otherwise."""
    try:
        model.model_validate(value)
    except ValidationError as exc:
        problem = rejection_from(exc)
        raise EnvelopeRejected(f"{name}.{problem.field}", problem.rule, str(problem).removeprefix(f"{problem.field}: ")) from None
    return value


def _valid(adapter: TypeAdapter, value: str) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def step_list(steps: Any) -> list[dict[str, Any]]:
    """`steps` (a list, or any iterable but a str, bytes or a dict) as a list; TypeError unless each is a dict, so a wrong
    argument is refused before it takes a sequence, instead of being sent as an envelope the service refuses."""
    if isinstance(steps, (str, bytes, Mapping)) or not isinstance(steps, Iterable):
        raise TypeError(f"steps must be a list of steps, each a dict of its fields (got {type(steps).__name__}); nothing sent")
    listed = list(steps)
    for index, step in enumerate(listed):
        if not isinstance(step, Mapping):
            raise TypeError(f"steps[{index}] must be a dict of a step's fields (got {type(step).__name__}); nothing sent")
    return listed


def fields(name: str, value: Any) -> Any:
    """`value` if it is a dict (an outcome, feedback, metadata); TypeError naming `name` otherwise, before anything is signed."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of its fields (got {type(value).__name__}); nothing sent")
    return value
