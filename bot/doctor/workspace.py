"""What the policy names, checked in the workspace: channels, user groups and people."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.doctor.report import Check, Status
from bot.policy.model import Policy

if TYPE_CHECKING:
    from bot.doctor.slack_checks import SlackDoctor

OK, WARN, ERROR = Status.ok, Status.warn, Status.error


def policy_names(policy: Policy) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """Channels, user groups, and users (id -> roles) that `policy` names, in order, once each."""
    channels: list[str] = [policy.defaults.channel]
    groups: list[str] = []
    users: dict[str, list[str]] = {}

    def person(uid: str, role: str) -> None:
        roles = users.setdefault(uid, [])
        if role not in roles:
            roles.append(role)

    def approver(a: str, role: str) -> None:
        if a.startswith("S"):
            groups.append(a)
        else:
            person(a, role)

    for a in policy.defaults.approvers:
        approver(a, "approver")
    for name, tier in policy.tiers.items():
        if tier.channel:
            channels.append(tier.channel)
        for a in tier.approvers or []:
            approver(a, f"approver ({name})")
        for level in tier.resolved_escalation(policy.defaults):
            for target in level.notify:
                if target.startswith(("#", "C", "G")):
                    channels.append(target)
                else:
                    approver(target, f"escalation ({name})")
    for uid in policy.admins:
        person(uid, "admin")
    return list(dict.fromkeys(channels)), list(dict.fromkeys(groups)), users


def _error(e: SlackApiError) -> str:
    return str(e.response.get("error") or e.response.status_code)


async def _channel_map(doc: SlackDoctor) -> dict[str, str]:
    """`#name` -> id for every channel the token can list (public, and private ones it is in)."""
    names: dict[str, str] = {}
    cursor = None
    while True:
        resp = await doc.slack.conversations_list(limit=1000, cursor=cursor, exclude_archived=False,
                                                  types="public_channel,private_channel")
        for c in resp["channels"]:
            names["#" + c["name"]] = c["id"]
        cursor = (resp.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return names


async def check_channel(doc: SlackDoctor, channel: str, names: dict[str, str]) -> Check:
    """Exists, not archived, and the bot is in it or may join it."""
    name = f"slack.channel {channel}"
    invite = f"invite the bot: type /invite @hitl in {channel}"
    cid = names.get(channel, channel) if channel.startswith("#") else channel
    if cid.startswith("#"):
        return Check(name, ERROR, f"no channel {channel} that the bot can see (it does not exist, "
                     "or it is private and the bot is not in it)",
                     f"create {channel} and {invite}, or name another channel in the policy")
    try:
        info: dict[str, Any] = (await doc.slack.conversations_info(channel=cid))["channel"]
    except SlackApiError as e:
        return Check(name, ERROR, f"conversations.info({cid}) failed: {_error(e)}",
                     f"check the id in the policy, or {invite}")
    label = f"#{info.get('name', cid)} ({cid})"
    invite = f"invite the bot: type /invite @hitl in #{info.get('name', cid)}"
    if info.get("is_archived"):
        return Check(name, ERROR, f"{label} is archived: cards cannot be posted there",
                     "unarchive it, or name another channel in the policy")
    if info.get("is_member"):
        return Check(name, OK, f"{label} exists and the bot is a member")
    if info.get("is_private"):
        return Check(name, ERROR, f"{label} is private and the bot is not a member", invite)
    if doc.granted is not None and "channels:join" not in doc.granted:
        return Check(name, ERROR, f"{label} is public, the bot is not a member and may not join "
                     "it (no channels:join scope)", f"{invite}, or grant channels:join")
    return Check(name, OK, f"{label} is public; the bot is not a member yet and joins it "
                 "itself before its first post (channels:join)")


async def check_group(doc: SlackDoctor, group: str) -> Check:
    name = f"slack.usergroup {group}"
    try:
        resp = await doc.slack.usergroups_users_list(usergroup=group)
    except SlackApiError as e:
        error = _error(e)
        fix = ("grant usergroups:read (manifest.yml) and reinstall the app" if error == "missing_scope"
               else "check the user group id in the policy (Slack: the group's profile, Copy group ID)")
        return Check(name, ERROR, f"cannot read its members: {error}", fix)
    members = list(resp.get("users") or [])
    if not members:
        return Check(name, ERROR, "the user group has no members: nobody can approve through it",
                     "add people to the group in Slack, or name other approvers in the policy")
    return Check(name, OK, f"readable, {len(members)} members")


async def check_user(doc: SlackDoctor, uid: str, roles: list[str]) -> Check:
    name = f"slack.user {uid}"
    what = ", ".join(roles)
    try:
        user: dict[str, Any] = (await doc.slack.users_info(user=uid))["user"]
    except SlackApiError as e:
        error = _error(e)
        fix = ("grant users:read (manifest.yml) and reinstall the app" if error == "missing_scope"
               else "check the member id in the policy (Slack: the profile's ⋮ menu, Copy member ID)")
        return Check(name, ERROR, f"{what}: users.info failed: {error}", fix)
    label = f"{what} @{user.get('name', uid)}"
    if user.get("deleted"):
        return Check(name, ERROR, f"{label} is deactivated", "name someone else in the policy")
    if user.get("is_bot"):
        return Check(name, ERROR, f"{label} is a bot, not a person", "name a person in the policy")
    return Check(name, OK, f"{label} exists")


async def check_policy(doc: SlackDoctor, policy: Policy) -> list[Check]:
    channels, groups, users = policy_names(policy)
    out: list[Check] = []
    try:
        names = await _channel_map(doc) if any(c.startswith("#") for c in channels) else {}
    except SlackApiError as e:
        names = {}
        out.append(Check("slack.channels", ERROR, f"conversations.list failed: {_error(e)}: "
                         "channel names cannot be resolved", "grant channels:read and groups:read "
                         "(manifest.yml) and reinstall the app"))
    for channel in channels:
        out.append(await check_channel(doc, channel, names))
    for group in groups:
        out.append(await check_group(doc, group))
    for uid, roles in users.items():
        out.append(await check_user(doc, uid, roles))
    if not policy.admins:
        out.append(Check("policy.admins", WARN, "the policy names no admins: nobody may /hitl pause "
                         "or resume", "add `admins: [U...]` to the policy file"))
    return out
