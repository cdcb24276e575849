"""PolicyEngine: where each request goes and why, from a validated policy. Pure and stateless
per request (apart from counting skipped rules), so every replica routes alike.

Combination (docs/policy.md, "How a route is chosen"):
- Each built-in trigger and each file rule that fires gives a tier, a mode, or both.
- The tier is the highest any of them gives (tiers rank in file order); when none gives
  a tier, `defaults.tier`. Confidence at or above `review` gives the lowest tier, so it
  decides only when no rule says more: risk trumps confidence.
- The mode is the most restrictive (MODE_RANK) of the tier's mode and every hit's mode.
- Auto and audit routes are sampled for review at the highest rate of the tier and the
  hits, deterministically by request id.
- Paused: auto, audit and shadow become approve.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cel

from bot.policy.cel import (
    ConditionError,
    activation,
    compile_condition,
    evaluate,
    read_paths,
    reads_none,
    referenced_fields,
    request_data,
)
from bot.policy.load import default_text, load_file, load_policy
from bot.policy.model import EscalationLevel, OnTimeout, Policy, Reminder
from bot.policy.triggers import BuiltinTriggers, Hit
from bot.policy.trust_config import GrantRule
from store.models import MODE_RANK, Kind, Mode, Request, Route
from store.trust import GrantTerms, TrustState

log = logging.getLogger("hitl.policy")

_ACTS_ALONE = frozenset({Mode.auto, Mode.audit})
_PAUSABLE = frozenset({Mode.auto, Mode.audit, Mode.shadow})


@dataclass(frozen=True)
class ResolvedTier:
    """A tier with every unset field taken from `defaults` (what a route and issue 4 use)."""

    name: str
    rank: int
    mode: Mode
    sample: float
    channel: str
    approvers: tuple[str, ...]
    quorum: int
    timeout_s: int
    on_timeout: OnTimeout
    escalation: tuple[EscalationLevel, ...]
    reminder: Reminder | None


class _CompiledRule(NamedTuple):
    name: str
    program: cel.Program
    hit: Hit
    paths: list[tuple[str, ...]] | None
    """The request fields its condition reads (bot.policy.cel.read_paths)."""


def sample_point(key: str, salt: bytes = b"") -> float:
    """A stable number in [0, 1) for `key`: the first 8 bytes of its HMAC-SHA256 under `salt`
    (the deployment's secret: an agent choosing its ids cannot choose ones that escape
    sampling), or of its SHA-256 without one (`hitl policy check`, which has no deployment)."""
    digest = hmac.new(salt, key.encode(), hashlib.sha256).digest() if salt else hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _sample_of(mode: Mode | None, sample: float | None, unset: float | None) -> float | None:
    """The sampling rate a tier or rule brings: its own `sample`; unset, every one in mode
    `audit` (act, then a person reviews: docs/policy.md), else `unset`."""
    if sample is not None:
        return sample
    return 1.0 if mode is Mode.audit else unset


def _sample_key(request: Request) -> str:
    return request.id or f"{request.agent}\0{request.action}\0{request.summary}"


class PolicyEngine:
    """Routes requests by one policy; build it with from_file, from_yaml or default."""

    def __init__(self, policy: Policy, source: str = "file") -> None:
        self.policy = policy
        self.source = source
        self.admins: tuple[str, ...] = tuple(policy.admins)
        self.external_teams: frozenset[str] = frozenset(policy.external_teams)
        self.sample_salt = b""
        """The deployment's secret sampling is keyed by (set by PolicyHolder.sample_salt)."""
        self.skipped: Counter[str] = Counter()
        """Per rule, requests its condition could not be decided on that hold none of the
        fields it reads (the rule is about other requests: skipped)."""
        self.undecided: Counter[str] = Counter()
        """Per rule, requests its condition could not be decided on although they hold a field
        it reads (a value of another type, a field missing beside it): routed as if it fired,
        as far as that is stricter (`_undecided`)."""
        d = policy.defaults
        self.tiers: dict[str, ResolvedTier] = {
            name: ResolvedTier(
                name=name, rank=rank, mode=t.mode, sample=_sample_of(t.mode, t.sample, 0.0) or 0.0,
                channel=t.channel or d.channel,
                approvers=tuple(d.approvers if t.approvers is None else t.approvers),
                quorum=t.quorum or d.quorum, timeout_s=t.timeout or d.timeout,
                on_timeout=t.on_timeout or d.on_timeout,
                escalation=tuple(t.resolved_escalation(d)), reminder=t.resolved_reminder(d))
            for rank, (name, t) in enumerate(policy.tiers.items())
        }
        self._order = list(self.tiers.values())
        index = {t.name: t.rank for t in self._order}
        self._default_tier = index[d.tier]
        self._triggers = BuiltinTriggers(policy.triggers, policy.confidence, index)
        self._rules = [
            _CompiledRule(r.name, compile_condition(r.when), Hit(
                r.name, None if r.tier is None else index[r.tier], r.mode,
                r.reason or f"rule {r.name}", _sample_of(r.mode, r.sample, None)), read_paths(r.when))
            for r in policy.rules
        ]
        self._include = referenced_fields([r.when for r in policy.rules])
        fu = policy.triggers.first_use
        self._new_action = Hit("first_use", None if fu.tier is None else index.get(fu.tier), fu.mode, "")
        self.canaries: list[dict[str, object]] = []
        """Known-answer requests from `trust.canaries.file` (loaded by from_file)."""
        self._grant_terms: dict[str, GrantTerms | None] = {}
        """Per tier, computed on first use (intake asks for every request; the policy is fixed)."""

    @classmethod
    def from_yaml(cls, text: str, source: str = "file") -> PolicyEngine:
        """An engine for the policy in `text`; PolicyError names each invalid field."""
        return cls(load_policy(text, source), source)

    @classmethod
    def from_file(cls, path: Path) -> PolicyEngine:
        """An engine for the policy file at `path` (and its canary file); PolicyError if
        unreadable or invalid."""
        from bot.policy.canaries import load_canaries

        engine = cls(load_file(path), str(path))
        engine.canaries = load_canaries(engine, path)
        return engine

    def grant_rule(self, tier: str) -> GrantRule | None:
        """What a standing grant may be on `tier`'s cards (amount limit resolved); None: none."""
        t = self.policy.tiers.get(tier)
        if t is None or t.grants is False:
            return None
        rule = GrantRule() if t.grants is True else t.grants
        if rule.max_amount is None:
            rule = rule.model_copy(update={"max_amount": self.policy.triggers.amount_over_limit.limit})
        return rule

    @classmethod
    def default(cls) -> PolicyEngine:
        """An engine for the built-in default policy (bot/policy/default.yml)."""
        return cls.from_yaml(default_text(), "built-in default policy")

    def tier(self, name: str) -> ResolvedTier:
        """The named tier merged over the defaults (KeyError if the policy has none)."""
        return self.tiers[name]

    def hits(self, request: Request, *, first_use: bool = False) -> list[Hit]:
        """Every trigger and rule that fires. A rule whose condition cannot be decided is
        skipped when the request holds none of the fields it reads, and otherwise taken as
        fired as far as that is stricter (a request never routes more loosely because a value
        it sends has a type the rule does not expect)."""
        hits = self._triggers.hits(request, first_use)
        if self._rules:
            data = request_data(request, self._include)
            context = activation(request, self._include, data)
            for rule in self._rules:
                try:
                    if evaluate(rule.program, context):
                        hits.append(rule.hit)
                except ConditionError as e:
                    skip = reads_none(data, rule.paths)
                    counter = self.skipped if skip else self.undecided
                    counter[rule.name] += 1
                    # The first of a rule is a warning; repeats (a field most requests lack)
                    # are debug, so a sloppy rule cannot flood the log. All are counted.
                    level = logging.WARNING if counter[rule.name] == 1 else logging.DEBUG
                    log.log(level, "policy rule %r %s for request %s: %s (%d times)", rule.name,
                            "skipped" if skip else "undecided, routed as if it fired", request.id,
                            e, counter[rule.name])
                    if not skip:
                        hits.append(self._undecided(rule.hit, str(e)))
        return hits

    def _undecided(self, hit: Hit, error: str) -> Hit:
        """`hit` for a request its rule could not be decided on: its tier only when not below
        the default tier, its mode at least `approve`, never a sample (so never looser)."""
        tier = hit.tier if hit.tier is not None and hit.tier >= self._default_tier else None
        mode = hit.mode if hit.mode is not None and MODE_RANK[hit.mode] >= MODE_RANK[Mode.approve] \
            else Mode.approve
        then = "denied as the rule would" if mode is Mode.deny else "a person decides"
        return Hit(hit.name, tier, mode, f"rule {hit.name} could not be decided on this request ({error}): {then}")

    def grant_terms(self, tier: str) -> GrantTerms | None:
        """The tier's grant rule as data handlers can use; None: no grants on this tier."""
        if tier not in self._grant_terms:
            rule = self.grant_rule(tier)
            self._grant_terms[tier] = None if rule is None else GrantTerms(
                min(rule.duration, rule.max_duration), rule.max_amount, tuple(rule.same))
        return self._grant_terms[tier]

    def route(self, request: Request, *, first_use: bool = False, paused: bool = False,
              trust: TrustState | None = None) -> Route:
        """Where `request` goes and why; deterministic for a given request and flags.

        With `trust` (the action's autonomy), a new action fires the `first_use` trigger until
        people approved it `trust.after` times, and a trusted one may have its default tier
        lowered by `trust.promote` (never a tier a rule gave, never a deny)."""
        hits = self.hits(request, first_use=first_use and trust is None)
        after = self.policy.trust.after
        if trust is not None and not trust.trusted and self.policy.triggers.first_use.enabled:
            hits.append(self._new_action._replace(reason=(
                f"new action {request.action!r}: {trust.clean} of {after} approvals so far"
                + (" (pinned)" if trust.pinned else "") + " — a person approves every request until it is trusted")))
        ranks = [h.tier for h in hits if h.tier is not None]
        default = self._default_tier
        lowered = self._lowered(trust) if not ranks else 0
        if lowered:
            default = max(0, default - lowered)
            hits.append(Hit("trust_promoted", None, None, (
                f"trusted action: {trust.clean if trust else 0} clean approvals in a row lower its default "
                f"tier by {lowered}")))
        tier = self._order[max(ranks) if ranks else default]
        mode = tier.mode
        for h in hits:
            if h.mode is not None and MODE_RANK[h.mode] > MODE_RANK[mode]:
                mode = h.mode
        reasons = _reasons(hits, tier, mode, defaulted=not ranks)
        sampled = False
        if mode in _ACTS_ALONE:
            rate = max([tier.sample, *(h.sample for h in hits if h.sample is not None)])
            sampled = rate >= 1 or (rate > 0 and sample_point(_sample_key(request), self.sample_salt) < rate)
        if paused and mode in _PAUSABLE:
            mode, sampled = Mode.approve, False
            reasons = _reasons(hits, tier, mode, defaulted=not ranks)
            reasons.insert(0, "Automation paused: a person approves every request")
        timeout = tier.timeout_s
        if request.timeout_s is not None:
            timeout = min(timeout, request.timeout_s)  # an agent may shorten, never extend
        rule = self.grant_rule(tier.name) if mode is Mode.approve and request.kind is Kind.approval else None
        return Route(mode=mode, tier=tier.name, rules=[h.name for h in hits], reasons=reasons,
                     sampled=sampled, paused=paused, channel=tier.channel,
                     approvers=list(tier.approvers), quorum=tier.quorum, timeout_s=timeout,
                     group=self._group(request, mode, sampled), batch_window_s=int(self.policy.batching.window),
                     batch_max=self.policy.batching.max_items,
                     grant_offer_s=rule.duration if rule and not paused else None,
                     # people get the tier's whole timeout to object: a wait the agent shortened
                     # is never approved by the clock (`timeout_s: 1` would be an auto-approval)
                     on_timeout="approve" if tier.on_timeout is OnTimeout.approve
                     and timeout >= tier.timeout_s else None)

    def _lowered(self, trust: TrustState | None) -> int:
        """Tiers a trusted action's default tier drops by (the last promotion step reached by
        its clean approvals in a row: `clean` starts again at each edit, rejection or override);
        never a default tier that denies: what the file refuses, no record of approvals lets run."""
        if trust is None or not trust.trusted or self._order[self._default_tier].mode is Mode.deny:
            return 0
        steps = [p.lower_tier for p in self.policy.trust.promote if trust.clean >= p.after]
        return steps[-1] if steps else 0

    def _group(self, request: Request, mode: Mode, sampled: bool) -> str | None:
        """The batch group of a request a person looks at; None when it gets a card of its own.

        Approvals group as `key:<batch_key>` or `<agent>/<action>`; shadow decisions and
        review-afterwards items (audit, samples) get their own groups (`shadow:...`,
        `review:...`), so one card never mixes "approve first" with "ran, review it"."""
        b = self.policy.batching
        if not b.enabled or request.kind is not Kind.approval:
            return None
        if mode is Mode.approve:
            prefix = ""
        elif mode is Mode.shadow:
            prefix = "shadow:"
        elif mode in _ACTS_ALONE and sampled:
            prefix = "review:"
        else:
            return None
        if request.batch_key:
            return f"{prefix}key:{request.batch_key}"
        return f"{prefix}{request.agent}/{request.action}" if b.similar else None


def _reasons(hits: list[Hit], tier: ResolvedTier, mode: Mode, *, defaulted: bool) -> list[str]:
    """Plain-words reasons: what decided the mode first, then the tier, then the rest."""
    if mode is Mode.deny:
        denied = [_sentence(h.reason) for h in hits if h.mode is Mode.deny]
        return denied or [f"The {tier.name} tier refuses every request"]
    label = tier.name.capitalize()

    def text(h: Hit) -> str:
        reason = h.reason
        if h.mode is not None and MODE_RANK[h.mode] < MODE_RANK[mode]:
            # its consequence ("acts, then a person reviews") did not happen: say so, so the
            # card never contradicts its own mode
            reason = reason.split(" — ")[0] + " (outweighed by a stricter rule)"
        if h.tier == tier.rank and not h.name.startswith("confidence_"):
            return f"{label} tier: {reason}"
        return _sentence(reason)

    first = [text(h) for h in hits if h.mode is mode and mode is not tier.mode]
    second = [text(h) for h in hits if h.tier == tier.rank and not (
        h.mode is mode and mode is not tier.mode)]
    rest = [text(h) for h in hits if h.tier != tier.rank and not (
        h.mode is mode and mode is not tier.mode)]
    out = first + second + rest
    if defaulted:
        out.append(f"{label} tier by default: no rule sets a tier" if hits
                   else f"No rule applies: {tier.name} tier by default")
    return out


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
