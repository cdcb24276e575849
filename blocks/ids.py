"""Action, block and callback ids: shared by the builders and by `register()` in handlers."""

from __future__ import annotations

from enum import StrEnum


class ActionId(StrEnum):
    approve = "hitl.approve"
    reject = "hitl.reject"
    edit = "hitl.edit"
    option = "hitl.option"
    answer = "hitl.answer"
    show_context = "hitl.show_context"


class CallbackId(StrEnum):
    reject_modal = "hitl.reject_modal"
    edit_modal = "hitl.edit_modal"
    answer_modal = "hitl.answer_modal"
    context_modal = "hitl.context_modal"


class BlockId(StrEnum):
    actions = "hitl.actions"
    reason_code = "hitl.reason_code"
    reason_text = "hitl.reason_text"
    answer_text = "hitl.answer_text"


PARAM_BLOCK_PREFIX = "hitl.param:"
"""Edit-modal input blocks are `hitl.param:<param name>`; the element's action id is `value`."""

INPUT_ACTION = "value"


def param_block_id(name: str) -> str:
    return f"{PARAM_BLOCK_PREFIX}{name}"


def param_from_block_id(block_id: str) -> str | None:
    return block_id[len(PARAM_BLOCK_PREFIX):] if block_id.startswith(PARAM_BLOCK_PREFIX) else None
