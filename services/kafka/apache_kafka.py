"""Apache Kafka run from its jars, without Docker: n KRaft nodes on loopback, each broker and
controller.

`make tools` fetches the jars (deploy/kafka-jars/pom.xml, the version deploy/ runs) into
.plateletwatch/kafka-jars, or PLATELETWATCH_KAFKA_JARS names another directory; `java` comes from
JAVA_HOME or PATH. `start` formats every node's storage with one generated cluster id, starts
`java -cp <jars> kafka.Kafka server.properties` per node on free loopback ports, and returns once
a metadata request lists all n brokers; it raises KafkaUnavailableError (naming `make tools`)
when java or the jars are missing, BrokerStartError when a node does not come up. `stop` SIGTERMs
every node, SIGKILLs what remains after the grace, and removes the data: the cluster forgets
everything, as embedded Tansu does. Each node logs to a file in the temp directory, kept.

The configuration is Kafka's defaults, as deploy/ runs them, except what one machine and quick
tests need: replication as far as the nodes allow, no initial rebalance delay, and consumer-group
session timeouts down to 1 s (Kafka refuses less than 6 s by default).
"""

import asyncio
import base64
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from services.kafka.broker import BrokerStartError, free_loopback_port, wait_for_port
from services.processes import die_with_parent, stop_processes

log = logging.getLogger(__name__)

KAFKA_JARS_ENV = "PLATELETWATCH_KAFKA_JARS"
DEFAULT_KAFKA_JARS = Path(__file__).resolve().parents[2] / ".plateletwatch" / "kafka-jars"
HOST = "127.0.0.1"

_LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


class KafkaUnavailableError(BrokerStartError):
    """java or the Kafka jars are missing here; the message says how to get them."""


def kafka_jars_dir() -> Path:
    return Path(os.environ.get(KAFKA_JARS_ENV) or DEFAULT_KAFKA_JARS)


def java_command() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def unavailable_reason(jars: Path | None = None) -> str | None:
    """Why Apache Kafka cannot be started here, or None when java and the jars are present."""
    jars = jars or kafka_jars_dir()
    if java_command() is None:
        return "no java (JAVA_HOME or PATH): install a JDK 17, then run `make tools`"
    if not any(jars.glob("kafka_2.13-*.jar")):
        return f"no Kafka jars in {jars}: run `make tools` (needs java and mvn)"
    return None


def new_cluster_id() -> str:
    """A KRaft cluster id as `kafka-storage random-uuid` prints it: URL-safe base64 of 16 bytes."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka's tools would read it as an option
            return text


@dataclass(frozen=True)
class Node:
    node_id: int
    port: int  # PLAINTEXT, for clients and the other brokers
    controller_port: int


def server_properties(node: Node, nodes: list[Node], data_dir: Path) -> str:
    """One node's server.properties: broker and controller, replicated across `nodes` as far as
    their number allows (3 nodes: replication factor 3, min.insync.replicas 2)."""
    count = len(nodes)
    replicas = min(count, 3)
    min_isr = 2 if count >= 3 else 1
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes)
    settings = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": data_dir,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,
        # Kafka's default floor is 6 s; the tests and `make chaos` use 4 s to rebalance quickly.
        "group.min.session.timeout.ms": 1000,
        "auto.create.topics.enable": "false",  # as deploy/docker-compose.yml
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def brokers_answering(bootstrap_servers: str, timeout_seconds: float = 2.0) -> int:
    """How many brokers a metadata request lists (0 when none answers). Runs aiokafka on a loop of
    its own in a worker thread, so it may be called with or without a running event loop."""

    async def ask() -> int:
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_seconds * 1000)
        )
        try:
            await client.bootstrap()
            return len(client.cluster.brokers())
        except (KafkaError, OSError):
            return 0
        finally:
            await client.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, ask()).result()


class LocalApacheKafka:
    """`nodes` Apache Kafka KRaft nodes (broker+controller each) on loopback, started from jars."""

    def __init__(self, nodes: int = 1, jars: Path | None = None, heap: str = "512m") -> None:
        self.jars = jars or kafka_jars_dir()
        self.heap = heap
        ports = [(free_loopback_port(), free_loopback_port()) for _ in range(nodes)]
        self.nodes = [Node(i + 1, port, controller) for i, (port, controller) in enumerate(ports)]
        self.cluster_id = new_cluster_id()
        self._dir: Path | None = None
        self._processes: list[subprocess.Popen[bytes]] = []
        self.log_paths = [
            Path(tempfile.gettempdir()) / f"plateletwatch-kafka-{node.port}.log"
            for node in self.nodes
        ]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    def _java(self, main: str, *args: str) -> list[str]:
        assert self._dir is not None
        java = java_command()
        assert java is not None
        return [
            java,
            f"-Xmx{self.heap}",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self._dir / 'log4j.properties'}",
            "-cp",
            f"{self.jars}/*",
            main,
            *args,
        ]

    def start(self, timeout: float = 60.0) -> None:
        if reason := unavailable_reason(self.jars):
            raise KafkaUnavailableError(f"cannot start Apache Kafka: {reason}")
        started = time.monotonic()
        self._dir = Path(tempfile.mkdtemp(prefix="plateletwatch-kafka-"))
        (self._dir / "log4j.properties").write_text(_LOG4J)
        configs = []
        for node in self.nodes:
            node_dir = self._dir / f"node-{node.node_id}"
            node_dir.mkdir()
            config = node_dir / "server.properties"
            config.write_text(server_properties(node, self.nodes, node_dir / "data"))
            configs.append(config)
        try:
            self._format(configs)
            for config, log_path in zip(configs, self.log_paths, strict=True):
                with log_path.open("wb") as log_file:
                    self._processes.append(
                        subprocess.Popen(
                            self._java("kafka.Kafka", str(config)),
                            stdout=log_file,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            start_new_session=True,  # stopped last, as embedded Tansu
                            preexec_fn=die_with_parent if os.name == "posix" else None,
                        )
                    )
            self._wait_until_answering(started + timeout)
        except BrokerStartError as error:
            tails = "\n".join(path.read_text(errors="replace")[-1500:] for path in self.log_paths)
            self.stop()
            raise BrokerStartError(f"Apache Kafka did not start: {error}\n{tails}") from error
        log.info(
            "Apache Kafka (%d node%s) listening on %s after %.1f s",
            len(self.nodes),
            "" if len(self.nodes) == 1 else "s",
            self.bootstrap_servers,
            time.monotonic() - started,
        )

    def _format(self, configs: list[Path]) -> None:
        formats = [
            subprocess.Popen(
                self._java(
                    "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(config)
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            for config in configs
        ]
        for process in formats:
            output, _ = process.communicate(timeout=120)
            if process.returncode != 0:
                raise BrokerStartError(f"formatting the storage failed: {output.decode()[-1500:]}")

    def _wait_until_answering(self, deadline: float) -> None:
        for node in self.nodes:
            wait_for_port(HOST, node.port, deadline - time.monotonic(), self.is_running)
        while (answering := brokers_answering(self.bootstrap_servers)) < len(self.nodes):
            if not self.is_running():
                raise BrokerStartError("a node exited while starting")
            if time.monotonic() > deadline:
                raise BrokerStartError(f"{answering} of {len(self.nodes)} brokers answer")
            time.sleep(0.2)

    def is_running(self) -> bool:
        """True while every node started is alive."""
        return bool(self._processes) and all(p.poll() is None for p in self._processes)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node (broker and controller) and wait for it to die, as a crashed machine;
        the others go on, electing new partition leaders. Its data stays until `stop`. Raises
        KeyError for a node id this cluster does not have."""
        index = {node.node_id: i for i, node in enumerate(self.nodes)}[node_id]
        process = self._processes[index]
        process.kill()
        process.wait()

    def alive_nodes(self) -> list[int]:
        """The ids of the nodes whose process is running."""
        return [
            node.node_id
            for node, process in zip(self.nodes, self._processes, strict=True)
            if process.poll() is None
        ]

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate every node, kill those still there after `timeout`, remove the data.
        Idempotent."""
        stop_processes(self._processes, timeout)
        self._processes = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
