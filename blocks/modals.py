"""Modals opened from a card (reject, edit and approve, answer, reply, resolve, hand back) and
the parsers of their input.

Every parser re-validates what Slack sends (a client can send anything) and returns the
values together with errors keyed by block id, ready for `ack(response_action="errors")`.
Numbers typed into the edit modal keep their type: an int param stays an int. Commas are
accepted only as thousands separators (`1,000` is 1000; `1,5` is refused, not read as 15).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from blocks.escalation import request_title
from blocks.facts import REJECT_REASONS, current_draft, current_params, reject_reasons
from blocks.ids import INPUT_ACTION, BlockId, CallbackId, param_block_id
from blocks.kit import (
    TEXT_INPUT_MAX,
    Block,
    context,
    input_block,
    modal,
    option,
    section,
)
from blocks.payloads import ModalMeta
from blocks.text import clip, fmt_plain, is_money_key, label, number_str, parse_number
from store.bounds import OutOfBounds, check_unicode
from store.models import Record

Errors = dict[str, str]
StateValues = dict[str, dict[str, dict[str, Any]]]

_YES_NO = (("Yes", "true"), ("No", "false"))
MULTILINE_AT = 150
NOT_UNICODE = ("This text holds a broken character (half of an emoji or another symbol, "
               "not valid Unicode); retype or remove it.")
"""The error shown when a text input holds a lone surrogate, which no store can keep."""


class Rejection(NamedTuple):
    """A reviewer's reason for rejecting: a code from REJECT_REASONS and optional free text."""

    code: str
    text: str | None


def reject_modal(record: Record, meta: ModalMeta, *, after_the_fact: bool = False) -> dict[str, Any]:
    """The reject modal: a reason from the taxonomy (required) and free text (optional).

    `after_the_fact`: the action already ran; the person says what was wrong with it."""
    blocks: list[Block] = [
        _about(record, "Flagging" if after_the_fact else "Rejecting"),
        input_block(
            BlockId.reason_code,
            "What was wrong with it?" if after_the_fact else "Why are you rejecting it?",
            {
                "type": "radio_buttons",
                "action_id": INPUT_ACTION,
                "options": [option(label, code) for code, label in reject_reasons(record)],
            },
        ),
        input_block(
            BlockId.reason_text,
            "Details for the agent",
            _text_input(None, multiline=True, placeholder="What should be done instead?"),
            optional=True,
            hint="Required when the reason is Other. The agent receives this text.",
        ),
    ]
    if after_the_fact:
        return modal(CallbackId.review_wrong_modal, "It was wrong", blocks,
                     private_metadata=meta.pack(), submit="Flag it")
    return modal(
        CallbackId.reject_modal,
        "Reject request",
        blocks,
        private_metadata=meta.pack(),
        submit="Reject",
    )


def edit_modal(record: Record, meta: ModalMeta) -> dict[str, Any]:
    """The edit modal: one input per editable param, typed like its current value."""
    blocks: list[Block] = [_about(record, "Editing")]
    current = current_params(record)
    for name, kind in editable_inputs(record).items():
        value = current_draft(record) if name == "draft" else current.get(name)
        if kind == "too_long":
            blocks.append(
                context(
                    [
                        f"*{clip(label(name), 100)}* is too long to edit here "
                        f"({len(str(value)):,} characters); it stays as it is."
                    ]
                )
            )
            continue
        blocks.append(
            input_block(
                param_block_id(name),
                label(name),
                _param_element(name, kind, value),
                optional=kind == "text" and not value,
                hint=_was(record, name),
            )
        )
    blocks.append(context(["Submitting approves the request with these values."]))
    return modal(
        CallbackId.edit_modal,
        "Edit and approve",
        blocks,
        private_metadata=meta.pack(),
        submit="Approve",
    )


def answer_modal(record: Record, meta: ModalMeta) -> dict[str, Any]:
    """The answer modal of a question: one required free-text answer."""
    blocks: list[Block] = [
        _about(record, "Answering"),
        input_block(
            BlockId.answer_text,
            "Your answer",
            _text_input(None, multiline=True),
            hint="The agent receives this text as your answer.",
        ),
    ]
    return modal(
        CallbackId.answer_modal,
        "Answer question",
        blocks,
        private_metadata=meta.pack(),
        submit="Send answer",
    )


def reply_modal(record: Record, meta: ModalMeta) -> dict[str, Any]:
    """Reply to the agent (escalations): a message it receives now; the case stays open."""
    return _text_modal(record, meta, CallbackId.reply_modal, "Reply to agent", "Send",
                       BlockId.reply_text, "Message to the agent",
                       "The agent receives this at once; the case stays open and yours.")


def resolve_modal(record: Record, meta: ModalMeta) -> dict[str, Any]:
    """Resolve the case (escalations): a resolution note; the decision is `resolved`."""
    return _text_modal(record, meta, CallbackId.resolve_modal, "Resolve case", "Resolve",
                       BlockId.resolution_text, "How was it resolved?",
                       "The agent receives this note with the decision `resolved` and "
                       "stops working on the case.")


def hand_back_modal(record: Record, meta: ModalMeta) -> dict[str, Any]:
    """Hand the case back (escalations): instructions the agent continues with."""
    return _text_modal(record, meta, CallbackId.hand_back_modal, "Hand back to agent",
                       "Hand back", BlockId.instructions_text, "Instructions for the agent",
                       "The agent continues the case with these instructions (decision "
                       "`answered`, the text in `answer`).")


def parse_text_value(state_values: StateValues, block_id: str) -> tuple[str, Errors]:
    """The required text of a one-input modal (reply, resolve, hand back), and errors."""
    text = (_typed(state_values, block_id) or "").strip()
    if not text:
        return "", {block_id: "Write something for the agent."}
    if error := _text_error(text):
        return text, {block_id: error}
    return text, {}


def _text_modal(record: Record, meta: ModalMeta, callback_id: str, title: str, submit: str,
                block_id: str, label: str, hint: str) -> dict[str, Any]:
    blocks: list[Block] = [
        _about(record, "About"),
        input_block(block_id, label, _text_input(None, multiline=True), hint=hint),
    ]
    return modal(callback_id, title, blocks, private_metadata=meta.pack(), submit=submit)


def editable_inputs(record: Record) -> dict[str, str]:
    """Editable param name -> input kind (`int`, `float`, `bool`, `text`, `draft`, `too_long`)."""
    current = current_params(record)
    out: dict[str, str] = {}
    for name in record.request.editable:
        value = current_draft(record) if name == "draft" else current.get(name)
        if isinstance(value, bool):
            out[name] = "bool"
        elif isinstance(value, int):
            out[name] = "int"
        elif isinstance(value, float):
            out[name] = "float"
        elif value is not None and len(str(value)) > TEXT_INPUT_MAX:
            out[name] = "too_long"
        else:
            out[name] = "draft" if name == "draft" else "text"
    return out


def parse_edit_values(record: Record, state_values: StateValues) -> tuple[dict[str, Any], Errors]:
    """Editable params typed like the originals (an int stays an int), and errors by block id."""
    current = current_params(record)
    values: dict[str, Any] = {}
    errors: Errors = {}
    for name, kind in editable_inputs(record).items():
        if kind == "too_long":
            continue
        bid = param_block_id(name)
        element = state_values.get(bid, {}).get(INPUT_ACTION)
        if element is None:
            errors[bid] = "This field is missing; close the form and try again."
            continue
        original = current_draft(record) if name == "draft" else current.get(name)
        try:
            values[name] = _parse_param(name, kind, original, element)
        except ValueError as e:
            errors[bid] = str(e)
    return values, errors


def parse_reject_values(state_values: StateValues, offered: list[str] | None = None
                        ) -> tuple[Rejection, Errors]:
    """The rejection (code, text) from the reject modal, and errors by block id; `offered`
    are the codes the modal showed (a request's own reasons), else the taxonomy's."""
    errors: Errors = {}
    code = _selected(state_values, BlockId.reason_code) or ""
    if code not in (offered or dict(REJECT_REASONS)) or _text_error(code):
        errors[BlockId.reason_code] = "Choose a reason."
    text = (_typed(state_values, BlockId.reason_text) or "").strip()
    if code == "other" and not text:
        errors[BlockId.reason_text] = "Say why, so the agent knows what was wrong."
    elif error := _text_error(text):
        errors[BlockId.reason_text] = error
    return Rejection(code, text or None), errors


def offered_reasons(view_blocks: list[dict[str, Any]]) -> list[str]:
    """The reason codes a submitted reject modal offered (Slack sends its blocks back)."""
    for block in view_blocks:
        if block.get("block_id") == BlockId.reason_code:
            return [str(o.get("value")) for o in (block.get("element") or {}).get("options") or []]
    return []


def parse_answer_values(state_values: StateValues) -> tuple[str, Errors]:
    """The answer text from the answer modal (required, stripped), and errors by block id."""
    text = (_typed(state_values, BlockId.answer_text) or "").strip()
    if not text:
        return "", {BlockId.answer_text: "Write an answer."}
    if error := _text_error(text):
        return text, {BlockId.answer_text: error}
    return text, {}


def _about(record: Record, verb: str) -> Block:
    r = record.request
    return section(
        f"{verb} *{clip(r.action, 100)}* from *{clip(r.agent, 100)}* "
        f"({request_title(record).lower()}):\n{clip(r.summary, 600)}"
    )


def _was(record: Record, name: str) -> str | None:
    change = record.changes.get(name)
    if change is None:
        return None
    return f"The agent proposed: {fmt_plain(change.before, key=name, limit=150)}"


def _text_input(
    value: str | None, *, multiline: bool, placeholder: str | None = None
) -> dict[str, Any]:
    el: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": INPUT_ACTION,
        "multiline": multiline,
        "max_length": TEXT_INPUT_MAX,
    }
    if value:
        el["initial_value"] = value
    if placeholder:
        el["placeholder"] = {"type": "plain_text", "text": placeholder}
    return el


def _param_element(name: str, kind: str, value: Any) -> dict[str, Any]:
    if kind == "bool":
        opts = [option(label, v) for label, v in _YES_NO]
        return {
            "type": "radio_buttons",
            "action_id": INPUT_ACTION,
            "options": opts,
            "initial_option": opts[0] if value else opts[1],
        }
    if kind in ("int", "float"):
        el: dict[str, Any] = {
            "type": "number_input",
            "action_id": INPUT_ACTION,
            "is_decimal_allowed": kind == "float",
        }
        if math.isfinite(value):
            el["initial_value"] = number_str(value)
        if is_money_key(name) and value >= 0:
            el["min_value"] = "0"
        return el
    text = "" if value is None else str(value)
    multiline = kind == "draft" or len(text) > MULTILINE_AT or "\n" in text
    return _text_input(text, multiline=multiline)


def _parse_param(name: str, kind: str, original: Any, element: dict[str, Any]) -> Any:
    if kind == "bool":
        chosen = (element.get("selected_option") or {}).get("value")
        if chosen not in ("true", "false"):
            raise ValueError("Choose yes or no.")
        return chosen == "true"
    if kind in ("int", "float"):
        raw = element.get("value")
        if isinstance(raw, str) and isinstance(original, int | float) and math.isfinite(original) \
                and raw.strip() == number_str(original):
            return original  # the value the form filled in, untouched: no change, whatever its length
        number = parse_number(raw, whole=kind == "int")
        if is_money_key(name) and original >= 0 and number < 0:
            raise ValueError("Enter an amount of 0 or more.")
        return number
    text = element.get("value") or ""
    if not isinstance(text, str):
        raise ValueError("Enter text.")
    if error := _text_error(text):
        raise ValueError(error)
    if not text.strip():
        if original:
            raise ValueError("This can't be empty.")
        return original  # it was empty (or null) and stays so
    return text


def _text_error(text: str) -> str | None:
    """What is wrong with a typed text (too long, or not Unicode: a lone surrogate), else None."""
    if len(text) > TEXT_INPUT_MAX:
        return f"Keep it under {TEXT_INPUT_MAX:,} characters."
    try:
        check_unicode(text)
    except OutOfBounds:
        return NOT_UNICODE
    return None


def _selected(state_values: StateValues, block_id: str) -> str | None:
    element = state_values.get(block_id, {}).get(INPUT_ACTION) or {}
    chosen = element.get("selected_option") or {}
    value = chosen.get("value")
    return value if isinstance(value, str) else None


def _typed(state_values: StateValues, block_id: str) -> str | None:
    element = state_values.get(block_id, {}).get(INPUT_ACTION) or {}
    value = element.get("value")
    return value if isinstance(value, str) else None
