"""Loop health in hourly buckets: counters kept as events happen, read back as a `Report`.

The stats projector (`bot.stats`) turns each audit event into a few increments (`Op`) of
one hash per hour, `{prefix}:stats:h:<epoch hour>`, and of the all-time totals
`{prefix}:stats:total` (what `/metrics` exports). One Lua script applies a batch of events
and acknowledges each in the `stats` consumer group of the audit stream; an event whose
XACK says it was already acknowledged adds nothing, so several replicas can share the work
and a re-delivered event is never counted twice. Hour buckets expire RETENTION_S after
their hour, so reading a window costs one HGETALL per hour whatever the history.

Durations are histograms with fixed bounds (BOUNDS_S), so medians and p90s are read from
counts. This module holds no Redis client of its own and imports no Redis library: it is
given the store's client, which keeps `blocks` free to import the report types.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from store.keys import Keys

STATS_GROUP = "stats"
HOUR_MS = 3_600_000
RETENTION_S = 35 * 86400
BOUNDS_S: tuple[float, ...] = (1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200,
                               14400, 43200, 86400)
"""Upper bounds of the duration buckets; bucket i counts (BOUNDS_S[i-1], BOUNDS_S[i]], the
last one (index len(BOUNDS_S)) everything longer."""

HUMAN_MODES = frozenset({"shadow", "approve", "escalate"})
"""Routes on which a person decides before the action runs (the request waits in the queue)."""
HUMAN_STATUSES = frozenset({"approved", "rejected", "answered", "resolved"})
"""Decisions taken by people."""
LEAVES_QUEUE = HUMAN_STATUSES | {"expired", "withdrawn"}
APPROVING_CHOICES = frozenset({"approve", "edit"})

# Warning signs (docs/commands.md, "Warning signs"): the guides' thresholds.
ESCALATION_HIGH = 0.40
ESCALATION_LOW = 0.05
MIN_ROUTED = 20
"""Fewer routed requests than this in a window: rates are shown, never flagged."""
TTE_WARN_S = 60.0
OVERRIDE_RISE = 0.10
MIN_HALF_DECISIONS = 10
QUEUE_TREND_HOURS = 6
QUEUE_GROWTH_MIN = 5
RUBBER_STAMP_S = 3.0
RUBBER_STAMP_MIN_CARDS = 5
APPROVAL_SHARE = 0.98
APPROVAL_MIN_DECISIONS = 50
MIN_TTE = 10
"""Escalations timed before the time-to-escalate sign judges."""
WEEK_HOURS = 168
CANARY_CATCH_LOW = 0.8
MIN_CANARIES = 5
"""Scored canaries (a reviewer's, or the team's) before the catch-rate sign judges."""

_APPLY = """
-- KEYS: audit stream, stats hashes...; ARGV: group, one EXPIREAT per stats hash ('' = none),
--       n_events, then per event: entry_id, n_ops, (key index, field, amount) triples.
local group, nkeys = ARGV[1], #KEYS
local i = 2
local expire_at = {}
for k = 2, nkeys do expire_at[k] = ARGV[i]; i = i + 1 end
local n = tonumber(ARGV[i]); i = i + 1
local counted, touched = 0, {}
for _ = 1, n do
  local fresh = redis.call('XACK', KEYS[1], group, ARGV[i]) == 1
  local nops = tonumber(ARGV[i + 1]); i = i + 2
  if fresh then counted = counted + 1 end
  for _ = 1, nops do
    if fresh then
      local k = tonumber(ARGV[i])
      redis.call('HINCRBY', KEYS[k], ARGV[i + 1], ARGV[i + 2])
      touched[k] = true
    end
    i = i + 3
  end
end
for k in pairs(touched) do
  if expire_at[k] ~= '' then redis.call('EXPIREAT', KEYS[k], expire_at[k]) end
end
return counted
"""


def bucket_index(seconds: float) -> int:
    """The histogram bucket of a duration."""
    for i, bound in enumerate(BOUNDS_S):
        if seconds <= bound:
            return i
    return len(BOUNDS_S)


@dataclass(frozen=True)
class Op:
    """Add `amount` to `field` of the hour bucket (`hour` set) or of the totals (`hour` None)."""

    field: str
    amount: int = 1
    hour: int | None = None


@dataclass(frozen=True)
class Counted:
    """One audit entry and the increments it causes (none is fine: it is still acknowledged)."""

    entry_id: str
    ops: list[Op]


class StatsStore:
    """Reads and writes the stats hashes through the store's Redis client."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._apply = redis.register_script(_APPLY)

    def hour_key(self, hour: int) -> str:
        return self.keys.stats(f"h:{hour}")

    @property
    def total_key(self) -> str:
        return self.keys.stats("total")

    async def apply(self, batch: list[Counted]) -> int:
        """Count and acknowledge a batch atomically per event; returns how many were new."""
        index: dict[str, int] = {}
        expire: list[str] = []
        events: list[Any] = []
        for c in batch:
            events += [c.entry_id, len(c.ops)]
            for op in c.ops:
                key = self.total_key if op.hour is None else self.hour_key(op.hour)
                if key not in index:
                    index[key] = len(index) + 2
                    expire.append("" if op.hour is None else
                                  str((op.hour + 1) * HOUR_MS // 1000 + RETENTION_S))
                events += [index[key], op.field, op.amount]
        keys = [self.keys.audit, *index]
        args = [STATS_GROUP, *expire, len(batch), *events]
        return int(await self._apply(keys=keys, args=args))

    async def hours(self, first: int, last: int) -> list[tuple[int, dict[str, int]]]:
        """The buckets of hours `first`..`last` (epoch hours), oldest first; missing ones empty."""
        async with self.redis.pipeline(transaction=False) as p:
            for h in range(first, last + 1):
                p.hgetall(self.hour_key(h))
            rows = await p.execute()
        return [(first + i, {k: int(v) for k, v in row.items()}) for i, row in enumerate(rows)]

    async def totals(self) -> dict[str, int]:
        """The all-time counters (what `/metrics` exports)."""
        return {k: int(v) for k, v in (await self.redis.hgetall(self.total_key)).items()}

    async def report(self, hours: int, now_s: float) -> Report:
        """The report of the last `hours` hour buckets (the current one included)."""
        last = int(now_s * 1000) // HOUR_MS
        buckets = await self.hours(last - hours + 1, last)
        weeks = buckets[-2 * WEEK_HOURS:] if hours >= 2 * WEEK_HOURS else await self.hours(
            last - 2 * WEEK_HOURS + 1, last)
        async with self.redis.pipeline(transaction=False) as p:
            p.zcard(self.keys.pending)
            p.zrange(self.keys.pending, 0, 0, withscores=True)
            depth, oldest = await p.execute()
        return build_report(buckets, now_s=now_s, queue_depth=int(depth),
                            oldest_created_s=oldest[0][1] / 1000 if oldest else None, weeks=weeks)

    async def lag(self) -> int:
        """Audit events not yet counted (read by nobody yet, or read and not acknowledged)."""
        if not await self.redis.exists(self.keys.audit):
            return 0
        for g in await self.redis.xinfo_groups(self.keys.audit):
            if g["name"] == STATS_GROUP:
                return int(g.get("lag") or 0) + int(g.get("pending") or 0)
        return 0


# ---- reading: a window of buckets as a report ----------------------------------------------


@dataclass(frozen=True)
class Histogram:
    """Counts per bucket of BOUNDS_S (non-cumulative; the last is the overflow) and the sum."""

    counts: tuple[int, ...] = (0,) * (len(BOUNDS_S) + 1)
    sum_s: float = 0.0

    @classmethod
    def read(cls, c: dict[str, int] | Counter[str], prefix: str) -> Histogram:
        counts = tuple(int(c.get(f"{prefix}{i}", 0)) for i in range(len(BOUNDS_S) + 1))
        return cls(counts, c.get(f"{prefix}sum", 0) / 1000)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """The q-quantile, interpolated inside its bucket as Prometheus does; None when empty."""
        total = self.count
        if not total:
            return None
        rank, seen = q * total, 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if i == len(BOUNDS_S):
                    return BOUNDS_S[-1]
                low = BOUNDS_S[i - 1] if i else 0.0
                return low + (BOUNDS_S[i] - low) * max(0.0, rank - seen) / n
            seen += n
        return BOUNDS_S[-1]


@dataclass(frozen=True)
class Reviewer:
    user_id: str
    decisions: int
    approvals: int
    median_s: float | None
    nontrivial: int
    nontrivial_median_s: float | None
    rubber_stamp: str | None = None
    """Why this reviewer looks like a rubber stamp, in words; None when they do not."""

    @property
    def approval_rate(self) -> float:
        return self.approvals / self.decisions if self.decisions else 0.0


@dataclass(frozen=True)
class Hour:
    """One hour of the chart: decisions by outcome and time to decision."""

    start_s: int
    outcomes: dict[str, int]
    ttd_p50_s: float | None
    ttd_p90_s: float | None


@dataclass(frozen=True)
class Sign:
    """A warning sign of the guides that holds in this window (`user_id`: whose, if a person's)."""

    code: str
    text: str
    user_id: str | None = None


@dataclass(frozen=True)
class Report:
    """Everything `/hitl stats`, the App Home and the chart show for one window."""

    hours: int
    now_s: float
    requests: int
    by_mode: dict[str, int]
    paused_routed: int
    escalation_rate: float | None
    decisions: dict[str, int]
    human_decisions: int
    edited: int
    ttd: Histogram
    tte: Histogram
    escalations: int
    queue_depth: int
    queue_change: int
    oldest_wait_s: float | None
    top_actions: list[tuple[str, int]]
    top_agents: list[tuple[str, int]]
    reviewers: list[Reviewer]
    series: list[Hour]
    override_halves: tuple[float | None, float | None]
    warnings: list[Sign] = field(default_factory=list)
    reviewed: int = 0
    """Actions that ran on their own and were checked afterwards (audit mode, samples)."""
    overridden: int = 0
    """... of which the person found them wrong."""
    shadow: int = 0
    shadow_agreed: int = 0
    """Shadow-mode decisions, and how many agreed with what the agent proposed."""
    too_few: list[Sign] = field(default_factory=list)
    """Signs that could not be judged: too few events in this window (each says how many)."""
    override_weeks: tuple[float | None, float | None] = (None, None)
    """Override rate of the week before last and of the last 7 days (None: too few)."""
    canaries: tuple[int, int] = (0, 0)
    """Canaries scored in the window, and how many were caught (decided as they should be)."""
    canary_reviewers: list[tuple[str, int, int]] = field(default_factory=list)
    """(user, scored, caught) per reviewer."""
    calibration: list[tuple[str, str, int, int]] = field(default_factory=list)
    """(agent/action, confidence band, decisions, approved as proposed): the reliability table."""

    def rate(self, status: str) -> float | None:
        n = self.human_decisions
        return self.decisions.get(status, 0) / n if n else None

    @property
    def edit_rate(self) -> float | None:
        return self.edited / self.human_decisions if self.human_decisions else None

    @property
    def override_rate(self) -> float | None:
        """Share of people's decisions that changed or refused what the agent proposed."""
        n = self.human_decisions
        return (self.edited + self.decisions.get("rejected", 0)) / n if n else None


def _prefixed(c: Counter[str], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in c.items() if k.startswith(prefix) and v}


def _top(c: Counter[str], prefix: str, n: int = 5) -> list[tuple[str, int]]:
    return sorted(_prefixed(c, prefix).items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _override_rate(part: list[tuple[int, dict[str, int]]]) -> float | None:
    """Overrides over people's decisions in some hours; None under MIN_HALF_DECISIONS."""
    over = sum(b.get("edited", 0) + b.get("st:rejected", 0) for _, b in part)
    human = sum(b.get(f"st:{s}", 0) for _, b in part for s in HUMAN_STATUSES)
    return over / human if human >= MIN_HALF_DECISIONS else None


def build_report(buckets: list[tuple[int, dict[str, int]]], *, now_s: float, queue_depth: int,
                 oldest_created_s: float | None,
                 weeks: list[tuple[int, dict[str, int]]] | None = None) -> Report:
    """The report of a window of hour buckets (oldest first) and the live queue; `weeks`, the
    last two weeks of buckets, for the week-over-week override trend."""
    total: Counter[str] = Counter()
    for _, b in buckets:
        total.update(b)
    by_mode = _prefixed(total, "mode:")
    paused = _prefixed(total, "paused:")
    routed = {m: n - paused.get(m, 0) for m, n in by_mode.items()}
    routed_n = sum(routed.values())
    human_routed = sum(n for m, n in routed.items() if m in HUMAN_MODES)
    decisions = _prefixed(total, "st:")
    human = sum(decisions.get(s, 0) for s in HUMAN_STATUSES)
    recent = buckets[-QUEUE_TREND_HOURS:]
    change = sum(b.get("pending:in", 0) - b.get("pending:out", 0) for _, b in recent)
    half = len(buckets) // 2
    series = []
    for hour, b in buckets:
        h = Histogram.read(b, "ttd:")
        series.append(Hour(hour * HOUR_MS // 1000, _prefixed(Counter(b), "st:"),
                           h.quantile(0.5), h.quantile(0.9)))
    report = Report(
        hours=len(buckets), now_s=now_s, requests=sum(by_mode.values()), by_mode=by_mode,
        paused_routed=sum(paused.values()),
        escalation_rate=human_routed / routed_n if routed_n else None,
        decisions=decisions, human_decisions=human, edited=total.get("edited", 0),
        ttd=Histogram.read(total, "ttd:"), tte=Histogram.read(total, "tte:"),
        escalations=total.get("escalated", 0), queue_depth=queue_depth, queue_change=change,
        reviewed=total.get("reviewed", 0), overridden=total.get("overridden", 0),
        shadow=total.get("shadow", 0), shadow_agreed=total.get("shadow_agreed", 0),
        oldest_wait_s=None if oldest_created_s is None else max(0.0, now_s - oldest_created_s),
        top_actions=_top(total, "action:"), top_agents=_top(total, "agent:"),
        reviewers=_reviewers(total), series=series,
        override_halves=(_override_rate(buckets[:half]), _override_rate(buckets[half:])),
        override_weeks=(_override_rate(weeks[:-WEEK_HOURS]), _override_rate(weeks[-WEEK_HOURS:]))
        if weeks and len(weeks) > WEEK_HOURS else (None, None),
        canaries=(total.get("canary:n", 0), total.get("canary:caught", 0)),
        canary_reviewers=_canary_reviewers(total),
    )
    return _judged(_with_warnings(report, routed_n), routed_n)


def _reviewers(total: Counter[str]) -> list[Reviewer]:
    ids = sorted({k.split(":")[1] for k in total if k.startswith("rv:")})
    out = []
    for uid in ids:
        p = f"rv:{uid}:"
        n, ok = total.get(p + "n", 0), total.get(p + "ok", 0)
        if not n:
            continue
        times, nontrivial = Histogram.read(total, p + "t"), Histogram.read(total, p + "nt")
        why = None
        median_nt = nontrivial.quantile(0.5)
        if nontrivial.count >= RUBBER_STAMP_MIN_CARDS and median_nt is not None and (
                median_nt < RUBBER_STAMP_S):
            why = (f"median {median_nt:.1f}s to decide on {nontrivial.count} cards with "
                   f"real content (under {RUBBER_STAMP_S:g}s)")
        elif n >= APPROVAL_MIN_DECISIONS and ok / n > APPROVAL_SHARE:
            why = f"approved {ok / n:.0%} of {n} decisions"
        out.append(Reviewer(uid, n, ok, times.quantile(0.5), nontrivial.count, median_nt, why))
    return sorted(out, key=lambda r: (-r.decisions, r.user_id))


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _canary_reviewers(total: Counter[str]) -> list[tuple[str, int, int]]:
    ids = sorted({k.split(":")[1] for k in total if k.startswith("cn:")})
    rows = [(u, total.get(f"cn:{u}:n", 0), total.get(f"cn:{u}:caught", 0)) for u in ids]
    return [r for r in rows if r[1]]


def _judged(r: Report, routed_n: int) -> Report:
    """The signs added with issue 17 (week-over-week overrides, canaries), and an honest line
    for each sign that had too few events to judge."""
    w, few = list(r.warnings), []
    if 0 < routed_n < MIN_ROUTED:
        few.append(Sign("escalation_rate", f"Escalation rate {_pct(r.escalation_rate or 0)}: too few to "
                        f"judge ({routed_n} requests; {MIN_ROUTED} needed)"))
    if r.human_decisions and None in r.override_halves:
        few.append(Sign("override_rising", f"Override trend: too few to judge ({r.human_decisions} "
                        f"decisions by people; {MIN_HALF_DECISIONS} in each half needed)"))
    before, last = r.override_weeks
    if before is not None and last is not None and last - before >= OVERRIDE_RISE:
        w.append(Sign("override_rising_weekly", f"Override rate rising week over week: {_pct(before)} "
                      f"the week before, {_pct(last)} in the last 7 days; review recent agent changes."))
    n_tte = r.tte.count
    if 0 < n_tte < MIN_TTE:
        w = [x for x in w if x.code != "slow_escalation"]
        few.append(Sign("slow_escalation", f"Time to escalate: too few to judge ({n_tte} escalations; "
                        f"{MIN_TTE} needed)"))
    unread = [rv for rv in r.reviewers if not rv.rubber_stamp and rv.nontrivial < RUBBER_STAMP_MIN_CARDS
              and rv.decisions < APPROVAL_MIN_DECISIONS]
    if unread:
        few.append(Sign("rubber_stamp", f"Reading speed and approval rate: too few to judge for "
                        f"{len(unread)} reviewers (under {RUBBER_STAMP_MIN_CARDS} cards with real content "
                        f"and {APPROVAL_MIN_DECISIONS} decisions each)"))
    scored, caught = r.canaries
    if scored >= MIN_CANARIES and caught / scored < CANARY_CATCH_LOW:
        w.append(Sign("canary_catch_low", f"Canary catch rate {_pct(caught / scored)} of {scored} is "
                      f"below {_pct(CANARY_CATCH_LOW)}: reviewers approve items they should not."))
    elif 0 < scored < MIN_CANARIES:
        few.append(Sign("canary_catch_low", f"Canary catch rate: too few to judge ({scored} canaries; "
                        f"{MIN_CANARIES} needed)"))
    for user, n, ok in r.canary_reviewers:
        if n >= MIN_CANARIES and ok / n < CANARY_CATCH_LOW:
            w.append(Sign("canary_catch_low", f"Caught {ok} of {n} canaries ({_pct(ok / n)}, below "
                          f"{_pct(CANARY_CATCH_LOW)}).", user))
    return replace(r, warnings=w, too_few=few)


def _with_warnings(r: Report, routed_n: int) -> Report:
    w: list[Sign] = []
    rate = r.escalation_rate
    if rate is not None and routed_n >= MIN_ROUTED:
        if rate > ESCALATION_HIGH:
            w.append(Sign("escalation_high", f"Escalation rate {_pct(rate)} is over "
                             f"{_pct(ESCALATION_HIGH)}: the agents may be too cautious; review "
                             "the confidence thresholds."))
        elif rate < ESCALATION_LOW:
            w.append(Sign("escalation_low", f"Escalation rate {_pct(rate)} is under "
                             f"{_pct(ESCALATION_LOW)}: the agents may be too aggressive; check "
                             "for silent failures."))
    first, second = r.override_halves
    if first is not None and second is not None and second - first >= OVERRIDE_RISE:
        w.append(Sign("override_rising", f"Override rate rising: {_pct(first)} in the first "
                         f"half of the window, {_pct(second)} in the second; review recent "
                         "agent changes."))
    p90 = r.tte.quantile(0.9)
    if p90 is not None and p90 > TTE_WARN_S:
        w.append(Sign("slow_escalation", f"Time to escalate p90 is {p90:.0f}s (over "
                         f"{TTE_WARN_S:.0f}s): notifications are a bottleneck."))
    if r.queue_change >= QUEUE_GROWTH_MIN and r.queue_change * 4 >= r.queue_depth:
        w.append(Sign("queue_growing", f"Queue depth growing: +{r.queue_change} in the last "
                         f"{QUEUE_TREND_HOURS}h, {r.queue_depth} waiting; add reviewers or "
                         "sample low-risk work."))
    for rv in r.reviewers:
        if rv.rubber_stamp:
            w.append(Sign("rubber_stamp", f"Possible rubber-stamping: {rv.rubber_stamp}.",
                          rv.user_id))
    return replace(r, warnings=w)
