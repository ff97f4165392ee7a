"""A real OpenAI-compatible chat-completions server for tests, with fault injection.

It serves ``POST /v1/chat/completions`` from any cbtgym :class:`Backend` (the tests wrap the embedded
SmolLM2, so the text is real) on ``127.0.0.1`` and a free port, in a background thread. Faults are
queued per request: the next requests answer 429 / 500, sleep past the client's timeout, or drop the
connection without a reply, then normal service resumes. (``"sleep"`` stalls ``sleep_s`` seconds and then
hangs up, so a stalled request never reaches the model.)

    with ChatServer(backend) as server:
        server.inject("429", "500")          # the next two requests fail this way
        OpenAIBackend(server.base_url, "smollm2").generate(...)
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cbtgym.backends.base import Backend, Sampling

#: Fault kinds :meth:`ChatServer.inject` accepts.
FAULTS = ("429", "500", "sleep", "drop")


class ChatServer:
    """Serve ``backend`` over HTTP until :meth:`close`.

    Args:
        backend: What generates the replies (called one request at a time).
        sleep_s: How long a ``"sleep"`` fault stalls before answering (set it past the client timeout).
        retry_after: ``Retry-After`` header value sent with ``"429"`` faults (None: no header).
    """

    def __init__(self, backend: Backend, *, sleep_s: float = 2.0, retry_after: str | None = "0") -> None:
        self.backend = backend
        self.sleep_s = sleep_s
        self.retry_after = retry_after
        self.requests: list[dict[str, Any]] = []  # every request seen: headers, body, fault served
        self._faults: deque[str] = deque()
        self._lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one model call at a time, like a single-GPU server
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="chat-server", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def inject(self, *faults: str) -> None:
        """Queue faults for the next requests, one per request, in order."""
        for f in faults:
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; use one of {FAULTS}")
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        """Forget queued faults and recorded requests."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def _next(self, headers: dict[str, str], body: Any) -> str | None:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            self.requests.append({"headers": headers, "body": body, "fault": fault})
        return fault

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat-completions response for one request body."""
        stop = body.get("stop") or ()
        sampling = Sampling(
            max_new_tokens=int(body.get("max_tokens", 128)),
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            seed=body.get("seed"),
            stop=tuple([stop] if isinstance(stop, str) else stop),
        )
        with self._generate_lock:
            before = self.backend.stats.completion_tokens
            text = self.backend.generate([body["messages"]], sampling)[0]
            tokens = self.backend.stats.completion_tokens - before
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"completion_tokens": tokens},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON"}})
                    return
                fault = server._next(dict(self.headers), body)
                try:
                    if fault == "drop":
                        self.close_connection = True  # no status line at all
                        return
                    if fault == "429":
                        extra = {"Retry-After": server.retry_after} if server.retry_after is not None else {}
                        self._send(429, {"error": {"message": "rate limited"}}, extra)
                        return
                    if fault == "500":
                        self._send(500, {"error": {"message": "injected server error"}})
                        return
                    if fault == "sleep":  # stall past the client's timeout, then hang up
                        time.sleep(server.sleep_s)
                        self.close_connection = True
                        return
                    if not isinstance(body.get("messages"), list) or not body["messages"]:
                        self._send(400, {"error": {"message": "'messages' must be a non-empty list"}})
                        return
                    self._send(200, server.reply(body))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout fault): nothing to answer

        return Handler

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "ChatServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
