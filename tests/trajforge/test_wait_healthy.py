"""`wait_healthy`, the start's readiness probe: it waits for Serve's routes of every application and spends no request of
the per-address limits where it can."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trajforge.serving import wait_healthy


def _server(preflight_status: int, routes_after: int = 0, routes: dict | None = None):
    """A stand-in for Serve's proxy: `/-/routes` answers 503 to its first `routes_after` requests, then `routes`."""
    seen: list[str] = []
    route_asks: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int) -> None:
            seen.append(self.command)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_OPTIONS(self):  # noqa: N802 (http.server's names)
            self._answer(preflight_status)

        def do_GET(self):  # noqa: N802
            if self.path != "/-/routes":
                return self._answer(200)
            seen.append("GET")
            route_asks.append(1)
            body = json.dumps(routes or {}).encode() if len(route_asks) > routes_after else b"Route table is not populated yet."
            self.send_response(200 if len(route_asks) > routes_after else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.mark.parametrize("preflight_status, expected", [(204, ["OPTIONS"]), (405, ["OPTIONS", "GET"])])
def test_the_probe_is_a_preflight_and_a_get_only_where_the_preflight_is_refused(preflight_status, expected):
    server, seen = _server(preflight_status)
    try:
        wait_healthy(f"http://127.0.0.1:{server.server_address[1]}", 10)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == expected


def _wait(server, timeout_s: float, routes: dict | None = None) -> None:
    try:
        wait_healthy(f"http://127.0.0.1:{server.server_address[1]}", timeout_s, routes=routes)
    finally:
        server.shutdown()
        server.server_close()


def test_an_application_without_a_root_health_is_ready_once_serve_routes_it():
    # `trajforge serve --apps generate` (or embed) alone: nothing answers /health at the root, its route is the signal
    server, seen = _server(204, routes_after=3, routes={"/generate": "generate"})
    _wait(server, 10, routes={"/generate": "generate"})
    assert seen == ["GET"] * 4  # the proxy's /-/routes asked until it listed the route; no /health


def test_the_root_application_is_asked_for_health_once_every_route_is_served():
    routes = {"/": "ingest", "/v1/embed": "embed"}
    server, seen = _server(204, routes_after=1, routes=routes)
    _wait(server, 10, routes=routes)
    assert seen == ["GET", "GET", "OPTIONS"]


def test_a_route_never_served_times_out_naming_it():
    server, _ = _server(204, routes={"/": "ingest"})
    with pytest.raises(TimeoutError, match="/v1/embed"):
        _wait(server, 1, routes={"/": "ingest", "/v1/embed": "embed"})
