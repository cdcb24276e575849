"""The policy file as pydantic models: exactly the YAML shape documented in docs/policy.md.

Every section has the built-in default's values as its default, so a file may set only
what it changes; a section that is written replaces that section of the default (a
`tiers:` section lists every tier), except `triggers:`, where each trigger and each of
its fields falls back to its default on its own.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from blocks.batch import BATCH_ITEMS_MAX
from bot.policy.cel import compile_condition
from bot.policy.fields import (
    Approver,
    Channel,
    Duration,
    Identifier,
    SlackTeam,
    SlackUser,
    Target,
    format_duration,
    parse_fraction_or_duration,
)
from bot.policy.triggers_config import TRIGGER_NAMES, Triggers
from bot.policy.trust_config import GrantRule, TrustPolicy
from store.models import Mode


class OnTimeout(StrEnum):
    reject = "reject"
    approve = "approve"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Fraction = Annotated[float, Field(ge=0, le=1)]


class Defaults(_Section):
    """What every tier inherits unless it says otherwise."""

    channel: Channel = "#approvals"
    approvers: list[Approver] = Field(default_factory=list)
    quorum: int = Field(1, ge=1, le=10)
    timeout: Duration = 4 * 3600
    on_timeout: OnTimeout = OnTimeout.reject
    tier: Identifier = "medium"
    escalation: list[EscalationLevel] = Field(default_factory=list, max_length=10)
    """Every tier's escalation chain unless the tier gives its own (`escalation: []`: none)."""
    reminder: Annotated[Reminder, BeforeValidator(parse_fraction_or_duration)] | None = None
    """Every tier's reminder unless the tier gives its own (`reminder: null`: none)."""

    @field_validator("escalation")
    @classmethod
    def _increasing(cls, v: list[EscalationLevel]) -> list[EscalationLevel]:
        return _check_levels(v)

    @field_validator("on_timeout")
    @classmethod
    def _deny_by_default(cls, v: OnTimeout) -> OnTimeout:
        if v is OnTimeout.approve:
            raise ValueError(
                "'approve' is refused here (deny by default); write 'on_timeout: approve' "
                "in the one tier whose requests may pass when nobody answers"
            )
        return v


class Confidence(_Section):
    """Confidence bands: >= autonomous acts alone, review..autonomous acts then is reviewed."""

    autonomous: Fraction = 0.8
    review: Fraction = 0.5

    @model_validator(mode="after")
    def _ordered(self) -> Confidence:
        if self.review > self.autonomous:
            raise ValueError(
                f"review ({self.review}) must not be above autonomous ({self.autonomous})")
        return self


class EscalationLevel(_Section):
    """After `after` without a decision, notify `notify` (channels, users, user groups)."""

    after: Duration
    notify: list[Target] = Field(min_length=1)
    repeat: Duration | None = None
    """Last level only: notify its targets again every `repeat` until someone decides."""


class Reminder(_Section):
    """Remind the approvers at a share of the timeout (`50%`) or after a duration (`30m`)."""

    at: float | None = Field(default=None, gt=0, lt=1)
    after: Duration | None = None
    repeat: bool = False

    @model_validator(mode="after")
    def _one(self) -> Reminder:
        if (self.at is None) == (self.after is None):
            raise ValueError("give a share of the timeout (50%) or a duration (30m)")
        return self

    def delay_s(self, timeout_s: int) -> int:
        """Seconds from posting to the (first) reminder."""
        return self.after if self.after is not None else max(1, int(timeout_s * (self.at or 0)))

    def describe(self) -> str:
        when = f"{self.at:.0%} of the timeout" if self.at is not None else (
            f"after {format_duration(self.after or 0)}")
        return when + (", repeated" if self.repeat else "")


Defaults.model_rebuild()  # it names EscalationLevel and Reminder, defined after it


class Tier(_Section):
    """One risk tier; unset fields come from `defaults`."""

    mode: Mode
    sample: Fraction | None = None
    """Unset: every one in mode `audit` (that is what audit means), none otherwise."""
    channel: Channel | None = None
    approvers: list[Approver] | None = None
    quorum: int | None = Field(default=None, ge=1, le=10)
    timeout: Duration | None = None
    on_timeout: OnTimeout | None = None
    escalation: list[EscalationLevel] | None = Field(default=None, max_length=10)
    """Unset: `defaults.escalation`."""
    reminder: Annotated[Reminder, BeforeValidator(parse_fraction_or_duration)] | None = None
    """Unset: `defaults.reminder`; `null` written out: no reminder."""
    grants: GrantRule | bool = True
    """Standing grants from this tier's cards: `false` never, `true` the defaults (1 h)."""

    @field_validator("escalation")
    @classmethod
    def _increasing(cls, v: list[EscalationLevel] | None) -> list[EscalationLevel] | None:
        return None if v is None else _check_levels(v)

    def resolved_escalation(self, d: Defaults) -> list[EscalationLevel]:
        """The tier's chain, or the default one when the tier does not give its own."""
        return d.escalation if self.escalation is None else self.escalation

    def resolved_reminder(self, d: Defaults) -> Reminder | None:
        """The tier's reminder, or the default one when the tier does not mention it."""
        return self.reminder if "reminder" in self.model_fields_set else d.reminder


def _check_levels(v: list[EscalationLevel]) -> list[EscalationLevel]:
    """Levels come later one after another; only the last one may repeat."""
    for i in range(1, len(v)):
        if v[i].after <= v[i - 1].after:
            raise ValueError(
                f"level {i} (after {format_duration(v[i].after)}) must come later than "
                f"level {i - 1} (after {format_duration(v[i - 1].after)})")
    for i, level in enumerate(v[:-1]):
        if level.repeat is not None:
            raise ValueError(f"level {i}: only the last level may repeat")
    return v


class Rule(_Section):
    """A CEL condition on the request that sets a tier, a mode, or both."""

    name: Identifier
    when: str = Field(min_length=1, max_length=2000)
    tier: Identifier | None = None
    mode: Mode | None = None
    sample: Fraction | None = None
    reason: str | None = Field(default=None, max_length=200)

    @field_validator("when")
    @classmethod
    def _compiles(cls, v: str) -> str:
        compile_condition(v)  # ConditionSyntaxError is a ValueError: names line and column
        return v

    @model_validator(mode="after")
    def _effect(self) -> Rule:
        if self.tier is None and self.mode is None:
            raise ValueError("a rule needs a tier, a mode, or both")
        return self


def _default_tiers() -> dict[str, Tier]:
    return {
        "low": Tier(mode=Mode.auto, sample=0.05),
        "medium": Tier(mode=Mode.approve),
        "high": Tier(mode=Mode.approve, quorum=2, timeout=3600),
    }


class Batching(_Section):
    """Related requests on one card: a `batch_key`, or the same agent and action in a window."""

    enabled: bool = True
    window: Duration = 10
    max_items: int = Field(BATCH_ITEMS_MAX, ge=2, le=BATCH_ITEMS_MAX)  # what always fits on one card
    similar: bool = True


def _redact_list(v: object) -> object:
    return {"params": v} if isinstance(v, list) else v


class Redact(_Section):
    """What never reaches the audit trail or an export: params by name, values by pattern
    (`redact: [card_number, ssn]`, or `redact: {params: [...], patterns: [...]}`)."""

    params: list[str] = Field(default_factory=list, max_length=200)
    patterns: list[str] = Field(default_factory=list, max_length=50)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"pattern {p!r} is not a valid regular expression: {e}") from None
        return v


class Policy(_Section):
    """A whole policy file."""

    defaults: Defaults = Field(default_factory=Defaults)
    confidence: Confidence = Field(default_factory=Confidence)
    tiers: dict[Identifier, Tier] = Field(default_factory=_default_tiers, min_length=1)
    rules: list[Rule] = Field(default_factory=list, max_length=1000)
    admins: list[SlackUser] = Field(default_factory=list)
    external_teams: list[SlackTeam] = Field(default_factory=list, max_length=1000)
    """Other workspaces (or organisations) whose people may act on cards, as in a Slack Connect
    channel; by default only people of the installing workspace or organisation may."""
    triggers: Triggers = Field(default_factory=Triggers)
    batching: Batching = Field(default_factory=Batching)
    redact: Annotated[Redact, BeforeValidator(_redact_list)] = Field(default_factory=Redact)
    trust: TrustPolicy = Field(default_factory=TrustPolicy)

    @model_validator(mode="after")
    def _references(self) -> Policy:
        problems = []
        known = ", ".join(self.tiers)
        if self.defaults.tier not in self.tiers:
            problems.append(f"defaults.tier: unknown tier {self.defaults.tier!r}; the tiers are {known}")
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.tier is not None and rule.tier not in self.tiers:
                problems.append(f"rules[{i}].tier: unknown tier {rule.tier!r}; the tiers are {known}")
            if rule.name in TRIGGER_NAMES:
                problems.append(f"rules[{i}].name: {rule.name!r} is the name of a built-in trigger")
            elif rule.name in seen:
                problems.append(f"rules[{i}].name: {rule.name!r} is used by an earlier rule")
            seen.add(rule.name)
        for name, trigger in self.triggers:
            tier = getattr(trigger, "tier", None)
            if trigger.enabled and tier is not None and tier not in self.tiers:
                default = "" if "tier" in trigger.model_fields_set else (
                    " (the built-in default: set this trigger's tier or switch it off)")
                problems.append(
                    f"triggers.{name}.tier: unknown tier {tier!r}{default}; the tiers are {known}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def tier_order(self) -> list[str]:
        """Tier names from least to most scrutiny (the order of the file)."""
        return list(self.tiers)

