"""The failover run: PlateletWatch scaled out on a three-node Apache Kafka cluster (every topic
replicated three times, min.insync.replicas=2, producers acks=all), three classifier workers and
two notifiers sharing the partitions, one PostgreSQL store shared by the notifiers; while a lab
sends critical results, three SIGKILLs, one after the other and none restarted: the broker node
leading partition 0 of lab.results.v1, then a classifier worker, then a notifier. The survivors
must take over: every patient paged (0 lost), nobody paged twice for the same alert (0
duplicates, as `chaos.harness.repeated_pages` counts them).

Recovery, per kill at time k: of the patients whose result was still unpaged at k or first sent
before the next kill, the longest any waited for its page counted from the later of k and the
lab's first sending (so ingest refusing results while Kafka elects counts); next to it the same
wait before any kill (`baseline`). State handed over: some seconds after the classifier kill,
every patient already paged gets a second count as low as the first, which a classifier holding
the open episode does not page (`paged_again_in_open_episode` must stay empty); the surviving
classifier workers' logs show the histories they read back from the changelog
(`changelog_handover`). For the broker, also the seconds until the metadata named a new leader
for the partition. A service that exits by itself is restarted and counted, as in `make chaos`;
the killed ones stay down. Figures are times on this machine, not a benchmark.
"""

import asyncio
import contextlib
import json
import logging
import re
import statistics
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from chaos import ChaosFailure
from chaos.harness import _TOKEN, Plan, Service, _environment, repeated_pages, say, settle
from chaos.harness import lost_patients as unpaged_patients
from chaos.lab import (
    RESEND_AFTER_SECONDS,
    Ingest,
    json_result,
    mrn,
    post_json,
    send_until_accepted,
)
from schemas import Topic
from services.config import Settings
from services.kafka.admin import ensure_topics
from services.kafka.apache_kafka import LocalApacheKafka
from services.kafka.broker import free_loopback_port
from services.notifier.delivery.channels.webhook_receiver import ReceivedPage, WebhookReceiver
from services.notifier.delivery.channels.webhook_receiver import log as receiver_log

KILLS = ("broker", "classifier", "notifier")
# services/classifier/store.py logs this once a worker has read its partitions' histories back.
_READ_BACK = re.compile(r"patient state read back: partitions \[([\d, ]*)\], (\d+) patients")


@dataclass(frozen=True)
class FailoverPlan:
    """How many patients, how many workers, and when (seconds after the first result is sent)
    each of the three kills falls."""

    patients: int = 60
    classifiers: int = 3
    notifiers: int = 2
    partitions: int = 3
    send_seconds: float = 45.0
    kill_at: dict[str, float] = field(
        default_factory=lambda: {"broker": 8.0, "classifier": 20.0, "notifier": 32.0}
    )
    # After the classifier kill has been taken over: a second count, no lower, for every
    # patient paged before that kill; a worker without their histories would page them again.
    second_counts_after_classifier_kill: float = 7.0
    # A notifier SIGKILLed between claiming a page and recording it holds the claim for its
    # two-minute lease; only then may the other one send it.
    settle_seconds: float = 150.0
    quiet_seconds: float = 5.0
    ready_within_seconds: float = 120.0


@dataclass
class FailoverResults:
    plan: FailoverPlan
    killed: dict[str, str]  # what was killed: "node 2", "classifier-1", "notifier-1"
    unexpected_exits: dict[str, int]
    changelog_handover: list[dict[str, Any]]
    second_counts: int
    paged_again: list[int]
    lab_resending_max_seconds: float
    leader_elected_seconds: float | None
    recovery_seconds: dict[str, float | None]
    baseline_seconds: dict[str, float | None]
    pages: int
    lost_patients: list[int]
    duplicates: list[str]
    resent: list[str]
    total_seconds: float

    def figures(self) -> dict[str, Any]:
        """What failover-results.json holds."""
        return {
            "broker": "Apache Kafka, 3 nodes, RF 3, min.insync.replicas 2",
            "patients": self.plan.patients,
            "classifiers": self.plan.classifiers,
            "notifiers": self.plan.notifiers,
            "partitions": self.plan.partitions,
            "kill_at_seconds": self.plan.kill_at,
            "killed": self.killed,
            "unexpected_exits": self.unexpected_exits,
            "leader_elected_seconds": self.leader_elected_seconds,
            "lab_resending_max_seconds": self.lab_resending_max_seconds,
            "changelog_handover": self.changelog_handover,
            "second_counts_after_classifier_kill": self.second_counts,
            "paged_again_in_open_episode": self.paged_again,  # made-up patient numbers
            "recovery_seconds": self.recovery_seconds,
            "baseline_page_latency_seconds": self.baseline_seconds,
            "pages": self.pages,
            "lost": len(self.lost_patients),
            "lost_patients": self.lost_patients,  # made-up patient numbers
            "duplicates": len(self.duplicates),
            "duplicate_alert_ids": self.duplicates,
            "resent_after_notifier_kill": len(self.resent),
            "resent_alert_ids": self.resent,
            "total_seconds": round(self.total_seconds, 1),
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.figures(), indent=2) + "\n")


def first_pages(pages: list[ReceivedPage]) -> dict[str, float]:
    """Per MRN, when its first page arrived (time.monotonic())."""
    first: dict[str, float] = {}
    for page in pages:
        key = page.body["alert"]["patient"]["identifier"]["mrn"]
        first[key] = min(first.get(key, page.received_at), page.received_at)
    return first


def recovery_seconds(
    sent: dict[int, float], paged: dict[str, float], killed_at: float, next_kill_at: float
) -> float | None:
    """The longest wait for a page, from the later of `killed_at` and the lab's first sending,
    of the patients unpaged at `killed_at` and first sent before `next_kill_at`; None if there
    were none."""
    waits = [
        paged[mrn(patient)] - max(at, killed_at)
        for patient, at in sent.items()
        if at < next_kill_at and mrn(patient) in paged and paged[mrn(patient)] > killed_at
    ]
    return round(max(waits), 1) if waits else None


def baseline_seconds(
    sent: dict[int, float], paged: dict[str, float], first_kill_at: float
) -> dict[str, float | None]:
    """Median and longest wait from the lab's first sending to the page, of the patients paged
    before the first kill."""
    waits = [
        paged[mrn(p)] - at
        for p, at in sent.items()
        if mrn(p) in paged and paged[mrn(p)] < first_kill_at
    ]
    if not waits:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(waits), 2), "max": round(max(waits), 2)}


async def partition_leader(bootstrap_servers: str, topic: str, partition: int) -> int | None:
    """The node id leading the partition, as a metadata request answers; None if unknown."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000)
    try:
        await admin.start()
        (described,) = await admin.describe_topics([topic])
        for p in described["partitions"]:
            if p["partition"] == partition and p["error_code"] == 0:
                leader = p["leader"]
                return leader if leader >= 0 else None
        return None
    except (KafkaError, OSError, ValueError):
        return None
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await admin.close()


async def _new_leader_after(
    cluster: LocalApacheKafka, topic: str, old: int, within: float = 60.0
) -> float | None:
    """Seconds until a live node other than `old` leads partition 0; None if none within."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        alive = [n for n in cluster.nodes if n.node_id in cluster.alive_nodes()]
        servers = ",".join(f"127.0.0.1:{n.port}" for n in alive)
        leader = await partition_leader(servers, topic, 0)
        if leader is not None and leader != old:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


async def _database(admin_url: str) -> str:
    """A fresh database on the PostgreSQL server, as the notifiers' shared store URL."""
    name = f"plateletwatch_failover_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


class _Deployment:
    """Every service process of the run, by name: ingest, classifier-1.., notifier-1.."""

    def __init__(
        self,
        plan: FailoverPlan,
        servers: str,
        prefix: str,
        database: str,
        webhook: str,
        workdir: Path,
    ) -> None:
        self.plan = plan
        self._service_plan = Plan(
            patients=plan.patients,
            kills={},
            seed=0,
            ready_within_seconds=plan.ready_within_seconds,
        )
        ports = {
            "ingest": free_loopback_port(),
            "mllp": free_loopback_port(),
            "classifier": 0,
            "notifier": 0,
        }
        self.base_env = _environment(servers, prefix, ports, webhook, workdir) | {
            "PLATELETWATCH_PARTITIONS": str(plan.partitions),
            "PLATELETWATCH_REPLICATION_FACTOR": "3",
            "PLATELETWATCH_NOTIFIER_DATABASE_URL": database,
        }
        self.ingest_ports = ports
        self.workdir = workdir
        self.services: dict[str, Service] = {}
        self.down: set[str] = set()  # killed on purpose: not restarted
        self.log_ends: dict[str, int] = {}  # per service, its log's size at the last kill

    async def start(self, name: str, command: str) -> None:
        port = free_loopback_port()
        env = dict(self.base_env)
        if command == "ingest":
            port = self.ingest_ports["ingest"]
        elif command == "classifier":
            env["PLATELETWATCH_CLASSIFIER_PORT"] = str(port)
        else:
            env["PLATELETWATCH_NOTIFIER_PORT"] = str(port)
        service = Service(
            name,
            f"http://127.0.0.1:{port}/readyz",
            env,
            self.workdir / f"{name}.log",
            self._service_plan,
            command=command,
        )
        self.services[name] = service
        seconds = await service.until_ready()
        say(f"{name} ready after {seconds:.1f} s")

    def kill(self, name: str) -> float:
        """SIGKILL the service, not to be restarted; note where every log ends now."""
        self.log_ends = {n: (self.workdir / f"{n}.log").stat().st_size for n in self.services}
        service = self.services[name]
        service.process.kill()
        service.process.wait()
        self.down.add(name)
        service.killed_at.append(time.monotonic())
        service.kills += 1
        say(f"{name} SIGKILLed")
        return service.killed_at[-1]

    async def keep_alive(self) -> None:
        """Restart, as an orchestrator would, any service that exits without being killed."""
        while True:
            for name, service in list(self.services.items()):
                if name not in self.down:
                    await service.revive_if_exited()
            await asyncio.sleep(0.5)

    def read_back_since_kill(self, command: str) -> list[dict[str, Any]]:
        """What the surviving `command` services logged reading histories back from the
        changelog since the last kill: [{"service", "partitions", "patients"}]."""
        found = []
        for name, service in self.services.items():
            if service.command != command or name in self.down:
                continue
            with (self.workdir / f"{name}.log").open("rb") as log:
                log.seek(self.log_ends.get(name, 0))
                text = log.read().decode(errors="replace")
            for partitions, patients in _READ_BACK.findall(text):
                found.append({"service": name, "partitions": partitions, "patients": int(patients)})
        return found

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()


async def _send(
    ingest: Ingest, plan: FailoverPlan, sent: dict[int, float], accepted: dict[int, float]
) -> None:
    """One result per patient, started every send_seconds/patients; `sent` gets the time the
    lab first sent each, `accepted` the time ingest took it."""
    interval = plan.send_seconds / max(1, plan.patients)

    async def one(client: httpx.AsyncClient, patient: int) -> None:
        sent[patient] = time.monotonic()
        await send_until_accepted(client, ingest, patient)
        accepted[patient] = time.monotonic()

    async with httpx.AsyncClient(timeout=20) as client, asyncio.TaskGroup() as senders:
        for patient in range(plan.patients):
            senders.create_task(one(client, patient))
            await asyncio.sleep(interval)


async def _after(seconds: float, work: Coroutine[Any, Any, None]) -> None:
    await asyncio.sleep(seconds)
    await work


async def _send_second_counts(ingest: Ingest, patients: list[int]) -> None:
    """Each patient's second count over HTTP, as low as the first and half an hour ago: within
    the open episode, so a classifier holding the patient's history does not page again. Resent
    until ingest accepts it."""
    collected = datetime.now(UTC) - timedelta(minutes=30)
    async with httpx.AsyncClient(timeout=20) as client:
        for patient in patients:
            body = json_result(patient, collected, number=2)
            while True:
                if await post_json(client, ingest, body, patient):
                    break
                await asyncio.sleep(RESEND_AFTER_SECONDS)


def paged_again(pages: list[ReceivedPage], patients: list[int]) -> list[int]:
    """Of `patients`, those paged for more than one critical_low alert (a second one means the
    classifier had forgotten the open episode)."""
    alerts: dict[str, set[str]] = {}
    for page in pages:
        alert = page.body["alert"]
        if alert["kind"] == "critical_low":
            key = alert["patient"]["identifier"]["mrn"]
            alerts.setdefault(key, set()).add(alert["alert_id"])
    return [p for p in patients if len(alerts.get(mrn(p), ())) > 1]


async def _kill_all(
    plan: FailoverPlan,
    cluster: LocalApacheKafka,
    deployment: _Deployment,
    topic: str,
    started: float,
    handover: list[dict[str, Any]],
    probe: tuple[Ingest, WebhookReceiver, list[int]],
) -> tuple[dict[str, float], dict[str, str], float | None]:
    """The three kills, each at its time; `handover` gets what the surviving classifiers read
    back from the changelog between the classifier and the notifier kill. After the classifier
    kill, the patients already paged get their second count (`probe`: where to send, the pages
    so far, and the list to fill with those patients)."""
    killed_at: dict[str, float] = {}
    killed: dict[str, str] = {}
    elected: float | None = None
    second_counts: asyncio.Task[None] | None = None
    for kind in KILLS:
        await asyncio.sleep(max(0.0, started + plan.kill_at[kind] - time.monotonic()))
        if kind == "broker":
            leader = await partition_leader(cluster.bootstrap_servers, topic, 0)
            if leader is None:
                raise ChaosFailure(f"no leader known for {topic}[0]")
            cluster.kill_node(leader)
            killed_at[kind] = time.monotonic()
            killed[kind] = f"node {leader}"
            say(f"broker node {leader}, leader of {topic}[0], SIGKILLed")
            elected = await _new_leader_after(cluster, topic, leader)
            say(f"new leader of {topic}[0] after {elected or float('nan'):.1f} s")
        else:
            if kind == "notifier":  # before the notifier kill moves the log marks on
                handover.extend(deployment.read_back_since_kill("classifier"))
                if second_counts is not None:
                    await second_counts
            name = f"{kind}-1"
            killed_at[kind] = deployment.kill(name)
            killed[kind] = name
            if kind == "classifier":
                ingest, receiver, chosen = probe
                paged = first_pages(list(receiver.pages))
                chosen.extend(p for p in range(plan.patients) if mrn(p) in paged)
                second_counts = asyncio.create_task(
                    _after(
                        plan.second_counts_after_classifier_kill,
                        _send_second_counts(ingest, chosen),
                    )
                )
    return killed_at, killed, elected


async def run_failover_async(
    plan: FailoverPlan, cluster: LocalApacheKafka, postgres_admin_url: str, workdir: Path
) -> FailoverResults:
    """Run the plan on a started three-node `cluster`; the notifiers' store is a new database
    on the PostgreSQL server at `postgres_admin_url`."""
    servers = cluster.bootstrap_servers
    prefix = f"failover{uuid.uuid4().hex[:8]}."
    settings = Settings(
        kafka_bootstrap_servers=servers,
        topic_prefix=prefix,
        partitions=plan.partitions,
        replication_factor=3,
    )
    await ensure_topics(settings, servers, create=True)
    topic = settings.topic(Topic.LAB_RESULTS)
    database = await _database(postgres_admin_url)
    receiver = WebhookReceiver()
    receiver.start()
    deployment = _Deployment(plan, servers, prefix, database, receiver.url, workdir)
    try:
        await deployment.start("ingest", "ingest")
        for i in range(1, plan.classifiers + 1):
            await deployment.start(f"classifier-{i}", "classifier")
        for i in range(1, plan.notifiers + 1):
            await deployment.start(f"notifier-{i}", "notifier")
        ports = deployment.ingest_ports
        ingest = Ingest(f"http://127.0.0.1:{ports['ingest']}", "127.0.0.1", ports["mllp"], _TOKEN)
        sent: dict[int, float] = {}
        handover: list[dict[str, Any]] = []
        second_counted: list[int] = []
        accepted: dict[int, float] = {}
        started = time.monotonic()
        say(f"all ready; sending {plan.patients} results over {plan.send_seconds:g} s")
        keeper = asyncio.create_task(deployment.keep_alive())
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_send(ingest, plan, sent, accepted))
                kills = group.create_task(
                    _kill_all(
                        plan,
                        cluster,
                        deployment,
                        topic,
                        started,
                        handover,
                        (ingest, receiver, second_counted),
                    )
                )
            say(f"all {plan.patients} results accepted; waiting for the pages")
            await settle(receiver, plan.patients, plan.settle_seconds, plan.quiet_seconds, [])
        except ExceptionGroup as failures:
            raise failures.exceptions[0] from None
        finally:
            keeper.cancel()
        killed_at, killed, elected = kills.result()
        pages = list(receiver.pages)
        say(f"{len(pages)} pages received")
        paged = first_pages(pages)
        ends = [killed_at[k] for k in KILLS[1:]] + [float("inf")]
        recovery = {
            kind: recovery_seconds(sent, paged, killed_at[kind], end)
            for kind, end in zip(KILLS, ends, strict=True)
        }
        duplicates, resent = repeated_pages(pages, [killed_at["notifier"]])
        return FailoverResults(
            plan=plan,
            killed=killed,
            unexpected_exits={n: s.unexpected_exits for n, s in deployment.services.items()},
            changelog_handover=handover,
            second_counts=len(second_counted),
            paged_again=paged_again(pages, second_counted),
            lab_resending_max_seconds=round(max(accepted[p] - sent[p] for p in accepted), 1),
            leader_elected_seconds=None if elected is None else round(elected, 1),
            recovery_seconds=recovery,
            baseline_seconds=baseline_seconds(sent, paged, killed_at["broker"]),
            pages=len(pages),
            lost_patients=unpaged_patients(pages, plan.patients),
            duplicates=duplicates,
            resent=resent,
            total_seconds=time.monotonic() - started,
        )
    finally:
        deployment.stop()
        receiver.stop()


def run_failover(
    plan: FailoverPlan, cluster: LocalApacheKafka, postgres_admin_url: str, workdir: Path
) -> FailoverResults:
    return asyncio.run(run_failover_async(plan, cluster, postgres_admin_url, workdir))


def main(patients: int, results_path: Path) -> int:
    """`python -m chaos --failover`: start the cluster and a throwaway PostgreSQL, run, write
    `results_path`; 1 unless every patient was paged once. Logs are kept on failure."""
    import shutil
    import tempfile

    from services.kafka.apache_kafka import unavailable_reason
    from tests.postgres_server import provide_postgres

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a line per refused connection
    receiver_log.setLevel(logging.ERROR)  # no line per page
    if reason := unavailable_reason():
        print(f"failover: Apache Kafka unavailable: {reason}")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="plateletwatch-failover-"))
    cluster = LocalApacheKafka(nodes=3)
    try:
        with provide_postgres() as admin_url:
            cluster.start(timeout=120)
            results = run_failover(FailoverPlan(patients=patients), cluster, admin_url, workdir)
    except ChaosFailure as failure:
        print(f"failover: {failure}\nfailover: logs kept in {workdir}")
        return 1
    finally:
        cluster.stop()
    results.write(results_path)
    print(f"failover: results in {results_path}")
    print(json.dumps(results.figures(), indent=2))
    if results.lost_patients or results.duplicates or results.paged_again:
        print(f"failover: logs kept in {workdir}")
        return 1
    shutil.rmtree(workdir)
    return 0
