"""HTTP helpers shared by the Serve apps: JSON answers, body limits, the client's address."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger(__name__)
_LEADING_INT = re.compile(r"[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]*([+-]?[0-9]+)")
"""parseInt's reading: JavaScript's white space, then ASCII digits (Python's \\d and \\s would take `١` or `２` as digits)."""

CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS", "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Company-Api-Key, X-Stereos-Timestamp, X-Stereos-Signature"}


class HTTPError(Exception):
    """An answer other than 200, raised inside a handler and turned into a JSON error body."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.body = {"error": error, "message": message, **extra}
        self.headers = headers or {}


def app_path(request: Request) -> str:
    """The request's path below the application's route prefix, without a trailing slash ("/" for the prefix itself).

    Serve hands an application every path under its prefix (`/v1/embed/anything` to the app at `/v1/embed`) and
    names the prefix in `root_path`, so an app that answers only its own routes must compare this path, not a suffix."""
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path.rstrip("/") or "/"


def lone_surrogate(value: Any) -> str | None:
    """The first lone UTF-16 surrogate anywhere in a parsed JSON value (JSON can carry one as an escape, but it is
    not text: no tokenizer or UTF-8 writer takes it), as an escape; None when there is none."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return ascii(exc.object[exc.start:exc.end])
    return None


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    try:
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone UTF-16 surrogate an answer echoes (an accepted envelope's model): escaped, as JSON.stringify does
        payload = json.dumps(body, separators=(",", ":")).encode()
    merged = dict(CORS)
    if headers:
        merged.update(headers)
    if status == 429 and isinstance(body, dict) and "retryAfter" in body:
        merged["Retry-After"] = str(body["retryAfter"])
    return Response(payload, status_code=status, media_type="application/json", headers=merged)


def openai_error(exc: HTTPError) -> Response:
    """An HTTPError in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, which OpenAI's SDKs read: the
    type is OpenAI's class of the status (invalid_request_error for a 4xx), the code ours where it says more."""
    kind = "server_error" if exc.status >= 500 else "rate_limit_error" if exc.status == 429 else "invalid_request_error"
    code = exc.body["error"] if exc.body["error"] != kind else None
    error = {"message": exc.body["message"], "type": kind, "param": exc.body.get("param"), "code": code}
    return json_response(exc.status, {"error": error}, exc.headers)


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """A count from the query as the Node server reads it, `parseInt(x) || default`: the leading integer of the
    value (`7abc` is 7), the default when there is none or it is 0; past `high` it is `high`, and below `low` (a
    negative count, which the Node server would pass on to its query) the default. Never an error."""
    match = _LEADING_INT.match(request.query_params.get(name) or "")
    value = int(match.group(1)) if match else 0
    if not value or value < low:
        return default
    return min(value, high)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body; 413 past `limit` bytes (checked on Content-Length first, then on what arrived)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


FORWARDED_BY_SERVE = "forwarded-by-serve-proxy"
"""The address of every request whose peer Serve's proxy replaced while `trusted_proxies` trusts no one: one window."""


class AddressResolver:
    """The client's address: the peer, or X-Forwarded-For's first entry when the peer is a trusted proxy.

    Serve's HTTP proxy (uvicorn) itself puts X-Forwarded-For's host in the peer's place when the peer is one of its
    FORWARDED_ALLOW_IPS (default this host), unless Ray was started with FORWARDED_ALLOW_IPS='' (`trajforge serve`
    starts its Ray so). Such a request is recognised (its peer is one of the header's hosts): with trusted proxies
    configured its first entry is taken, else it counts as FORWARDED_BY_SERVE, so a client cannot pick its window."""

    def __init__(self, trusted_proxies: list[str]):
        self._networks = [ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies]
        self._warned = False

    def _trusted(self, peer: str) -> bool:
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def resolve(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        forwarded = [entry.strip() for entry in request.headers.get("x-forwarded-for", "").split(",")]
        if self._networks and (self._trusted(peer) or _replaced_by_serve(peer, forwarded)):
            return forwarded[0] or peer
        if _replaced_by_serve(peer, forwarded):
            self._warn_once()
            return FORWARDED_BY_SERVE  # the real peer is unknown; the client must not pick its own window
        return peer

    def _warn_once(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning("Serve's HTTP proxy applied X-Forwarded-For before trusted_proxies could judge it (uvicorn's "
                        "FORWARDED_ALLOW_IPS, default 127.0.0.1): such requests share one rate-limit window. Start Ray with "
                        "FORWARDED_ALLOW_IPS='' (trajforge serve does for a Ray it starts), and list real proxies in trusted_proxies")


def _replaced_by_serve(peer: str, forwarded: list[str]) -> bool:
    """Whether Serve's proxy put an X-Forwarded-For entry in the peer's place (the peer is one of the header's hosts)."""
    return any(entry and (entry == peer or entry.rsplit(":", 1)[0].strip("[]") == peer) for entry in forwarded)
