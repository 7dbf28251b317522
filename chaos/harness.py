"""The chaos run: PlateletWatch deployed one process per service on loopback, each service
SIGKILLed again and again on a seeded schedule while a lab sends critical results, then a count
of patients never paged (lost) and of pages sent twice (duplicates).

One broker (`make chaos` starts the embedded Tansu one, unless KAFKA_BOOTSTRAP_SERVERS or Docker
offers another) with topics under a fresh prefix; `plateletwatch ingest`, `classifier` and
`notifier` as separate processes, as deployed; the notifier pages a webhook receiver in this
process that records every page. Each kill is a SIGKILL after the service has been up 2-6 s, and
the restart follows 1-5 s later; a service that exits by itself is restarted too, and counted.
The services' state and logs live under the given work folder, and every one of them dies with
this process (PR_SET_PDEATHSIG). Figures are times on this machine, not a benchmark.
"""

import asyncio
import contextlib
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from chaos import ChaosFailure
from chaos.lab import Ingest, mrn, send_all
from services.config import Settings
from services.kafka.admin import ensure_topics
from services.kafka.broker import Broker, free_loopback_port
from services.notifier.delivery.channels.webhook_receiver import ReceivedPage, WebhookReceiver
from services.processes import die_with_parent, stop_processes

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("ingest", "classifier", "notifier")
_TOKEN = "chaos-token"


@dataclass(frozen=True)
class Plan:
    """What to do: how many patients, how many kills of each service, and the seed that fixes
    when each kill falls and how long each service stays down."""

    patients: int
    kills: dict[str, int]
    seed: int
    up_seconds: tuple[float, float] = (2.0, 6.0)
    down_seconds: tuple[float, float] = (1.0, 5.0)
    # Longer than the notifier's two-minute claim on a page it was sending when killed.
    settle_seconds: float = 150.0
    quiet_seconds: float = 5.0
    ready_within_seconds: float = 120.0  # after a (re)start, or the run stops with ChaosFailure

    def schedule(self) -> dict[str, list[tuple[float, float]]]:
        """Per service, (seconds up before the kill, seconds down before the restart)."""
        draw = random.Random(self.seed)
        return {
            name: [
                (draw.uniform(*self.up_seconds), draw.uniform(*self.down_seconds))
                for _ in range(self.kills.get(name, 0))
            ]
            for name in SERVICES
        }


_EPOCH = time.monotonic()


def say(line: str) -> None:
    """A progress line with the seconds since the harness started: no patient data."""
    print(f"chaos [{time.monotonic() - _EPOCH:6.1f} s] {line}", flush=True)


class Service:
    """One PlateletWatch service as its own process: started, SIGKILLed and restarted, with the
    seconds each restart took to answer /readyz 200."""

    def __init__(
        self,
        name: str,
        ready_url: str,
        env: dict[str, str],
        log_path: Path,
        plan: Plan,
        command: str | None = None,
    ) -> None:
        self.name = name  # "classifier", or "classifier-2" where several run
        self.command = command or name  # the `plateletwatch` subcommand
        self._ready_within_seconds = plan.ready_within_seconds
        self.kills = 0
        self.killed_at: list[float] = []  # time.monotonic() of each SIGKILL
        self.unexpected_exits = 0
        self.recovery_seconds: list[float] = []
        self._ready_url = ready_url
        self._env = env
        self._log_path = log_path
        self._log: IO[bytes] | None = None
        self._started_at = 0.0
        self.process = self._start()

    def _start(self) -> "subprocess.Popen[bytes]":
        self._started_at = time.monotonic()
        if self._log is not None:
            self._log.close()
        self._log = self._log_path.open("ab")  # every run of the service, one after the other
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", self.command],
            env=self._env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    async def until_ready(self) -> float:
        """Seconds from the start to /readyz 200; ChaosFailure if it exits or takes too long."""
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() - self._started_at < self._ready_within_seconds:
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self._ready_url)).status_code == 200:
                        return time.monotonic() - self._started_at
                await asyncio.sleep(0.1)
        tail = self._log_path.read_text(errors="replace")[-3000:]
        status = self.process.poll()
        how = "still running" if status is None else f"exited with status {status}"
        raise ChaosFailure(
            f"{self.name} was not ready {self._ready_within_seconds:g} s after starting ({how}); "
            f"the end of its log:\n{tail}"
        )

    async def restart(self) -> None:
        self.process = self._start()
        self.recovery_seconds.append(await self.until_ready())
        say(f"{self.name} ready {self.recovery_seconds[-1]:.1f} s after restart")

    async def revive_if_exited(self) -> None:
        """Restart a service that exited without being killed, as an orchestrator would."""
        if self.process.poll() is not None:
            self.unexpected_exits += 1
            say(f"{self.name} exited by itself (status {self.process.returncode})")
            await self.restart()

    async def watch(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.revive_if_exited()
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    async def endure(self, schedule: list[tuple[float, float]]) -> None:
        """Kill and restart the service as scheduled."""
        for up, down in schedule:
            await self.watch(up)
            self.process.kill()
            self.process.wait()
            self.killed_at.append(time.monotonic())
            self.kills += 1
            say(f"{self.name} killed ({self.kills}/{len(schedule)}), down {down:.1f} s")
            await asyncio.sleep(down)
            await self.restart()

    def stop(self) -> None:
        stop_processes([self.process], grace_seconds=10)
        if self._log is not None:
            self._log.close()


@dataclass
class Results:
    plan: Plan
    broker: str
    kills: dict[str, int]
    unexpected_exits: dict[str, int]
    recovery_seconds: dict[str, list[float]]
    sends: int
    pages: int
    lost_patients: list[int]
    duplicates: list[str]  # alert ids: opaque, no patient data
    resent: list[str]  # alert ids sent again, same Idempotency-Key, across a notifier kill
    total_seconds: float

    def figures(self) -> dict[str, Any]:
        """What chaos-results.json holds."""
        everything = [s for seconds in self.recovery_seconds.values() for s in seconds]
        return {
            "seed": self.plan.seed,
            "broker": self.broker,
            "patients": self.plan.patients,
            "kills": self.kills,
            "unexpected_exits": self.unexpected_exits,
            "sends": self.sends,
            "pages": self.pages,
            "lost": len(self.lost_patients),
            "lost_patients": self.lost_patients,  # made-up patient numbers, not identifiers
            "duplicates": len(self.duplicates),
            "duplicate_alert_ids": self.duplicates,
            "resent_after_notifier_kill": len(self.resent),
            "resent_alert_ids": self.resent,
            "recovery_seconds": {
                name: _spread(seconds)
                for name, seconds in {**self.recovery_seconds, "all": everything}.items()
            },
            "total_seconds": round(self.total_seconds, 1),
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.figures(), indent=2) + "\n")


def _spread(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(seconds), 1), "max": round(max(seconds), 1)}


# From a webhook taking a page to the notifier recording it delivered: milliseconds, seconds
# at most on a loaded machine.
CUT_SHORT_SECONDS = 2.0


def repeated_pages(
    pages: list[ReceivedPage], notifier_killed_at: list[float]
) -> tuple[list[str], list[str]]:
    """(duplicates, resent): the alert id of every page beyond the first of the same alert
    (and kind) to the same recipient. A page is delivered at least once: a notifier SIGKILLed
    while the webhook took a page cannot know it went out, and sends it again with the same
    Idempotency-Key, which a receiver honouring the key drops. Such a repeat, with a notifier
    kill within CUT_SHORT_SECONDS after the first arrived (the kill that kept the notifier from
    recording it), is `resent`; any other repeat is a duplicate page."""
    by_recipient: dict[tuple[str, str, str], list[ReceivedPage]] = defaultdict(list)
    for page in sorted(pages, key=lambda p: p.received_at):
        alert = page.body["alert"]
        by_recipient[(page.path, alert["alert_id"], alert["kind"])].append(page)
    duplicates: list[str] = []
    resent: list[str] = []
    for (_, alert_id, _), received in by_recipient.items():
        for before, again in itertools.pairwise(received):
            cut_short = any(
                before.received_at <= t <= before.received_at + CUT_SHORT_SECONDS
                for t in notifier_killed_at
            )
            same_key = again.idempotency_key is not None and (
                again.idempotency_key == before.idempotency_key
            )
            (resent if cut_short and same_key else duplicates).append(alert_id)
    return duplicates, resent


def lost_patients(pages: list[ReceivedPage], patients: int) -> list[int]:
    paged = {page.body["alert"]["patient"]["identifier"]["mrn"] for page in pages}
    return [patient for patient in range(patients) if mrn(patient) not in paged]


async def settle(
    receiver: WebhookReceiver,
    patients: int,
    settle_seconds: float,
    quiet_seconds: float,
    services: list[Service],
) -> None:
    """Wait until every patient has been paged and no page has come for `quiet_seconds`, or
    `settle_seconds` have passed; `services` that exit meanwhile are restarted (none: the
    failover run keeps its dead dead)."""
    deadline = time.monotonic() + settle_seconds
    seen, last_page_at = len(receiver.pages), time.monotonic()
    last_said = last_page_at
    while time.monotonic() < deadline:
        if len(receiver.pages) != seen:
            seen, last_page_at = len(receiver.pages), time.monotonic()
        waiting_for = len(lost_patients(list(receiver.pages), patients))
        if not waiting_for and time.monotonic() - last_page_at >= quiet_seconds:
            return
        if time.monotonic() - last_said >= 10:
            say(f"{waiting_for} patients not paged yet")
            last_said = time.monotonic()
        for service in services:
            await service.revive_if_exited()
        await asyncio.sleep(0.5)


def _environment(
    servers: str, prefix: str, ports: dict[str, int], webhook: str, workdir: Path
) -> dict[str, str]:
    """What every service process is started with: this run's broker, topics, ports and state."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PLATELETWATCH_") and key != "KAFKA_BOOTSTRAP_SERVERS"
    }
    return inherited | {
        "KAFKA_BOOTSTRAP_SERVERS": servers,
        "PLATELETWATCH_TOPIC_PREFIX": prefix,
        "PLATELETWATCH_PARTITIONS": "3",
        "PLATELETWATCH_INGEST_PORT": str(ports["ingest"]),
        "PLATELETWATCH_INGEST_MLLP_PORT": str(ports["mllp"]),
        "PLATELETWATCH_CLASSIFIER_PORT": str(ports["classifier"]),
        "PLATELETWATCH_NOTIFIER_PORT": str(ports["notifier"]),
        "PLATELETWATCH_INGEST_API_TOKENS": json.dumps([_TOKEN]),
        "PLATELETWATCH_NOTIFIER_WEBHOOK_URL": webhook,
        "PLATELETWATCH_NOTIFIER_LINK_SECRET": uuid.uuid4().hex,
        "PLATELETWATCH_NOTIFIER_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'notifier.db'}",
        "PLATELETWATCH_CLASSIFIER_SESSION_TIMEOUT_SECONDS": "4",
    }


async def _run(plan: Plan, broker: Broker, workdir: Path) -> Results:
    servers = broker.bootstrap_servers
    prefix = f"chaos{uuid.uuid4().hex[:8]}."
    await ensure_topics(
        Settings(kafka_bootstrap_servers=servers, topic_prefix=prefix, partitions=3),
        servers,
        create=True,
    )
    ports = {name: free_loopback_port() for name in (*SERVICES, "mllp")}
    receiver = WebhookReceiver()
    receiver.start()
    env = _environment(servers, prefix, ports, receiver.url, workdir)
    services = [
        Service(name, f"http://127.0.0.1:{ports[name]}/readyz", env, workdir / f"{name}.log", plan)
        for name in SERVICES
    ]
    try:
        for service in services:
            await service.until_ready()
        started = time.monotonic()
        schedule = plan.schedule()
        say(f"services ready; sending {plan.patients} results while killing {plan.kills}")
        # Results keep arriving for as long as the kills go on.
        sending_seconds = max(sum(up + down for up, down in kills) for kills in schedule.values())
        ingest = Ingest(f"http://127.0.0.1:{ports['ingest']}", "127.0.0.1", ports["mllp"], _TOKEN)
        try:
            async with asyncio.TaskGroup() as group:
                sends = group.create_task(send_all(ingest, plan.patients, sending_seconds))
                for service in services:
                    group.create_task(service.endure(schedule[service.name]))
        except ExceptionGroup as failures:  # the first failure stopped the others
            raise failures.exceptions[0] from None
        say(f"all {plan.patients} results accepted; waiting for the pages")
        await settle(receiver, plan.patients, plan.settle_seconds, plan.quiet_seconds, services)
        say(f"{len(receiver.pages)} pages received; stopping the services")
        pages = list(receiver.pages)
        notifier_killed_at = [t for s in services if s.name == "notifier" for t in s.killed_at]
        duplicates, resent = repeated_pages(pages, notifier_killed_at)
        return Results(
            plan=plan,
            broker=broker.kind.value,
            kills={s.name: s.kills for s in services},
            unexpected_exits={s.name: s.unexpected_exits for s in services},
            recovery_seconds={s.name: s.recovery_seconds for s in services},
            sends=sum(sends.result()),
            pages=len(pages),
            lost_patients=lost_patients(pages, plan.patients),
            duplicates=duplicates,
            resent=resent,
            total_seconds=time.monotonic() - started,
        )
    finally:
        for service in services:
            service.stop()
        receiver.stop()


def run_chaos(plan: Plan, workdir: Path, broker: Broker) -> Results:
    """Run the plan against `broker`, with the services' state and logs under `workdir`."""
    return asyncio.run(_run(plan, broker, workdir))
