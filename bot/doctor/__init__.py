"""`hitl doctor`: why hitl does not work in this workspace with this Redis, and how to fix it.

Reads the same environment as `hitl run` and checks, one line each: the signing secret, the
bot token (auth.test), its scopes against those the code needs, the clock against Slack's,
every channel, user group and person the policy names, and Redis (version, persistence,
eviction policy, the consumer group). Exit status 1 when any check is an error, else 0.
Nothing is written to Slack or Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.config import ConfigError, Settings, load_settings
from bot.doctor.redis_checks import redis_checks
from bot.doctor.report import Check, Status, as_json, exit_code, text
from bot.doctor.slack_checks import SlackDoctor
from bot.policy import PolicyError
from bot.policy.load import default_text, load_file, load_policy
from bot.policy.model import Policy

__all__ = ["Check", "Status", "doctor", "run_checks"]


def load(settings: Settings) -> tuple[Policy | None, Check]:
    """The policy hitl run would use, and a line saying which (or why it does not load)."""
    try:
        if settings.policy is None:
            return load_policy(default_text(), "built-in default policy"), Check(
                "policy", Status.ok, "the built-in default policy (HITL_POLICY is not set)")
        return load_file(settings.policy), Check("policy", Status.ok, f"{settings.policy} is valid")
    except PolicyError as e:
        return None, Check("policy", Status.error, str(e).replace("\n", " "),
                           "fix the file: hitl policy check shows every problem")


async def run_checks(settings: Settings, *, now: Callable[[], float] = time.time) -> list[Check]:
    """Every check, in order: policy, Slack, Redis."""
    from bot.gateway import web_client

    policy, loaded = load(settings)
    checks = [loaded]
    slack = web_client(settings.slack_bot_token, settings.slack_api_url, retries=True)
    checks += await SlackDoctor(settings, slack, now).run(policy)
    checks += await redis_checks(settings)
    return checks


async def doctor(*, as_json_output: bool = False, out: Callable[[str], None] = print) -> int:
    """The command: print the report (text or JSON); 0 when nothing is an error, else 1."""
    try:
        settings = load_settings()
    except ConfigError as e:
        checks = [Check("config", Status.error, str(e).replace("\n  ", " | "),
                        "set each variable named above (README.md, Configuration)")]
    else:
        checks = await run_checks(settings)
    out(as_json(checks) if as_json_output else text(checks))
    return exit_code(checks)
