"""A decision as plain JSON for tools (MCP results, hook output): what a model can act on."""

from __future__ import annotations

from typing import Any

from hitl.errors import describe
from hitl.protocol import Decision


def pending(request_id: str, waited_s: float) -> dict[str, Any]:
    return {"status": "pending", "request_id": request_id,
            "message": f"No decision yet after {waited_s:g}s; nothing is lost. Call get_decision with "
                       f"request_id {request_id!r} later to get it."}


def decided(decision: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {"status": decision.status.value, "request_id": decision.request_id,
                           "approved": decision.approved, "message": describe(decision)}
    if decision.approved:
        out["params"] = decision.params
        if decision.changes:
            out["changes"] = {k: c.model_dump() for k, c in decision.changes.items()}
            out["message"] += ". A reviewer edited the arguments: use `params`."
    for key in ("answer", "option", "reason", "reason_code"):
        if getattr(decision, key) is not None:
            out[key] = getattr(decision, key)
    out["decided_by"] = [v.name or v.user_id for v in decision.decided_by]
    return out
