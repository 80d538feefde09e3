"""The client's address that rate limits count by: X-Forwarded-For only from a configured trusted proxy, also when
Serve's HTTP proxy (uvicorn, trusting this host by default) already put the header's host in the peer's place."""

from __future__ import annotations

import logging

from starlette.requests import Request

from serve_apps.http import FORWARDED_BY_SERVE, AddressResolver


def request(peer: tuple[str, int], forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return Request({"type": "http", "method": "GET", "path": "/health", "headers": headers, "client": peer})


def test_forwarded_for_is_believed_only_from_a_trusted_peer():
    assert AddressResolver([]).resolve(request(("127.0.0.1", 50123), "1.2.3.4")) == "127.0.0.1"
    assert AddressResolver([]).resolve(request(("10.0.0.7", 50123))) == "10.0.0.7"
    trusting = AddressResolver(["127.0.0.1/32"])
    assert trusting.resolve(request(("127.0.0.1", 50123), "1.2.3.4, 10.0.0.1")) == "1.2.3.4"  # the specification's first entry
    assert trusting.resolve(request(("10.0.0.9", 50123), "1.2.3.4")) == "10.0.0.9"


def test_a_peer_serves_proxy_replaced_counts_in_one_window_unless_proxies_are_trusted(caplog):
    untrusting = AddressResolver([])
    with caplog.at_level(logging.WARNING, logger="serve_apps.http"):
        addresses = {untrusting.resolve(request((f"1.2.3.{i}", port), f"1.2.3.{i}" + (":8080" if port else "")))
                     for i, port in ((4, 0), (5, 0), (6, 8080))}
    assert addresses == {FORWARDED_BY_SERVE}  # a client cannot pick a fresh window per request
    assert len([r for r in caplog.records if "FORWARDED_ALLOW_IPS" in r.getMessage()]) == 1  # said once, with the fix
    assert AddressResolver(["10.0.0.0/8"]).resolve(request(("1.2.3.4", 0), "1.2.3.4")) == "1.2.3.4"
