"""Only people of our own organisation act: the one check every click, form and command
passes before any listener runs (a Bolt middleware).

"Ours" is the workspace the bot is installed in, or its Enterprise Grid organisation (from
`auth.test`, which Bolt's authorization ran), plus the teams the policy's `external_teams`
names. Anyone else (a guest company in a Slack Connect channel) is told why in an ephemeral
reply, the refusal is audited, and nothing changes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncBoltContext
from slack_bolt.response import BoltResponse

from blocks.messages import refusal_message
from blocks.payloads import ButtonValue, ModalMeta, PayloadError
from handlers.deps import deps
from store.errors import NotAllowed
from store.models import utcnow

log = logging.getLogger("hitl.org")

ACTING = ("block_actions", "view_submission", "interactive_message", "shortcut", "message_action")


def clicker(body: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(user id, their own team id, their organisation id) of whoever sent this payload.

    The person's own team is `user.team_id`; in an Enterprise Grid Slack puts the id of their
    organisation there instead (E…), which is then their organisation. The payload's `enterprise` is taken as theirs only
    when the payload's `team` is their team too (in a shared channel it may describe the host
    organisation instead, which would let a guest pass for one of ours)."""
    user: dict[str, Any] = body["user"] if isinstance(body.get("user"), dict) else {}
    user_id = str(user.get("id") or body.get("user_id") or "")
    payload_team = _id(body.get("team")) or body.get("team_id")
    team = user.get("team_id") or body.get("user_team_id") or payload_team
    enterprise = user.get("enterprise_id")
    if not enterprise and isinstance(team, str) and team.startswith("E"):
        # in an Enterprise Grid Slack gives `user.team_id` as the person's organisation (E…)
        enterprise = team
    if not enterprise and team == payload_team:
        enterprise = _id(body.get("enterprise")) or body.get("enterprise_id")
    return user_id, (str(team) if team else None), (str(enterprise) if enterprise else None)


def _id(obj: Any) -> Any:
    return obj.get("id") if isinstance(obj, dict) else None


def is_ours(team: str | None, enterprise: str | None, own_team: str | None, own_enterprise: str | None,
            external: frozenset[str]) -> bool:
    """Whether someone of `team` (in `enterprise`) may act here."""
    if team is not None and (team == own_team or team in external):
        return True
    return enterprise is not None and (enterprise == own_enterprise or enterprise in external)


def _request_id(body: dict[str, Any]) -> str | None:
    """The request a refused payload was about, when it names one (for its audit trail)."""
    raw = [a.get("value") for a in body.get("actions") or [] if isinstance(a, dict)]
    raw.append((body.get("view") or {}).get("private_metadata"))
    for value in raw:
        for model in (ButtonValue, ModalMeta):
            try:
                return model.unpack(value).r
            except (PayloadError, TypeError, ValueError, AttributeError):
                continue
    return None


def _answer(body: dict[str, Any] | None = None) -> BoltResponse:
    """The acknowledgement Slack gets in place of a listener's."""
    if body is None:
        return BoltResponse(status=200, body="")
    return BoltResponse(status=200, body=json.dumps(body), headers={"content-type": "application/json"})


async def only_our_people(body: dict[str, Any], context: AsyncBoltContext,
                          next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
    kind = str(body.get("type") or ("slash_command" if "command" in body else ""))
    if kind not in ACTING and kind != "slash_command":
        await next()
        return None
    user_id, team, enterprise = clicker(body)
    auth = context.authorize_result
    own_team = auth.team_id if auth else None
    own_enterprise = auth.enterprise_id if auth else None
    d = deps(context)
    if is_ours(team, enterprise, own_team, own_enterprise, d.external_teams()):
        await next()
        return None
    refusal = refusal_message(NotAllowed("outsider", "not of this organisation"))
    detail = {"team": team, "enterprise": enterprise, "payload": kind}
    rid = _request_id(body)
    if rid:
        await d.store.audit(rid, "outsider_refused", user_id, detail, utcnow())
    else:
        await d.store.audit_system("outsider_refused", user_id, detail, utcnow())
    log.warning("org: %s of team %s refused (%s)", user_id, team, kind)
    if kind == "slash_command":
        return _answer({"response_type": "ephemeral", **refusal})
    respond = context.respond
    channel = _id(body.get("channel")) or (body.get("container") or {}).get("channel_id") or _modal_channel(body)
    if respond is not None and body.get("response_url"):
        await respond(**refusal, response_type="ephemeral", replace_original=False)
    elif channel and context.client is not None:
        await context.client.chat_postEphemeral(channel=channel, user=user_id, **refusal)
    return _answer({"response_action": "clear"} if kind == "view_submission" else None)


def _modal_channel(body: dict[str, Any]) -> str | None:
    try:
        return ModalMeta.unpack((body.get("view") or {}).get("private_metadata")).c
    except (PayloadError, TypeError, ValueError):
        return None
