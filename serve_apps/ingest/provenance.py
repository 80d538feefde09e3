"""The provenance API of the ingest application (seed 003, STEREOS): API tokens and roles, `agent_action` and
`outcome` events on `POST /v1/events` (the service hands them here by `event_type`), and the queries.

Authorization: `Authorization: Bearer sk_...` (a token of one customer, role admin or user). Token creation has no
web sign-in to stand on: with admin keys configured (`ingest.provenance.admin_keys`, `TRAJFORGE_ADMIN_KEYS`) it takes
one of them (or an admin token; a user token may make user tokens of its own customer); with none, it is open, as
on a deployment only this host reaches, and the first token made is an admin. Every query answers the caller's
customer alone (an admin may name another with `customer_id=`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from functools import partial
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from serve_apps.http import HTTPError, app_path, int_param, json_response, read_body
from serve_apps.ingest.events import API_KEY_HEADER, api_keys, key_accepted
from serve_apps.ingest.provenance_store import SEARCH_FILTERS, ProvenanceStore, UnknownEvent
from serve_apps.ingest.settings import IngestSettings
from serve_apps.ingest.signatures import SignatureGuard
from serve_apps.ingest.tokens import OPEN, Principal, TokenStore
from trajforge.contracts.envelope import rejection_from
from trajforge.contracts.events import EVENT_TYPES
from trajforge.contracts.provenance import (OUTCOME, TOKEN_PREFIX, Rejected, RoleUpdate, TokenRequest, is_provenance,
                                            parse_provenance, stored_form)
from trajforge.jsjson import JSONRejected, loads_strict
from trajforge.lake import Lake

log = logging.getLogger("trajforge.ingest.provenance")
Handler = Callable[[Request], Awaitable[Response]]
MAKE_ONE = "make one with POST /v1/tokens"
CHALLENGE = {"WWW-Authenticate": "Bearer"}
CREATED = 201  # a token or events made (the STEREOS API answers its creations so)


def _items(body: Any) -> tuple[bool, list[Any]]:
    """(whether it is one event, the events) of a `POST /v1/events` body: one event, an array or `{"events": [...]}`."""
    if isinstance(body, dict) and "event_type" not in body and isinstance(body.get("events"), list):
        return False, body["events"]
    return (False, body) if isinstance(body, list) else (True, [body])


def claims(body: Any, request: Request | None = None) -> bool:
    """Whether a parsed `POST /v1/events` body is provenance (an agent_action or outcome event, an array holding
    one, or `{"events": [...]}` holding one) rather than Starcode telemetry. So is a body of no telemetry type sent
    with `Authorization: Bearer sk_...` and no `x-company-api-key`: a provenance client's mistake, answered in its
    terms (400 naming `event_type`, or 401 for its token) rather than as telemetry's (a key it never heard of)."""
    items = _items(body)[1]
    if any(map(is_provenance, items)):
        return True
    if request is None or request.headers.get(API_KEY_HEADER):
        return False
    scheme, _, credential = (request.headers.get("authorization") or "").strip().partition(" ")
    return scheme.lower() == "bearer" and credential.strip().startswith(TOKEN_PREFIX) and not any(map(_telemetry_typed, items))


def _telemetry_typed(item: Any) -> bool:
    return isinstance(item, dict) and any(item.get(name) in EVENT_TYPES for name in ("event_type", "type", "eventType"))


class ProvenanceAPI:
    def __init__(self, settings: IngestSettings, lake: Lake, writer_id: str, client_of: Callable[[Request], str]):
        self.settings = settings.provenance
        self.max_body_bytes = settings.max_body_bytes
        self.client_of = client_of
        self.tokens = TokenStore(lake)
        self.signatures = SignatureGuard(lake)  # seed 003's optional event signing, for tokens made with a signing_key
        self.store = ProvenanceStore(lake, writer_id)
        if self.store.recovered:
            log.warning("provenance: indexed %d events found in the raw lake but not in the index (a crash between the two)", self.store.recovered)
        self.admin_keys = api_keys(self.settings.admin_keys, self.settings.admin_keys_env)
        if not self.admin_keys:
            log.warning("POST /v1/tokens makes API tokens without a credential (the first one an admin): set %s (comma-separated "
                        "admin keys) unless only this host reaches the service", self.settings.admin_keys_env or "ingest.provenance.admin_keys")
        self.routes: dict[str, dict[str, Handler]] = {
            "/v1/tokens": {"POST": self.create_token, "GET": self.list_users},
            "/v1/users": {"GET": self.list_users},
            "/v1/me": {"GET": self.me},
            "/v1/customers/me": {"GET": self.customer},
            "/v1/provenance/by-file": {"GET": self.by_file},
            "/v1/events/search": {"GET": self.search},
        }

    def match(self, path: str) -> dict[str, Handler] | None:
        """The handlers of a path with a parameter in it (`/v1/provenance/by-commit/{commit}`, `/v1/users/{id}/...`)."""
        head, _, tail = path.rpartition("/")
        if path.startswith("/v1/provenance/by-commit/") and head == "/v1/provenance/by-commit" and tail:
            return {"GET": partial(self.by_commit, commit=tail)}
        if head == "/v1/tokens" and tail.startswith("tok_"):
            return {"DELETE": partial(self.revoke, token_id=tail)}
        parts = path.split("/")
        if len(parts) == 5 and parts[:3] == ["", "v1", "users"] and parts[3]:
            if parts[4] == "role":
                return {"PATCH": partial(self.set_role, token_id=parts[3])}
            if parts[4] == "profile":
                return {"GET": partial(self.profile, token_id=parts[3])}
        return None

    # ---- who is asking ---------------------------------------------------------------------------

    def principal(self, request: Request, required: bool = True) -> Principal | None:
        """The bearer of `Authorization: Bearer ...`: a token, or an admin key; 401 without one (when `required`)
        and for an unknown or revoked one."""
        scheme, _, credential = (request.headers.get("authorization") or "").strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            if not required:
                return None
            raise HTTPError(401, "unauthorized", f"send Authorization: Bearer {TOKEN_PREFIX}... ({MAKE_ONE})", headers=CHALLENGE)
        if self.admin_keys and key_accepted(credential, self.admin_keys):
            return Principal("admin")
        who = self.tokens.principal(credential) if credential.startswith(TOKEN_PREFIX) else None
        if who is None:
            raise HTTPError(401, "unauthorized", f"the token in Authorization: Bearer is unknown or revoked ({MAKE_ONE}; tokens start "
                            f"with {TOKEN_PREFIX})", headers=CHALLENGE)
        return who

    def customer_of(self, request: Request) -> tuple[Principal, str]:
        """A token's holder and the customer whose data it asks for (its own; an admin may name another)."""
        who = self.principal(request)
        named = request.query_params.get("customer_id")
        if who.customer_id is None:
            if not named:
                raise HTTPError(403, "forbidden", "an admin key makes and manages tokens; name the customer with customer_id= "
                                f"or use a {TOKEN_PREFIX} token")
            return who, named
        if named and named != who.customer_id and not who.is_admin:
            raise HTTPError(403, "forbidden", f"this token is of customer {who.customer_id!r}; only an admin may read another customer's")
        return who, named or who.customer_id

    def admin(self, request: Request) -> Principal:
        who = self.principal(request)
        if not who.is_admin:
            raise HTTPError(403, "forbidden", f"admin only: token {who.token_id} has the role {who.role!r}")
        return who

    async def _body(self, request: Request, model: type[BaseModel]) -> Any:
        try:
            return model.model_validate(loads_strict(await read_body(request, self.max_body_bytes)))
        except JSONRejected as exc:
            raise HTTPError(400, "malformed_json", str(exc)) from None
        except ValidationError as exc:
            problem = rejection_from(exc)
            raise HTTPError(400, "invalid_request", str(problem), field=problem.field, rule=problem.rule) from None

    # ---- tokens and users ------------------------------------------------------------------------

    async def create_token(self, request: Request) -> Response:
        ask = await self._body(request, TokenRequest)
        who = self.principal(request, required=bool(self.admin_keys))
        if who is None:
            if ask.role == "admin":
                raise HTTPError(403, "forbidden", "an admin token is made with an admin credential (the first token of an open deployment is one)")
            role, made_by = ask.role, OPEN
        elif who.is_admin:
            role, made_by = ask.role or "user", who.label
        else:
            if ask.customer_id != who.customer_id or ask.role == "admin":
                raise HTTPError(403, "forbidden", f"a user token makes user tokens of its own customer ({who.customer_id!r}) alone")
            if who.signing_key and ask.signing_key != who.signing_key:  # else a leaked token alone writes unsigned events
                raise HTTPError(403, "forbidden", f"token {who.token_id}'s events must be signed: the tokens it makes carry its "
                                "signing_key (send the same one), or ask an admin", field="signing_key")
            role, made_by = "user", who.label
        token, row = await asyncio.to_thread(self.tokens.create, ask.customer_id, ask.name, role, made_by, ask.signing_key)
        return json_response(CREATED, {"token": token, **row, "message": "store this token now: it is not shown again"})

    async def list_users(self, request: Request) -> Response:
        self.admin(request)
        named = request.query_params.get("customer_id")
        rows, counts = await asyncio.to_thread(lambda: (self.tokens.list(named), self.store.counts(named)))
        return json_response(200, {"users": [{**row, "total_events": counts.get(row["id"], 0)} for row in rows]})

    async def set_role(self, request: Request, token_id: str) -> Response:
        self.admin(request)
        change = await self._body(request, RoleUpdate)
        return json_response(200, {"user": self._found(await asyncio.to_thread(partial(self.tokens.update, token_id, role=change.role)), token_id)})

    async def revoke(self, request: Request, token_id: str) -> Response:
        who = self.principal(request)
        if not who.is_admin and who.token_id != token_id:
            raise HTTPError(403, "forbidden", "a user token may revoke itself alone")
        return json_response(200, {"revoked": True, "user": self._found(await asyncio.to_thread(partial(self.tokens.update, token_id, revoke=True)), token_id)})

    async def profile(self, request: Request, token_id: str) -> Response:
        who = self.principal(request)
        if not who.is_admin and who.token_id != token_id:
            raise HTTPError(403, "forbidden", "admin only: a user token reads its own profile (GET /v1/me)")
        row = self._found(await asyncio.to_thread(self.tokens.get, token_id), token_id)
        usage = await asyncio.to_thread(self.store.usage, token_id)
        return json_response(200, {"user": {**row, "total_events": usage["total_events"]}, "usage": usage})

    async def me(self, request: Request) -> Response:
        who = self.principal(request)
        if not who.token_id:
            return json_response(200, {"user": {"id": None, "role": "admin", "customer_id": None}})
        row, usage = await asyncio.to_thread(lambda: (self.tokens.get(who.token_id), self.store.usage(who.token_id)))
        return json_response(200, {"user": {**row, "total_events": usage["total_events"]}, "usage": usage})

    async def customer(self, request: Request) -> Response:
        who = self.principal(request)
        if who.customer_id is None:
            raise HTTPError(403, "forbidden", f"an admin key is of no customer; use a {TOKEN_PREFIX} token")
        return json_response(200, {"customer": {"id": who.customer_id}, "token": {"id": who.token_id, "name": who.name, "role": who.role}})

    @staticmethod
    def _found(row: dict[str, Any] | None, token_id: str) -> dict[str, Any]:
        if row is None:
            raise HTTPError(404, "not_found", f"no token {token_id!r}")
        return row

    # ---- events ----------------------------------------------------------------------------------

    async def ingest(self, request: Request, body: Any, raw: bytes) -> Response:
        """`POST /v1/events` with provenance: one event (answered with its `event_id`) or an array of them (`event_ids`);
        one invalid event rejects the request whole (400 naming its field), as for telemetry. `raw` is the body as sent,
        which a signing token's signature covers."""
        who, customer_id = self.customer_of(request)
        if who.signing_key:
            await asyncio.to_thread(self.signatures.check, who, request.headers, raw)
        single, items = _items(body)
        if not items:
            raise HTTPError(400, "no_events", 'send one event, an array of events or {"events": [...]}')
        if len(items) > self.settings.max_events:
            raise HTTPError(413, "too_many_events", f"a request carries at most {self.settings.max_events} provenance events, got {len(items)}")
        parsed, problems = [], []
        for index, item in enumerate(items):
            try:
                if not is_provenance(item):
                    raise Rejected("event_type", "literal_error", "event_type: must be agent_action or outcome (telemetry events go "
                                   "in requests of their own)")
                event = parse_provenance(item)
                parsed.append((event, stored_form(item, event, self.settings.keep_unknown_fields)))
            except Rejected as exc:
                problems.append({"index": index, "field": exc.field, "rule": exc.rule, "message": str(exc)})
        if problems:
            first = problems[0]
            raise HTTPError(400, "invalid_event", first["message"] if single else f"{len(problems)} of {len(items)} events are invalid; "
                            f"none was stored: {first['message']}", field=first["field"], rule=first["rule"], rejected=problems)
        try:
            ids = await asyncio.to_thread(self.store.store, parsed, customer_id, who.token_id, self.client_of(request))
        except UnknownEvent as exc:
            raise HTTPError(404, "unknown_event", str(exc), field="original_event_id") from None
        if not single:
            return json_response(CREATED, {"success": True, "accepted": len(ids), "event_ids": ids})
        answer = {"success": True, "event_id": ids[0], "event_type": parsed[0][0].event_type}
        if parsed[0][0].event_type == OUTCOME:
            answer["outcome_id"] = ids[0]
        return json_response(CREATED, answer)

    # ---- queries ---------------------------------------------------------------------------------

    async def by_commit(self, request: Request, commit: str) -> Response:
        _, customer_id = self.customer_of(request)
        limit, offset = self._page(request, self.settings.max_linked_events, self.settings.max_linked_events)
        events = await asyncio.to_thread(self.store.by_commit, customer_id, commit, limit, offset)
        return json_response(200, {"commit": commit, "count": len(events), "events": events, "limit": limit, "offset": offset})

    async def by_file(self, request: Request) -> Response:
        _, customer_id = self.customer_of(request)
        path, repo = request.query_params.get("path"), request.query_params.get("repo") or None
        if not path:
            raise HTTPError(400, "invalid_request", "path: the file's path is required (?path=src/auth.ts&repo=...)", field="path", rule="missing")
        limit, offset = self._page(request, self.settings.max_linked_events, self.settings.max_linked_events)
        events = await asyncio.to_thread(self.store.by_file, customer_id, path, repo, limit, offset)
        return json_response(200, {"path": path, "repo": repo, "count": len(events), "events": events, "limit": limit, "offset": offset})

    async def search(self, request: Request) -> Response:
        _, customer_id = self.customer_of(request)
        query = request.query_params
        filters = {name: query[name] for name in (*SEARCH_FILTERS, "commit") if query.get(name)}
        limit, offset = self._page(request, self.settings.search_limit, self.settings.max_search_limit)
        since, until = _time_param(request, "since", "start_date"), _time_param(request, "until", "end_date")
        events = await asyncio.to_thread(self.store.search, customer_id, filters, since, until, query.get("intent"), limit, offset)
        return json_response(200, {"events": events, "count": len(events), "limit": limit, "offset": offset})

    @staticmethod
    def _page(request: Request, default: int, most: int) -> tuple[int, int]:
        """`limit` (read as the stats' counts are: the leading integer, the default for none or below 1, `most` past it)
        and `offset`."""
        return int_param(request, "limit", min(default, most), 1, most), int_param(request, "offset", 0, 0, 10_000_000)

    def shutdown(self) -> None:
        self.tokens.close()
        self.signatures.close()
        self.store.close()


def _time_param(request: Request, name: str, alias: str) -> float | None:
    """An ISO 8601 time (UTC when it names no zone; `+HH:MM` also when the URL left the `+` unencoded) or epoch
    seconds; 400 naming the parameter otherwise. `alias` is the STEREOS API's own name for it (start_date, end_date)."""
    if not request.query_params.get(name) and request.query_params.get(alias):
        name = alias
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    # a zone written `+02:00` in a URL unencoded reaches here as ` 02:00` (a query's `+` is a space)
    value = re.sub(r"(\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d(?::?\d\d)?)$", r"\1+\2", value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPError(400, "invalid_request", f"{name}: an ISO 8601 time (2026-02-07T12:00:00Z) or epoch seconds, got {value!r}",
                        field=name, rule="datetime") from None
    return (moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment).timestamp()
