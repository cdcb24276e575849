"""Interaction payloads shaped exactly as Slack sends them; pure functions of the workspace."""

from __future__ import annotations

from typing import Any

from emulator.common import APP_ID, BOT_USER_ID, JSON, TEAM_DOMAIN, TEAM_ID
from emulator.state import User

TEXT_INPUTS = ("plain_text_input", "email_text_input", "url_text_input", "number_input")
ONE_OPTION = ("static_select", "external_select", "radio_buttons", "overflow")
MANY_OPTIONS = ("checkboxes", "multi_static_select", "multi_external_select")
# element type -> (state key, initial_* key) for elements holding ids, dates or times
SELECTED = {
    "users_select": ("selected_user", "initial_user"),
    "multi_users_select": ("selected_users", "initial_users"),
    "conversations_select": ("selected_conversation", "initial_conversation"),
    "multi_conversations_select": ("selected_conversations", "initial_conversations"),
    "channels_select": ("selected_channel", "initial_channel"),
    "multi_channels_select": ("selected_channels", "initial_channels"),
    "datepicker": ("selected_date", "initial_date"),
    "timepicker": ("selected_time", "initial_time"),
    "datetimepicker": ("selected_date_time", "initial_date_time"),
}


class InteractionError(Exception):
    """The simulated person cannot do this (no such button, view closed, bad option...)."""


def team(user: User | None = None) -> JSON:
    """The `team` of a payload: the clicking person's own workspace (ours unless a guest's)."""
    if user is not None and user.team_id != TEAM_ID:
        return {"id": user.team_id, "domain": user.team_id.lower()}
    return {"id": TEAM_ID, "domain": TEAM_DOMAIN}


def user_obj(user: User) -> JSON:
    out: JSON = {"id": user.id, "username": user.name, "name": user.name, "team_id": user.team_id}
    if user.enterprise_id:
        out["enterprise_id"] = user.enterprise_id
    return out


def element_blocks(blocks: list[JSON]) -> list[tuple[JSON, JSON]]:
    """(block, element) for every interactive element, in order."""
    out: list[tuple[JSON, JSON]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "actions":
            out += [(block, el) for el in block.get("elements") or []]
        elif kind == "section" and isinstance(block.get("accessory"), dict):
            out.append((block, block["accessory"]))
        elif kind == "input" and isinstance(block.get("element"), dict):
            out.append((block, block["element"]))
    return out


def find_element(blocks: list[JSON], action_id: str, block_id: str | None) -> tuple[JSON, JSON]:
    for block, el in element_blocks(blocks):
        if el.get("action_id") == action_id and block_id in (None, block.get("block_id")):
            return block, el
    known = [el.get("action_id") for _, el in element_blocks(blocks)]
    raise InteractionError(
        f"no element with action_id {action_id!r}"
        f"{f' in block {block_id!r}' if block_id else ''}; present: {known}"
    )


def _options(el: JSON) -> list[JSON]:
    opts = list(el.get("options") or [])
    for group in el.get("option_groups") or []:
        opts += group.get("options") or []
    return opts


def option_for(el: JSON, value: Any) -> JSON:
    """The option object Slack sends for a chosen value. A value carrying data after a `|`
    (`approve|<mark>`) is also chosen by its first part, as a person picks it by what it says."""
    if el.get("type", "").endswith("external_select"):
        return {"text": {"type": "plain_text", "text": str(value)}, "value": str(value)}
    options = _options(el)
    for opt in [o for o in options if o.get("value") == value] or [
            o for o in options if str(o.get("value", "")).partition("|")[0] == value]:
        return {k: opt[k] for k in ("text", "value", "description") if k in opt}
    raise InteractionError(
        f"{el.get('action_id')!r} has no option with value {value!r}; "
        f"options: {[o.get('value') for o in _options(el)]}"
    )


def initial_raw(el: JSON) -> Any:
    """What the element holds before the person touches it."""
    kind = el.get("type", "")
    if kind in TEXT_INPUTS:
        return el.get("initial_value")
    if kind in ONE_OPTION:
        opt = el.get("initial_option")
        return opt.get("value") if isinstance(opt, dict) else None
    if kind in MANY_OPTIONS:
        return [o.get("value") for o in el.get("initial_options") or []]
    if kind in SELECTED:
        return el.get(SELECTED[kind][1])
    return None


def element_state(el: JSON, raw: Any) -> JSON:
    """The typed `state.values[block][action]` entry for `raw` (a value, option value or list)."""
    kind = str(el.get("type", ""))
    out: JSON = {"type": kind}
    if kind in TEXT_INPUTS or kind == "rich_text_input":
        out["value"] = None if raw is None or raw == "" else str(raw)
    elif kind in ONE_OPTION:
        out["selected_option"] = None if raw is None else option_for(el, raw)
    elif kind in MANY_OPTIONS:
        out["selected_options"] = [option_for(el, v) for v in raw or []]
    elif kind in SELECTED:
        out[SELECTED[kind][0]] = raw
    else:
        out["value"] = raw
    return out


def state_values(blocks: list[JSON], values: dict[str, dict[str, Any]]) -> JSON:
    """`view.state.values` for every input block: given values, else the elements' initial ones."""
    for block_id, actions in values.items():
        for action_id in actions:
            _, el = find_element(blocks, action_id, block_id)
    out: JSON = {}
    for block in blocks:
        if block.get("type") != "input" or not isinstance(block.get("element"), dict):
            continue
        el = block["element"]
        given = values.get(block["block_id"], {})
        raw = given[el["action_id"]] if el["action_id"] in given else initial_raw(el)
        out[block["block_id"]] = {el["action_id"]: element_state(el, raw)}
    return out


def action(block: JSON, el: JSON, value: Any, action_ts: str) -> JSON:
    """One entry of a block_actions payload's `actions`."""
    kind = el.get("type", "")
    out: JSON = {
        "action_id": el.get("action_id"),
        "block_id": block.get("block_id"),
        "type": kind,
        "action_ts": action_ts,
    }
    if kind == "button":
        out["text"] = el.get("text")
        if value is not None or "value" in el:
            out["value"] = value if value is not None else el.get("value")
        if "style" in el:
            out["style"] = el["style"]
        return out
    if value is None:
        raise InteractionError(f"choose a value for the {kind} {el.get('action_id')!r}")
    state = element_state(el, value)
    state.pop("type")
    out.update(state)
    if "placeholder" in el:
        out["placeholder"] = el["placeholder"]
    return out


def envelope(kind: str, user: User, trigger_id: str, token: str) -> JSON:
    """The fields every interaction payload shares."""
    return {
        "type": kind,
        "user": user_obj(user),
        "api_app_id": APP_ID,
        "token": token,
        "trigger_id": trigger_id,
        "team": team(user),
        "enterprise": {"id": user.enterprise_id, "name": user.enterprise_id} if user.enterprise_id else None,
        "is_enterprise_install": False,
    }


def app_home_opened(
    user_id: str, channel: str, view: JSON | None, token: str, event_id: str, now: float
) -> JSON:
    event: JSON = {
        "type": "app_home_opened",
        "user": user_id,
        "channel": channel,
        "tab": "home",
        "event_ts": f"{now:.6f}",
    }
    if view is not None:
        event["view"] = view
    return {
        "token": token,
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(now),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }
