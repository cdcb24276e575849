"""`GET /metrics` in Prometheus' text format, read from Redis so every replica agrees."""

from __future__ import annotations

from typing import Any

from store.redis_store import GROUP


def _line(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> str:
    out = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    out += [f"{name}{labels} {value:g}" for labels, value in samples]
    return "\n".join(out)


async def render_metrics(bot: Any) -> str:
    """The exposition text: queue, outbox and dead-letter depths, and this replica's counters."""
    store = bot.store
    k = store.keys
    r = store.redis
    lag = 0
    try:
        for g in await r.xinfo_groups(k.requests):
            if g["name"] == GROUP:
                lag = int(g.get("lag") or 0) + int(g.get("pending") or 0)
    except Exception:
        lag = 0
    parts = [
        _line("hitl_queue_depth", "gauge", "Requests waiting to be read or acknowledged by intake.",
              [("", lag)]),
        _line("hitl_pending_requests", "gauge", "Requests waiting for a human decision.",
              [("", await store.pending_count())]),
        _line("hitl_outbox_depth", "gauge", "Slack posts and updates not yet done.",
              [("", await store.outbox_depth())]),
        _line("hitl_dead_letters", "gauge", "Entries in the dead-letter stream.",
              [("", await r.xlen(k.dead))]),
        _line("hitl_intake_processed_total", "counter", "Entries this replica accepted.",
              [("", bot.intake.processed)]),
        _line("hitl_slack_posts_total", "counter", "Cards this replica posted.",
              [("", bot.delivery.stats["posted"])]),
        _line("hitl_slack_rate_limited_total", "counter", "429 answers this replica received.",
              [("", bot.delivery.stats["rate_limited"])]),
        _line("hitl_slack_errors_total", "counter", "Slack API errors this replica received.",
              [("", bot.delivery.stats["errors"])]),
    ]
    return "\n".join(parts) + "\n"
