"""Policy evaluation time per request: the default policy and a policy with 100 CEL rules.

Run: .venv/bin/python bench/bench_policy.py [N]. Target: under 50 µs per request (default).
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from typing import Any

from bot.policy import PolicyEngine
from store.models import Request

SAMPLES: list[dict[str, Any]] = [
    {"action": "process_invoice", "summary": "Pay invoice INV-1042 from Acme Ltd", "confidence": 0.92,
     "risk": {"amount": 320.0, "currency": "USD", "reversible": True, "tags": ["payment"]}},
    {"action": "issue_refund", "summary": "Refund order 5521 to the customer", "confidence": 0.6,
     "risk": {"amount": 750, "currency": "USD"},
     "context": {"goal": "resolve the complaint",
                 "conversation": ["My parcel never arrived", "I want my money back",
                                  "Otherwise I will call my lawyer"],
                 "customer": {"id": "C-9", "tier": "gold"}},
     "metadata": {"session_id": "s-1", "model": "gpt", "tool_calls": 7}},
    {"action": "order_status", "summary": "Look up the status of order 5521"},
    {"action": "delete_records", "summary": "Delete 14 stale CRM records", "confidence": 0.3,
     "risk": {"reversible": False, "domain": "financial", "sentiment": -0.2}},
]


def hundred_rules(guarded: bool) -> str:
    """100 rules in five shapes; `guarded` ones test has() before reading optional fields."""
    amount = "has(request.risk.amount) && " if guarded else ""
    reversible = "has(request.confidence) && has(request.risk.reversible) && " if guarded else ""
    rules = []
    for i in range(100):
        when = [f"{amount}request.risk.amount > {1000 + i}",
                f'request.summary.contains("code-{i}")',
                f'"tag-{i}" in request.risk.tags',
                f"{reversible}request.confidence < 0.{i % 9 + 1} && "
                "request.risk.reversible == false",
                f'request.action == "action_{i}"'][i % 5]
        tier = ["low", "medium", "high"][i % 3]
        rules.append(f"  - name: rule_{i}\n    when: '{when}'\n    tier: {tier}\n")
    return "rules:\n" + "".join(rules)


def measure(engine: PolicyEngine, requests: list[Request], n: int) -> tuple[float, float, float]:
    times = []
    for i in range(n):
        request = requests[i % len(requests)]
        start = time.perf_counter_ns()
        engine.route(request, first_use=False, paused=False)
        times.append(time.perf_counter_ns() - start)
    times.sort()
    us = [t / 1000 for t in times]
    return statistics.fmean(us), us[len(us) // 2], us[int(len(us) * 0.99)]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    requests = [Request.model_validate({"agent": "bench", "id": f"req-{i}", **s})
                for i, s in enumerate(SAMPLES * 25)]
    requests = [r.model_copy(update={"id": f"req-{i}"}) for i, r in enumerate(requests)]
    engines = {
        "default policy": PolicyEngine.default(),
        "100 CEL rules, has() guards": PolicyEngine.from_yaml(hundred_rules(True), "100"),
        "100 CEL rules, unguarded": PolicyEngine.from_yaml(hundred_rules(False), "100"),
        "default + 1 CEL rule": PolicyEngine.from_yaml(
            "rules:\n  - {name: big, when: 'request.risk.amount > 10000', tier: high}\n", "1"),
    }
    print(f"policy evaluation per request, {n} requests ({len(SAMPLES)} shapes)")
    logging.disable(logging.WARNING)  # the unguarded rules' first skips would be logged
    print(f"{'policy':28} {'mean µs':>9} {'p50 µs':>9} {'p99 µs':>9}")
    for name, engine in engines.items():
        measure(engine, requests, min(n, 2000))  # warm up
        engine.skipped.clear()
        mean, p50, p99 = measure(engine, requests, n)
        print(f"{name:28} {mean:9.1f} {p50:9.1f} {p99:9.1f}")
        skipped = sum(engine.skipped.values())
        if skipped:
            print(f"{'':28} ({skipped / n:.0f} rules skipped per request: missing fields)")


if __name__ == "__main__":
    main()
