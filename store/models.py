"""Stored-state models: the record of one request, reviews, audit events and batches.

The wire models (request, decision, interim messages) live in `hitl.protocol`, the agent
SDK's one definition of the protocol; they are re-exported here for the bot's modules.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from hitl.protocol import (
    MAX_DRAFT,
    MAX_ENTRY_BYTES,
    MAX_PARAMS_BYTES,
    MAX_SUMMARY,
    MAX_TEXT,
    MAX_TIMEOUT_S,
    MAX_TURNS,
    MODE_RANK,
    AgentMessage,
    Attempt,
    Cancel,
    Change,
    Choice,
    Context,
    Decision,
    EscalationReason,
    Kind,
    Metadata,
    Mode,
    Name,
    Option,
    Request,
    RequestId,
    ReviewResult,
    Risk,
    Route,
    ShortText,
    SlackUserId,
    State,
    Status,
    Text,
    Turn,
    Vote,
)
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "MAX_DRAFT",
    "MAX_ENTRY_BYTES",
    "MAX_PARAMS_BYTES",
    "MAX_SUMMARY",
    "MAX_TEXT",
    "MAX_TIMEOUT_S",
    "MAX_TURNS",
    "MODE_RANK",
    "RECORD_EXTRAS",
    "AgentMessage",
    "Attempt",
    "AuditEvent",
    "Ballot",
    "Batch",
    "Cancel",
    "Change",
    "Choice",
    "Context",
    "Decision",
    "EscalationReason",
    "Intake",
    "Kind",
    "Metadata",
    "Mode",
    "Name",
    "Option",
    "Record",
    "Request",
    "RequestId",
    "Review",
    "ReviewResult",
    "Risk",
    "Route",
    "ShortText",
    "SlackUserId",
    "State",
    "Status",
    "Text",
    "Turn",
    "Vote",
    "approves",
    "from_epoch",
    "params_mark",
    "stale",
    "stored_request",
    "stored_route",
    "utcnow",
]


def _json_text(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


_ABSENT = object()


def params_mark(params: dict[str, Any], draft: str | None = None) -> str:
    """A short fingerprint of a request's parameters (as edited so far): cards, forms and
    approvals carry the one they showed, so nobody approves values they never saw.

    `draft`: the request's draft as a person edited it (None while unedited: the mark is then
    the params' alone, as it was before drafts were kept apart from params)."""
    data: Any = params if draft is None else {"params": params, "draft": draft}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:10]


class Ballot(Vote):
    """A vote as the record keeps it: with the seat it takes when the voter stood in for an
    approver who is away. Decisions carry plain `Vote`s (`vote()`), so agents never see it."""

    seat: str | None = None
    """The approver this vote was cast for by their stand-in; None: the voter's own seat (every
    vote recorded before seats were kept reads so)."""
    p: str | None = None
    """For an approval (approve, edit): the `params_mark` of the values it approved. An edit
    that changes the values leaves earlier approvals stale: they no longer count towards the
    quorum, and their voters may approve the new values (None: recorded before marks were
    kept, always current)."""

    @property
    def holder(self) -> str:
        """Whose seat of the quorum this vote takes: the approver stood in for, or the voter."""
        return self.seat or self.user_id

    def vote(self) -> Vote:
        return Vote(user_id=self.user_id, name=self.name, choice=self.choice, at=self.at)


def approves(vote: Vote, mark: str) -> bool:
    """Whether `vote` approves the values whose `params_mark` is `mark` (a plain `Vote` keeps no
    mark: it approves whatever stands)."""
    return vote.choice in (Choice.approve, Choice.edit) and getattr(vote, "p", None) in (None, mark)


def stale(vote: Vote, mark: str) -> bool:
    """Whether `vote` approved values someone has edited since."""
    return vote.choice in (Choice.approve, Choice.edit) and getattr(vote, "p", None) not in (None, mark)


class Review(BaseModel):
    """A person's check of an action that ran on its own (audit mode, sampled auto)."""

    model_config = ConfigDict(extra="ignore")

    verdict: str
    """`ok` (looks right) or `wrong` (an override: the agent should not have done it)."""
    by: Vote
    reason_code: str | None = None
    reason: str | None = None


RECORD_EXTRAS = (
    "review",
    "escalation_level",
    "reminders",
    "escalated_to",
    "extra_approvers",
    "extra_seats",
    "time_to_escalate_s",
    "owner",
    "messages",
    "undeliverable",
)
"""Hash fields of the record written by timed events and escalations (read when present)."""


@dataclass(frozen=True)
class Intake:
    """The record's `intake` field, `<created_at ms> <entry id> <first audit id> <last>` (one
    field instead of three: store/lua/accept.lua). The last audit id is shortened to its
    sequence number when both share the millisecond. Records written before it have
    `created_at` and `entry_id` fields and every audit id on the trail list."""

    created_ms: int
    entry_id: str
    trail: tuple[str, str]
    """The first and last id of the audit entries intake wrote (nothing else lies between)."""

    @classmethod
    def parse(cls, value: str) -> Intake:
        created, entry_id, first, last = value.split(" ")
        if "-" not in last:
            last = f"{first.partition('-')[0]}-{last}"
        return cls(int(created), entry_id, (first, last))


def stored_request(request: Request) -> str:
    """The request's JSON as its record keeps it: defaults left out (they read back the same;
    what readers of the raw field use, `agent`, `action`, `reply_to`, is never a default)."""
    return request.model_dump_json(exclude_defaults=True)


ROUTE_ALWAYS = ("mode", "tier", "channel")
"""Route fields a record keeps even at their defaults: read from the raw JSON by the stats
projector (`mode`) and the backlog (`tier`)."""


def stored_route(route: Route) -> str:
    """The route's JSON as a pending record keeps it: other defaults left out (as in the
    decision agents read: hitl.protocol.Decision's serializer)."""
    data = route.model_dump(mode="json", exclude_defaults=True)
    full = route.model_dump(mode="json", include=set(ROUTE_ALWAYS))
    return json.dumps({**full, **data}, separators=(",", ":"), ensure_ascii=False)


class Record(BaseModel):
    """The bot's stored state of one request (one Redis hash)."""

    model_config = ConfigDict(extra="ignore")

    request: Request
    route: Route
    state: State = State.pending
    version: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    changes: dict[str, Change] = Field(default_factory=dict)
    votes: list[Ballot] = Field(default_factory=list)
    decision: Decision | None = None
    channel: str | None = None
    ts: str | None = None
    created_at: datetime
    posted_at: datetime | None = None
    entry_id: str | None = None
    review: Annotated[Review | None, BeforeValidator(_json_text)] = None
    """The after-the-fact review of an action that ran on its own."""
    batch: str | None = None
    """The batch card this request is shown on, if it was grouped."""
    escalation_level: int = 0
    """Escalation levels of the tier notified so far (repeats of the last one count too)."""
    reminders: int = 0
    """Reminders posted so far."""
    escalated_to: Annotated[list[str], BeforeValidator(_json_text)] = Field(default_factory=list)
    """Targets escalation levels notified (channels, users, user groups), in order."""
    extra_approvers: Annotated[list[str], BeforeValidator(_json_text)] = Field(
        default_factory=list
    )
    """Users who may decide because an escalation level notified them (or their group)."""
    extra_seats: Annotated[dict[str, list[str]], BeforeValidator(_json_text)] = Field(
        default_factory=dict
    )
    """Of `extra_approvers`, those a level brought in only to stand in for a target away (one the
    card does not name), with those targets: their vote takes a target's seat, never one of
    their own (`store.transitions.seat_for`). Absent from records written before it was kept:
    everyone a level brought in then holds their own seat, as before."""
    time_to_escalate_s: float | None = None
    """Seconds from the trigger to the first person notified (escalation card or level)."""
    owner: Annotated[Vote | None, BeforeValidator(_json_text)] = None
    """Who took the case over (escalations); only they may act on it then."""
    messages: Annotated[list[AgentMessage], BeforeValidator(_json_text)] = Field(
        default_factory=list
    )
    """Interim messages sent to the agent (take over, replies), oldest first."""
    undeliverable: str | None = None
    """Slack's error when it refused this request's card for good (the request still expires)."""

    @property
    def id(self) -> str:
        assert self.request.id is not None
        return self.request.id

    def may_decide(self, user_id: str, groups: frozenset[str] = frozenset()) -> bool:
        """Whether the approver list (widened by escalations) lets `user_id` act."""
        approvers = set(self.route.approvers)
        if not approvers:
            return True
        return user_id in approvers or bool(groups & approvers) or user_id in self.extra_approvers

    @property
    def draft(self) -> str | None:
        """The request's draft as it stands: the last edit of it (`changes["draft"]`), else the
        agent's. An edited draft never goes into `params`: those are the tool's arguments, and
        one of them may itself be called `draft`."""
        change = self.changes.get("draft")
        if change is not None and isinstance(change.after, str):
            return change.after
        return self.request.draft

    @property
    def params_mark(self) -> str:
        """`params_mark` of the values as they stand (edits applied, the draft's too). A record
        whose draft a version before drafts were kept apart edited holds it in `params` too: its
        mark is the params' alone, as approvals given then carry it."""
        legacy = "draft" in self.params and self.params["draft"] != self.request.params.get("draft", _ABSENT)
        return params_mark(self.params, self.draft if "draft" in self.changes and not legacy else None)

    def approvals(self) -> list[Ballot]:
        """The approvals of the values as they stand (an edit since leaves earlier ones stale)."""
        mark = self.params_mark
        return [v for v in self.votes if approves(v, mark)]

    def stale_approvals(self) -> list[Ballot]:
        """Approvals of values someone has edited since: they count no more."""
        mark = self.params_mark
        return [v for v in self.votes if stale(v, mark)]

    def voter_ids(self) -> set[str]:
        return {v.user_id for v in self.votes}

    def actors(self) -> set[str]:
        """Everyone who acted on the request: voted (approved, edited, rejected, answered), took
        it over, replied to the agent, decided it, reviewed it afterwards."""
        people = self.voter_ids() | {m.by.user_id for m in self.messages}
        if self.owner is not None:
            people.add(self.owner.user_id)
        if self.decision is not None:
            people |= {v.user_id for v in self.decision.decided_by}
        if self.review is not None:
            people.add(self.review.by.user_id)
        return people

    def review_result(self) -> ReviewResult | None:
        """The after-the-fact review as agents read it (REST API, MCP), if there is one."""
        rv = self.review
        return None if rv is None else ReviewResult.from_stored(rv.model_dump(mode="json"))

    def agent_messages(self) -> list[AgentMessage]:
        """Every interim message the agent was sent, oldest first: those kept on the record
        (take over, replies) and the override a `wrong` review sent (kept as the review)."""
        result = self.review_result()
        override = result.override(self.id) if result is not None else None
        return [*self.messages, override] if override is not None else list(self.messages)


class AuditEvent(BaseModel):
    """One entry of the append-only audit stream."""

    model_config = ConfigDict(extra="ignore")

    event: str
    request_id: str
    actor: str
    at: datetime
    detail: dict[str, Any] = Field(default_factory=dict)
    entry_id: str | None = None


class Batch(BaseModel):
    """Several related requests shown on one card."""

    model_config = ConfigDict(extra="ignore")

    id: str
    group: str
    channel: str
    items: list[str] = Field(default_factory=list)
    ts: str | None = None
    rendered: str | None = None
    """A digest of the card Slack shows, so an unchanged card is not updated again."""
    created_at: datetime
    posted_at: datetime | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_epoch(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
