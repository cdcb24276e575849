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
    take_over = "hitl.take_over"
    reply = "hitl.reply"
    resolve = "hitl.resolve"
    hand_back = "hitl.hand_back"
    review_ok = "hitl.review_ok"
    review_wrong = "hitl.review_wrong"
    approve_grant = "hitl.approve_grant"
    """"Approve and allow similar for 1 h" (a standing grant; docs/trust.md)."""


class BatchActionId(StrEnum):
    """Controls of a batch card and of its one-by-one review modal."""

    item = "hitl.batch.item"
    approve_all = "hitl.batch.approve_all"
    reject_all = "hitl.batch.reject_all"
    one_by_one = "hitl.batch.one_by_one"
    step_approve = "hitl.batch.step_approve"
    step_reject = "hitl.batch.step_reject"
    step_skip = "hitl.batch.step_skip"
    step_reason = "hitl.batch.step_reason"
    open_queue = "hitl.batch.open_queue"
    step_edit = "hitl.batch.step_edit"
    review_item = "hitl.batch.review_item"
    review_all = "hitl.batch.review_all"


BATCH_ITEM_PREFIX = "hitl.batch:"
"""A batch card's item line is block `hitl.batch:<batch id>:<request id>`."""


def batch_item_block_id(batch_id: str, request_id: str) -> str:
    return f"{BATCH_ITEM_PREFIX}{batch_id}:{request_id}"


def from_batch_item_block_id(block_id: str) -> tuple[str, str] | None:
    if not block_id.startswith(BATCH_ITEM_PREFIX):
        return None
    batch_id, _, request_id = block_id[len(BATCH_ITEM_PREFIX):].partition(":")
    return (batch_id, request_id) if batch_id and request_id else None


class HomeActionId(StrEnum):
    """The App Home's pause switch (admins only)."""

    pause = "hitl.home.pause"
    resume = "hitl.home.resume"
    revoke_grant = "hitl.home.revoke_grant"


class CallbackId(StrEnum):
    reject_modal = "hitl.reject_modal"
    edit_modal = "hitl.edit_modal"
    answer_modal = "hitl.answer_modal"
    context_modal = "hitl.context_modal"
    reject_all_modal = "hitl.batch.reject_all_modal"
    one_by_one_modal = "hitl.batch.one_by_one_modal"
    queue_modal = "hitl.batch.queue_modal"
    reply_modal = "hitl.reply_modal"
    resolve_modal = "hitl.resolve_modal"
    hand_back_modal = "hitl.hand_back_modal"
    review_wrong_modal = "hitl.review_wrong_modal"
    pause_modal = "hitl.home.pause_modal"


class BlockId(StrEnum):
    actions = "hitl.actions"
    reason_code = "hitl.reason_code"
    reason_text = "hitl.reason_text"
    answer_text = "hitl.answer_text"
    reply_text = "hitl.reply_text"
    resolution_text = "hitl.resolution_text"
    instructions_text = "hitl.instructions_text"


PARAM_BLOCK_PREFIX = "hitl.param:"
"""Edit-modal input blocks are `hitl.param:<param name>`; the element's action id is `value`."""

INPUT_ACTION = "value"


def param_block_id(name: str) -> str:
    return f"{PARAM_BLOCK_PREFIX}{name}"

