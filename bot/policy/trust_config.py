"""The `trust:` section and a tier's `grants:`: how an action earns autonomy, standing grants,
canaries and the warning thresholds that go with them (docs/trust.md)."""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.policy.fields import Duration, Identifier


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Promotion(_Section):
    """After `after` clean approvals in a row, a trusted action's default tier drops by
    `lower_tier` (never a tier a rule or trigger gave, never a deny)."""

    after: int = Field(ge=1, le=1_000_000)
    lower_tier: int = Field(1, ge=1, le=10)


class Canaries(_Section):
    """Known-answer items mixed into real work: `share` of the requests people see."""

    file: str | None = None
    """JSON lines (or a JSON list) of requests, each with `answer`: approve or reject (and an
    optional `why`); relative to the policy file."""
    share: float = Field(0.02, ge=0, le=0.5)
    """Share of the requests people see that are followed by a canary (at most half)."""


class TrustPolicy(_Section):
    """Graduated autonomy: an action is new until people approved it `after` times with no
    override; new actions always go to a person (the `first_use` trigger's tier and mode)."""

    after: int = Field(5, ge=1, le=10_000)
    promote: list[Promotion] = Field(default_factory=list, max_length=10)
    canaries: Canaries = Field(default_factory=Canaries)

    @field_validator("promote")
    @classmethod
    def _increasing(cls, v: list[Promotion]) -> list[Promotion]:
        for a, b in itertools.pairwise(v):
            if b.after <= a.after:
                raise ValueError(f"promotion steps must come later one after another ({a.after}, then {b.after})")
        return v


class GrantRule(_Section):
    """What "approve and allow similar" may grant on a tier's cards."""

    duration: Duration = 3600
    """How long a grant made from a card lasts."""
    max_duration: Duration = 8 * 3600
    max_amount: float | None = Field(default=None, ge=0)
    """No grant covers an amount above this (unset: the amount_over_limit trigger's limit)."""
    same: list[Identifier] = Field(default_factory=list, max_length=20)
    """Parameters a similar request must repeat exactly (e.g. `to`)."""

    @field_validator("max_duration")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be positive")
        return v
