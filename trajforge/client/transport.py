"""HTTP to the ingest service with retries: exponential backoff with jitter on connection errors, 5xx and 429,
honouring the wait the service asks for (the specification's 5 retries, backoff up to 60 s)."""

from __future__ import annotations

import os
import random
import ssl
import time
from typing import Any

import httpx

from trajforge.client.errors import read_answer, retry_after, retryable


class Transport:
    def __init__(self, base_url: str, *, timeout_s: float, max_retries: int, backoff_base_s: float, backoff_max_s: float,
                 transport: httpx.BaseTransport | None = None, verify: bool | str | os.PathLike = True):
        self.base_url = base_url
        # verify: an https service's certificate is checked against the system's CAs (or $SSL_CERT_FILE), or this CA file
        checked = ssl.create_default_context(cafile=str(verify)) if isinstance(verify, (str, os.PathLike)) else verify
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport, verify=checked)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    def backoff(self, attempt: int) -> float:
        """The wait before retry `attempt` (1, 2, ...): half of base * 2^(attempt-1), plus up to as much again at random."""
        backoff = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return backoff / 2 + random.uniform(0, backoff / 2)

    def request(self, method: str, path: str, body: bytes | None = None, params: dict | None = None,
                headers: dict[str, str] | None = None, timeout: float | None = None,
                retries: int | None = None) -> tuple[int, Any]:
        """One call with retries on connection errors, 5xx and 429; raises httpx.TransportError when offline."""
        attempt, options = 0, ({"timeout": timeout} if timeout is not None else {})
        retries = self.max_retries if retries is None else retries
        headers = {**({"content-type": "application/json"} if body is not None else {}), **(headers or {})}
        while True:
            try:
                response = self.http.request(method, path, content=body, params=params, headers=headers or None, **options)
                answer = read_answer(response)
                delay = retry_after(answer)
                if not retryable(response.status_code, answer) or attempt >= retries or delay > self.backoff_max_s:
                    return response.status_code, answer  # a wait longer than backoff_max_s is the caller's to schedule
            except httpx.TransportError:
                if attempt >= retries:
                    raise
                delay = 0.0
            attempt += 1
            time.sleep(min(self.backoff_max_s, max(delay, self.backoff(attempt))))

    def health(self) -> bool:
        try:
            return self.http.get("/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self.http.close()
