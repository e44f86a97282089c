"""A three-broker KRaft cluster for the fault suite: each node a broker and a controller (a
3-voter quorum), replication factor 3 and min.insync.replicas 2 by default, all on loopback,
data under <stack dir>/kafka-cluster (wiped at every start). The jars are those of the
stack's own Kafka (deploy/stack.sh fetches them). Each JVM gets a small heap."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from bench.procs import REPO, stop_processes

LOG4J = REPO / "deploy" / "kafka" / "log4j.properties"

_PROPERTIES = """\
# Written by chaos/kafka_cluster.py for one fault-suite run.
process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
auto.create.topics.enable=false
num.partitions=6
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
"""


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class KafkaCluster:
    def __init__(
        self,
        stack_dir: Path,
        *,
        nodes: int = 3,
        port_base: int = 19270,
        controller_port_base: int = 19280,
        heap: str = "384m",
    ) -> None:
        self.libs = stack_dir / "kafka" / "libs"
        self.dir = stack_dir / "kafka-cluster"
        self.nodes = list(range(1, nodes + 1))
        self.ports = {n: port_base + n for n in self.nodes}
        self.controller_ports = {n: controller_port_base + n for n in self.nodes}
        self.heap = heap
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports.values())

    def node_dir(self, n: int) -> Path:
        return self.dir / f"node{n}"

    def _java(self, *args: str, heap: str) -> list[str]:
        return ["java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+ExitOnOutOfMemoryError", "-cp", f"{self.libs}/*", *args]

    def start(self) -> None:
        """Format fresh storage for every node with one cluster id, start the three JVMs."""
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise RuntimeError(f"no Kafka jars in {self.libs} (deploy/stack.sh up fetches them)")
        for n in self.nodes:
            for port in (self.ports[n], self.controller_ports[n]):
                if _port_open(port):
                    raise RuntimeError(f"port {port} for Kafka node {n} is already in use")
        if self.dir.exists():
            shutil.rmtree(self.dir)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        voters = ",".join(f"{n}@127.0.0.1:{self.controller_ports[n]}" for n in self.nodes)
        for n in self.nodes:
            d = self.node_dir(n)
            (d / "logs").mkdir(parents=True)
            conf = d / "server.properties"
            conf.write_text(
                _PROPERTIES.format(
                    node=n,
                    voters=voters,
                    port=self.ports[n],
                    controller_port=self.controller_ports[n],
                    data=d / "data",
                )
            )
            subprocess.run(
                [
                    *self._java(f"-Dlog4j.configuration=file:{LOG4J}", heap="128m"),
                    f"-Dkafka.logs.dir={d / 'logs'}",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(conf),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=(d / "format.log").open("wb"),
            )
        for n in self.nodes:
            d = self.node_dir(n)
            with (d / "kafka.out").open("wb") as out:
                self.procs[n] = subprocess.Popen(
                    [
                        *self._java(
                            "-Djava.awt.headless=true",
                            f"-Dlog4j.configuration=file:{LOG4J}",
                            f"-Dkafka.logs.dir={d / 'logs'}",
                            "kafka.Kafka",
                            str(d / "server.properties"),
                            heap=self.heap,
                        )
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            (d / "kafka.pid").write_text(f"{self.procs[n].pid}\n")

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every node answers and the metadata lists all of them."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for n, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"Kafka node {n} exited during startup; see {self.node_dir(n)}/kafka.out")
            if all(_port_open(p) for p in self.ports.values()):
                admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                try:
                    await admin.start()
                    info = await admin.describe_cluster()
                    if len(info.get("brokers", [])) == len(self.nodes):
                        return
                except Exception as exc:  # noqa: BLE001 - not ready yet
                    last = exc
                finally:
                    await admin.close()
            await asyncio.sleep(1.0)
        raise RuntimeError(f"the Kafka cluster was not ready within {timeout} s (last error: {last!r})")

    async def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> leader node of `topic`."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            (desc,) = await admin.describe_topics([topic])
            return {
                int(p.get("partition", p.get("partition_index", -1))): int(p.get("leader", p.get("leader_id", -1)))
                for p in desc["partitions"]
            }
        finally:
            await admin.close()

    def alive(self) -> dict[int, bool]:
        return {n: p.poll() is None for n, p in self.procs.items()}

    def kill(self, node: int) -> None:
        """SIGKILL one node, for good."""
        p = self.procs[node]
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()

    def stop(self) -> None:
        stop_processes(self.procs.values())
