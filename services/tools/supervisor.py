"""`plateletwatch run`: the whole pipeline on one machine, for a first look and for demos.

Starts (or connects to) a broker, creates the topics, then runs the demo pager, ingest, classifier
and notifier as child processes and prints where everything is. A child that dies is restarted
after a growing delay (1 s, 2 s, 4 s … 30 s; back to 1 s once it has stayed up a minute), and the
terminal says so. Only the death of the broker this command started stops the run: an embedded
broker keeps everything in memory, so nothing is left to carry on with. Ctrl-C or SIGTERM stops
them all. Children are also tied to this process by PR_SET_PDEATHSIG, so none outlives it even
after a kill -9.
"""

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.config import Settings
from services.kafka.admin import ensure_topics
from services.kafka.broker import Broker, BrokerKind, provide_broker
from services.processes import RestartBackoff, die_with_parent, stop_processes, wait_until_ready

_STARTUP_TIMEOUT_SECONDS = 90.0
# Only for `run` on loopback when no token is configured; printed in the banner.
DEMO_TOKEN = "demo-token"
# Likewise for the console when no users file is configured: the example file's demo user.
DEMO_USERS = Path(__file__).resolve().parents[2] / "examples" / "console-users.yaml"
DEMO_USER, DEMO_PASSWORD = "haem.registrar", "change me before use"


@dataclass(frozen=True)
class Child:
    name: str
    port: int
    ready_path: str


class KeptChild:
    """One child process kept running: restarted with backoff whenever it exits, and reported
    ready again once its readiness URL answers 200, or, once, still not ready `slow_after_seconds`
    after a restart (it is left running: it may yet get there). Every change is returned as a
    line to print.
    """

    def __init__(
        self, child: Child, ready_url: str, env: dict[str, str], slow_after_seconds: float = 60.0
    ) -> None:
        self.name = child.name
        self.ready_url = ready_url
        self._env = env
        self._slow_after_seconds = slow_after_seconds
        self._said_slow = False
        self._backoff = RestartBackoff()
        self._restarts = 0
        self._started_at = 0.0
        self._restart_at: float | None = None
        self._awaiting_ready = False
        self.process = self._start()

    def _start(self) -> "subprocess.Popen[bytes]":
        self._started_at = time.monotonic()
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", self.name],
            env=self._env,
            preexec_fn=die_with_parent,  # called from the main thread, which lives as long as we do
        )

    def tend(self, now: float) -> str | None:
        """Restart the child if it has exited and its delay has passed; say what changed."""
        if self._restart_at is not None:
            if now < self._restart_at:
                return None
            self._restart_at = None
            self._awaiting_ready = True
            self._said_slow = False
            self.process = self._start()
            return None
        if self.process.poll() is not None:
            self._restarts += 1
            delay = self._backoff.after_exit(now - self._started_at)
            self._restart_at = now + delay
            self._awaiting_ready = False
            return (
                f"{self.name} exited with status {self.process.returncode}; "
                f"restarting in {delay:g} s (restart {self._restarts})"
            )
        if not self._awaiting_ready:
            return None
        if self._answers():
            self._awaiting_ready = False
            return f"{self.name} is ready again"
        if not self._said_slow and now - self._started_at >= self._slow_after_seconds:
            self._said_slow = True
            return (
                f"{self.name} is not ready {self._slow_after_seconds:g} s after its restart; "
                "still waiting for it"
            )
        return None

    def _answers(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.ready_url, timeout=0.5).status_code == 200
        return False


def _children(settings: Settings, with_demo_pager: bool) -> list[Child]:
    children = [
        Child("ingest", settings.ingest_port, "/readyz"),
        Child("classifier", settings.classifier_port, "/readyz"),
        Child("notifier", settings.notifier_port, "/readyz"),
    ]
    if with_demo_pager:
        children.insert(0, Child("demo-pager", settings.demo_receiver_port, "/healthz"))
    return children


def _banner(
    settings: Settings,
    broker: Broker,
    webhook_url: str,
    demo: bool,
    demo_token: str | None,
    demo_console: bool,
) -> str:
    host = settings.bind_host
    ingest = f"http://{host}:{settings.ingest_port}"
    token_note = f"   (demo bearer token: {demo_token})" if demo_token else ""
    lines = [
        "",
        "PlateletWatch is running.",
        f"  broker      {broker.kind.value} at {broker.bootstrap_servers}",
        f"  ingest      {ingest}/v1/lab-results, /v1/clinical-context, /fhir{token_note}",
        f"              API docs {ingest}/docs",
        f"  HL7 v2      MLLP on {host}:{settings.ingest_mllp_port}"
        f"   (plateletwatch send FILE --to {host}:{settings.ingest_mllp_port})",
        f"  classifier  http://{host}:{settings.classifier_port}/metrics",
        f"  notifier    http://{host}:{settings.notifier_port}/metrics",
        f"  console     http://{host}:{settings.notifier_port}/v1/console"
        + (f"   (demo sign-in: {DEMO_USER} / {DEMO_PASSWORD})" if demo_console else ""),
        f"  pages go to {webhook_url}"
        + ("   (demo pager: list them with GET on that URL)" if demo else ""),
        "  try the curl example in README.md; Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def state_matching_the_broker(settings: Settings, broker: Broker, scratch: Path) -> dict[str, str]:
    """A broker `run` started forgets everything when it stops; so must the notifier's store,
    unless configured, or a second `run` would remember pages the broker does not. (The
    classifier keeps its state in the broker only.)"""
    if broker.kind not in (BrokerKind.EMBEDDED_TANSU, BrokerKind.LOCAL_KAFKA):
        return {}
    env = {}
    if "notifier_database_url" not in settings.model_fields_set:
        env["PLATELETWATCH_NOTIFIER_DATABASE_URL"] = (
            f"sqlite+aiosqlite:///{scratch / 'notifier.sqlite3'}"
        )
    return env


def run_everything(settings: Settings) -> int:
    """Run until interrupted; return the process exit status."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per readiness poll

    with (
        provide_broker(settings.kafka_bootstrap_servers, requested=settings.broker) as broker,
        tempfile.TemporaryDirectory(prefix="plateletwatch-run-") as scratch,
    ):
        asyncio.run(ensure_topics(settings, broker.bootstrap_servers, create=True))
        demo = settings.notifier_webhook_url is None
        webhook_url = (
            f"http://{settings.bind_host}:{settings.demo_receiver_port}/pages"
            if demo
            else str(settings.notifier_webhook_url)
        )
        tokens = [token.get_secret_value() for token in settings.ingest_api_tokens] or [DEMO_TOKEN]
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "PLATELETWATCH_NOTIFIER_WEBHOOK_URL": webhook_url,
            "PLATELETWATCH_INGEST_API_TOKENS": json.dumps(tokens),
            **state_matching_the_broker(settings, broker, Path(scratch)),
        }
        demo_console = (
            settings.notifier_console_users_file is None
            and _is_loopback(settings.bind_host)  # a known password, for this machine only
            and DEMO_USERS.is_file()
        )
        if demo_console:
            env["PLATELETWATCH_NOTIFIER_CONSOLE_USERS_FILE"] = str(DEMO_USERS)
        if "api_docs" not in settings.model_fields_set:  # the banner points at them
            env["PLATELETWATCH_API_DOCS"] = "true"
        if settings.notifier_link_secret is None:  # links in pages outlive a notifier restart
            env["PLATELETWATCH_NOTIFIER_LINK_SECRET"] = secrets.token_urlsafe(32)
        if settings.notifier_session_secret is None:  # ...and console sign-ins too
            env["PLATELETWATCH_NOTIFIER_SESSION_SECRET"] = secrets.token_urlsafe(32)
        kept: list[KeptChild] = []
        try:
            deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
            for child in _children(settings, demo):
                ready_url = f"http://{settings.bind_host}:{child.port}{child.ready_path}"
                kept.append(KeptChild(child, ready_url, env))
            for keeper in kept:
                wait_until_ready(
                    keeper.name, keeper.ready_url, keeper.process, deadline, stop.is_set
                )
            if stop.is_set():
                return 0
            demo_token = None if settings.ingest_api_tokens else DEMO_TOKEN
            banner = _banner(settings, broker, webhook_url, demo, demo_token, demo_console)
            print(banner, flush=True)
            return _keep_running(kept, broker, stop)
        except RuntimeError as error:
            print(f"plateletwatch run: {error}; stopping", file=sys.stderr)
            return 1
        finally:
            stop_processes([keeper.process for keeper in kept], grace_seconds=15)


def _keep_running(kept: list[KeptChild], broker: Broker, stop: threading.Event) -> int:
    """Tend the children until a stop is requested (0) or the broker dies (1)."""
    while not stop.wait(0.5):
        if not broker.is_running():
            print(
                f"plateletwatch run: the broker has stopped ({broker.kind.value}); "
                "all in-memory data is gone (results, alerts, pages' state); stopping everything",
                file=sys.stderr,
                flush=True,
            )
            return 1
        for keeper in kept:
            if stop.is_set():  # Ctrl-C reaches the children too: their exit is no crash
                break
            news = keeper.tend(time.monotonic())
            if news:
                print(f"plateletwatch run: {news}", flush=True)
    return 0
