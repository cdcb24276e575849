"""A private redis-server for the test session: free port, no persistence, restartable."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_range(low: int) -> range:
    """This test process's share of [10000, low): the whole of it, or under pytest-xdist
    (`PYTEST_XDIST_WORKER=gw<N>`, `PYTEST_XDIST_WORKER_COUNT`) one slice per worker, so two
    workers never probe the same port at the same time and then both bind it."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1):
        return range(10000, low)
    size = (low - 10000) // int(count)
    start = 10000 + size * (int(worker[2:]) % int(count))
    return range(start, start + size)


def free_port() -> int:
    """A port nothing listens on, never one this process handed out before, and below the
    kernel's ephemeral range: a port taken from that range (bind to 0) can be given to any
    outgoing connection (a Redis client, an HTTP call) between the probe and the server's own
    bind, which then fails with "address already in use". A fixture that takes several ports
    before starting its servers (a Sentinel set, a cluster) must also never get one twice.
    Parallel test workers each draw from their own slice of the range (`_worker_range`)."""
    low = _ephemeral_low()
    if low > 12000:
        ports = _worker_range(low)
        for _ in range(200):
            port = random.choice(ports)
            if port in _HANDED_OUT:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_ready(port: int) -> None:
    """Return once a server on `port` answers PING (polled, never a fixed sleep)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server did not start on port {port}")


class RedisServer:
    def __init__(self, *extra: str, parent: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hitl-redis-", dir=parent))
        self.extra = list(extra)  # more redis-server options (cluster mode, replicaof, ...)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, appendonly: bool = False) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if appendonly else "no", "--dir", str(self.dir),
                "--daemonize", "no", "--loglevel", "warning", *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.port)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start(appendonly=True)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
