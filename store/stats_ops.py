"""What each audit event counts for: pure functions, shared by the scripts' callers and the projector.

`store.redis_store` counts the events its accept and apply scripts write (`received`,
`routed`, `decided`: INLINE_EVENTS) inside those scripts; the stats projector (`bot.stats`)
counts every other event from the audit stream. Both use `ops_for`, so a figure means the
same whoever counts it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from store.stats import (
    APPROVING_CHOICES,
    HOUR_MS,
    HUMAN_MODES,
    HUMAN_STATUSES,
    LEAVES_QUEUE,
    RETENTION_S,
    Op,
    bucket_index,
)
from store.transitions import TIMEOUT_CODE, WITHDRAWN_CODE

NON_TRIVIAL_CHARS = 100
NON_TRIVIAL_PARAMS = 3
WITHDRAWN = "withdrawn"
"""Counted as `st:withdrawn`: a `rejected` decision the agent asked for (it withdrew the request)."""
DECIDING_CHOICES = frozenset({"approve", "edit", "reject", "answer", "resolve", "hand_back"})
"""A person's clicks that decide or vote (a reviewer's decisions); taking a case over and replying
keep it open and are not counted."""
INLINE_EVENTS = frozenset({"received", "routed", "decided"})
"""Events counted by the script that writes them; the projector only acknowledges these."""


def event_ms(entry_id: str, fields: dict[str, str]) -> int:
    """When the event happened: its `at`, else the stream entry's own time."""
    try:
        return int(datetime.fromisoformat(fields["at"]).timestamp() * 1000)
    except (KeyError, ValueError):
        return int(entry_id.split("-")[0])


def non_trivial(record: dict[str, Any]) -> bool:
    """A card with more than a line to read, decided before the action ran.

    Deciding such a card in under a few seconds means it was not read (rubber-stamping);
    after-the-fact reviews of sampled automatic actions and one-liners do not count.
    """
    route, request = record.get("route") or {}, record.get("request") or {}
    if route.get("mode") not in HUMAN_MODES:
        return False
    context = request.get("context") or {}
    text = "".join(str(request.get(k) or "") for k in ("summary", "draft"))
    text += "".join(str(context.get(k) or "") for k in ("goal", "recommendation"))
    return len(text) >= NON_TRIVIAL_CHARS or len(request.get("params") or {}) >= NON_TRIVIAL_PARAMS


def ops_for(fields: dict[str, str], at_ms: int, record: dict[str, Any] | None,
            now_ms: int) -> list[Op]:
    """The increments one audit event causes, in its hour's bucket and in the totals.

    An event older than the buckets' retention only counts in the totals. An event of a
    canary (its record's route says so) causes none but its scoring (`canary_scored`): the
    loop's figures are the real requests' (docs/trust.md).
    """
    at_hour = at_ms // HOUR_MS
    expired = (at_hour + 1) * HOUR_MS + RETENTION_S * 1000 <= now_ms
    hour = None if expired else at_hour
    event, actor = fields.get("event", ""), fields.get("actor", "")
    try:
        detail = json.loads(fields.get("detail") or "{}")
    except ValueError:
        detail = {}
    if not isinstance(detail, dict):
        detail = {}
    rec = record or {}
    if (rec.get("route") or {}).get("canary") and event != "canary_scored":
        return []  # a known-answer item the bot injected: it counts in the vigilance figures alone
    out: list[Op] = []

    def both(name: str, amount: int = 1) -> None:
        out.append(Op(name, amount, None))
        if hour is not None:
            out.append(Op(name, amount, hour))

    def hourly(name: str, amount: int = 1) -> None:
        if hour is not None:
            out.append(Op(name, amount, hour))

    def hist(prefix: str, since_ms: Any, *, totals: bool = True) -> None:
        """A duration from `since_ms` to the event into histogram `prefix` (and its sum)."""
        if since_ms is None:
            return
        ms = max(0, at_ms - int(since_ms))
        for h in ([None] if totals else []) + ([hour] if hour is not None else []):
            out.append(Op(f"{prefix}{bucket_index(ms / 1000)}", 1, h))
            if totals:
                out.append(Op(f"{prefix}sum", ms, h))

    if event == "received":
        both("received")
        hourly(f"agent:{actor}")
        if detail.get("action"):
            hourly(f"action:{detail['action']}")
    elif event == "routed" and detail.get("mode"):
        mode = str(detail["mode"])
        both(f"mode:{mode}")
        if detail.get("paused"):
            both(f"paused:{mode}")
        if mode in HUMAN_MODES:
            hourly("pending:in")
    elif event == "decided" and detail.get("status"):
        status = str(detail["status"])
        if status == "rejected" and detail.get("reason_code") == WITHDRAWN_CODE:
            status = WITHDRAWN  # the agent cancelled it: no person rejected anything
        both(f"st:{status}")
        # a request approved by the clock (`on_timeout: approve`) waited for people too
        if status in LEAVES_QUEUE or detail.get("reason_code") == TIMEOUT_CODE:
            hourly("pending:out")
        if status in HUMAN_STATUSES:
            hist("ttd:", rec.get("created_at"))
        if status == "approved" and rec.get("changes"):
            both("edited")
    elif event == "clicked" and "outcome" not in detail and detail.get("choice") in DECIDING_CHOICES:
        p = f"rv:{actor}:"
        hourly(p + "n")
        if detail["choice"] in APPROVING_CHOICES:
            hourly(p + "ok")
        hist(p + "t", rec.get("posted_at"), totals=False)
        if non_trivial(rec):
            hist(p + "nt", rec.get("posted_at"), totals=False)
    elif event == "posted" and (rec.get("route") or {}).get("mode") in HUMAN_MODES - {"escalate"}:
        # handover cards (mode escalate) are timed by the scheduler's `escalated` level-0 event
        hist("tte:", rec.get("created_at"))
    elif event == "escalated":
        if int(detail.get("level") or 0) >= 1:  # level 0 is the handover card itself
            both("escalated")
        took = detail.get("seconds")
        if isinstance(took, int | float) and not isinstance(took, bool) and took >= 0:
            hist("tte:", at_ms - int(took * 1000))
    elif event in ("invalid", "refused", "expired", "reviewed", "overridden"):
        both(event)
    elif event == "canary_scored":
        both("canary:n")
        hourly(f"cn:{actor}:n")
        if detail.get("caught"):
            both("canary:caught")
            hourly(f"cn:{actor}:caught")
    elif event == "shadow_compared":
        both("shadow")
        if detail.get("agreed_action"):
            both("shadow_agreed")
    return out
