"""Modal submissions that carry a rejection reason: validated, answered inline when invalid."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck

from blocks.modals import Rejection, offered_reasons, parse_reject_values


async def ack_rejection(ack: AsyncAck, view: dict[str, Any]) -> Rejection | None:
    """The reason from a reject-style modal, acknowledged; None after inline errors were shown."""
    rejection, errors = parse_reject_values(view["state"]["values"], offered_reasons(view.get("blocks") or []))
    if errors:
        await ack(response_action="errors", errors=errors)
        return None
    await ack()
    return rejection
