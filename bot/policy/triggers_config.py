"""The `triggers:` section: each built-in trigger, on by default, with its threshold.

Each trigger may be switched off (`enabled: false`) and its threshold, tier and mode
changed; a field left out keeps its default.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.policy.fields import Identifier
from store.models import Mode

Word = Annotated[str, Field(min_length=1, max_length=100)]


class _Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


class _Effect(_Trigger):
    """A trigger that, when it fires, raises the tier and/or the mode."""

    tier: Identifier | None = None
    mode: Mode | None = None

    @model_validator(mode="after")
    def _effect(self) -> _Effect:
        if self.tier is None and self.mode is None:
            raise ValueError("a trigger needs a tier, a mode, or both")
        return self


class ConfidenceTrigger(_Trigger):
    """Bands from the `confidence:` section; `sample` is the review band's review rate."""

    sample: float = Field(1.0, ge=0, le=1)


class ReadOnlyTrigger(_Effect):
    """Status lookups, searches, FAQs: the guides' low tier (acts alone unless more fires)."""

    tags: list[Word] = Field(default_factory=lambda: ["read_only"])
    prefixes: list[Word] = Field(default_factory=lambda: [
        "get_", "list_", "search_", "lookup_", "faq_"])
    suffixes: list[Word] = Field(default_factory=lambda: ["_status", "_lookup"])
    tier: Identifier | None = "low"


class AmountTrigger(_Effect):
    limit: float = Field(500, ge=0)
    tier: Identifier | None = "high"


class IrreversibleTrigger(_Effect):
    tier: Identifier | None = "medium"
    mode: Mode | None = Mode.approve


class RegulatedDomainTrigger(_Effect):
    domains: list[Word] = Field(default_factory=lambda: ["legal", "medical", "financial"])
    tier: Identifier | None = "high"


class SentimentTrigger(_Effect):
    below: float = Field(-0.6, ge=-1, le=1)
    tier: Identifier | None = "high"
    mode: Mode | None = Mode.escalate


class KeywordsTrigger(_Effect):
    words: list[Word] = Field(default_factory=lambda: [
        "lawyer", "attorney", "legal action", "lawsuit", "sue"])
    tier: Identifier | None = "high"
    mode: Mode | None = Mode.escalate


class UserRequestedHumanTrigger(_Effect):
    phrases: list[Word] = Field(default_factory=lambda: [
        "speak to a human", "talk to a human", "human agent", "speak to a person",
        "talk to a person"])
    mode: Mode | None = Mode.escalate


class LoopTrigger(_Effect):
    limit: int = Field(20, ge=1)
    mode: Mode | None = Mode.escalate


class FirstUseTrigger(_Effect):
    mode: Mode | None = Mode.approve


class Triggers(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    confidence: ConfidenceTrigger = Field(default_factory=ConfidenceTrigger)
    read_only: ReadOnlyTrigger = Field(default_factory=ReadOnlyTrigger)
    amount_over_limit: AmountTrigger = Field(default_factory=AmountTrigger)
    irreversible: IrreversibleTrigger = Field(default_factory=IrreversibleTrigger)
    regulated_domain: RegulatedDomainTrigger = Field(default_factory=RegulatedDomainTrigger)
    negative_sentiment: SentimentTrigger = Field(default_factory=SentimentTrigger)
    keywords: KeywordsTrigger = Field(default_factory=KeywordsTrigger)
    user_requested_human: UserRequestedHumanTrigger = Field(
        default_factory=UserRequestedHumanTrigger)
    tool_call_loop: LoopTrigger = Field(default_factory=LoopTrigger)
    first_use: FirstUseTrigger = Field(default_factory=FirstUseTrigger)


# Names that appear in Route.rules for built-in behaviour; a file rule may not reuse them.
TRIGGER_NAMES = frozenset(Triggers.model_fields) | {
    "confidence_autonomous", "confidence_review", "confidence_low",
    "kind_escalation", "kind_question", "trust_promoted", "grant", "canary",
}
