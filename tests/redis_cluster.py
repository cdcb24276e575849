"""Real multi-node Redis deployments for the `cluster` and `sentinel` tests, started on free ports.

`LocalCluster`: three masters sharing the 16384 slots. `LocalSentinel`: a master, a replica and
three sentinels (quorum 2) that fail over half a second after the master stops answering.
Both wait for a condition (cluster state ok, sentinel quorum), never for a fixed time.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.redis_server import RedisServer, free_port, wait_ready

SERVICE = "mymaster"


def poll(check: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Wait until `check()` is truthy (errors count as not yet), or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True, socket_timeout=2)


class LocalCluster:
    """Three cluster-mode masters, slots split evenly, AOF on."""

    def __init__(self, masters: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hitl-cluster-"))
        self.nodes = [RedisServer("--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                                  "--cluster-config-file", "nodes.conf", parent=self.dir)
                      for _ in range(masters)]
        for n in self.nodes:
            n.port = cluster_port()

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    def start(self) -> None:
        for n in self.nodes:
            n.start(appendonly=True)
        share = 16384 // len(self.nodes)
        for i, n in enumerate(self.nodes):
            last = 16383 if i == len(self.nodes) - 1 else (i + 1) * share - 1
            with _client(n.port) as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        with _client(self.nodes[0].port) as c:
            for n in self.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", n.port)
        poll(self._ok, "cluster state ok on every node")

    def _ok(self) -> bool:
        for n in self.nodes:
            with _client(n.port) as c:
                info = c.execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in info or f"cluster_known_nodes:{len(self.nodes)}" not in info:
                    return False
        return True

    def master_port(self, key: str) -> int:
        """The port of the node that serves `key`'s slot."""
        with _client(self.nodes[0].port) as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(master[1])
        raise AssertionError(f"no node serves slot {slot}")

    def flush(self) -> None:
        for n in self.nodes:
            with _client(n.port) as c:
                c.flushall()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelProcess(RedisServer):
    """One sentinel watching `SERVICE` (quorum 2, down after 500 ms)."""

    def __init__(self, parent: Path) -> None:
        super().__init__(parent=parent)
        self.conf = self.dir / "sentinel.conf"
        self.id = secrets.token_hex(20)

    def configure(self, master_port: int, others: list[SentinelProcess]) -> None:
        """Write the config; naming the other sentinels saves waiting for their hello messages."""
        known = "".join(f"sentinel known-sentinel {SERVICE} 127.0.0.1 {o.port} {o.id}\n" for o in others)
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nsentinel myid {self.id}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} 1000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n" + known)

    def start(self, *, appendonly: bool = False) -> None:
        self.proc = subprocess.Popen([self.binary, str(self.conf), "--sentinel", "--loglevel", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.port)


class LocalSentinel:
    """A master with one replica (AOF on both) under three sentinels."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hitl-sentinel-"))
        # a full sync starts at once instead of after the default 5 s diskless delay
        fast_sync = ("--repl-diskless-sync-delay", "0")
        self.master = RedisServer(*fast_sync, parent=self.dir)
        self.replica = RedisServer(*fast_sync, "--replicaof", "127.0.0.1", str(self.master.port),
                                   parent=self.dir)
        self.sentinels = [SentinelProcess(self.dir) for _ in range(3)]
        for s in self.sentinels:
            s.configure(self.master.port, [o for o in self.sentinels if o is not s])

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{SERVICE}/0"

    def start(self) -> None:
        self.master.start(appendonly=True)
        self.replica.start(appendonly=True)
        poll(self._synced, "the replica to sync")
        for s in self.sentinels:
            s.start()
        poll(self._quorum, "every sentinel to see the replica and the other sentinels")

    def _synced(self) -> bool:
        with _client(self.replica.port) as c:
            return bool(c.info("replication")["master_link_status"] == "up")

    def _quorum(self) -> bool:
        for s in self.sentinels:
            with _client(s.port) as c:
                fields = c.sentinel_master(SERVICE)
                if int(fields["num-other-sentinels"]) < 2 or int(fields["num-slaves"]) < 1:
                    return False
                c.execute_command("SENTINEL", "CKQUORUM", SERVICE)  # raises until a majority agrees
        return True

    def wait_replicated(self) -> None:
        """Wait until the replica has every write the master has made so far."""
        def caught_up() -> bool:
            with _client(self.master.port) as m, _client(self.replica.port) as r:
                return bool(int(m.info("replication")["master_repl_offset"])
                            == int(r.info("replication")["slave_repl_offset"]))
        poll(caught_up, "the replica to catch up")

    def master_port(self) -> int:
        """The master's port as the sentinels currently see it."""
        with _client(self.sentinels[0].port) as c:
            _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            return int(port)

    def wait_failover(self, old_port: int) -> int:
        """Wait until every sentinel names a new master that says it is one; its port."""
        def promoted() -> bool:
            ports = set()
            for s in self.sentinels:
                with _client(s.port) as c:
                    ports.add(int(c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1]))
            if len(ports) != 1 or old_port in ports:
                return False
            with _client(ports.pop()) as c:
                return c.info("replication")["role"] == "master"
        poll(promoted, "the sentinels to promote the replica")
        return self.master_port()

    def flush(self) -> None:
        with _client(self.master_port()) as c:
            c.flushall()
            c.execute_command("WAIT", 1, 2000)

    def stop(self) -> None:
        for s in [*self.sentinels, self.replica, self.master]:
            s.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
