"""A local OpenAI-compatible server (http.server in a thread) that answers chat completions from a script: what
`pipelines.synth_records` sends to the `openai` engine, and what it does with bad answers."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RECORD = re.compile(r"Write record (\d+) of (\d+)")


def good_record(index: int) -> dict[str, Any]:
    return {"name": f"user{index}", "tier": "pro" if index % 2 else "free", "tags": [f"t{index}"], "address": {"city": f"c{index}"}}


class StubServer:
    """`answers[index]`: the texts answered to record `index`'s successive calls (then good records); `draft`: the
    text answered to a schema draft. `calls[index]` counts each record's calls, `bodies` keeps every request body."""

    def __init__(self, answers: dict[int, list[str]] | None = None, draft: str = "{}", delay_s: float = 0.0):
        self.answers, self.draft, self.delay_s = answers or {}, draft, delay_s
        self.calls: dict[int, int] = defaultdict(int)
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = stub.answer(body)
                payload = json.dumps({"id": "x", "object": "chat.completion", "model": body.get("model", "stub"),
                                      "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                                      "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
                self.send_response(200 if self.path == "/v1/chat/completions" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, body: dict[str, Any]) -> str:
        with self.lock:
            self.bodies.append(body)
        found = RECORD.search(body["messages"][-1]["content"])
        if found is None:
            return self.draft
        index = int(found.group(1)) - 1
        with self.lock:
            call = self.calls[index]
            self.calls[index] += 1
        time.sleep(self.delay_s)
        scripted = self.answers.get(index, [])
        return scripted[call] if call < len(scripted) else json.dumps(good_record(index))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
