"""The arguments of the accept script, and the stats it counts (store/lua/accept.lua).

Intake accepts a whole read batch in one pipeline: one script call per entry (each entry's
effects and its XACK stay one atomic step, and a failing entry fails alone), sent in one
socket write and answered in one round trip.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store.keys import Keys
from store.models import Decision, Request, Route, stored_request, stored_route
from store.stats import HOUR_MS, RETENTION_S, Op
from store.stats_ops import ops_for
from store.stream import GROUP
from store.transitions import Transition

ROUTED_FIELDS = {"mode", "tier", "rules", "reasons", "sampled", "paused", "channel"}


@dataclass(frozen=True)
class Accepted:
    """What intake stores for a valid request."""

    request: Request
    route: Route
    decision: Decision | None
    post: bool
    deadlines: tuple[tuple[str, int], ...] = ()
    """Timed events to schedule while the request is pending: (`<kind>:<id>`, due epoch ms)."""
    first_use: bool | None = None
    """Whether routing took the action as never seen before (None: the policy does not ask)."""
    trust: TrustCheck | None = None
    """The action's trust the route was made on, checked by the script (None: not used)."""


@dataclass(frozen=True)
class TrustCheck:
    """What routing read of an action's trust: the script refuses the route ('trust') when the
    stored hash or the canary marker differ now."""

    action_key: str
    canary_key: str
    canary: bool
    fields: dict[str, str]
    """The action's trust hash as read ({} for an action trust has never counted)."""
    grants_key: str = ""
    grant_id: str = ""
    """The standing grant the route auto-approves on ('' = none): the script refuses the route
    ('trust') when it was revoked or expired meanwhile (another replica, `/hitl grants`)."""


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def stats_args(ops: list[Op], keys: Keys, now_ms: int) -> tuple[str, str, str, str]:
    """(ops JSON, totals key, hour key, hour expiry) for `count_stats` in store/lua/_stats.lua."""
    hour = now_ms // HOUR_MS
    packed = []
    for op in ops:
        if op.hour is not None and op.hour != hour:
            raise ValueError(f"stats op {op.field} for hour {op.hour}, not the script's hour {hour}")
        packed.append([op.field, op.amount, 0 if op.hour is None else 1])
    return (json.dumps(packed, ensure_ascii=False) if packed else "", keys.stats("total"),
            keys.stats(f"h:{hour}"), _hour_expiry(hour))


def _hour_expiry(hour: int) -> str:
    """When an hour's stats hash expires (epoch s): its retention after the hour ends."""
    return str((hour + 1) * HOUR_MS // 1000 + RETENTION_S)


@functools.lru_cache(maxsize=4096)
def intake_stats(agent: str, action: str, mode: str, paused: bool, status: str, hour: int,
                 canary: bool = False) -> str:
    """The packed stats ops of the events accept.lua writes (`received`, `routed`, and `decided`
    when `status`), by `ops_for` as for any event: they depend on nothing else, so intake
    computes them once per agent, action, route and hour, not once per request. None for a
    canary (counted only when scored)."""
    if canary:
        return ""
    at_ms = hour * HOUR_MS
    ops = ops_for({"event": "received", "actor": agent, "detail": json.dumps({"action": action})},
                  at_ms, None, at_ms)
    ops += ops_for({"event": "routed", "actor": "policy", "detail": json.dumps({"mode": mode, "paused": paused})},
                   at_ms, None, at_ms)
    if status:
        ops += ops_for({"event": "decided", "actor": "policy", "detail": json.dumps({"status": status})},
                       at_ms, None, at_ms)
    packed = [[op.field, op.amount, 0 if op.hour is None else 1] for op in ops]
    return json.dumps(packed, ensure_ascii=False) if packed else ""


def accept_call(keys: Keys, entry_id: str, acc: Accepted, now: datetime, *, decisions: str,
                redact: Callable[[dict[str, Any]], dict[str, Any]] = lambda d: d) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of accept.lua for one entry. `decisions`: the stream its decision is
    published to (a canary's is not the agents' one); `redact`: applied to the audit details."""
    req, route, decision = acc.request, acc.route, acc.decision
    assert req.id is not None
    now_ms, at = ms(now), now.isoformat()
    reply = req.reply_to or ""
    received = json.dumps({"entry_id": entry_id, "action": req.action})
    routed_detail = route.model_dump(mode="json", include=ROUTED_FIELDS)
    decision_json = decision.model_dump_json() if decision else ""
    hour = now_ms // HOUR_MS
    stats = intake_stats(req.agent, req.action, route.mode.value, bool(route.paused),
                         decision.status.value if decision else "", hour, route.canary)
    total_key, hour_key, expire = keys.stats("total"), keys.stats(f"h:{hour}"), _hour_expiry(hour)
    # stored once: a decided record's route and params are the decision's; a pending one's
    # params are the request's until a reviewer edits them
    route_json = "" if decision and decision.route == route else stored_route(route)
    params_json = "" if (decision is None or decision.params == req.params) else json.dumps(req.params)
    args: list[Any] = [
        GROUP, entry_id, req.id, now_ms, at, stored_request(req), route_json, params_json,
        decision_json, "1" if acc.post else "", req.action, "1" if route.paused else "0",
        "" if acc.first_use is None else "1" if acc.first_use else "0", stats, expire,
        req.agent, received, json.dumps(redact(routed_detail)),
        len(acc.deadlines), *[x for member, due in acc.deadlines for x in (member, due)],
    ]
    script_keys = [keys.requests, keys.request(req.id), keys.trail(req.id), keys.audit, keys.pending, keys.outbox,
                   decisions, reply or decisions, keys.actions_seen, keys.deadlines, keys.invalid(req.id),
                   keys.control, total_key, hour_key, keys.outbox_again]
    if acc.trust is not None:
        check = acc.trust
        script_keys += [check.action_key, check.canary_key]
        args += ["1" if check.canary else "0", len(check.fields),
                 *[x for name in sorted(check.fields) for x in (name, check.fields[name])]]
        if check.grant_id:
            script_keys.append(check.grants_key)
            args.append(check.grant_id)
    return script_keys, args


def decision_stats(keys: Keys, t: Transition, now_ms: int) -> tuple[str, str, str, str]:
    """`stats_args` of a transition's `decided` event (counted by apply.lua); no ops without one."""
    ops: list[Op] = []
    if t.decision is not None and not t.record.route.canary:  # a canary counts only when scored
        rec = t.record
        changes = json.loads(t.fields["changes"]) if "changes" in t.fields else rec.changes
        record = {"created_at": ms(rec.created_at), "changes": changes}
        detail = json.dumps({"status": t.decision.status.value, "reason_code": t.decision.reason_code})
        ops = ops_for({"event": "decided", "actor": "system", "detail": detail}, now_ms, record, now_ms)
    return stats_args(ops, keys, now_ms)
