"""Trust state in Redis: graduated autonomy per action, standing grants, delegation while away,
calibration counts and canary scores.

Every change that must count once is one Lua script (`store/lua/trust_*.lua`): an action's
outcome is counted once per request (a flag on the record), a grant is created once per
request, so replicas racing on the same click never count twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, cast

from pydantic import BaseModel, Field

from store.durable import run_waited
from store.keys import Keys
from store.models import Request, Route

OUTCOMES = ("clean", "edited", "rejected", "override")
REDRAW_AFTER_MS = 1500
"""A change of absence redraws the cards naming the person this much later: every replica
re-reads the absences each second for drawing cards, so by then all draw the change."""
BAND_WIDTH = 0.1


def _script(name: str) -> str:
    lua = resources.files("store") / "lua"
    return (lua / "_prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


Redact = Callable[[dict[str, Any]], dict[str, Any]]
"""The policy's `redact:` for audit details (`Store.redact`): grants keep raw values for
matching, their audit entries get this form."""


_ESCAPED = re.compile("%(?:2F|25)")


def member(agent: str, action: str) -> str:
    """An action as trust counts it: `agent/action`, so the first `/` always ends the agent:
    an agent holding `/` (or the text `%2F` or `%25`) has its `%` and `/` escaped (`%25`,
    `%2F`), so `billing` + `refund/all` and `billing/refund` + `all` are two members. Every
    other agent keeps the plain `agent/action` it always had (`50%off-bot` included)."""
    if "/" in agent or _ESCAPED.search(agent):
        agent = agent.replace("%", "%25").replace("/", "%2F")
    return f"{agent}/{action}"


def split_member(m: str) -> tuple[str, str]:
    """(agent, action) of a `member`."""
    agent, _, action = m.partition("/")
    return _ESCAPED.sub(lambda x: "/" if x.group(0) == "%2F" else "%", agent), action


def _canonical(value: Any) -> str:
    """A parameter value as a grant compares it: canonical JSON, so `true`, `1`, `1.0`, `"1"`
    and `[1]` are five different values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def band(confidence: float | None) -> str:
    """The calibration band of a confidence (`0.8` is 0.8 to 0.9); '' without one."""
    if confidence is None:
        return ""
    low = min(int(confidence / BAND_WIDTH + 1e-9), 9) * BAND_WIDTH
    return f"{low:.1f}"


@dataclass(frozen=True)
class TrustKeys:
    """The trust keys, from the store's prefix."""

    prefix: str

    def action(self, m: str) -> str:
        return f"{self.prefix}:trust:a:{m}"

    @property
    def index(self) -> str:
        return f"{self.prefix}:trust:index"

    @property
    def calibration(self) -> str:
        return f"{self.prefix}:trust:calibration"

    @property
    def grants(self) -> str:
        return f"{self.prefix}:trust:grants"

    def grant_votes(self, request_id: str) -> str:
        return f"{self.prefix}:trust:grantvotes:{request_id}"

    @property
    def away(self) -> str:
        return f"{self.prefix}:trust:away"

    def canary(self, request_id: str) -> str:
        return f"{self.prefix}:trust:canary:{request_id}"

    @property
    def canary_scores(self) -> str:
        return f"{self.prefix}:trust:canary_scores"

    @property
    def canary_decisions(self) -> str:
        """Where canaries' decisions go instead of `{prefix}:decisions`: no agent reads it."""
        return f"{self.prefix}:trust:canary_decisions"


@dataclass(frozen=True)
class TrustState:
    """One action's autonomy: `new` (a person approves every request) or `trusted`."""

    agent: str
    action: str
    state: str = "new"
    pinned: bool = False
    clean: int = 0
    approvals: int = 0
    disagreements: int = 0
    overrides: int = 0
    outcomes: int = 0
    changed_at: str | None = None
    changed_by: str | None = None
    why: str | None = None

    @property
    def trusted(self) -> bool:
        return self.state == "trusted"

    @property
    def override_rate(self) -> float | None:
        n = self.outcomes
        return (self.overrides + self.disagreements) / n if n else None


class GrantBounds(BaseModel):
    """Which similar requests a grant covers: an amount ceiling, parameter values in a list,
    parameters that must stay absent."""

    amount_max: float | None = None
    params: dict[str, list[Any]] = Field(default_factory=dict)
    """A similar request has each of these, with one of the values (compared as canonical JSON)."""
    absent: list[str] | None = None
    """`same` parameters the request it was made on did not have: a similar request has none
    of them. None: a grant made before they were kept; the tier's `same` names them then."""

    def covers(self, request: Request, same: tuple[str, ...] = ()) -> bool:
        """Whether `request` is within the bounds; `same`: the tier's `same` parameters now,
        read for a grant made before absent ones were kept (any of them it does not bound by
        value must be absent, so an old grant never covers more than it did)."""
        amount = request.risk.amount
        if self.amount_max is not None and (amount is None or amount > self.amount_max):
            return False
        for k, allowed in self.params.items():
            if k not in request.params or _canonical(request.params[k]) not in {_canonical(v) for v in allowed}:
                return False
        absent = self.absent if self.absent is not None else [k for k in same if k not in self.params]
        return not any(k in request.params for k in absent)

    def describe(self, redact: Redact | None = None) -> str:
        """The bounds in words; with `redact` (the policy's, for text that is audited, such as
        the reasons of a route), the values of redacted parameters are masked."""
        parts = []
        if self.amount_max is not None:
            parts.append(f"amount <= {self.amount_max:g}")
        for k, allowed in self.params.items():
            shown = redact({k: allowed}).get(k) if redact is not None else allowed
            values = shown if isinstance(shown, list) else [shown]
            parts.append(f"{k} in {', '.join(v if isinstance(v, str) else _canonical(v) for v in values)}")
        parts += [f"no {k}" for k in self.absent or []]
        return "; ".join(parts) or "any parameters"


class Grant(BaseModel):
    """A standing grant: people allowed similar requests of one agent and action for a while."""

    id: str
    agent: str
    action: str
    tier: str
    request_id: str
    bounds: GrantBounds = Field(default_factory=GrantBounds)
    created_at: datetime
    expires_at: datetime
    by: list[str] = Field(default_factory=list)
    approvers: list[str] | None = None
    """The approvers (users, user groups) of the card it was made on; None: made before they
    were kept (it then covers requests of a tier that names no approvers only)."""
    quorum: int = 1
    """The quorum of the card it was made on (that many people granted it)."""
    seats: list[str] = Field(default_factory=list)
    """Approvers away whose seat a granter's approval took (they stood in for them): nobody
    approves their own request, in person or through a stand-in, so the grant covers none of
    theirs either."""

    def matches(self, request: Request, now: datetime, route: Route, same: tuple[str, ...] = ()) -> bool:
        """Whether the grant stands in for people on `request`, which the policy routes to
        `route` (`same`: its tier's `same` parameters now, for `GrantBounds.covers`): same
        agent and action, within its bounds, before it expires, and only where
        its granters could have decided the request themselves (the tier, approvers and quorum
        it was made under, as many granters as the quorum), never for a request made on behalf
        of one of them or of an approver one of them stood in for (`seats`)."""
        return (request.agent == self.agent and request.action == self.action
                and now < self.expires_at and self.bounds.covers(request, same)
                and route.tier == self.tier and sorted(route.approvers) == sorted(self.approvers or [])
                and route.quorum <= max(self.quorum, len(set(self.by)))
                and request.requested_by not in self.by and request.requested_by not in self.seats)


class Away(BaseModel):
    """A person away until a date; `delegate` (a user or a user group) decides for them.
    The store keeps each person's latest absence; `ended_at` is set when they came back early
    or the window was closed (an ended absence delegates nothing)."""

    user: str
    delegate: str
    until: datetime
    since: datetime
    ended_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        """Whether the delegate may decide for them at `now`."""
        return self.ended_at is None and now < self.until


def stand_ins(approvers: list[str], absences: Mapping[str, Away], now: datetime) -> dict[str, Away]:
    """The approvers a card names who are away at `now`, with their absence (who stands in,
    until when). The one rule the click check, the card's words and the audit all use."""
    return {a: absences[a] for a in approvers if a in absences and absences[a].live(now)}


def _state(m: str, raw: dict[str, str]) -> TrustState:
    agent, action = split_member(m)
    return TrustState(agent=agent, action=action, state=raw.get("state", "new"),
                      pinned=raw.get("pinned") == "1", clean=int(raw.get("clean", 0)),
                      approvals=int(raw.get("approvals", 0)),
                      disagreements=int(raw.get("disagreements", 0)),
                      overrides=int(raw.get("overrides", 0)), outcomes=int(raw.get("outcomes", 0)),
                      changed_at=raw.get("changed_at"), changed_by=raw.get("changed_by"),
                      why=raw.get("why"))


class TrustStore:
    """Trust state through the store's Redis client (decoded strings)."""

    def __init__(self, redis: Any, keys: Keys, *, wait_replicas: int = 0) -> None:
        self.redis = redis
        self.keys = keys
        self.k = TrustKeys(keys.prefix)
        self.wait_replicas = wait_replicas
        """Every trust script's writes are acted on outside Redis (a demotion told to the
        admins, a grant confirmed, an absence announced): waited for like a decision."""
        self._scripts = {n: redis.register_script(_script(n)) for n in (
            "trust_outcome", "trust_set", "trust_grant", "trust_revoke", "trust_away", "trust_canary")}

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await run_waited(self.redis, self._scripts[name], name, keys, args, self.wait_replicas)

    # ---- autonomy -----------------------------------------------------------------------------

    async def state(self, agent: str, action: str) -> TrustState:
        m = member(agent, action)
        return _state(m, cast(dict[str, str], await self.redis.hgetall(self.k.action(m))))

    async def lookup(self, request: Request) -> tuple[TrustState, bool]:
        """What intake needs in one round trip: the action's trust, and whether the request
        is a canary (its known answer was stored before it was queued)."""
        assert request.id is not None
        m = member(request.agent, request.action)
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(self.k.action(m))
            p.exists(self.k.canary(request.id))
            raw, canary = await p.execute()
        return _state(m, raw), bool(canary)

    async def snapshot_many(self, requests: list[Request]) -> list[tuple[TrustState, bool, dict[str, str]]]:
        """`lookup` for a whole intake batch in one round trip, each with the action's hash as
        read: intake keeps them between batches, and accept.lua refuses a route made on a hash
        that changed since."""
        async with self.redis.pipeline(transaction=False) as p:
            for request in requests:
                assert request.id is not None
                p.hgetall(self.k.action(member(request.agent, request.action)))
                p.exists(self.k.canary(request.id))
            rows = await p.execute()
        return [(_state(member(r.agent, r.action), rows[2 * i]), bool(rows[2 * i + 1]), rows[2 * i])
                for i, r in enumerate(requests)]

    async def states(self) -> list[TrustState]:
        """Every action trust has counted, by agent and action."""
        members = sorted(await self.redis.smembers(self.k.index))
        async with self.redis.pipeline(transaction=False) as p:
            for m in members:
                p.hgetall(self.k.action(m))
            rows = await p.execute()
        return [_state(m, r) for m, r in zip(members, rows, strict=True)]

    async def outcome(self, request: Request, kind: str, after: int, now: datetime, *,
                      agree: bool, actor: str = "system") -> tuple[str, str, int]:
        """Count what people made of one request, once: (result, state after, clean approvals).

        result: `promoted`, `demoted`, `counted`, `dup` (already counted) or `missing`."""
        assert kind in OUTCOMES and request.id is not None
        m = member(request.agent, request.action)
        keys = [self.k.action(m), self.keys.request(request.id), self.k.index, self.keys.audit,
                self.keys.trail(request.id), self.k.calibration]
        args = [request.id, kind, after, now.isoformat(), m, band(request.confidence),
                "1" if agree else "0", actor]
        res = await self._run("trust_outcome", keys, args)
        if res[0] in ("missing", "dup"):
            return str(res[0]), "", 0
        return str(res[0]), str(res[1]), int(res[2] or 0)

    async def set(self, op: str, agent: str, action: str, actor: str, now: datetime) -> str:
        """reset (to new, count from zero), pin (no automatic change) or unpin; audited."""
        assert op in ("reset", "pin", "unpin")
        m = member(agent, action)
        keys = [self.k.action(m), self.k.index, self.keys.audit]
        return str(await self._run("trust_set", keys, [op, m, actor, now.isoformat()]))

    # ---- calibration ------------------------------------------------------------------------

    async def calibration(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(agent/action, band) -> (decisions, agreements)."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.k.calibration))
        out: dict[tuple[str, str], list[int]] = {}
        for f, v in raw.items():
            m, b, what = f.rsplit("|", 2)
            row = out.setdefault((m, b), [0, 0])
            row[0 if what == "n" else 1] += int(v)
        return {k: (v[0], v[1]) for k, v in out.items()}

    # ---- grants -------------------------------------------------------------------------------

    async def vote_grant(self, grant: Grant, user: str, quorum: int, now: datetime, *,
                         redact: Redact, current: Sequence[str]) -> tuple[str, int]:
        """One person asks for `grant` on its request: ('created', n), ('waiting', n people so
        far) or ('exists', n). Only the askers in `current` count: those whose approval is of
        the values as they stand (an edit since leaves an earlier approval, and the grant asked
        for with it, stale). The grant is stored as it is (its `same` values are what it
        matches); its `grant_created` audit entry is the `redact`ed form."""
        ttl = max(60, int((grant.expires_at - now).total_seconds()) + 86400)
        keys = [self.k.grant_votes(grant.request_id), self.k.grants, self.keys.audit,
                self.keys.trail(grant.request_id)]
        body = grant.model_dump(mode="json", exclude={"by"})
        res = await self._run("trust_grant", keys, [
            grant.request_id, user, quorum, json.dumps(body), now.isoformat(), ttl, grant.id,
            json.dumps(redact(body), default=str), json.dumps(sorted({*current, user}))])
        return str(res[0]), int(res[1]) if res[0] == "waiting" else quorum

    async def grants(self) -> list[Grant]:
        """Every grant not yet removed (expired ones included until `expire_grants`)."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.k.grants))
        return sorted((Grant.model_validate_json(v) for v in raw.values()), key=lambda g: g.expires_at)

    async def revoke(self, grant_id: str, actor: str, now: datetime, *, redact: Redact,
                     event: str = "grant_revoked") -> bool:
        """Remove a grant once, audited (the `redact`ed grant, on its request's trail too);
        False when it was gone already."""
        for _ in range(3):  # the script removes exactly the grant read (its audit detail's)
            text = await self.redis.hget(self.k.grants, grant_id)
            if not text:
                return False
            body = json.loads(text)
            rid = str(body.get("request_id") or "") if isinstance(body, dict) else ""
            detail = json.dumps(redact(body) if isinstance(body, dict) else {}, default=str)
            res = int(await self._run("trust_revoke", [self.k.grants, self.keys.audit, self.keys.trail(rid)],
                                      [grant_id, actor, now.isoformat(), event, text, detail, rid]))
            if res >= 0:
                return bool(res)
        return False

    async def matching_grant(self, request: Request, now: datetime, route: Route, *,
                             same: tuple[str, ...] = (), redact: Redact) -> Grant | None:
        """A live grant covering `request` on `route` (`Grant.matches`, `same`: the tier's
        `same` parameters); expired grants met on the way are removed, audited."""
        found = None
        for g in await self.grants():
            if g.expires_at <= now:
                await self.revoke(g.id, "system", now, redact=redact, event="grant_expired")
            elif found is None and g.matches(request, now, route, same):
                found = g
        return found

    # ---- away ---------------------------------------------------------------------------------

    async def set_away(self, away: Away, actor: str = "system", now: datetime | None = None) -> None:
        """Record `away` as the person's absence (replacing any earlier one), audited `away`;
        its end and a redraw of the cards naming them go into the deadlines set."""
        now = now or away.since
        detail = json.dumps({"delegate": away.delegate, "until": away.until.isoformat()})
        await self._run("trust_away", self._away_keys, [
            "set", away.user, away.model_dump_json(), "", _ms(away.until), _ms(now) + REDRAW_AFTER_MS,
            "away", actor, now.isoformat(), detail])

    async def end_away(self, user: str, now: datetime, actor: str, why: str) -> Away | None:
        """End `user`'s absence if it is live (`why`: `back`) or its date passed (`window_end`):
        once, audited `away_ended`, with a redraw of the cards naming them scheduled. The
        absence that ended, or None (ended already, or set again for longer)."""
        raw = await self.redis.hget(self.k.away, user)
        if not raw:
            return None
        a = Away.model_validate_json(raw)
        if a.ended_at is not None or (why == "window_end" and a.until > now):
            return None
        ended = a.model_copy(update={"ended_at": min(now, a.until)})
        detail = json.dumps({"delegate": a.delegate, "until": a.until.isoformat(), "why": why})
        done = await self._run("trust_away", self._away_keys, [
            "end", user, ended.model_dump_json(), raw, "", _ms(now) + REDRAW_AFTER_MS, "away_ended", actor,
            now.isoformat(), detail])
        return ended if done else None

    @property
    def _away_keys(self) -> list[str]:
        return [self.k.away, self.keys.deadlines, self.keys.audit]

    async def back(self, user: str, now: datetime) -> Away | None:
        """The person is back before their date: their delegate decides nothing more."""
        return await self.end_away(user, now, user, "back")

    async def absences(self) -> dict[str, Away]:
        """Each person's latest absence, live or not, by user id."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.k.away))
        return {user: Away.model_validate_json(text) for user, text in raw.items()}

    async def away(self, now: datetime) -> dict[str, Away]:
        """People away now, by user id."""
        return {u: a for u, a in (await self.absences()).items() if a.live(now)}

    # ---- canaries -----------------------------------------------------------------------------

    async def queue_canary(self, request: dict[str, Any], answer: dict[str, Any]) -> str:
        """Remember a canary's known answer (a key agents cannot write), then queue it like any
        request; intake knows it by that key."""
        assert isinstance(request.get("id"), str)
        await self.redis.set(self.k.canary(request["id"]), json.dumps(answer), ex=30 * 86400)
        return str(await self.redis.xadd(self.keys.requests, {"request": json.dumps(request)}))

    async def canary_answer(self, request_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.k.canary(request_id))
        return cast(dict[str, Any], json.loads(raw)) if raw else None

    async def score_canary(self, request_id: str, user: str, caught: bool) -> bool:
        """Score one reviewer's decision on a canary once; False if it was scored already."""
        return bool(await self._run("trust_canary", [self.k.canary(request_id) + ":scored", self.k.canary_scores],
                                    [user, "caught" if caught else "missed", 30 * 86400]))

    async def canary_scores(self) -> dict[str, tuple[int, int]]:
        """user -> (caught, missed)."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.k.canary_scores))
        out: dict[str, list[int]] = {}
        for f, v in raw.items():
            user, what = f.rsplit("|", 1)
            out.setdefault(user, [0, 0])[0 if what == "caught" else 1] += int(v)
        return {u: (v[0], v[1]) for u, v in out.items()}


@dataclass(frozen=True)
class GrantTerms:
    """What a tier lets a card grant (resolved from the policy): how long, up to which amount,
    which parameters a similar request must repeat."""

    duration_s: int
    max_amount: float | None
    same: tuple[str, ...] = ()

    def allows(self, request: Request) -> bool:
        amount = request.risk.amount
        return self.max_amount is None or amount is None or amount <= self.max_amount

    def bounds_for(self, request: Request) -> GrantBounds:
        """A grant's bounds from the request it was made on: the policy's amount ceiling when the
        request has an amount (intake checks the ceiling on every request anyway), each `same`
        parameter's value, or its absence (absent stays absent)."""
        cap = self.max_amount if request.risk.amount is not None else None
        return GrantBounds(amount_max=cap, params={k: [request.params[k]] for k in self.same if k in request.params},
                           absent=[k for k in self.same if k not in request.params])
