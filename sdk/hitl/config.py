"""Where the SDK finds hitl: the same environment variables the bot reads."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
ID_ALPHABET = re.compile(r"[^A-Za-z0-9._-]")


def redis_url(url: str | None = None) -> str:
    return url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def prefix(value: str | None = None) -> str:
    return value or os.environ.get("HITL_PREFIX") or "hitl"


def agent_name(value: str | None = None) -> str:
    return value or os.environ.get("HITL_AGENT") or "agent"


def shown_url(url: str) -> str:
    """The URL without its password, for error messages. Textual, so it also works on the
    multi-host cluster and sentinel forms and on a URL too malformed to parse."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{hosts}{slash}{path}"


def stable_id(kind: str, *parts: Any) -> str:
    """A request id in hitl's id alphabet (`[A-Za-z0-9._-]`, at most 128), the same for the same
    parts: re-submitting after a restart finds the request (and its decision) again."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return f"{ID_ALPHABET.sub('-', kind)[:40]}-{digest}"
