"""`plateletwatch run`, as a newcomer uses it: banner, the README's example, a page, Ctrl-C.

The command starts its own broker (embedded Tansu here, unless KAFKA_BOOTSTRAP_SERVERS is set).
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from services.config import Settings
from services.kafka.broker import Broker, BrokerKind, free_loopback_port
from services.supervisor import DEMO_PASSWORD, DEMO_USER, _is_loopback, state_matching_the_broker
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration

README_SEND = re.compile(r"plateletwatch send (examples/\S+) --to 127\.0\.0\.1:2575")
README_CURL = re.compile(
    r"curl .*?http://127\.0\.0\.1:8410/v1/lab-results -H 'Authorization: Bearer (\S+)'.*?-d @(\S+)"
)


def _children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_run(
    tmp_path: Path,
) -> tuple[subprocess.Popen[str], list[str], dict[str, int], dict[str, str]]:
    """Start `plateletwatch run` on free ports; return it, its growing output, ports and env."""
    names = ("ingest", "mllp", "classifier", "notifier", "demo")
    ports = {name: free_loopback_port() for name in names}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATELETWATCH_")}
    env.update(
        PLATELETWATCH_INGEST_PORT=str(ports["ingest"]),
        PLATELETWATCH_INGEST_MLLP_PORT=str(ports["mllp"]),
        PLATELETWATCH_CLASSIFIER_PORT=str(ports["classifier"]),
        PLATELETWATCH_NOTIFIER_PORT=str(ports["notifier"]),
        PLATELETWATCH_DEMO_RECEIVER_PORT=str(ports["demo"]),
        PLATELETWATCH_TOPIC_PREFIX=f"run{uuid.uuid4().hex[:8]}.",
        PLATELETWATCH_CLASSIFIER_SESSION_TIMEOUT_SECONDS="4",
        PLATELETWATCH_CLASSIFIER_DATA_DIR=str(tmp_path / "classifier"),
        PLATELETWATCH_NOTIFIER_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'n.sqlite3'}",
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(run.stdout or []), daemon=True).start()
    deadline = time.monotonic() + 90
    while not any("PlateletWatch is running." in line for line in output):
        if run.poll() is not None or time.monotonic() > deadline:
            _kill_group(run)
            raise AssertionError("no banner:\n" + "".join(output)[-3000:])
        time.sleep(0.2)
    return run, output, ports, env


def _kill_group(run: subprocess.Popen[str]) -> None:
    if run.poll() is None:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()


def test_run_shows_the_banner_pages_the_readme_example_and_stops_cleanly(tmp_path: Path) -> None:
    readme_example = README_CURL.search((REPO / "README.md").read_text())
    assert readme_example, "README.md must show a curl example posting a file to ingest"
    example = REPO / readme_example.group(2)
    run, output, ports, env = _start_run(tmp_path)
    try:
        banner = "".join(output)
        assert f"http://127.0.0.1:{ports['ingest']}/v1/lab-results" in banner
        assert f"demo bearer token: {readme_example.group(1)}" in banner
        assert f"MLLP on 127.0.0.1:{ports['mllp']}" in banner
        assert f"pages go to http://127.0.0.1:{ports['demo']}/pages" in banner
        assert "embedded-tansu" in banner or "KAFKA_BOOTSTRAP_SERVERS" in os.environ

        posted = httpx.post(
            f"http://127.0.0.1:{ports['ingest']}/v1/lab-results",
            content=example.read_bytes(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {readme_example.group(1)}",
            },
        )
        assert posted.status_code == 202, posted.text
        pages: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while not pages and time.monotonic() < deadline:
            time.sleep(0.5)
            pages = httpx.get(f"http://127.0.0.1:{ports['demo']}/pages").json()
        assert len(pages) == 1, "".join(output)[-3000:]
        assert "CRITICAL LOW platelets: 12 x10^9/L" in str(pages[0]["summary"])

        hl7_example = README_SEND.search((REPO / "README.md").read_text())
        assert hl7_example, "README.md must show how to send the HL7 example"
        sent = run_cli(
            "send", str(REPO / hl7_example.group(1)), "--to", f"127.0.0.1:{ports['mllp']}", env=env
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert ": AA DEMO0001" in sent.stdout
        deadline = time.monotonic() + 60
        while len(pages) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            pages = httpx.get(f"http://127.0.0.1:{ports['demo']}/pages").json()
        assert "CRITICAL LOW platelets: 9 x10^9/L" in str(pages[-1]["summary"])

        console = f"http://127.0.0.1:{ports['notifier']}/v1/console"
        assert f"{console}   (demo sign-in: {DEMO_USER} / {DEMO_PASSWORD})" in banner
        with httpx.Client(base_url=console, follow_redirects=True) as browser:
            form = browser.get("/login").text
            token = re.search(r'name="login_token" value="([^"]+)"', form)
            assert token is not None
            signed = {"login_token": token.group(1), "user": DEMO_USER, "password": DEMO_PASSWORD}
            board = browser.post("/login", data=signed)
            assert board.status_code == 200
            assert "2 waiting for acknowledgement" in board.text  # both examples, on the board

        children = _children_of(run.pid)
        assert len(children) >= 4  # demo pager, ingest, classifier, notifier (+ Tansu)
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C does
        assert run.wait(60) == 0, "".join(output)[-3000:]
        assert [pid for pid in children if _alive(pid)] == []
    finally:
        _kill_group(run)


def test_no_process_outlives_a_killed_run(tmp_path: Path) -> None:
    run, output, _, _ = _start_run(tmp_path)
    try:
        children = _children_of(run.pid)
        assert len(children) >= 4
        run.kill()  # kill -9: no chance to clean up; the children are tied to it by the kernel
        run.wait()
        deadline = time.monotonic() + 30
        while [pid for pid in children if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid in children if _alive(pid)] == [], "".join(output)[-3000:]
    finally:
        _kill_group(run)


def test_run_keeps_no_state_beyond_an_embedded_broker(tmp_path: Path) -> None:
    embedded = Broker(BrokerKind.EMBEDDED_TANSU, "127.0.0.1:1")
    env = state_matching_the_broker(Settings(), embedded, tmp_path)
    assert str(tmp_path) in env["PLATELETWATCH_NOTIFIER_DATABASE_URL"]
    configured = Settings(notifier_database_url="sqlite+aiosqlite:///kept.sqlite3")
    assert state_matching_the_broker(configured, embedded, tmp_path) == {}
    assert (
        state_matching_the_broker(Settings(), Broker(BrokerKind.EXTERNAL, "k:9092"), tmp_path) == {}
    )


@pytest.mark.parametrize(
    ("host", "offered"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
    ],
)
def test_the_demo_console_sign_in_is_offered_on_loopback_only(host: str, offered: bool) -> None:
    assert _is_loopback(host) is offered  # a password printed in a banner must not face a network
