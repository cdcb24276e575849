"""Reading what a bot publishes, written by a newer bot too (forward compatibility).

The wire models are strict (`extra="forbid"`) so the bot never writes a field the contract does
not name; but an agent may run an older SDK than the bot. A decision or interim message that
carries a field this SDK does not know is read without it, and an informational part it cannot
read (a route with a new mode, a vote with a new choice) is left out: the outcome itself
(status, params, changes) is what an agent acts on. A status this SDK does not know is never
read as an approval: it raises `HitlError` saying so.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, ValidationError

from hitl.errors import HitlError
from hitl.protocol import AgentMessage, Change, Decision, GrantRef, Route, Status, Vote

log = logging.getLogger("hitl")


def _known(model: type[BaseModel], data: Any) -> Any:
    """`data` without the keys `model` has no field for (unchanged when it is not an object)."""
    return {k: v for k, v in data.items() if k in model.model_fields} if isinstance(data, dict) else data


def _pruned(data: dict[str, Any]) -> dict[str, Any]:
    data = _known(Decision, data)
    route = _known(Route, data.get("route"))
    if isinstance(route, dict) and "grant" in route:
        route["grant"] = _known(GrantRef, route["grant"])
    if route is not None:
        data["route"] = route
    if isinstance(data.get("decided_by"), list):
        data["decided_by"] = [_known(Vote, v) for v in data["decided_by"]]
    if isinstance(data.get("changes"), dict):
        data["changes"] = {k: _known(Change, c) for k, c in data["changes"].items()}
    return data


def read_decision(raw: str | bytes | dict[str, Any]) -> Decision:
    """A published or stored decision as a `Decision`, also one a newer bot wrote (see above);
    `HitlError` when its status is unknown here or it cannot be read at all."""
    try:
        return Decision.model_validate(raw) if isinstance(raw, dict) else Decision.model_validate_json(raw)
    except ValidationError:
        pass
    try:
        data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError as e:
        raise HitlError(f"hitl published a decision this SDK cannot read (not JSON): {e}") from e
    if not isinstance(data, dict):
        raise HitlError("hitl published a decision this SDK cannot read (not a JSON object)")
    request_id = str(data.get("request_id", "?"))
    status = data.get("status")
    if status not in {s.value for s in Status}:
        raise HitlError(f"hitl decided request {request_id} with status {status!r}, which this SDK "
                        "does not know (upgrade hitl-slack-sdk); it is not an approval: do not run the action")
    data = _pruned(data)
    try:
        return Decision.model_validate(data)
    except ValidationError as e:  # an informational part a newer bot writes differently: left out
        dropped_votes = {err["loc"][1] for err in e.errors() if err["loc"][:1] == ("decided_by",) and len(err["loc"]) > 1}
        if any(err["loc"][:1] == ("route",) for err in e.errors()):
            data["route"] = None
        if dropped_votes and isinstance(data.get("decided_by"), list):
            data["decided_by"] = [v for i, v in enumerate(data["decided_by"]) if i not in dropped_votes]
    try:
        return Decision.model_validate(data)
    except ValidationError as e:
        raise HitlError(f"hitl published a decision for request {request_id} this SDK cannot read "
                        f"(upgrade hitl-slack-sdk): {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from e


def read_message(raw: str | bytes | dict[str, Any]) -> AgentMessage | None:
    """An interim message, also one a newer bot wrote; None (logged) when it cannot be read:
    a message is news, never a decision, so an unreadable one does not end the wait."""
    try:
        data = json.loads(raw) if isinstance(raw, str | bytes) else raw
        if isinstance(data, dict) and isinstance(data.get("by"), dict):
            data = {**data, "by": _known(Vote, data["by"])}
        return AgentMessage.model_validate(data)
    except (ValueError, ValidationError) as e:
        log.warning("hitl: an interim message this SDK cannot read was skipped (upgrade hitl-slack-sdk): %s", e)
        return None
