"""Slack Web API failures, in three kinds, decided here and nowhere else (`bot.gateway` raises
them; listeners that call Slack through Bolt's client classify with `classify`).

`Permanent`: Slack refused and will refuse again (`channel_not_found`, `invalid_blocks`, a
revoked token, a proxy's 405). `Transient`: 5xx, an HTML error page, a timeout. `RateLimited`:
a 429, with Slack's `Retry-After`. The body may be anything: Slack's JSON, a proxy's HTML page,
nothing at all; no attribute of it is assumed.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

MAX_BACKOFF_S = 300.0

TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout", "team_added_to_org", "timeout"})


class SlackFailure(Exception):
    """A Web API call that did not succeed: `method`, Slack's `error` code (or `http_<status>`)."""

    def __init__(self, method: str, error: str, status: int | None = None) -> None:
        super().__init__(f"{method}: {error}")
        self.method = method
        self.error = error
        self.status = status


class Permanent(SlackFailure):
    """Slack refused the call and would refuse it again: do not retry."""


class Transient(SlackFailure):
    """Slack (or the way to it) failed this time: retry after a back-off."""


class RateLimited(Transient):
    """A 429: retry after `retry_after_s` (Slack's `Retry-After`)."""

    def __init__(self, method: str, retry_after_s: float) -> None:
        super().__init__(method, "ratelimited", 429)
        self.retry_after_s = retry_after_s


def backoff_s(attempt: int) -> float:
    """The wait before retry number `attempt` (1, 2, ...) of a transient failure: 0.5 s doubling, capped."""
    return min(MAX_BACKOFF_S, 0.5 * 2 ** max(0, attempt - 1))


def classify(method: str, e: SlackApiError) -> SlackFailure:
    """The kind of a SlackApiError, whatever its body was (JSON, an HTML error page, nothing)."""
    resp = e.response
    status = getattr(resp, "status_code", None) or getattr(resp, "status", None) or 0
    data = getattr(resp, "data", None)
    error = str(data.get("error") or "") if isinstance(data, dict) else ""
    if status == 429 or error == "ratelimited":
        headers = getattr(resp, "headers", None) or {}
        try:
            after = float(headers.get("Retry-After") or headers.get("retry-after") or 1)
        except (TypeError, ValueError):
            after = 1.0
        return RateLimited(method, max(0.0, after))
    if status >= 500 or error in TRANSIENT_ERRORS:
        return Transient(method, error or f"http_{status}", status)
    if not error:  # not Slack's JSON: a proxy's answer (405, 403 page...) that retrying will not change
        return Permanent(method, f"http_{status}" if status and status != 200 else "bad_response", status)
    return Permanent(method, error, status)
