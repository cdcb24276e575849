"""`GET /metrics` in Prometheus' text format (version 0.0.4).

Queue depths, the pause switch and the counters of requests, decisions and durations are
read from Redis, so every replica reports the same figures (scrape any one, or take `max`
across replicas). Slack API calls are counted by each replica itself (`sum` across them).
"""

from __future__ import annotations

from typing import Any

from store.stats import BOUNDS_S

Sample = tuple[str, float]


def _number(value: float) -> str:
    """A sample value in full: an integer as one, a float as the shortest text that reads back
    as itself (`:g` kept six digits, so a counter past a million stood still between steps)."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _family(name: str, kind: str, help_: str, samples: list[Sample]) -> str:
    out = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    out += [f"{name}{labels} {_number(value)}" for labels, value in samples]
    return "\n".join(out)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _by(totals: dict[str, int], prefix: str, label: str, suffix: str = "") -> list[Sample]:
    return [(f'{suffix}{{{label}="{_label(k[len(prefix):])}"}}', v)
            for k, v in sorted(totals.items()) if k.startswith(prefix)]


def histogram(name: str, help_: str, totals: dict[str, int], prefix: str) -> str:
    """A cumulative Prometheus histogram from the stored per-bucket counts (sum in ms)."""
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
    running = 0
    for i, bound in enumerate(BOUNDS_S):
        running += totals.get(f"{prefix}{i}", 0)
        lines.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
    running += totals.get(f"{prefix}{len(BOUNDS_S)}", 0)
    lines.append(f'{name}_bucket{{le="+Inf"}} {running}')
    lines.append(f"{name}_sum {_number(totals.get(f'{prefix}sum', 0) / 1000)}")
    lines.append(f"{name}_count {running}")
    return "\n".join(lines)


def _calls(bot: Any) -> list[Sample]:
    gateway = getattr(bot, "gateway", None)
    counts: dict[str, int] = dict(gateway.stats) if gateway is not None else {}
    out: list[Sample] = []
    for key, n in sorted(counts.items()):
        outcome, _, method = key.partition(":")
        out.append((f'{{method="{_label(method)}",outcome="{_label(outcome)}"}}', n))
    return out or [("", 0)]


def _housekeeping(bot: Any) -> list[str]:
    """This replica's housekeeping process (HITL_HOUSEKEEPING=process), when it has one."""
    companion = getattr(bot, "companion", None)
    if companion is None:
        return []
    return [_family("hitl_housekeeping_up", "gauge", "1 while this replica's housekeeping process runs.",
                    [("", 1 if companion.state == "running" else 0)]),
            _family("hitl_housekeeping_restarts_total", "counter",
                    "Times this replica started its housekeeping process again after it ended.",
                    [("", max(0, companion.starts - 1))])]


def _socket(bot: Any) -> list[str]:
    """This replica's Socket Mode connection (SLACK_APP_TOKEN), when it has one."""
    door = getattr(bot, "socket_handler", None)
    if door is None:
        return []
    return [_family("hitl_slack_socket_up", "gauge", "1 while this replica's Socket Mode connection is open.",
                    [("", 1 if door.state() == "connected" else 0)]),
            _family("hitl_slack_socket_connect_failures_total", "counter",
                    "Socket Mode connection attempts of this replica that failed.",
                    [("", door.failures)])]


async def render_metrics(bot: Any) -> str:
    """The exposition text of the whole loop (shared figures) and this replica's Slack calls."""
    store = bot.store
    stats = store.stats
    lag = await store.queue_lag()
    totals = await stats.totals()
    control = await store.control()
    delivery = bot.delivery.stats
    scheduler = bot.scheduler.stats if getattr(bot, "scheduler", None) is not None else {}
    skipped, undecided = dict(bot.policy().skipped), dict(bot.policy().undecided)
    parts = [
        _family("hitl_queue_depth", "gauge", "Requests waiting to be read or acknowledged by intake.",
                [("", lag)]),
        _family("hitl_pending_requests", "gauge", "Requests waiting for a human decision.",
                [("", await store.pending_count())]),
        _family("hitl_outbox_depth", "gauge", "Slack posts and updates not yet done.",
                [("", await store.outbox_depth())]),
        _family("hitl_cards_undeliverable", "gauge", "Pending requests whose card Slack refused for good.",
                [("", len(await store.undeliverable()))]),
        _family("hitl_dead_letters", "gauge", "Entries in the dead-letter stream.",
                [("", await store.dead_count())]),
        _family("hitl_paused", "gauge", "1 while automation is paused (/hitl pause).",
                [("", 1 if control.get("paused") == "1" else 0)]),
        _family("hitl_stats_lag", "gauge", "Audit events not yet counted into the stats.",
                [("", await stats.lag())]),
        _family("hitl_audit_chain_tampered", "gauge", "1 while the sealing leader reports a change to the audit "
                "chain only a write outside hitl explains (its head moved under it: `chain_tampered`).",
                [("", 1 if (chain := await store.chain.status()) is not None and chain.alarm else 0)]),
        _family("hitl_requests_total", "counter", "Requests routed, by mode.",
                _by(totals, "mode:", "mode")),
        _family("hitl_requests_paused_total", "counter", "Requests routed while paused, by mode.",
                _by(totals, "paused:", "mode")),
        _family("hitl_decisions_total", "counter", "Decisions, by status.",
                _by(totals, "st:", "status")),
        _family("hitl_decisions_edited_total", "counter", "Approvals with edited fields.",
                [("", totals.get("edited", 0))]),
        _family("hitl_escalations_total", "counter", "Escalation notifications sent.",
                [("", totals.get("escalated", 0))]),
        histogram("hitl_time_to_decision_seconds", "Request received to a person's decision.",
                   totals, "ttd:"),
        histogram("hitl_time_to_escalate_seconds", "Trigger to human notification (card posted, "
                   "escalation sent).", totals, "tte:"),
        _family("hitl_intake_processed_total", "counter", "Entries this replica accepted.",
                [("", bot.intake.processed)]),
        *_housekeeping(bot),
        *_socket(bot),
        _family("hitl_slack_posts_total", "counter", "Cards this replica posted.",
                [("", delivery["posted"])]),
        _family("hitl_slack_rate_limited_total", "counter", "429 answers this replica received.",
                [('{component="delivery"}', delivery["rate_limited"]),
                 ('{component="scheduler"}', scheduler.get("rate_limited", 0))]),
        _family("hitl_slack_errors_total", "counter", "Slack API errors this replica received.",
                [('{component="delivery"}', delivery["errors"]),
                 ('{component="scheduler"}', scheduler.get("errors", 0))]),
        _family("hitl_slack_calls_total", "counter", "Web API calls this replica made, by method and outcome "
                "(ok, transient, ratelimited, permanent).",
                _calls(bot)),
        _family("hitl_cards_reconciled_total", "counter",
                "Cards found posted after a lost answer (not posted again); duplicates deleted.",
                [('{outcome="found"}', delivery.get("reconciled", 0)),
                 ('{outcome="duplicate_deleted"}', delivery.get("duplicates_deleted", 0))]),
        _family("hitl_policy_rules_skipped_total", "counter",
                "Rule evaluations skipped: the condition failed on a request holding none of the fields it reads.",
                [(f'{{rule="{_label(rule)}"}}', n) for rule, n in sorted(skipped.items())] or [("", 0)]),
        _family("hitl_policy_rules_undecided_total", "counter",
                "Rule evaluations that failed on a request holding a field the condition reads "
                "(another type, a field missing beside it): routed as if the rule fired.",
                [(f'{{rule="{_label(rule)}"}}', n) for rule, n in sorted(undecided.items())] or [("", 0)]),
    ]
    if getattr(bot, "api", None) is not None:
        parts += await bot.api.metrics()
    return "\n".join(parts) + "\n"
