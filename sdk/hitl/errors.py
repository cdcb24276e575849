"""The SDK's errors: a small typed hierarchy an agent can catch precisely."""

from __future__ import annotations

from hitl.protocol import Decision


class HitlError(Exception):
    """Base of every error the SDK raises on purpose."""


class Unreachable(HitlError, ConnectionError):
    """hitl's Redis cannot be reached; the message names the URL and `REDIS_URL`."""


class InvalidRequest(HitlError, ValueError):
    """The request is not valid; raised before anything is sent (or when the bot refused it)."""


class DecisionTimeout(HitlError, TimeoutError):
    """No decision within the wait; the request stays open and `wait(request_id)` resumes it."""

    def __init__(self, message: str, request_ids: list[str]) -> None:
        super().__init__(message)
        self.request_ids = request_ids


class RequestLost(HitlError, LookupError):
    """A wait found Redis without its request (no record, no refusal, not queued: lost in a Redis
    restart without persistence or a failover, or never sent) and this client does not hold it
    to send again (a resumed wait); no decision can come: submit it again (same id, same request)."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class NotApproved(HitlError):
    """A request was decided and not approved; `decision` holds the whole outcome."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.request_id = decision.request_id
        self.reason = decision.reason
        self.reason_code = decision.reason_code
        super().__init__(describe(decision))


class Rejected(NotApproved):
    """A reviewer rejected the request (`reason`, `reason_code` from the reject modal)."""


class Expired(NotApproved):
    """Nobody decided in time; hitl denies by default."""


class Denied(NotApproved):
    """Policy denied the request without asking anyone."""


def describe(decision: Decision) -> str:
    """One line a model or a log can read: what was decided and why."""
    status = decision.status.value
    who = ", ".join(v.name or v.user_id for v in decision.decided_by)
    text = f"request {decision.request_id} was {status.replace('_', ' ')}"
    if who:
        text += f" by {who}"
    if decision.reason_code:
        text += f" ({decision.reason_code})"
    if decision.reason:
        text += f": {decision.reason}"
    elif decision.answer and not decision.approved:  # a case handed back: the person's instructions
        text += f": {decision.answer}"
    return text


def raise_unless_approved(decision: Decision) -> Decision:
    """Return an approved (or auto-approved) decision; raise the matching error otherwise."""
    if decision.approved:
        return decision
    error = {"rejected": Rejected, "expired": Expired, "denied": Denied}.get(decision.status.value)
    if error is not None:
        raise error(decision)
    if decision.status.value == "invalid":
        raise InvalidRequest(f"hitl refused request {decision.request_id}: {decision.reason}")
    raise NotApproved(decision)


def raise_unless_answered(decision: Decision) -> str:
    """The answer of a question (free text, else the chosen option); raise if there is none."""
    if decision.status.value in ("answered", "resolved", "approved") and (
            decision.answer is not None or decision.option is not None):
        return decision.answer if decision.answer is not None else str(decision.option)
    raise_unless_approved(decision)
    raise NotApproved(decision)
