"""The Slack half of `hitl doctor`: the token, its scopes, the clock, and what the policy names.

Every call is a read (auth.test, conversations.list/info, usergroups.users.list, users.info);
nothing is posted or joined.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.doctor.needs import called_methods, missing_scopes
from bot.doctor.report import Check, Status
from bot.policy.model import Policy

OK, WARN, ERROR, SKIP = Status.ok, Status.warn, Status.error, Status.skip
SKEW_WARN_S = 10
# Bolt refuses a signed request whose timestamp is more than 5 minutes from its clock.
SKEW_ERROR_S = 120
REINSTALL = ("under OAuth & Permissions > Bot Token Scopes (manifest.yml lists every "
             "scope hitl asks for), then reinstall the app to the workspace")


def header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    """A response header, case-insensitively (aiohttp and urllib spell them differently)."""
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list) else value)
    return None


def signing_secret(settings: Settings) -> Check:
    if settings.socket_mode:
        return Check("config.signing_secret", OK, "Socket Mode (SLACK_APP_TOKEN is set): "
                     "Slack's requests arrive over the socket, no signing secret is needed")
    secret = settings.slack_signing_secret or ""
    if not secret:
        return Check("config.signing_secret", ERROR, "SLACK_SIGNING_SECRET is not set: every "
                     "request from Slack would be refused",
                     "copy Basic Information > App Credentials > Signing Secret into "
                     "SLACK_SIGNING_SECRET (or use Socket Mode with SLACK_APP_TOKEN)")
    if len(secret) != 32 or any(c not in "0123456789abcdef" for c in secret):
        return Check("config.signing_secret", WARN, "SLACK_SIGNING_SECRET is set but is not "
                     "32 hex characters, as Slack's signing secrets are",
                     "copy it again from Basic Information > App Credentials > Signing Secret")
    return Check("config.signing_secret", OK, "SLACK_SIGNING_SECRET is set (it cannot be "
                 "verified from here: a wrong one shows as 401 answers to Slack's requests)")


def clock(date: str | None, now: float) -> Check:
    """Skew between this machine and Slack, from the Date header of Slack's answer."""
    if not date:
        return Check("slack.clock", WARN, "Slack's answer had no Date header: clock skew unknown",
                     "check the machine's clock is synchronised (timedatectl status)")
    try:
        slack_now = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return Check("slack.clock", WARN, f"unreadable Date header {date!r}: clock skew unknown")
    skew = now - slack_now
    detail = f"this machine is {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} Slack"
    fix = ("synchronise the clock (timedatectl set-ntp true, or chrony/ntpd): Bolt refuses "
           "Slack's requests more than 5 minutes off, and reminders, escalation and expiry run "
           "by this clock")
    if abs(skew) > SKEW_ERROR_S:
        return Check("slack.clock", ERROR, detail, fix)
    if abs(skew) > SKEW_WARN_S:
        return Check("slack.clock", WARN, detail, fix)
    return Check("slack.clock", OK, f"{detail} (Date header, 1 s resolution)")


def scopes(granted_header: str | None) -> list[Check]:
    if granted_header is None:
        return [Check("slack.scopes", WARN, "Slack's answer had no x-oauth-scopes header: the "
                      "token's scopes are unknown (a proxy between hitl and Slack may drop it)",
                      "compare OAuth & Permissions > Bot Token Scopes with manifest.yml")]
    granted = {s.strip() for s in granted_header.split(",") if s.strip()}
    missing = missing_scopes(granted)
    if not missing:
        return [Check("slack.scopes", OK, f"the token has every scope the {len(called_methods())} "
                      f"Web API methods hitl calls need ({len(granted)} granted)")]
    return [Check("slack.scopes", ERROR,
                  f"missing {' or '.join(accepted)}, needed by {', '.join(users)}",
                  f"add {'one of them' if len(accepted) > 1 else 'it'} {REINSTALL}")
            for accepted, users in missing]


def _api_error(e: SlackApiError) -> str:
    return str(e.response.get("error") or e.response.status_code)


class SlackDoctor:
    """Runs the Slack checks with one client; `checks` collects the lines."""

    def __init__(self, settings: Settings, slack: AsyncWebClient,
                 now: Callable[[], float] = time.time) -> None:
        self.settings, self.slack, self.now = settings, slack, now
        self.checks: list[Check] = []
        self.granted: set[str] | None = None
        self.bot_user = ""

    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)

    async def run(self, policy: Policy | None) -> list[Check]:
        """Config, auth.test, clock, scopes, then each channel, user group and person in `policy`."""
        self.add(signing_secret(self.settings))
        if not self.settings.slack_bot_token:
            self.add(Check("slack.auth", ERROR, "SLACK_BOT_TOKEN is not set",
                           "set it to the Bot User OAuth Token (xoxb-...) from OAuth & Permissions"))
            return self.checks
        if not await self.auth():
            return self.checks
        if policy is None:
            self.add(Check("slack.policy", SKIP, "the policy did not load: its channels, user "
                           "groups and admins were not checked"))
            return self.checks
        from bot.doctor.workspace import check_policy  # the policy's channels, groups, people

        self.add(*await check_policy(self, policy))
        return self.checks

    async def auth(self) -> bool:
        url = self.settings.slack_api_url
        try:
            resp = await self.slack.auth_test()
        except SlackApiError as e:
            error = _api_error(e)
            self.add(Check("slack.auth", ERROR, f"auth.test refused the token: {error}",
                           "copy the Bot User OAuth Token (xoxb-...) again from OAuth & Permissions; "
                           "reinstall the app if it was revoked" if error in
                           ("invalid_auth", "token_revoked", "account_inactive", "not_authed")
                           else f"see https://api.slack.com/methods/auth.test for {error!r}"))
            return False
        except (ClientError, OSError, TimeoutError) as e:
            self.add(Check("slack.auth", ERROR, f"cannot reach Slack at {url}: {e or type(e).__name__}",
                           "check the network, proxy and SLACK_API_URL (default https://slack.com/api/)"))
            return False
        self.bot_user = str(resp.get("user_id") or "")
        self.add(Check("slack.auth", OK, f"the token works: bot @{resp.get('user')} ({self.bot_user}) "
                       f"in {resp.get('team')!r} ({resp.get('team_id')}) via {url}"))
        self.add(clock(header(resp.headers, "Date"), self.now()))
        granted = header(resp.headers, "x-oauth-scopes")
        self.granted = None if granted is None else {s.strip() for s in granted.split(",")}
        self.add(*scopes(granted))
        return True
