"""Response and body models of the REST API: the OpenAPI document is built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from store.models import AgentMessage, Decision, Record, ReviewResult, Route


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error answer (4xx, 5xx) has this shape."""

    error: ErrorDetail


class RequestState(BaseModel):
    """A request as the API reports it: its state, where it was routed, and its decision."""

    id: str
    state: Literal["queued", "pending", "decided"]
    """`queued`: submitted through the API, in the queue, not yet taken by intake."""
    duplicate: bool = False
    """True when this id had already been submitted: the answer is the earlier request's."""
    agent: str | None = None
    action: str | None = None
    kind: str | None = None
    route: Route | None = None
    decision: Decision | None = None
    created_at: datetime | None = None
    messages: list[AgentMessage] | None = None
    """Interim messages the agent was sent (`taken_over`, `reply`, `override`), oldest first;
    present only when there are any."""
    review: ReviewResult | None = None
    """The after-the-fact review of an action that ran on its own; present only once reviewed."""

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler):  # unannotated: the JSON Schema stays the model's
        """`messages` and `review`, extensions, only when there are any: a client written before
        them reads the same JSON as before."""
        data = handler(self)
        if isinstance(data, dict):
            for name in ("messages", "review"):
                if data.get(name) is None:
                    data.pop(name, None)
        return data


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000)


def state_of(record: Record, duplicate: bool = False) -> RequestState:
    req = record.request
    return RequestState(id=record.id, state=record.state.value, duplicate=duplicate,
                        agent=req.agent, action=req.action, kind=req.kind.value, route=record.route,
                        decision=record.decision, created_at=record.created_at,
                        messages=record.agent_messages() or None, review=record.review_result())
