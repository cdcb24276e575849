"""Block Kit primitives that enforce Slack's size limits where the block is made.

Callers pass text that is already escaped (mrkdwn) or plain; these helpers only cut it to
the limit of the place it goes, so no builder can produce a block Slack would refuse.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from blocks.text import truncate

SECTION_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
HEADER_MAX = 150
CONTEXT_ELEMENTS_MAX = 10
CONTEXT_TEXT_MAX = 2000
BUTTON_TEXT_MAX = 75
MESSAGE_BLOCKS_MAX = 50
MODAL_BLOCKS_MAX = 100
MODAL_TITLE_MAX = 24
TEXT_INPUT_MAX = 3000
LABEL_MAX = 2000
OPTION_TEXT_MAX = 75
FALLBACK_MAX = 3000
MESSAGE_TEXT_MAX = 11_000
"""The text of all a message's blocks together. Slack refuses a longer message with
`msg_blocks_too_long` (chat.postMessage's reference names the error, not the number; Slack's SDK
maintainers put it at about 12,000 characters: slackapi/bolt-js#2509): 1,000 kept in hand."""
CUT_KEEP = 200
"""`fit_blocks` never cuts a text below this (the card's Details show it whole)."""

Block = dict[str, Any]


BLANK = "(blank)"
"""What a text object says in place of a text that is empty or only spaces (an agent's option
label of spaces, a param named ''): Slack refuses a blank button, option, label or header."""


def _shown(text: str, limit: int) -> str:
    cut = truncate(text, limit)
    return cut if cut.strip() else BLANK


def plain(text: str, limit: int = SECTION_MAX) -> dict[str, Any]:
    """A plain_text object of at most `limit` chars, never blank (plain text never pings or links)."""
    return {"type": "plain_text", "text": _shown(text, limit), "emoji": True}


def mrkdwn(text: str, limit: int = SECTION_MAX) -> dict[str, Any]:
    """A mrkdwn text object of at most `limit` chars, never blank; `text` must already be escaped."""
    return {"type": "mrkdwn", "text": _shown(text, limit)}


def header(text: str) -> Block:
    """A header block (plain text, at most 150 chars)."""
    return {"type": "header", "text": plain(text, HEADER_MAX)}


def section(text: str, *, block_id: str | None = None) -> Block:
    """A mrkdwn section of at most 3000 chars."""
    b: Block = {"type": "section", "text": mrkdwn(text, SECTION_MAX)}
    if block_id:
        b["block_id"] = block_id
    return b


def fields(items: list[str]) -> Block:
    """A section of mrkdwn fields: at most 10, each at most 2000 chars."""
    return {"type": "section", "fields": [mrkdwn(t, FIELD_MAX) for t in items[:FIELDS_MAX]]}


def context(items: list[str]) -> Block:
    """A context block of mrkdwn elements: at most 10, each cut to fit."""
    return {
        "type": "context",
        "elements": [mrkdwn(t, CONTEXT_TEXT_MAX) for t in items[:CONTEXT_ELEMENTS_MAX]],
    }


def divider() -> Block:
    """A divider."""
    return {"type": "divider"}


def button(text: str, action_id: str, value: str, *, style: str | None = None) -> dict[str, Any]:
    """A button with text cut to 75 chars; `value` is a packed payload (already length-checked)."""
    b: dict[str, Any] = {
        "type": "button",
        "text": plain(text, BUTTON_TEXT_MAX),
        "action_id": str(action_id),
        "value": value,
    }
    if style in ("primary", "danger"):
        b["style"] = style
    return b


def option(text: str, value: str) -> dict[str, Any]:
    """An option for selects and radio buttons (text cut to 75 chars)."""
    return {"text": plain(text, OPTION_TEXT_MAX), "value": value}


def input_block(
    block_id: str,
    label: str,
    element: dict[str, Any],
    *,
    optional: bool = False,
    hint: str | None = None,
) -> Block:
    """An input block with a plain-text label (and hint) cut to Slack's limits."""
    b: Block = {
        "type": "input",
        "block_id": str(block_id),
        "label": plain(label, LABEL_MAX),
        "element": element,
        "optional": optional,
    }
    if hint:
        b["hint"] = plain(hint, LABEL_MAX)
    return b


def modal(
    callback_id: str,
    title: str,
    blocks: list[Block],
    *,
    private_metadata: str,
    submit: str | None = None,
    close: str = "Cancel",
) -> dict[str, Any]:
    """A modal view dict: title/submit/close at most 24 chars, at most 100 blocks."""
    v: dict[str, Any] = {
        "type": "modal",
        "callback_id": str(callback_id),
        "title": plain(title, MODAL_TITLE_MAX),
        "close": plain(close, MODAL_TITLE_MAX),
        "private_metadata": private_metadata,
        "blocks": blocks[:MODAL_BLOCKS_MAX],
    }
    if submit:
        v["submit"] = plain(submit, MODAL_TITLE_MAX)
    return v


def _text_objects(node: Any, *, cuttable_only: bool = False, cuttable: bool = False) -> Iterator[dict[str, Any]]:
    """Every text object (`plain_text` / `mrkdwn` with its `text`) in `node`; with
    `cuttable_only`, those of section texts and fields and context elements only (never a
    button's, a header's or an option's: they are short and cutting them changes meaning)."""
    if isinstance(node, list):
        for item in node:
            yield from _text_objects(item, cuttable_only=cuttable_only, cuttable=cuttable)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") in ("plain_text", "mrkdwn") and isinstance(node.get("text"), str):
        if cuttable or not cuttable_only:
            yield node
        return
    kind = node.get("type")
    for key, value in node.items():
        if key == "type":
            continue
        yes = (kind == "section" and key in ("text", "fields")) or (kind == "context" and key == "elements")
        yield from _text_objects(value, cuttable_only=cuttable_only, cuttable=yes)


def text_size(blocks: list[Block]) -> int:
    """The characters of every text object in `blocks` together (what `msg_blocks_too_long`
    counts)."""
    return sum(len(t["text"]) for t in _text_objects(blocks))


def fit_blocks(blocks: list[Block], budget: int = MESSAGE_TEXT_MAX) -> list[Block]:
    """`blocks` with at most `budget` characters of text: the section and context texts longer
    than a common cap are cut to it, the cap as high as the budget allows (never below CUT_KEEP;
    never a button, header or option text); a copy when anything was cut."""
    size = text_size(blocks)
    if size <= budget:
        return blocks
    blocks = copy.deepcopy(blocks)
    cuttable = [t for t in _text_objects(blocks, cuttable_only=True) if len(t["text"]) > CUT_KEEP]
    lengths = [len(t["text"]) for t in cuttable]
    room = budget - (size - sum(lengths))  # what the cuttable texts may take together
    lo, hi = CUT_KEEP, max(lengths, default=CUT_KEEP)
    while lo < hi:  # the highest cap whose texts fit in `room`
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= room:
            lo = mid
        else:
            hi = mid - 1
    for t in cuttable:
        if len(t["text"]) > lo:
            t["text"] = truncate(t["text"], lo) or " "
    return blocks


def fit_reply(text: str, blocks: list[Block]) -> dict[str, Any]:
    """`{"text", "blocks"}` of a reply (a command's, a list) within Slack's limits for one
    message: at most 50 blocks, and the blocks past its text limit left out, whole, with a last
    line saying how many (a closing context line, the reply's footer, is kept)."""
    blocks = blocks[:MESSAGE_BLOCKS_MAX]
    if blocks and text_size(blocks) > MESSAGE_TEXT_MAX:
        footer = blocks[-1:] if blocks[-1].get("type") == "context" else []
        body = blocks[:len(blocks) - len(footer)]
        kept: list[Block] = []
        for b in body[:MESSAGE_BLOCKS_MAX - 2]:
            if text_size([*kept, b, *footer]) > MESSAGE_TEXT_MAX - 200:
                break
            kept.append(b)
        blocks = [*kept, context([f"{len(body) - len(kept)} more part(s) do not fit in one Slack message "
                                  "and are not shown."]), *footer]
    return {"text": text, "blocks": blocks}

