"""The wire protocol between agents and hitl: request, decision and interim messages.

This is the one definition both the bot and the agent SDK use. Everything an agent sends is
untrusted, so the request model is strict: unknown top-level fields, out-of-range numbers and
oversized text are refused with a message that names the field. Sizes are chosen so that every
field fits a Slack card or modal.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    field_validator,
    model_serializer,
    model_validator,
)

MAX_ENTRY_BYTES = 64 * 1024
MAX_PARAMS_BYTES = 16 * 1024
MAX_SUMMARY = 3000
MAX_DRAFT = 3000
MAX_TEXT = 3000
MAX_TURNS = 200
MAX_TIMEOUT_S = 30 * 24 * 3600

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
"""Request ids: letters, digits, `.`, `_`, `-`; 1 to 128 characters. No `:`, so no id can
name another key (every key derived from an id is `{prefix}:<kind>:<id>`)."""
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=REQUEST_ID_PATTERN)]
SlackUserId = Annotated[str, StringConstraints(pattern=r"^[UW][A-Z0-9]{2,30}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
ShortText = Annotated[str, StringConstraints(max_length=300)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]


class Kind(StrEnum):
    approval = "approval"
    review = "review"
    question = "question"
    escalation = "escalation"


class Mode(StrEnum):
    """How a request is handled; ordered from least to most restrictive in MODE_RANK."""

    auto = "auto"
    audit = "audit"
    shadow = "shadow"
    approve = "approve"
    escalate = "escalate"
    deny = "deny"


MODE_RANK = {m: i for i, m in enumerate(Mode)}


class Status(StrEnum):
    approved = "approved"
    rejected = "rejected"
    expired = "expired"
    answered = "answered"
    resolved = "resolved"
    auto_approved = "auto_approved"
    denied = "denied"
    invalid = "invalid"


class State(StrEnum):
    pending = "pending"
    decided = "decided"


class Choice(StrEnum):
    """What one person did on a card."""

    approve = "approve"
    reject = "reject"
    edit = "edit"
    answer = "answer"
    resolve = "resolve"
    expire = "expire"
    take_over = "take_over"
    reply = "reply"
    hand_back = "hand_back"


class EscalationReason(StrEnum):
    """Why an agent handed a case to a person (`context.escalation_reason`)."""

    low_confidence = "low_confidence"
    rule = "rule"
    loop = "loop"
    user_requested = "user_requested"
    error = "error"
    other = "other"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=MAX_TEXT)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", str_max_length=MAX_TEXT)


class Risk(_Strict):
    amount: float | None = Field(default=None, ge=0, le=1e15)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    reversible: bool | None = None
    domain: Annotated[str, StringConstraints(max_length=50)] | None = None
    sentiment: float | None = Field(default=None, ge=-1, le=1)
    tags: list[Annotated[str, StringConstraints(max_length=50)]] = Field(
        default_factory=list, max_length=20
    )


def _turn(value: Any) -> Any:
    return {"role": "", "text": value} if isinstance(value, str) else value


class Turn(_Strict):
    """One message of the conversation that led to the request."""

    role: Annotated[str, StringConstraints(max_length=50)] = ""
    text: Text


class Attempt(_Strict):
    """An action the agent tried before asking, and what came of it."""

    action: ShortText
    result: Text = ""
    ok: bool | None = None


class Context(_Strict):
    goal: Text | None = None
    conversation: list[Annotated[Turn, BeforeValidator(_turn)]] = Field(
        default_factory=list, max_length=MAX_TURNS
    )
    actions_attempted: list[Attempt] = Field(default_factory=list, max_length=50)
    failure_reason: Text | None = None
    customer: dict[str, Any] = Field(default_factory=dict, max_length=30)
    recommendation: Text | None = None
    alternatives: list[Text] = Field(default_factory=list, max_length=10)
    escalation_reason: EscalationReason | None = None


def _option(value: Any) -> Any:
    return {"value": value, "label": value} if isinstance(value, str) else value


class Option(_Strict):
    """A custom response choice offered to the reviewer (question cards)."""

    value: Annotated[str, StringConstraints(min_length=1, max_length=75)]
    label: Annotated[str, StringConstraints(min_length=1, max_length=75)]
    style: Annotated[str, StringConstraints(pattern=r"^(primary|danger)$")] | None = None


class Metadata(_Open):
    session_id: ShortText | None = None
    model: ShortText | None = None
    prompt_version: ShortText | None = None
    tool_calls: int | None = Field(default=None, ge=0, le=10**15)
    """Bounded here too (hitl.bounds.MAX_NUMBER): `"123..."` as text is converted to a number
    after the JSON's numbers were checked, and must not store one no JSON reader reads back."""


class Request(_Strict):
    """A proposed action an agent asks people about (the `request` field of a queue entry)."""

    agent: Name
    action: Name
    summary: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SUMMARY)]
    id: RequestId | None = None
    kind: Kind = Kind.approval
    params: dict[str, Any] = Field(default_factory=dict)
    editable: list[Annotated[str, StringConstraints(max_length=100)]] = Field(
        default_factory=list, max_length=20
    )
    draft: Annotated[str, StringConstraints(max_length=MAX_DRAFT)] | None = None
    confidence: float | None = Field(default=None, ge=0, le=1)
    risk: Risk = Field(default_factory=Risk)
    context: Context = Field(default_factory=Context)
    options: list[Annotated[Option, BeforeValidator(_option)]] = Field(
        default_factory=list, max_length=10
    )
    requested_by: SlackUserId | None = None
    reply_to: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    batch_key: Annotated[str, StringConstraints(max_length=128)] | None = None
    timeout_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)
    metadata: Metadata = Field(default_factory=Metadata)
    callback_url: Annotated[
        str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s/?#@]+(/[^\s]*)?$")
    ] | None = None
    """Where hitl POSTs the signed decision (a webhook); its host must be allowed by the operator."""

    @field_validator("params")
    @classmethod
    def _params_size(cls, v: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(v, default=str))
        if size > MAX_PARAMS_BYTES:
            raise ValueError(f"params is {size} bytes of JSON; the limit is {MAX_PARAMS_BYTES}")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> Request:
        for name in self.editable:
            if name == "draft":
                if self.draft is None:
                    raise ValueError("editable names 'draft' but the request has no draft")
            elif name not in self.params:
                raise ValueError(f"editable names '{name}', which is not a key of params")
            elif isinstance(self.params[name], dict | list):
                raise ValueError(
                    f"editable param '{name}' is an object or list; only text, numbers "
                    "and booleans can be edited"
                )
        if len(set(self.editable)) != len(self.editable):
            raise ValueError("editable lists a name twice")
        if self.kind is Kind.review and self.draft is None:
            raise ValueError("kind 'review' needs a draft to review")
        return self


class Cancel(_Strict):
    """An agent withdraws its pending request (the `cancel` field of a queue entry): it ends
    `rejected` with reason_code `withdrawn`, unless it is decided already."""

    id: RequestId
    agent: Name
    """The request's agent: another agent's request is never withdrawn."""
    reason: Text | None = None


class Change(_Strict):
    before: Any = None
    after: Any = None


class Vote(_Strict):
    """One person's click, in the order it happened."""

    user_id: str
    name: str = ""
    choice: Choice
    at: datetime


ROUTE_CONTRACT = frozenset({"mode", "tier", "rules", "sampled"})
"""The fields of a decision's route that the contract names: always published."""


class Route(_Strict):
    """Where a request went and why: chosen once at intake, carried into the decision."""

    mode: Mode = Mode.approve
    tier: str = "medium"
    rules: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    sampled: bool = False
    paused: bool = False
    channel: str = "#approvals"
    approvers: list[str] = Field(default_factory=list)
    quorum: int = Field(default=1, ge=1, le=10)
    timeout_s: int | None = None
    group: str | None = None
    """Requests with the same group, channel and window share one batch card."""
    batch_window_s: int = 10
    batch_max: int = 40
    grant: GrantRef | None = None
    """The standing grant that approved this request on its own (status `auto_approved`)."""
    grant_offer_s: int | None = None
    """How long a person may allow similar requests from the card ("Approve and allow similar
    for 1 h"); None: the tier offers no standing grant."""
    delegates: dict[str, str] = Field(default_factory=dict)
    """Approvers away when the request arrived -> who decides for them (user or user group)."""
    canary: bool = False
    """A known-answer item the bot injected to measure vigilance: its decision reaches no agent."""
    on_timeout: str | None = None
    """`approve` when the tier let what nobody decides in time pass when the request was routed
    (None: it expires). A policy reloaded since may make that stricter, never looser."""


class GrantRef(_Strict):
    """A standing grant, as a route names it: its id, who granted it, until when."""

    id: str
    by: list[str] = Field(default_factory=list)
    expires_at: datetime | None = None


Route.model_rebuild()


class Decision(_Strict):
    """The outcome published to the agent (the `decision` field of a reply entry)."""

    request_id: str
    status: Status
    params: dict[str, Any] = Field(default_factory=dict)
    changes: dict[str, Change] = Field(default_factory=dict)
    answer: str | None = None
    option: str | None = None
    reason: str | None = None
    reason_code: str | None = None
    decided_by: list[Vote] = Field(default_factory=list)
    decided_at: datetime
    route: Route | None = None

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler):  # unannotated: the JSON Schema stays the model's
        """The decision as published: every field of the contract (docs/protocol.md), and of the
        extensions only those that say something: `reason_code` when set, and of the route, beyond
        `mode`, `tier`, `rules` and `sampled`, only what differs from its default (a route in full
        repeated the tier's whole configuration, about 200 bytes, in every copy of every decision).
        Reading it back gives the same decision: an omitted field is its default."""
        data = handler(self)
        if isinstance(data, dict):
            if data.get("reason_code") is None:
                data.pop("reason_code", None)
            route = data.get("route")
            if isinstance(route, dict) and self.route is not None:
                for name, default in _ROUTE_DEFAULTS.items():
                    if name in route and getattr(self.route, name) == default:
                        del route[name]
        return data

    @property
    def approved(self) -> bool:
        return self.status in (Status.approved, Status.auto_approved)


_ROUTE_DEFAULTS = {name: f.get_default(call_default_factory=True)
                   for name, f in Route.model_fields.items() if name not in ROUTE_CONTRACT}
"""The defaults of a route's fields beyond the contract's (compared with, never handed out)."""


class AgentMessage(BaseModel):
    """An interim message to the agent while a request stays open (take over, reply).

    Added to the request's `reply_to` stream as field `message` (JSON) with `message_for`
    (the request id); the final decision still follows as the one `decision` entry.
    """

    request_id: str
    event: str
    """`taken_over` (a person owns the case now), `reply` (a person's message), or `override`
    (a reviewer found that an action that ran on its own was wrong)."""
    text: str | None = None
    reason_code: str | None = None
    """An `override`'s reason code (`wrong_params`, ...: the reviewer's pick, from the
    rejection taxonomy or the request's own reasons); omitted from the JSON when unset."""
    by: Vote
    at: datetime

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler):  # unannotated: the JSON Schema stays the model's
        """The message as sent: `reason_code`, an extension, only when set (a consumer written
        before it sees the same JSON as before)."""
        data = handler(self)
        if isinstance(data, dict) and data.get("reason_code") is None:
            data.pop("reason_code", None)
        return data


class ReviewResult(BaseModel):
    """A person's check, after the fact, of an action that ran on its own (audit mode, a sampled
    `auto_approved`): what the REST API (`GET /v1/requests/{id}`) and the MCP server's
    `get_decision` report as `review`. A `wrong` verdict is an override: the agent also gets an
    interim message of event `override`."""

    verdict: str
    """`ok` (looks right) or `wrong` (an override: the agent should not have done it)."""
    reason_code: str | None = None
    reason: str | None = None
    by: Vote
    at: datetime

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> ReviewResult:
        """From a record's stored `review` (`verdict`, `by`, `reason_code`, `reason`)."""
        by = Vote.model_validate({k: v for k, v in data["by"].items() if k in Vote.model_fields})
        return cls(verdict=data["verdict"], reason_code=data.get("reason_code"), reason=data.get("reason"),
                   by=by, at=by.at)

    def override(self, request_id: str) -> AgentMessage | None:
        """The `override` message the agent was sent, when the verdict is `wrong`."""
        if self.verdict != "wrong":
            return None
        return AgentMessage(request_id=request_id, event="override", text=self.reason,
                            reason_code=self.reason_code, by=self.by, at=self.at)
