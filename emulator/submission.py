"""Submitting and closing modals: the client-side checks, the payload, the app's response_action."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator import payloads
from emulator.api_views import view_spec
from emulator.blockcheck import BlockError
from emulator.common import JSON, SlackError
from emulator.interactions import VERIFICATION_TOKEN, Interactions
from emulator.transport import Reply
from emulator.views import View

REQUIRED = "Please fill out this field."


@dataclass
class SubmitResult:
    """What the person sees after pressing Submit."""

    reply: Reply | None  # None: the Slack client refused to send (a required field is empty...)
    closed: bool
    errors: dict[str, str] = field(default_factory=dict)
    view: JSON | None = None  # the modal now on top of the person's stack, if any
    problem: str | None = None  # an app mistake Slack would show as a generic error

    @property
    def status(self) -> int:
        return self.reply.status if self.reply else 0


def _empty(state: JSON) -> bool:
    return all(v in (None, "", []) for k, v in state.items() if k != "type")


def client_errors(blocks: list[JSON], state: JSON) -> dict[str, str]:
    """What the Slack client itself refuses before sending: empty required fields, bad numbers."""
    errors: dict[str, str] = {}
    for block in blocks:
        if block.get("type") != "input" or block["block_id"] not in state:
            continue
        el = block["element"]
        entry = state[block["block_id"]][el["action_id"]]
        if _empty(entry):
            if not block.get("optional"):
                errors[block["block_id"]] = REQUIRED
            continue
        value = entry.get("value")
        if el.get("type") == "plain_text_input" and isinstance(value, str):
            if len(value) < int(el.get("min_length", 0)):
                errors[block["block_id"]] = f"Must be at least {el['min_length']} characters"
            elif len(value) > int(el.get("max_length", 3000)):
                errors[block["block_id"]] = (
                    f"Must be at most {el.get('max_length', 3000)} characters"
                )
        if el.get("type") == "number_input" and isinstance(value, str):
            error = _number_error(el, value)
            if error:
                errors[block["block_id"]] = error
    return errors


def _number_error(el: JSON, value: str) -> str | None:
    try:
        number = float(value)
    except ValueError:
        return "Enter a number"
    if not el.get("is_decimal_allowed") and not number.is_integer():
        return "Enter a whole number"
    if "min_value" in el and number < float(el["min_value"]):
        return f"Enter a number of at least {el['min_value']}"
    if "max_value" in el and number > float(el["max_value"]):
        return f"Enter a number of at most {el['max_value']}"
    return None


async def submit_view(
    inter: Interactions, user_id: str, view_id: str, values: dict[str, dict[str, Any]]
) -> SubmitResult:
    """Press Submit with `values` ({block_id: {action_id: raw}}) typed into the modal."""
    view = inter.open_view(user_id, view_id)
    if view.type != "modal" or not view.spec.get("submit"):
        raise payloads.InteractionError(f"view {view_id!r} has no Submit button")
    if inter.ws.views.top(user_id) is not view:
        raise payloads.InteractionError(f"view {view_id!r} is not the modal on top")
    state = payloads.state_values(view.blocks, values)
    view.values = state
    errors = client_errors(view.blocks, state)
    view.errors = errors
    if errors:
        return SubmitResult(None, False, errors, view.to_slack())
    user = inter.user(user_id)
    payload = payloads.envelope(
        "view_submission", user, inter.ws.triggers.issue(user.id), VERIFICATION_TOKEN
    )
    payload.update(view=view.to_slack(), response_urls=[])
    reply = await inter.transport.post_payload("view_submission", payload)
    return _apply(inter, view, reply)


def _top(inter: Interactions, user_id: str) -> JSON | None:
    top = inter.ws.views.top(user_id)
    return top.to_slack() if top else None


def _apply(inter: Interactions, view: View, reply: Reply) -> SubmitResult:
    """Interpret the app's answer to a view_submission the way Slack does."""
    views = inter.ws.views
    if reply.status != 200:
        return SubmitResult(
            reply,
            False,
            {},
            view.to_slack(),
            problem=f"app answered HTTP {reply.status or 'timeout'}",
        )
    body = reply.json()
    if not isinstance(body, dict) or not body.get("response_action"):
        views.close(view)
        return SubmitResult(reply, True, {}, _top(inter, view.user_id))
    action = body["response_action"]
    if action == "errors":
        errors = body.get("errors")
        inputs = {b["block_id"] for b in view.blocks if b.get("type") == "input"}
        if not isinstance(errors, dict) or not errors or not set(errors) <= inputs:
            return SubmitResult(
                reply,
                False,
                {},
                view.to_slack(),
                problem=f"errors must name input blocks {sorted(inputs)}: {errors}",
            )
        view.errors = {str(k): str(v) for k, v in errors.items()}
        return SubmitResult(reply, False, dict(view.errors), view.to_slack())
    if action == "clear":
        views.clear(view.user_id)
        return SubmitResult(reply, True, {}, None)
    if action in ("update", "push"):
        try:
            spec = view_spec(body.get("view"), "modal")
            new = (
                views.update(view, spec, None)
                if action == "update"
                else views.push(view.user_id, spec)
            )
        except SlackError as e:
            errors = list(e.extra.get("errors", []))
            inter.responses.block_errors.append(
                BlockError(f"view_submission:{action}", errors, body)
            )
            problem = f"response_action {action}: {e.error} {e.extra.get('errors', '')}"
            return SubmitResult(reply, False, {}, view.to_slack(), problem=problem)
        return SubmitResult(reply, False, {}, new.to_slack())
    return SubmitResult(
        reply, False, {}, view.to_slack(), problem=f"unknown response_action {action!r}"
    )


async def close_view(inter: Interactions, user_id: str, view_id: str) -> Reply | None:
    """Press the modal's Close (X); `view_closed` reaches the app only with notify_on_close."""
    view = inter.open_view(user_id, view_id)
    cleared = bool(view.spec.get("clear_on_close"))
    if cleared:
        inter.ws.views.clear(user_id)
    else:
        inter.ws.views.close(view)
    if not view.spec.get("notify_on_close"):
        return None
    user = inter.user(user_id)
    payload = {
        "type": "view_closed",
        "team": payloads.team(user),
        "user": payloads.user_obj(user),
        "api_app_id": payloads.APP_ID,
        "token": VERIFICATION_TOKEN,
        "view": view.to_slack(),
        "is_cleared": cleared,
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return await inter.transport.post_payload("view_closed", payload)
