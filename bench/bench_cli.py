"""Start-up time of the `hitl` command, beside `python -c pass` (the floor) in the same run.

Run: .venv/bin/python bench/bench_cli.py [N]. Target: `hitl schema` and `hitl request`
(push one request to a real redis-server started here) under 300 ms each, median of N runs.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

from tests.redis_server import RedisServer


def timed(argv: list[str], env: dict[str, str], n: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system, which a busy machine inflates
    less) in ms of running `argv` n times, after one untimed run that leaves the compiled
    bytecode an installed package has."""
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    walls, cpus = [], []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        walls.append((time.perf_counter() - t0) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def main(n: int) -> None:
    redis = RedisServer()
    redis.start()
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"REDIS_URL": redis.url, "HITL_PREFIX": "bench"}
        py = sys.executable
        hitl = [py, "-m", "bot.cli"]
        rows = [
            ("python -c pass (floor)", [py, "-c", "pass"]),
            ("hitl schema", [*hitl, "schema"]),
            ("hitl request", [*hitl, "request", "--agent", "bench", "--action", "noop", "--summary", "bench"]),
            ("hitl policy check", [*hitl, "policy", "check"]),
        ]
        print(f"{'':24s} {'wall':>9s} {'cpu':>9s}   over the floor (wall, cpu)")
        floor: tuple[float, float] | None = None
        for name, argv in rows:
            wall, cpu = timed(argv, env, n)
            floor = floor or (wall, cpu)
            print(f"{name:24s} {wall:6.1f} ms {cpu:6.1f} ms   +{wall - floor[0]:6.1f} ms, +{cpu - floor[1]:6.1f} ms")
    finally:
        redis.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
