"""Start-up time of the `hitl` command, beside `python -c pass` (the floor) in the same run.

Run: .venv/bin/python bench/bench_cli.py [N]. Target: `hitl schema` and `hitl request`
(push one request to a real redis-server started here) under 300 ms each, median of N runs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from tests.redis_server import RedisServer


def timed(argv: list[str], env: dict[str, str], n: int) -> float:
    """Median wall time in ms of running `argv` n times (its output thrown away), after one
    untimed run that leaves the compiled bytecode an installed package has."""
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


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
        floor = 0.0
        for name, argv in rows:
            ms = timed(argv, env, n)
            floor = floor or ms
            print(f"{name:24s} {ms:7.1f} ms   (+{ms - floor:6.1f} ms over the floor)")
    finally:
        redis.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
