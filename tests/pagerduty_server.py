"""A local stand-in for PagerDuty's Events API v2 (the cloud cannot be reached from tests): it
checks each event as PagerDuty documents it and keeps the incidents by dedup_key."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACTIONS = {"trigger", "acknowledge", "resolve"}
SEVERITIES = {"critical", "error", "warning", "info"}


class PagerDutyEvents:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.incidents: dict[str, str] = {}  # dedup_key -> triggered / acknowledged / resolved
        self.busy_next = 0  # answer 429 to this many requests first
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v2/enqueue"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _accept(self, event: Any) -> tuple[int, dict[str, Any]]:
        errors = _errors(event)
        with self._lock:
            if self.busy_next:
                self.busy_next -= 1
                return 429, {
                    "status": "throttle event",
                    "message": "Requests for this service are arriving too quickly",
                }
            if errors:
                return 400, {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": errors,
                }
            self.events.append(event)
            key, action = event["dedup_key"], event["event_action"]
            state = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}
            if action == "trigger" or key in self.incidents:
                self.incidents[key] = state[action]
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        events = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    event = json.loads(raw)
                except ValueError:
                    event = None
                status, body = events._accept(event) if self.path == "/v2/enqueue" else (404, {})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _errors(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["Event object is not JSON"]
    errors = []
    if not isinstance(event.get("routing_key"), str) or len(event["routing_key"]) != 32:
        errors.append("'routing_key' must be a 32-character integration key")
    if event.get("event_action") not in ACTIONS:
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    if event.get("event_action") != "trigger" and not event.get("dedup_key"):
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if event.get("event_action") == "trigger":
        payload = event.get("payload") or {}
        for field in ("summary", "source", "severity"):
            if not payload.get(field):
                errors.append(f"'payload.{field}' is missing or blank")
        if payload.get("severity") and payload["severity"] not in SEVERITIES:
            errors.append("'payload.severity' is invalid")
        if len(str(payload.get("summary", ""))) > 1024:
            errors.append("'payload.summary' is longer than 1024 characters")
    return errors
