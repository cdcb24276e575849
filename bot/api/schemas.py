"""Response and body models of the REST API: the OpenAPI document is built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from store.models import Decision, Record, Route


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
    """`queued`: in the queue, not yet taken by intake (only right after a submit)."""
    duplicate: bool = False
    """True when this id had already been submitted: the answer is the earlier request's."""
    agent: str | None = None
    action: str | None = None
    kind: str | None = None
    route: Route | None = None
    decision: Decision | None = None
    created_at: datetime | None = None


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000)


def state_of(record: Record, duplicate: bool = False) -> RequestState:
    req = record.request
    return RequestState(id=record.id, state=record.state.value, duplicate=duplicate,
                        agent=req.agent, action=req.action, kind=req.kind.value, route=record.route,
                        decision=record.decision, created_at=record.created_at)
