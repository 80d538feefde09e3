"""An OpenAI-compatible endpoint that answers the actor loop with a fixed, correct step (the real `openai` engine
and the real loop are what the tests exercise). A chat whose task names `hang_marker` gets no answer until
`release` is set, as a wedged upstream would; one that names `fail_marker` is answered 503, as a failing upstream
would; one that names `cut_marker` gets the good action without its `</action>`, cut at max_tokens (finish_reason
"length"); `delay_s` slows every chat answer so tasks stay in flight."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD = ('<think>print should become logging.info</think><action>{"pattern": "print($$$A)", "rewrite": "logging.info($$$A)", '
        '"language": "python"}</action>')
STATE = '{"decisions": ["use logging.info"], "history": "replaced print", "next_focus": "done"}'


class ScriptedTeacher(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hang_marker: str = "HANG-FOREVER", delay_s: float = 0.0, fail_marker: str = "UPSTREAM-FAILS",
                 cut_marker: str = "CUT-SHORT"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hang_marker, self.delay_s, self.fail_marker, self.cut_marker = hang_marker, delay_s, fail_marker, cut_marker
        self.release = threading.Event()
        self.chats = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedTeacher

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        answer = {"model": body["model"], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
        if "messages" in body:
            self.server.chats += 1
            if any(self.server.hang_marker in message["content"] for message in body["messages"]):
                self.server.release.wait()
            self.server.release.wait(self.server.delay_s)
            if any(self.server.fail_marker in message["content"] for message in body["messages"]):
                self._send(503, json.dumps({"error": {"message": "upstream overloaded"}}).encode())
                return
            text, finish = (STATE, "stop") if body["messages"][-1]["role"] == "assistant" else (GOOD, "stop")
            if any(self.server.cut_marker in message["content"] for message in body["messages"]):
                text, finish = GOOD.removesuffix("</action>"), "length"
            answer["choices"] = [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}]
        else:  # /v1/completions: the actor's warm-up
            answer["choices"] = [{"index": 0, "finish_reason": "length", "text": "ok"}]
        self._send(200, json.dumps(answer).encode())

    def _send(self, status: int, payload: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up waiting
            pass

    def log_message(self, *args):
        pass
