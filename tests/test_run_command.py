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
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.config import Settings
from services.kafka.broker import Broker, BrokerKind, free_loopback_port
from services.processes import RestartBackoff, stop_processes
from services.tools.supervisor import (
    DEMO_PASSWORD,
    DEMO_USER,
    Child,
    KeptChild,
    _is_loopback,
    state_matching_the_broker,
)
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


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _child_running(run_pid: int, command: str) -> int:
    """The pid of the child of `plateletwatch run` whose command line ends with `command`."""
    (pid,) = [p for p in _children_of(run_pid) if _command_line(p).rstrip().endswith(command)]
    return pid


def _wait_for_line(output: list[str], text: str, within_seconds: float) -> None:
    deadline = time.monotonic() + within_seconds
    while not any(text in line for line in output):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in the output:\n" + "".join(output)[-3000:])
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _still_alive_after(pids: list[int], seconds: float) -> list[int]:
    """Those of `pids` still running once they have had `seconds` to go."""
    deadline = time.monotonic() + seconds
    while [pid for pid in pids if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    return [pid for pid in pids if _alive(pid)]


StartedRun = tuple[subprocess.Popen[str], list[str], dict[str, int], dict[str, str]]


def _start_run(tmp_path: Path) -> StartedRun:
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


@pytest.fixture
def started_run(tmp_path: Path) -> Iterator[StartedRun]:
    """`plateletwatch run`, its output, ports and env; killed with its group afterwards."""
    started = _start_run(tmp_path)
    yield started
    _kill_group(started[0])


def _kill_group(run: subprocess.Popen[str]) -> None:
    if run.poll() is None:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()


def _post_result(ports: dict[str, int], body: bytes, token: str) -> None:
    posted = httpx.post(
        f"http://127.0.0.1:{ports['ingest']}/v1/lab-results",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    assert posted.status_code == 202, posted.text


def _pages(ports: dict[str, int], count: int) -> list[dict[str, object]]:
    """The demo pager's pages, once there are `count` of them (or a minute has passed)."""
    pages: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    while len(pages) < count and time.monotonic() < deadline:
        time.sleep(0.5)
        pages = httpx.get(f"http://127.0.0.1:{ports['demo']}/pages").json()
    return pages


def test_run_shows_the_banner_pages_the_readme_example_and_stops_cleanly(
    started_run: StartedRun,
) -> None:
    readme_example = README_CURL.search((REPO / "README.md").read_text())
    assert readme_example, "README.md must show a curl example posting a file to ingest"
    example = REPO / readme_example.group(2)
    run, output, ports, env = started_run
    banner = "".join(output)
    assert f"http://127.0.0.1:{ports['ingest']}/v1/lab-results" in banner
    assert f"demo bearer token: {readme_example.group(1)}" in banner
    assert f"MLLP on 127.0.0.1:{ports['mllp']}" in banner
    assert f"pages go to http://127.0.0.1:{ports['demo']}/pages" in banner
    assert "embedded-tansu" in banner or "KAFKA_BOOTSTRAP_SERVERS" in os.environ
    docs = f"http://127.0.0.1:{ports['ingest']}/docs"
    assert f"API docs {docs}" in banner
    assert httpx.get(docs).status_code == 200  # off by default, on for `run`

    _post_result(ports, example.read_bytes(), readme_example.group(1))
    pages = _pages(ports, 1)
    assert len(pages) == 1, "".join(output)[-3000:]
    assert "CRITICAL LOW platelets: 12 x10^9/L" in str(pages[0]["summary"])

    hl7_example = README_SEND.search((REPO / "README.md").read_text())
    assert hl7_example, "README.md must show how to send the HL7 example"
    sent = run_cli(
        "send", str(REPO / hl7_example.group(1)), "--to", f"127.0.0.1:{ports['mllp']}", env=env
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert ": AA DEMO0001" in sent.stdout
    pages = _pages(ports, 2)
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


def test_no_process_outlives_a_killed_run(started_run: StartedRun) -> None:
    run, output, _, _ = started_run
    children = _children_of(run.pid)
    assert len(children) >= 4
    run.kill()  # kill -9: no chance to clean up; the children are tied to it by the kernel
    run.wait()
    assert _still_alive_after(children, 30) == [], "".join(output)[-3000:]


def test_a_killed_classifier_is_restarted_and_the_next_result_still_pages(
    started_run: StartedRun, example_result: bytes
) -> None:
    run, output, ports, _ = started_run
    before = set(_children_of(run.pid))  # broker, demo pager, ingest, classifier, notifier
    classifier = _child_running(run.pid, "services.cli classifier")
    os.kill(classifier, signal.SIGKILL)
    _wait_for_line(output, "classifier exited with status -9; restarting in 1 s (restart 1)", 10)
    _wait_for_line(output, "classifier is ready again", 90)

    _post_result(ports, example_result, "demo-token")
    assert len(_pages(ports, 1)) == 1, "".join(output)[-3000:]

    after = set(_children_of(run.pid))
    assert before - after == {classifier}  # the broker and the other children kept their pids
    assert _child_running(run.pid, "services.cli classifier") != classifier
    assert run.poll() is None


def test_a_run_whose_broker_dies_stops_and_says_the_data_is_gone(started_run: StartedRun) -> None:
    run, output, _, _ = started_run
    children = _children_of(run.pid)
    embedded = [pid for pid in children if "--storage-engine memory" in _command_line(pid)]
    if not embedded:
        pytest.skip("this run uses a broker it did not start (Docker or KAFKA_BOOTSTRAP_SERVERS)")
    os.kill(embedded[0], signal.SIGKILL)
    assert run.wait(60) == 1
    said = "".join(output)
    assert "the broker has stopped" in said
    assert "all in-memory data is gone" in said
    assert "restarting" not in said
    assert _still_alive_after(children, 10) == []


@pytest.mark.parametrize(
    ("up_seconds", "delays"),
    [
        ((0, 0, 0, 0, 0, 0, 0), (1, 2, 4, 8, 16, 30, 30)),  # a crash loop backs off to 30 s
        ((0, 0, 0, 120, 0), (1, 2, 4, 1, 2)),  # two minutes up: a new failure starts over
    ],
)
def test_a_restarted_service_backs_off_until_it_stays_up(
    up_seconds: tuple[float, ...], delays: tuple[float, ...]
) -> None:
    backoff = RestartBackoff()
    assert tuple(backoff.after_exit(up) for up in up_seconds) == delays


def test_a_restarted_child_that_does_not_get_ready_is_reported_once() -> None:
    port = free_loopback_port()
    env = {**os.environ, "PLATELETWATCH_DEMO_RECEIVER_PORT": str(port)}
    never_answers = f"http://127.0.0.1:{free_loopback_port()}/healthz"
    keeper = KeptChild(Child("demo-pager", port, "/healthz"), never_answers, env, 1.0)
    try:
        keeper.process.kill()
        keeper.process.wait()
        said = []
        deadline = time.monotonic() + 15
        while len(said) < 2 and time.monotonic() < deadline:
            said += [news] if (news := keeper.tend(time.monotonic())) else []
            time.sleep(0.1)
        assert said == [
            "demo-pager exited with status -9; restarting in 1 s (restart 1)",
            "demo-pager is not ready 1 s after its restart; still waiting for it",
        ]
        assert keeper.process.poll() is None
    finally:
        stop_processes([keeper.process], grace_seconds=5)


def test_run_keeps_no_state_beyond_an_embedded_broker(tmp_path: Path) -> None:
    embedded = Broker(BrokerKind.EMBEDDED_TANSU, "127.0.0.1:1")
    env = state_matching_the_broker(Settings(), embedded, tmp_path)
    assert str(tmp_path) in env["PLATELETWATCH_NOTIFIER_DATABASE_URL"]
    local_kafka = Broker(BrokerKind.LOCAL_KAFKA, "127.0.0.1:1")
    assert state_matching_the_broker(Settings(), local_kafka, tmp_path) == env
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
