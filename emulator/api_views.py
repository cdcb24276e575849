"""views.open, views.push, views.update and views.publish."""

from __future__ import annotations

from emulator.args import Args, Handler
from emulator.blockcheck import check_view, with_ids
from emulator.common import JSON, SlackError
from emulator.state import Workspace


def view_spec(value: object, kind: str | None = None) -> JSON:
    """A validated view definition (blocks given the ids Slack fills in), or Slack's error."""
    if not isinstance(value, dict):
        raise SlackError(
            "invalid_arguments",
            response_metadata={"messages": ["[ERROR] view must be a JSON object"]},
        )
    errors = check_view(value)
    if kind and value.get("type") != kind:
        errors.append(f"view type must be {kind!r} [json-pointer:/view/type]")
    if errors:
        raise SlackError(
            "invalid_blocks",
            errors=errors,
            response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
        )
    spec = dict(value)
    spec["blocks"] = with_ids(list(value.get("blocks") or []))
    return spec


def _trigger_user(ws: Workspace, a: Args) -> str:
    trigger = a.text("trigger_id") or a.text("interactivity_pointer")
    if not trigger:
        raise SlackError(
            "invalid_arguments",
            response_metadata={"messages": ["[ERROR] missing required field: trigger_id"]},
        )
    return ws.triggers.use(trigger)


def views_open(ws: Workspace, a: Args) -> JSON:
    spec = view_spec(a.data.get("view"), "modal")
    user = _trigger_user(ws, a)
    return {"view": ws.views.open(user, spec).to_slack()}


def views_push(ws: Workspace, a: Args) -> JSON:
    spec = view_spec(a.data.get("view"), "modal")
    user = _trigger_user(ws, a)
    return {"view": ws.views.push(user, spec).to_slack()}


def views_update(ws: Workspace, a: Args) -> JSON:
    if not a.has("view_id") and not a.has("external_id"):
        raise SlackError(
            "invalid_arguments",
            response_metadata={"messages": ["[ERROR] one of view_id or external_id is required"]},
        )
    spec = view_spec(a.data.get("view"))
    view = ws.views.get(a.text("view_id") or None, a.text("external_id") or None)
    if spec.get("type") != view.type:
        raise SlackError(
            "invalid_arguments", response_metadata={"messages": ["[ERROR] view type cannot change"]}
        )
    return {"view": ws.views.update(view, spec, a.text("hash") or None).to_slack()}


def views_publish(ws: Workspace, a: Args) -> JSON:
    user = ws.user(a.text("user_id"))
    spec = view_spec(a.data.get("view"), "home")
    return {"view": ws.views.publish(user.id, spec, a.text("hash") or None).to_slack()}


HANDLERS: dict[str, Handler] = {
    "views.open": views_open,
    "views.push": views_push,
    "views.update": views_update,
    "views.publish": views_publish,
}
