"""A Block Kit validator for tests: every limit hitl's messages, modals and Home views must keep.

Source: Slack's published Block Kit reference (docs.slack.dev/reference/block-kit: blocks, block
elements, composition objects, views; and chat.postMessage for `text` and `msg_blocks_too_long`),
read limit by limit. Where Slack names an error but not its number (`msg_blocks_too_long`) the
number is its SDK maintainers' (about 12,000 characters: slackapi/bolt-js#2509). One rule goes
beyond the published numbers, from Slack's answers to real payloads: a `plain_text` that must be
non-empty (a header, a button, an option, a label, a modal title) is refused when it is only
spaces, as when it is empty.

It walks the raw dicts (no SDK model), so it sees what the builders emit, and returns every
problem as `where: what` strings (empty: Slack would take it). `emulator.blockcheck` holds the
subset the emulator refuses on the wire; this one is the full list the property tests hold
every builder to.
"""

from __future__ import annotations

from typing import Any

from emulator.blockcheck import message_text_size as text_size  # what msg_blocks_too_long counts

MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100
MESSAGE_TEXT = 40_000
MESSAGE_BLOCKS_TEXT = 12_000
SECTION_TEXT = 3000
SECTION_FIELDS = 10
SECTION_FIELD = 2000
HEADER_TEXT = 150
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
BUTTON_URL = 3000
ID = 255
OVERFLOW_OPTIONS = (2, 5)
SELECT_OPTIONS = 100
RADIO_OPTIONS = 10
OPTION_TEXT = 75
OPTION_VALUE = 150
OPTION_DESCRIPTION = 75
PLACEHOLDER = 150
LABEL = 2000
HINT = 2000
TEXT_INPUT = 3000
VIEW_TITLE = 24
PRIVATE_METADATA = 3000
ALT_TEXT = 2000
CONFIRM_TITLE = 100
CONFIRM_TEXT = 300
CONFIRM_BUTTON = 30
TEXT_OBJECT = 3000

Problems = list[str]


def _text_obj(obj: Any, where: str, *, limit: int, plain_only: bool = False,
              required: bool = True) -> Problems:
    """A text object: its type, `emoji` only on plain_text, its length, not blank if required."""
    if obj is None:
        return [f"{where}: missing text"] if required else []
    if not isinstance(obj, dict):
        return [f"{where}: text is not an object"]
    kind = obj.get("type")
    out: Problems = []
    if kind not in ("plain_text", "mrkdwn"):
        return [f"{where}: text type {kind!r}"]
    if plain_only and kind != "plain_text":
        out.append(f"{where}: must be plain_text, is {kind}")
    if kind == "mrkdwn" and "emoji" in obj:
        out.append(f"{where}: emoji is only allowed on plain_text")
    if kind == "plain_text" and "verbatim" in obj:
        out.append(f"{where}: verbatim is only allowed on mrkdwn")
    text = obj.get("text")
    if not isinstance(text, str):
        return [*out, f"{where}: text is not a string"]
    if not text.strip():
        out.append(f"{where}: empty or blank text")
    if len(text) > min(limit, TEXT_OBJECT):
        out.append(f"{where}: text of {len(text)} chars, limit {min(limit, TEXT_OBJECT)}")
    return out


def _option(o: Any, where: str, *, plain_only: bool) -> Problems:
    if not isinstance(o, dict):
        return [f"{where}: option is not an object"]
    out = _text_obj(o.get("text"), f"{where}/text", limit=OPTION_TEXT, plain_only=plain_only)
    value = o.get("value")
    if not isinstance(value, str) or not value:
        out.append(f"{where}/value: missing")
    elif len(value) > OPTION_VALUE:
        out.append(f"{where}/value: {len(value)} chars, limit {OPTION_VALUE}")
    if "description" in o:
        out += _text_obj(o["description"], f"{where}/description", limit=OPTION_DESCRIPTION, plain_only=plain_only)
    return out


def _options(el: dict[str, Any], where: str, lo: int, hi: int, *, plain_only: bool) -> Problems:
    opts = el.get("options")
    if not isinstance(opts, list):
        return [f"{where}/options: missing"]
    out: Problems = []
    if not lo <= len(opts) <= hi:
        out.append(f"{where}/options: {len(opts)} options, allowed {lo}..{hi}")
    values = [o.get("value") for o in opts if isinstance(o, dict)]
    if len(set(values)) != len(values):
        out.append(f"{where}/options: duplicate option values")
    for i, o in enumerate(opts):
        out += _option(o, f"{where}/options/{i}", plain_only=plain_only)
    initial = el.get("initial_option")
    if initial is not None and initial not in opts:
        out.append(f"{where}/initial_option: not one of the options")
    return out


def _confirm(c: Any, where: str) -> Problems:
    if not isinstance(c, dict):
        return [f"{where}: confirm is not an object"]
    return (_text_obj(c.get("title"), f"{where}/title", limit=CONFIRM_TITLE, plain_only=True)
            + _text_obj(c.get("text"), f"{where}/text", limit=CONFIRM_TEXT)
            + _text_obj(c.get("confirm"), f"{where}/confirm", limit=CONFIRM_BUTTON, plain_only=True)
            + _text_obj(c.get("deny"), f"{where}/deny", limit=CONFIRM_BUTTON, plain_only=True))


def _placeholder(el: dict[str, Any], where: str) -> Problems:
    if "placeholder" not in el:
        return []
    return _text_obj(el["placeholder"], f"{where}/placeholder", limit=PLACEHOLDER, plain_only=True)


def element(el: Any, where: str) -> Problems:
    """One interactive element (button, overflow, select, radio buttons, text or number input)."""
    if not isinstance(el, dict):
        return [f"{where}: element is not an object"]
    kind = el.get("type")
    out: Problems = []
    aid = el.get("action_id")
    if aid is not None and (not isinstance(aid, str) or not aid or len(aid) > ID):
        out.append(f"{where}/action_id: empty or longer than {ID}")
    if "confirm" in el:
        out += _confirm(el["confirm"], f"{where}/confirm")
    if kind == "button":
        out += _text_obj(el.get("text"), f"{where}/text", limit=BUTTON_TEXT, plain_only=True)
        value = el.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > BUTTON_VALUE):
            out.append(f"{where}/value: longer than {BUTTON_VALUE}")
        if len(str(el.get("url") or "")) > BUTTON_URL:
            out.append(f"{where}/url: longer than {BUTTON_URL}")
        if el.get("style") not in (None, "primary", "danger"):
            out.append(f"{where}/style: {el.get('style')!r}")
    elif kind == "overflow":
        out += _options(el, where, *OVERFLOW_OPTIONS, plain_only=True)
    elif kind == "static_select":
        out += _options(el, where, 1, SELECT_OPTIONS, plain_only=True) + _placeholder(el, where)
    elif kind in ("radio_buttons", "checkboxes"):
        out += _options(el, where, 1, RADIO_OPTIONS, plain_only=False)
    elif kind == "plain_text_input":
        out += _placeholder(el, where)
        most = el.get("max_length", TEXT_INPUT)
        if not isinstance(most, int) or not 1 <= most <= TEXT_INPUT:
            out.append(f"{where}/max_length: must be 1..{TEXT_INPUT}")
            most = TEXT_INPUT
        least = el.get("min_length", 0)
        if not isinstance(least, int) or not 0 <= least <= min(most, TEXT_INPUT):
            out.append(f"{where}/min_length: must be 0..max_length")
        initial = el.get("initial_value")
        if initial is not None and (not isinstance(initial, str) or len(initial) > most):
            out.append(f"{where}/initial_value: longer than max_length {most}")
    elif kind == "number_input":
        out += _placeholder(el, where)
        if not isinstance(el.get("is_decimal_allowed"), bool):
            out.append(f"{where}/is_decimal_allowed: required")
        try:
            initial = float(el["initial_value"]) if "initial_value" in el else None
            low = float(el["min_value"]) if "min_value" in el else None
            high = float(el["max_value"]) if "max_value" in el else None
        except (TypeError, ValueError):
            return [*out, f"{where}: a number_input value is not a number"]
        if initial is not None and ((low is not None and initial < low) or (high is not None and initial > high)):
            out.append(f"{where}/initial_value: outside min_value..max_value")
    elif kind == "image":
        if len(str(el.get("alt_text") or "")) > ALT_TEXT or not str(el.get("alt_text") or "").strip():
            out.append(f"{where}/alt_text: empty or longer than {ALT_TEXT}")
    else:
        out.append(f"{where}: element type {kind!r} not used by hitl")
    return out


def block(b: Any, where: str) -> Problems:
    """One layout block and everything in it."""
    if not isinstance(b, dict):
        return [f"{where}: block is not an object"]
    kind = b.get("type")
    out: Problems = []
    bid = b.get("block_id")
    if bid is not None and (not isinstance(bid, str) or not bid or len(bid) > ID):
        out.append(f"{where}/block_id: empty or longer than {ID}")
    if kind == "section":
        if "text" not in b and "fields" not in b:
            out.append(f"{where}: a section needs text or fields")
        if "text" in b:
            out += _text_obj(b["text"], f"{where}/text", limit=SECTION_TEXT)
        if "fields" in b:
            fields = b["fields"]
            if not isinstance(fields, list) or not 1 <= len(fields) <= SECTION_FIELDS:
                out.append(f"{where}/fields: 1..{SECTION_FIELDS} items")
            for i, f in enumerate(fields if isinstance(fields, list) else []):
                out += _text_obj(f, f"{where}/fields/{i}", limit=SECTION_FIELD)
        if "accessory" in b:
            out += element(b["accessory"], f"{where}/accessory")
    elif kind == "header":
        out += _text_obj(b.get("text"), f"{where}/text", limit=HEADER_TEXT, plain_only=True)
    elif kind == "context":
        els = b.get("elements")
        if not isinstance(els, list) or not 1 <= len(els) <= CONTEXT_ELEMENTS:
            out.append(f"{where}/elements: 1..{CONTEXT_ELEMENTS} items")
        for i, e in enumerate(els if isinstance(els, list) else []):
            if isinstance(e, dict) and e.get("type") == "image":
                out += element(e, f"{where}/elements/{i}")
            else:
                out += _text_obj(e, f"{where}/elements/{i}", limit=TEXT_OBJECT)
    elif kind == "actions":
        els = b.get("elements")
        if not isinstance(els, list) or not 1 <= len(els) <= ACTIONS_ELEMENTS:
            out.append(f"{where}/elements: 1..{ACTIONS_ELEMENTS} items")
        ids = [e.get("action_id") for e in els or [] if isinstance(e, dict) and e.get("action_id")]
        if len(set(ids)) != len(ids):
            out.append(f"{where}/elements: duplicate action_id in one block")
        for i, e in enumerate(els if isinstance(els, list) else []):
            out += element(e, f"{where}/elements/{i}")
    elif kind == "input":
        out += _text_obj(b.get("label"), f"{where}/label", limit=LABEL, plain_only=True)
        if "hint" in b:
            out += _text_obj(b["hint"], f"{where}/hint", limit=HINT, plain_only=True)
        out += element(b.get("element"), f"{where}/element")
    elif kind == "image":
        out += element({**b, "type": "image"}, where)
    elif kind != "divider":
        out.append(f"{where}: block type {kind!r} not used by hitl")
    return out


def blocks_problems(blocks: Any, limit: int) -> Problems:
    if not isinstance(blocks, list):
        return ["blocks: not a list"]
    out: Problems = []
    if len(blocks) > limit:
        out.append(f"blocks: {len(blocks)} blocks, limit {limit}")
    ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and b.get("block_id")]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        out.append(f"blocks: duplicate block_id {sorted(dupes)}")
    for i, b in enumerate(blocks):
        out += block(b, f"blocks/{i}")
    return out


def message_problems(message: dict[str, Any]) -> Problems:
    """A message as chat.postMessage / chat.update / chat.postEphemeral / a response_url take it."""
    out: Problems = []
    text = message.get("text")
    blocks = message.get("blocks")
    if blocks is None and not (isinstance(text, str) and text.strip()):
        out.append("text: a message without blocks needs text")
    if text is not None and (not isinstance(text, str) or len(text) > MESSAGE_TEXT):
        out.append(f"text: longer than {MESSAGE_TEXT}")
    if blocks is not None:
        out += blocks_problems(blocks, MESSAGE_BLOCKS)
        if text_size(blocks) > MESSAGE_BLOCKS_TEXT:
            out.append(f"blocks: {text_size(blocks)} chars of text, msg_blocks_too_long past {MESSAGE_BLOCKS_TEXT}")
    return out


def view_problems(view: dict[str, Any]) -> Problems:
    """A modal (views.open/push/update) or Home tab (views.publish)."""
    kind = view.get("type")
    if kind not in ("modal", "home"):
        return [f"view: type {kind!r}"]
    out = blocks_problems(view.get("blocks"), VIEW_BLOCKS)
    for key in ("callback_id", "external_id"):
        if key in view and (not isinstance(view[key], str) or len(view[key]) > ID):
            out.append(f"view/{key}: longer than {ID}")
    if len(str(view.get("private_metadata") or "")) > PRIVATE_METADATA:
        out.append(f"view/private_metadata: longer than {PRIVATE_METADATA}")
    if kind == "modal":
        out += _text_obj(view.get("title"), "view/title", limit=VIEW_TITLE, plain_only=True)
        for key in ("submit", "close"):
            if key in view:
                out += _text_obj(view[key], f"view/{key}", limit=VIEW_TITLE, plain_only=True)
        if any(isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or []) \
                and "submit" not in view:
            out.append("view/submit: a modal with inputs needs submit")
    return out


def assert_message(message: dict[str, Any]) -> None:
    problems = message_problems(message)
    assert not problems, "Slack would refuse this message:\n" + "\n".join(problems[:20])


def assert_view(view: dict[str, Any]) -> None:
    problems = view_problems(view)
    assert not problems, "Slack would refuse this view:\n" + "\n".join(problems[:20])
