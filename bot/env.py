"""The few settings an agent-side command needs (REDIS_URL, HITL_PREFIX), read without the
settings framework so `hitl request` starts fast. `bot.config` checks the same values with
these same functions when the bot starts."""

from __future__ import annotations

import os

REDIS_URL_DEFAULT = "redis://localhost:6379/0"
PREFIX_DEFAULT = "hitl"


class ConfigError(Exception):
    """The environment is missing or has malformed values; the message lists each one."""


def check_redis_url(v: str) -> str:
    if not v.startswith(("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://",
                         "redis+sentinel://", "rediss+sentinel://")):
        raise ValueError("must start with redis://, rediss://, unix://, redis+cluster:// or "
                         "redis+sentinel:// (docs/redis.md)")
    return v


def check_prefix(v: str) -> str:
    if not v or any(c.isspace() for c in v) or len(v) > 64:
        raise ValueError("must be 1-64 characters without spaces, for example 'hitl' or '{hitl}'")
    return v


def redacted(value: object) -> str:
    """How a rejected value is shown: a URL without its password, a Slack token by its kind
    only (one pasted into the wrong variable must not end up in logs), anything else cut short."""
    text = str(value)
    if "://" in text and "@" in text:
        scheme, _, rest = text.partition("://")
        text = f"{scheme}://…@{rest.rpartition('@')[2]}"
    if text.startswith(("xox", "xapp-")):
        text = text.split("-", 1)[0] + "-…"
    return repr(text if len(text) <= 40 else text[:37] + "…")


def agent_settings() -> tuple[str, str]:
    """(REDIS_URL, HITL_PREFIX) from the environment, checked; ConfigError names each problem."""
    problems = []
    url = os.environ.get("REDIS_URL") or REDIS_URL_DEFAULT
    prefix = os.environ.get("HITL_PREFIX") or PREFIX_DEFAULT
    for name, value, check in (("REDIS_URL", url, check_redis_url), ("HITL_PREFIX", prefix, check_prefix)):
        try:
            check(value)
            if name == "REDIS_URL":
                from store.connect import parse  # what the client will read: host, port, nodes

                parse(value)
        except ValueError as e:
            problems.append(f"{name}: {e}")
    if problems:
        raise ConfigError("configuration error:\n  " + "\n  ".join(problems))
    return url, prefix
