"""`wait_healthy`, the start's readiness probe, spends no request of the per-address limits where it can."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trajforge.serving import wait_healthy


def _server(preflight_status: int):
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int) -> None:
            seen.append(self.command)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_OPTIONS(self):  # noqa: N802 (http.server's names)
            self._answer(preflight_status)

        def do_GET(self):  # noqa: N802
            self._answer(200)

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
