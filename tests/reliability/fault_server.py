"""A stdlib chat-completions server on 127.0.0.1 that answers from a queue of canned responses.

No model behind it: each request pops the next ``(status, body)`` (the last one repeats), so a test
says exactly what the server does wrong (null content, an empty string, a 500 whose body echoes the
key) and counts the requests the client made.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(content: Any, finish_reason: str = "stop") -> dict[str, Any]:
    """A chat-completions body whose only choice carries ``content`` (None gives ``"content": null``)."""
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}], "usage": {"completion_tokens": 3}}


class FaultServer:
    """Serve ``responses`` (``(status, body)``; a str body is sent as is, else as JSON) until closed."""

    def __init__(self, *responses: tuple[int, Any]) -> None:
        self._queue = deque(responses)
        self._last = responses[-1]
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests.append(body)
                    status, payload = server._queue.popleft() if server._queue else server._last
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FaultServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
