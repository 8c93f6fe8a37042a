"""A throwaway ``redis-server`` on loopback, for tests and benchmarks.

Shared so the test suite and every bench start Redis the same way: a free 127.0.0.1 port,
no persistence, and a start that can be repeated on the same port (tests stop and restart
it to prove the service recovers).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedis:
    """``redis-server`` on a free loopback port; ``stop()`` then ``start()`` keeps the port."""

    def __init__(self, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def connection_string(self) -> str:
        """Feast's redis online store format: ``host:port``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run `make redis` (Debian package redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class LocalRedisCluster:
    """A Redis Cluster of ``size`` primaries on loopback (no replicas), slots split evenly.

    Each node is a :class:`LocalRedis` started in cluster mode; the slots are assigned and
    the nodes introduced with plain cluster commands (no ``redis-cli`` needed).
    """

    SLOTS = 16384

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.nodes = []
        self.bus_ports = []
        for i in range(size):
            node_dir = workdir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            # The bus port defaults to port + 10000, past 65535 for a high ephemeral port: pick one.
            self.bus_ports.append(free_port())
            self.nodes.append(LocalRedis(node_dir, [
                "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "2000", "--cluster-port", str(self.bus_ports[-1])]))

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming every node (lookalike.redis_target)."""
        return "redis+cluster://" + ",".join(node.connection_string for node in self.nodes)

    def start(self, timeout_s: float = 30.0) -> LocalRedisCluster:
        try:
            for node in self.nodes:
                node.start()
            self._form_cluster(timeout_s)
        except BaseException:
            self.stop()  # never leave the nodes that did start running
            raise
        return self

    def _form_cluster(self, timeout_s: float) -> None:
        import redis

        clients = [redis.Redis(host="127.0.0.1", port=node.port) for node in self.nodes]
        try:
            bounds = [round(i * self.SLOTS / len(self.nodes)) for i in range(len(self.nodes) + 1)]
            for client, low, high in zip(clients, bounds[:-1], bounds[1:], strict=True):
                client.execute_command("CLUSTER ADDSLOTSRANGE", low, high - 1)
            for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port, bus_port)
            deadline = time.time() + timeout_s
            while time.time() < deadline:
                infos = [client.cluster("INFO") for client in clients]  # parsed into a dict by redis-py
                if all(i.get("cluster_state") == "ok" and int(i.get("cluster_known_nodes", 0)) == len(self.nodes)
                       for i in infos):
                    return
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()
        raise RuntimeError(f"redis cluster on ports {[n.port for n in self.nodes]} did not become ready")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
