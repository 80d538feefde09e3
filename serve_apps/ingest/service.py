"""IngestService: the HTTP surface of the Central Command protocol, as a plain class.

`app.py` wraps it into a Serve deployment; tests may build it directly. Routing is a dict lookup
rather than a web framework, because Serve's proxy already costs most of a request's time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from serve_apps.ingest import registry
from serve_apps.ingest.committer import GroupCommitter
from serve_apps.ingest.events import API_KEY_HEADER, EventStore, api_keys, key_accepted
from serve_apps.http import CORS, AddressResolver, HTTPError, app_path, int_param, json_response, openai_error, read_body
from serve_apps.ingest.metrics import IngestMetrics
from serve_apps.ingest.provenance import ProvenanceAPI, claims
from serve_apps.embed.forward import EmbeddingsForwarder
from serve_apps.ratelimit import AddressLimiter
from serve_apps.ingest.settings import IngestSettings
from serve_apps.ingest.stats import Stats
from serve_apps.ingest.store import EnvelopeStore
from serve_apps.ingest.verify import Candidate, Verdict, verify
from trajforge.contracts.envelope import rejection_from
from trajforge.contracts.events import event_rejection, parse_event
from trajforge.contracts.requests import SessionCloseRequest, SessionOpenRequest
from trajforge.jsjson import JSONRejected, iter_array_spans, loads_strict
from trajforge.storage_full import storage_full

log = logging.getLogger("trajforge.ingest")
Handler = Callable[[Request], Awaitable[Response]]
STORAGE_FULL_RETRY_S = 120  # freed by an operator, not in a second; past the SDK's backoff_max_s (60), so it spools and comes back later


class IngestService:
    def __init__(self, settings: IngestSettings):
        self.settings = settings
        self.started = time.monotonic()
        self.store = EnvelopeStore(settings)
        self.committer = GroupCommitter(self.store.commit, settings.group_commit_max_envelopes)
        self._stats_lock = threading.Lock()
        self.stats = Stats(registry.connect(self.store.lake.registry_db))
        self.limiter = AddressLimiter(settings.rate_limits)
        self.addresses = AddressResolver(settings.trusted_proxies)
        self.events = EventStore(self.store.lake, self.store.writer_id)
        self.event_keys = api_keys(settings.events.api_keys, settings.events.api_keys_env)
        if not self.event_keys:
            log.warning("POST /v1/events takes events without an API key: set %s (comma-separated keys) to require %s",
                        settings.events.api_keys_env or "ingest.events.api_keys", API_KEY_HEADER)
        self.metrics = IngestMetrics()
        self.pseudonym = lru_cache(maxsize=65536)(self.store.box.keyed_hash)
        self.provenance = ProvenanceAPI(settings, self.store.lake, self.store.writer_id,
                                        lambda request: self.pseudonym(self.addresses.resolve(request)))
        self.routes: dict[str, dict[str, Handler]] = {
            "/health": {"GET": self.health},
            "/v1/sessions/open": {"POST": self.open_session},
            "/v1/sessions/close": {"POST": self.close_session},
            "/v1/training/ingest": {"POST": self.ingest},
            "/v1/training/ingest:batch": {"POST": self.ingest_batch},
            "/v1/events": {"POST": self.ingest_events},
            "/v1/stats/summary": {"GET": self.stats_summary},
            "/v1/stats/daily": {"GET": self.stats_daily},
            "/v1/stats/models": {"GET": self.stats_models},
            "/v1/stats/providers": {"GET": self.stats_providers},
            "/v1/stats/leaderboard": {"GET": self.stats_leaderboard},
            "/v1/embeddings": {"POST": self.openai_embeddings},
            "/v1/embed": {"POST": self.spec_embed, "GET": self.spec_embed},
            **self.provenance.routes,
        }
        self.embed = EmbeddingsForwarder(settings.embed_app, "ingest.embed_app")
        log.info("ingest ready: lake=%s writer=%s", self.store.lake.root, self.store.writer_id)

    async def __call__(self, request: Request) -> Response:
        path = app_path(request)
        methods = self.routes.get(path) or self.provenance.match(path)
        if request.method == "OPTIONS":  # CORS preflight, answered on any path before the limits, as the specification's middleware
            return Response(status_code=204, headers=CORS)
        try:
            # the specification's per-address limit is a middleware: every request counts, /health and unknown paths too
            retry = self.limiter.check(self.addresses.resolve(request))
            if retry is not None:
                self.metrics.rejected("rate_limited")
                raise HTTPError(429, "rate_limited", "too many requests from this address", retryAfter=retry)
            if methods is None:
                raise HTTPError(404, "not_found", f"no route {path}; see GET /health and the README for the API")
            # HEAD is GET without the body, as Express answers it (the HTTP server leaves the body out)
            handler = methods.get("GET" if request.method == "HEAD" else request.method)
            if handler is None:
                allowed = ", ".join(sorted({*methods, *(("HEAD",) if "GET" in methods else ())}))
                raise HTTPError(405, "method_not_allowed", f"{request.method} is not allowed on {path}; use {allowed}", headers={"Allow": allowed})
            return await handler(request)
        except HTTPError as exc:
            return json_response(exc.status, exc.body, exc.headers)
        except Exception as exc:
            if storage_full(exc):  # the operator's to fix: nothing of the request was acknowledged, the same request works later
                log.error("storage full on %s %s (%s): answered 507; free space under %s", request.method, path, exc, self.store.lake.root)
                return json_response(507, {"error": "storage_full", "retryAfter": STORAGE_FULL_RETRY_S,
                                           "message": "the service's storage is full: this request was not acknowledged; send it again later"},
                                     {"Retry-After": str(STORAGE_FULL_RETRY_S)})
            log.exception("unhandled error on %s %s", request.method, path)
            return json_response(500, {"error": "internal", "message": "the server failed; the request was not acknowledged, retry it"})

    # ---- handlers -------------------------------------------------------------------------------

    async def openai_embeddings(self, request: Request) -> Response:
        """OpenAI's `/v1/embeddings` at the root, so OpenAI's SDKs with `base_url=<url>/v1` reach the embed application."""
        try:
            return await self.embed(await read_body(request, self.settings.max_body_bytes))
        except HTTPError as exc:  # OpenAI's SDKs read their own error shape
            return openai_error(exc)

    async def spec_embed(self, request: Request) -> Response:
        """`/v1/embed` while the embed application is not routed yet (at start): 503, never 404 (`EmbeddingsForwarder.spec_route`)."""
        body = await read_body(request, self.settings.max_body_bytes) if request.method == "POST" else b""
        return await self.embed.spec_route(request.method, body)

    async def health(self, request: Request) -> Response:
        return json_response(200, {"status": "ok", "uptime": round(time.monotonic() - self.started, 3)})

    async def _json(self, request: Request) -> Any:
        return _parsed(await read_body(request, self.settings.max_body_bytes))

    async def open_session(self, request: Request) -> Response:
        try:
            open_request = SessionOpenRequest.model_validate(await self._json(request))
        except ValidationError as exc:
            problem = rejection_from(exc)
            raise HTTPError(400, "invalid_request", str(problem), field=problem.field, rule=problem.rule) from None
        verdict = await _in_thread(self.store.open_session, open_request)
        return json_response(verdict.status, verdict.body)

    async def close_session(self, request: Request) -> Response:
        try:
            close_request = SessionCloseRequest.model_validate(await self._json(request))
        except ValidationError as exc:
            problem = rejection_from(exc)
            raise HTTPError(400, "invalid_request", str(problem), field=problem.field, rule=problem.rule) from None
        verdict = await _in_thread(self.store.close_session, close_request.session_id)
        return json_response(verdict.status, verdict.body)

    def _check(self, envelope: Any, raw: bytes, client: str) -> Candidate | Verdict:
        return verify(envelope, raw, client, self.store.secret_of)

    async def ingest(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await read_body(request, self.settings.max_body_bytes)
        try:
            envelope = loads_strict(body)
        except JSONRejected as exc:
            self.metrics.rejected("malformed_json")
            raise HTTPError(400, "malformed_json", str(exc)) from None
        checked = self._check(envelope, body, self.pseudonym(self.addresses.resolve(request)))
        [verdict] = [checked] if isinstance(checked, Verdict) else await self.committer.submit([checked])
        self.metrics.record([verdict], time.perf_counter() - started)
        return json_response(verdict.status, verdict.body)

    async def ingest_batch(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await read_body(request, self.settings.max_body_bytes)
        try:
            array_text = _unwrap_envelopes(body.decode("utf-8"))
            elements = list(iter_array_spans(array_text))
        except (UnicodeDecodeError, JSONRejected) as exc:
            self.metrics.rejected("malformed_json")
            raise HTTPError(400, "malformed_json", f"the batch must be a JSON array of envelopes (or {{\"envelopes\": [...]}}): {exc}") from None
        limit = self.settings.max_batch_envelopes
        if len(elements) > limit:
            raise HTTPError(413, "batch_too_large", f"a batch carries at most {limit} envelopes, got {len(elements)}")
        client = self.pseudonym(self.addresses.resolve(request))
        verdicts: list[Verdict | None] = []
        pending: list[tuple[int, Candidate]] = []
        for envelope, start, end in elements:
            checked = self._check(envelope, array_text[start:end].encode(), client)
            if isinstance(checked, Verdict):
                verdicts.append(checked)
            else:
                pending.append((len(verdicts), checked))
                verdicts.append(None)
        if pending:
            committed = await self.committer.submit([candidate for _, candidate in pending])
            for (index, _), verdict in zip(pending, committed):
                verdicts[index] = verdict
        self.metrics.record(verdicts, time.perf_counter() - started, endpoint="batch")
        results = [{"index": index, "status": verdict.status, **verdict.body} for index, verdict in enumerate(verdicts)]
        return json_response(200, {"results": results, "accepted": sum(1 for v in verdicts if v.status == 200)})

    async def ingest_events(self, request: Request) -> Response:
        """Starcode telemetry: one event, an array of events or `{"events": [...]}`. A request with any invalid
        event stores none of them (400 names each one); resent events are answered as duplicates. Provenance events
        (`agent_action`, `outcome`, seed 003) go to the provenance API, which takes a bearer token instead of the key."""
        key_ok = key_accepted(request.headers.get(API_KEY_HEADER), self.event_keys)
        try:  # read first: its event_type says whose credentials apply; a body no one may send is a 401 all the same
            raw = await read_body(request, self.settings.max_body_bytes)
            body = _parsed(raw)
        except HTTPError:
            if not key_ok and not request.headers.get("authorization"):
                raise HTTPError(401, "unauthorized", f"missing or unknown {API_KEY_HEADER}") from None
            raise
        if claims(body, request):
            return await self.provenance.ingest(request, body, raw)
        if not key_ok:
            raise HTTPError(401, "unauthorized", f"missing or unknown {API_KEY_HEADER}")
        if isinstance(body, dict) and "events" in body and "event_type" not in body and "type" not in body:
            body = body["events"]
        items = body if isinstance(body, list) else [body]
        if not items:
            raise HTTPError(400, "no_events", 'send one event, an array of events or {"events": [...]}')
        if len(items) > self.settings.events.max_events:
            raise HTTPError(413, "too_many_events", f"a request carries at most {self.settings.events.max_events} events, got {len(items)}")
        parsed, problems = [], []
        for index, item in enumerate(items):
            try:
                parsed.append((parse_event(item), item))
            except (ValueError, TypeError) as exc:
                problems.append(event_rejection(index, exc))
        if problems:
            raise HTTPError(400, "invalid_event", f"{len(problems)} of {len(items)} events are invalid; none was stored: {problems[0]['message']}",
                            rejected=problems)
        answers = await _in_thread(self.events.store, parsed, self.pseudonym(self.addresses.resolve(request)))
        duplicates = sum(answer.duplicate for answer in answers)
        return json_response(200, {"accepted": len(answers) - duplicates, "duplicates": duplicates,
                                   "event_ids": [answer.event_id for answer in answers]})

    async def stats_summary(self, request: Request) -> Response:
        return json_response(200, await _in_thread(self._stats, self.stats.summary))

    async def stats_daily(self, request: Request) -> Response:
        days = int_param(request, "days", 7, 1, 366)
        return json_response(200, await _in_thread(self._stats, self.stats.daily, days))

    async def stats_models(self, request: Request) -> Response:
        return json_response(200, await _in_thread(self._stats, self.stats.models))

    async def stats_providers(self, request: Request) -> Response:
        return json_response(200, await _in_thread(self._stats, self.stats.providers))

    async def stats_leaderboard(self, request: Request) -> Response:
        limit = int_param(request, "limit", 10, 1, 1000)
        return json_response(200, await _in_thread(self._stats, self.stats.leaderboard, limit))

    def _stats(self, query, *args):
        with self._stats_lock:
            return query(*args)

    def shutdown(self) -> None:
        self.committer.shutdown()
        self.events.close()
        self.provenance.shutdown()
        self.store.close()


def _unwrap_envelopes(text: str) -> str:
    """Accept `{"envelopes": [...]}` as well as a bare array; returns the array's text."""
    stripped = text.strip()
    if stripped.startswith("{"):
        wrapper = loads_strict(stripped)
        if set(wrapper) != {"envelopes"} or not isinstance(wrapper["envelopes"], list):
            raise JSONRejected('a batch object must have exactly one key, "envelopes", holding an array')
        key = stripped.find('"envelopes"')
        if key == -1:
            raise JSONRejected('write the key as plain "envelopes", without escapes')
        return stripped[stripped.index(":", key + 11) + 1 : stripped.rindex("}")]
    return text


async def _in_thread(function, *args):
    return await asyncio.to_thread(function, *args)


def _parsed(body: bytes) -> Any:
    """A request body as JSON (JavaScript's rules), or 400 malformed_json."""
    try:
        return loads_strict(body)
    except JSONRejected as exc:
        raise HTTPError(400, "malformed_json", str(exc)) from None
