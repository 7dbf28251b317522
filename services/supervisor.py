"""`plateletwatch run`: the whole pipeline on one machine, for a first look and for demos.

Starts (or connects to) a broker, creates the topics, then runs the demo pager, ingest, classifier
and notifier as child processes and prints where everything is. Ctrl-C or SIGTERM stops them all;
if any child dies, the others are stopped too and the exit status says so. Children are also tied
to this process by PR_SET_PDEATHSIG, so none outlives it even after a kill -9.
"""

import asyncio
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from services.config import Settings
from services.kafka.broker import Broker, BrokerKind, provide_broker
from services.kafka.topics import ensure_topics
from services.processes import die_with_parent, stop_processes, wait_until_ready

_STARTUP_TIMEOUT_SECONDS = 90.0
# Only for `run` on loopback when no token is configured; printed in the banner.
DEMO_TOKEN = "demo-token"
# Likewise for the console when no users file is configured: the example file's demo user.
DEMO_USERS = Path(__file__).resolve().parent.parent / "examples" / "console-users.yaml"
DEMO_USER, DEMO_PASSWORD = "haem.registrar", "change me before use"


@dataclass(frozen=True)
class Child:
    name: str
    port: int
    ready_path: str


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
    """An embedded broker forgets everything when it stops; so must the notifier's store, unless
    configured, or a second `run` would remember pages the broker does not. (The classifier
    keeps its state in the broker only.)"""
    if broker.kind is not BrokerKind.EMBEDDED_TANSU:
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
        provide_broker(settings.kafka_bootstrap_servers) as broker,
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
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
            for child in _children(settings, demo):
                processes[child.name] = subprocess.Popen(
                    [sys.executable, "-m", "services.cli", child.name],
                    env=env,
                    preexec_fn=die_with_parent,
                )
            for child in _children(settings, demo):
                wait_until_ready(
                    child.name,
                    f"http://{settings.bind_host}:{child.port}{child.ready_path}",
                    processes[child.name],
                    deadline,
                    stop.is_set,
                )
            if stop.is_set():
                return 0
            demo_token = None if settings.ingest_api_tokens else DEMO_TOKEN
            banner = _banner(settings, broker, webhook_url, demo, demo_token, demo_console)
            print(banner, flush=True)
            while not stop.is_set():
                for name, process in processes.items():
                    if process.poll() is not None:
                        print(f"plateletwatch run: {name} exited ({process.returncode}); stopping")
                        return 1
                stop.wait(0.5)
            return 0
        except RuntimeError as error:
            print(f"plateletwatch run: {error}; stopping", file=sys.stderr)
            return 1
        finally:
            stop_processes(processes.values(), grace_seconds=15)
