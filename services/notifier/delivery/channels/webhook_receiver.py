"""A real HTTP webhook receiver on loopback: the demo pager of `plateletwatch run` and the test
double of the webhook channel.

It records every page (path, headers, JSON body) and can be told to refuse the next requests with
a status code, to exercise the notifier's retries. Its log line names the alert kind and value only.
"""

import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("plateletwatch.demo_pager")


@dataclass(frozen=True)
class ReceivedPage:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes  # as received, for checking a signature
    received_at: float = 0.0  # time.monotonic() on arrival

    @property
    def idempotency_key(self) -> str | None:
        """The Idempotency-Key header: a resent page carries its first sending's key."""
        return next((v for k, v in self.headers.items() if k.lower() == "idempotency-key"), None)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # concurrent pages connect at once (socketserver's default is 5)
    daemon_threads = True


class WebhookReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.pages: list[ReceivedPage] = []
        self._refusals: list[int] = []
        self._lock = threading.Lock()
        self._server = _Server((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/pages"

    def refuse_next(self, count: int, status: int) -> None:
        """Answer the next `count` POSTs with `status` instead of accepting them."""
        with self._lock:
            self._refusals.extend([status] * count)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def _accept(self, path: str, headers: dict[str, str], raw: bytes) -> int:
        with self._lock:
            if self._refusals:
                return self._refusals.pop(0)
            try:
                body = json.loads(raw)
            except ValueError:
                return 400
            self.pages.append(ReceivedPage(path, headers, body, raw, time.monotonic()))
        alert = body.get("alert", {}) if isinstance(body, dict) else {}
        log.warning(
            "PAGE RECEIVED: %s %s x10^9/L (alert %s); GET %s lists pages",
            alert.get("kind"),
            alert.get("value_10e9_per_l"),
            alert.get("alert_id"),
            self.url,
        )
        return 202

    def _listing(self) -> bytes:
        with self._lock:
            return json.dumps([page.body for page in self.pages]).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a pager takes pages as they come

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._accept(self.path, dict(self.headers.items()), raw)
                self._reply(status, b'{"received": true}' if status == 202 else b"{}")

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._reply(200, b'{"status": "ok", "service": "demo-pager"}')
                elif self.path == "/pages":
                    self._reply(200, receiver._listing())
                else:
                    self._reply(404, b"{}")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Silence per-request access lines: they are noise and could carry identifiers."""

        return Handler
