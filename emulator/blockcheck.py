"""Block Kit validation: slack_sdk's model checks plus the limits Slack enforces that it does not
(sizes of messages and views, ids, blank required text, options, a text input's initial value).
tests/blockkit_limits.py holds the full list the builders' property tests use."""

from __future__ import annotations

import copy
import secrets
import string
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELD = 2000
MAX_SECTION_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_INPUT_LENGTH = 3000
MAX_BUTTON_VALUE = 2000
MAX_BUTTON_TEXT = 75
MAX_MODAL_TITLE = 24
MAX_PRIVATE_METADATA = 3000
MAX_ID = 255
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
OVERFLOW_OPTIONS = (2, 5)
MAX_MESSAGE_TEXT = 12_000
"""The text of all a message's blocks together: more is `msg_blocks_too_long` (Slack names the
error in chat.postMessage's reference, not the number; its SDK maintainers put it at about
12,000 characters: slackapi/bolt-js#2509)."""


@dataclass
class BlockError:
    """One rejected set of blocks: where it came from and what Slack said."""

    method: str
    errors: list[str]
    args: dict[str, Any]


def _text(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, dict) else ""


def _elements(block: dict[str, Any]) -> list[dict[str, Any]]:
    """The interactive elements of one block."""
    kind = block.get("type")
    if kind == "actions":
        return [e for e in block.get("elements") or [] if isinstance(e, dict)]
    if kind == "section" and isinstance(block.get("accessory"), dict):
        return [block["accessory"]]
    if kind == "input" and isinstance(block.get("element"), dict):
        return [block["element"]]
    return []


def _blank(obj: Any) -> bool:
    """A text Slack refuses as empty: missing, empty, or only spaces."""
    return not _text(obj).strip()


def _check_text_objects(node: Any, where: str) -> list[str]:
    """`emoji` is a plain_text field only: Slack refuses a mrkdwn text object carrying it."""
    if isinstance(node, list):
        return [e for i, n in enumerate(node) for e in _check_text_objects(n, f"{where}/{i}")]
    if not isinstance(node, dict):
        return []
    if node.get("type") == "mrkdwn" and "emoji" in node:
        return [f"emoji is only allowed on plain_text [json-pointer:{where}/emoji]"]
    return [e for k, v in node.items() for e in _check_text_objects(v, f"{where}/{k}")]


def _check_options(el: dict[str, Any], where: str) -> list[str]:
    errors: list[str] = []
    raw = el.get("options")
    options: list[Any] = raw if isinstance(raw, list) else []
    if el.get("type") == "overflow" and not OVERFLOW_OPTIONS[0] <= len(options) <= OVERFLOW_OPTIONS[1]:
        errors.append(f"an overflow menu takes {OVERFLOW_OPTIONS[0]} to {OVERFLOW_OPTIONS[1]} options "
                      f"[json-pointer:{where}/options]")
    for j, o in enumerate(options):
        if not isinstance(o, dict):
            continue
        if _blank(o.get("text")):
            errors.append(f"must be more than 0 characters [json-pointer:{where}/options/{j}/text/text]")
        elif len(_text(o.get("text"))) > MAX_OPTION_TEXT:
            errors.append(f"option text longer than {MAX_OPTION_TEXT} [json-pointer:{where}/options/{j}/text]")
        if len(str(o.get("value") or "")) > MAX_OPTION_VALUE:
            errors.append(f"option value longer than {MAX_OPTION_VALUE} [json-pointer:{where}/options/{j}/value]")
    return errors


def _check_element(el: dict[str, Any], where: str) -> list[str]:
    errors: list[str] = []
    kind = el.get("type")
    errors += _check_options(el, where)
    if len(str(el.get("action_id", ""))) > MAX_ID:
        errors.append(f"action_id longer than {MAX_ID} [json-pointer:{where}/action_id]")
    if kind == "button":
        if len(str(el.get("value", ""))) > MAX_BUTTON_VALUE:
            errors.append(
                f"button value longer than {MAX_BUTTON_VALUE} [json-pointer:{where}/value]"
            )
        if len(_text(el.get("text"))) > MAX_BUTTON_TEXT:
            errors.append(f"button text longer than {MAX_BUTTON_TEXT} [json-pointer:{where}/text]")
        if _blank(el.get("text")):
            errors.append(f"must be more than 0 characters [json-pointer:{where}/text/text]")
    if kind == "plain_text_input":
        for key in ("max_length", "min_length"):
            if key in el and not (isinstance(el[key], int) and 0 <= el[key] <= MAX_INPUT_LENGTH):
                errors.append(f"{key} must be 0..{MAX_INPUT_LENGTH} [json-pointer:{where}/{key}]")
        most: int = el["max_length"] if isinstance(el.get("max_length"), int) else MAX_INPUT_LENGTH
        if len(str(el.get("initial_value") or "")) > most:
            errors.append(f"initial_value longer than max_length [json-pointer:{where}/initial_value]")
    return errors


def _check_block(block: Any, i: int, seen_ids: set[str]) -> list[str]:
    where = f"/blocks/{i}"
    if not isinstance(block, dict):
        return [f"block is not an object [json-pointer:{where}]"]
    errors: list[str] = _check_text_objects(block, where)
    try:
        parsed = Block.parse(block)
    except (TypeError, ValueError, KeyError, AttributeError, SlackObjectFormationError) as e:
        return [*errors, f"invalid block: {e} [json-pointer:{where}]"]
    if parsed is None:
        return [f"unsupported block type {block.get('type')!r} [json-pointer:{where}]"]
    try:
        parsed.to_dict()
    except SlackObjectFormationError as e:
        errors.append(f"{e} [json-pointer:{where}]")
    kind = block.get("type")
    if kind == "header" and (not isinstance(block.get("text"), dict) or block["text"].get("type") != "plain_text"):
        errors.append(f"a header's text must be plain_text [json-pointer:{where}/text]")
    if kind == "header" and _blank(block.get("text")):
        errors.append(f"must be more than 0 characters [json-pointer:{where}/text/text]")
    if kind == "input" and _blank(block.get("label")):
        errors.append(f"must be more than 0 characters [json-pointer:{where}/label/text]")
    block_id = block.get("block_id")
    if block_id is not None:
        if len(str(block_id)) > MAX_ID:
            errors.append(f"block_id longer than {MAX_ID} [json-pointer:{where}/block_id]")
        if block_id in seen_ids:
            errors.append(f"duplicate block_id {block_id!r} [json-pointer:{where}/block_id]")
        seen_ids.add(str(block_id))
    if kind == "section":
        if len(_text(block.get("text"))) > MAX_SECTION_TEXT:
            errors.append(
                f"section text longer than {MAX_SECTION_TEXT} [json-pointer:{where}/text]"
            )
        fields = block.get("fields") or []
        if len(fields) > MAX_SECTION_FIELDS:
            errors.append(f"more than {MAX_SECTION_FIELDS} fields [json-pointer:{where}/fields]")
        for j, f in enumerate(fields):
            if len(_text(f)) > MAX_SECTION_FIELD:
                errors.append(
                    f"field longer than {MAX_SECTION_FIELD} [json-pointer:{where}/fields/{j}]"
                )
    if kind == "header" and len(_text(block.get("text"))) > MAX_HEADER_TEXT:
        errors.append(f"header text longer than {MAX_HEADER_TEXT} [json-pointer:{where}/text]")
    action_ids: set[str] = set()
    for j, el in enumerate(_elements(block)):
        errors += _check_element(el, f"{where}/elements/{j}")
        aid = el.get("action_id")
        if aid is not None:
            if aid in action_ids:
                errors.append(f"duplicate action_id {aid!r} [json-pointer:{where}]")
            action_ids.add(str(aid))
    return errors


def check_blocks(blocks: Any, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Every problem Slack would report for this list of blocks (empty if valid)."""
    if not isinstance(blocks, list):
        return ["blocks must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"no more than {max_blocks} items allowed [json-pointer:/blocks]")
    seen: set[str] = set()
    for i, block in enumerate(blocks):
        errors += _check_block(block, i, seen)
    return errors


def check_view(view: Any) -> list[str]:
    """Every problem Slack would report for a modal or Home tab view."""
    if not isinstance(view, dict):
        return ["view must be an object [json-pointer:/view]"]
    kind = view.get("type")
    if kind not in ("modal", "home"):
        return [f"unsupported view type {kind!r} [json-pointer:/view/type]"]
    errors = check_blocks(view.get("blocks", []), MAX_VIEW_BLOCKS)
    if len(str(view.get("private_metadata") or "")) > MAX_PRIVATE_METADATA:
        errors.append(
            f"private_metadata longer than {MAX_PRIVATE_METADATA} [json-pointer:/view/private_metadata]"
        )
    for key in ("callback_id", "external_id"):
        if len(str(view.get(key) or "")) > MAX_ID:
            errors.append(f"{key} longer than {MAX_ID} [json-pointer:/view/{key}]")
    if kind == "modal":
        title = view.get("title")
        if _blank(title):
            errors.append("modal needs a title [json-pointer:/view/title]")
        for key in ("title", "submit", "close"):
            if len(_text(view.get(key))) > MAX_MODAL_TITLE:
                errors.append(f"{key} longer than {MAX_MODAL_TITLE} [json-pointer:/view/{key}]")
        has_input = any(
            isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or []
        )
        if has_input and not view.get("submit"):
            errors.append("a modal with input blocks needs submit [json-pointer:/view/submit]")
    return errors


def _random_id(n: int = 5) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def with_ids(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of valid blocks with the block_id and action_id Slack fills in when absent."""
    out = copy.deepcopy(blocks)
    for block in out:
        block.setdefault("block_id", _random_id())
        for el in _elements(block):
            el.setdefault("action_id", _random_id())
    return out


def message_text_size(blocks: Any) -> int:
    """The characters of every text object (`plain_text`, `mrkdwn`) in a message's blocks."""
    if isinstance(blocks, list):
        return sum(message_text_size(b) for b in blocks)
    if not isinstance(blocks, dict):
        return 0
    if blocks.get("type") in ("plain_text", "mrkdwn") and isinstance(blocks.get("text"), str):
        return len(blocks["text"])
    return sum(message_text_size(v) for k, v in blocks.items() if k != "type")
