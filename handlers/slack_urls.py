"""hitl posts only to Slack: a payload whose `response_url` is not Slack's is refused (a Bolt
middleware, the first that runs).

Slack's response_urls are always `https://hooks.slack.com/...` (`hooks.slack-gov.com` in
GovSlack). A signed payload naming any other address is not one Slack sent, and answering it
would make hitl POST (an ephemeral refusal, a result) wherever the payload says: a server-side
request to an address of the sender's choosing. Such a request is answered 400 and nothing is
posted. The Slack API host hitl is configured with (`SLACK_API_URL`, the emulator in tests) is
Slack too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from slack_bolt.response import BoltResponse

log = logging.getLogger("hitl.slack")

SLACK_HOOKS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})

Middleware = Callable[..., Awaitable[BoltResponse | None]]


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:  # a port that is not a number
        return None


def is_slacks(url: object, api_url: str) -> bool:
    """Whether `url` is a response_url Slack could have issued (or the configured API host's)."""
    if not isinstance(url, str) or not url:
        return False
    origin = _origin(url)
    if origin is None:
        return False
    scheme, host, port = origin
    if scheme == "https" and host in SLACK_HOOKS and port in (None, 443):
        return True
    return origin == _origin(api_url)


def response_urls(body: dict[str, Any]) -> Iterator[object]:
    """Every address a listener could answer to: `response_url`, and a form's `response_urls`."""
    if "response_url" in body:
        yield body["response_url"]
    urls = body.get("response_urls")
    if isinstance(urls, list):
        for item in urls:
            yield item.get("response_url") if isinstance(item, dict) else item


def only_slack_response_urls(api_url: str) -> Middleware:
    async def middleware(body: dict[str, Any], next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        foreign = [u for u in response_urls(body) if not is_slacks(u, api_url)]
        if foreign:
            log.warning("slack: refused a payload whose response_url is not Slack's: %.200r", foreign[0])
            return BoltResponse(status=400, body=json.dumps({"ok": False, "error": "response_url is not Slack's"}),
                                headers={"content-type": ["application/json; charset=utf-8"]})
        await next()
        return None
    return middleware
