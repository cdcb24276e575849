"""Built-in triggers from the HITL guides, evaluated in Python on the Request model.

Each trigger looks at one aspect of the request and, when it fires, gives a Hit: a name
(shown in Route.rules), an optional tier and mode, and a reason in plain words.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

from bot.policy.model import Confidence
from bot.policy.triggers_config import Triggers
from store.models import Kind, Mode, Request

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


class Hit(NamedTuple):
    """One rule or trigger that fired; `tier` is an index into the policy's tier order."""

    name: str
    tier: int | None
    mode: Mode | None
    reason: str
    sample: float | None = None


def money(amount: float, currency: str | None) -> str:
    """`$750`, `€1,250.50`, `900 CHF`: an amount as a reviewer reads it."""
    text = f"{amount:,.0f}" if amount == int(amount) else f"{amount:,.2f}"
    symbol = _SYMBOLS.get(currency or "USD")
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


# Characters a reader does not see: soft hyphen, zero-width and direction marks, word joiners,
# and (after NFKD) the combining accents; dropped so that they cannot split or hide a word.
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
                        "\u2066-\u206f\ufeff\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff"
                        "\ufe20-\ufe2f]")


def fold(text: str) -> str:
    """`text` as a reader reads it, for word matching: fullwidth and styled (mathematical bold) letters as
    plain ones, accents and invisible characters dropped. ASCII text is returned as it is."""
    if text.isascii():
        return text
    return _INVISIBLE.sub("", unicodedata.normalize("NFKD", text))


def _domain(text: str) -> str:
    """A domain as compared: `fold`ed, case and surrounding spaces ignored (the agent writes
    `risk.domain`: `"Legal "` or fullwidth letters are the legal domain)."""
    return " ".join(fold(text).casefold().split())


def _pattern(words: list[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern for a list of words and phrases, bounded by anything but a
    letter or digit (`_lawyer_`, Slack's italics, is the word), matched on `fold`ed text."""
    alternatives = sorted({r"\s+".join(map(re.escape, parts)) for w in words
                           if (parts := fold(w).split())}, key=len, reverse=True)
    if not alternatives:
        return None
    return re.compile(r"(?<![^\W_])(?:" + "|".join(alternatives) + r")(?![^\W_])", re.IGNORECASE)


def _texts(request: Request) -> str:
    turns = request.context.conversation
    if not turns:
        return fold(request.summary)
    return fold("\n".join([request.summary, *(t.text for t in turns)]))


class BuiltinTriggers:
    """The configured built-in triggers, with their patterns compiled once."""

    def __init__(self, config: Triggers, bands: Confidence, tier_index: dict[str, int]) -> None:
        self.config = config
        self.bands = bands

        def tier(name: str | None) -> int | None:
            # A switched-off trigger may name a tier the policy lacks; it never fires.
            return None if name is None else tier_index.get(name)

        c = config
        self._read_only_tier = tier(c.read_only.tier)
        self._read_only_tags = frozenset(c.read_only.tags)
        self._prefixes = tuple(c.read_only.prefixes)
        self._suffixes = tuple(c.read_only.suffixes)
        self._amount_tier = tier(c.amount_over_limit.tier)
        self._irreversible_tier = tier(c.irreversible.tier)
        self._domain_tier = tier(c.regulated_domain.tier)
        self._sentiment_tier = tier(c.negative_sentiment.tier)
        self._keyword_tier = tier(c.keywords.tier)
        self._human_tier = tier(c.user_requested_human.tier)
        self._loop_tier = tier(c.tool_call_loop.tier)
        self._first_use_tier = tier(c.first_use.tier)
        self._domains = {_domain(d) for d in c.regulated_domain.domains}
        self._keywords = _pattern(c.keywords.words) if c.keywords.enabled else None
        self._human = (_pattern(c.user_requested_human.phrases)
                       if c.user_requested_human.enabled else None)

    def hits(self, request: Request, first_use: bool) -> list[Hit]:
        """Every built-in trigger that fires on `request`, in a fixed order."""
        c = self.config
        risk = request.risk
        out: list[Hit] = []
        if request.kind is Kind.escalation:
            out.append(Hit("kind_escalation", None, Mode.escalate,
                           "The agent hands this over to a person"))
        elif request.kind is Kind.question:
            out.append(Hit("kind_question", None, Mode.approve,
                           "The agent asks a question only a person can answer"))
        if request.confidence is not None and c.confidence.enabled:
            out.append(self._confidence(request.confidence))
        if c.read_only.enabled and (
                request.action.startswith(self._prefixes) or request.action.endswith(
                    self._suffixes) or not self._read_only_tags.isdisjoint(risk.tags)):
            out.append(Hit("read_only", self._read_only_tier, c.read_only.mode,
                           "read-only action"))
        if c.amount_over_limit.enabled and risk.amount is not None and (
                risk.amount > c.amount_over_limit.limit):
            limit = c.amount_over_limit.limit
            out.append(Hit("amount_over_limit", self._amount_tier, c.amount_over_limit.mode,
                           f"amount {money(risk.amount, risk.currency)} over the "
                           f"{money(limit, risk.currency)} limit"))
        if c.irreversible.enabled and risk.reversible is False:
            out.append(Hit("irreversible", self._irreversible_tier, c.irreversible.mode,
                           "cannot be undone — a person approves first"))
        if c.regulated_domain.enabled and risk.domain and _domain(risk.domain) in self._domains:
            out.append(Hit("regulated_domain", self._domain_tier, c.regulated_domain.mode,
                           f"regulated domain ({risk.domain})"))
        if c.negative_sentiment.enabled and risk.sentiment is not None and (
                risk.sentiment < c.negative_sentiment.below):
            out.append(Hit("negative_sentiment", self._sentiment_tier, c.negative_sentiment.mode,
                           f"negative sentiment ({risk.sentiment:+.2f}, below "
                           f"{c.negative_sentiment.below:+.2f}) — a person takes over"))
        if self._keywords is not None or self._human is not None:
            out.extend(self._words(_texts(request)))
        calls = request.metadata.tool_calls
        if c.tool_call_loop.enabled and calls is not None and calls > c.tool_call_loop.limit:
            out.append(Hit("tool_call_loop", self._loop_tier, c.tool_call_loop.mode,
                           f"possible loop: {calls} tool calls (limit "
                           f"{c.tool_call_loop.limit}) — a person takes over"))
        if c.first_use.enabled and first_use:
            out.append(Hit("first_use", self._first_use_tier, c.first_use.mode,
                           f"first use of the action {request.action!r} — a person approves "
                           "until it is trusted"))
        return out

    def _confidence(self, confidence: float) -> Hit:
        pct = f"{confidence:.0%}"
        if confidence >= self.bands.autonomous:
            return Hit("confidence_autonomous", 0, None, f"High confidence ({pct})")
        if confidence >= self.bands.review:
            return Hit("confidence_review", 0, Mode.audit,
                       f"Moderate confidence ({pct}) — acts, then a person reviews",
                       self.config.confidence.sample)
        return Hit("confidence_low", None, Mode.escalate,
                   f"Low confidence ({pct}) — a person decides")

    def _words(self, text: str) -> list[Hit]:
        c = self.config
        out = []
        if self._human is not None and (found := self._human.search(text)):
            out.append(Hit("user_requested_human", self._human_tier, c.user_requested_human.mode,
                           f"the user asked for a person (\u201c{found[0]}\u201d)"))
        if self._keywords is not None and (found := self._keywords.search(text)):
            out.append(Hit("keywords", self._keyword_tier, c.keywords.mode,
                           f"mentions \u201c{found[0]}\u201d"))
        return out
