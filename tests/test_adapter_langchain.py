"""LangChain's HumanInTheLoopMiddleware and LangGraph interrupt() against the real bot: a real
agent (create_agent, a scripted chat model) whose tool call people approve, edit, reject, or
leave to expire; the tool's own record says what ran."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from hitl.adapters.langchain import arun_with_approvals, run_with_approvals
from hitl.sync import Client
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict

from blocks.ids import BatchActionId, batch_item_block_id, param_block_id
from store.models import Status
from tests.harness import Harness
from tests.reviewer import answer, approve, card_for, edit, edit_offered, h, reject
from tests.util import eventually

__all__ = ["h"]


class ScriptedModel(GenericFakeChatModel):
    """A chat model that plays a script (tool calls included) and accepts any tools."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def _script(*turns: AIMessage) -> Iterator[AIMessage]:
    return iter(turns)


def _agent(executed: list[dict[str, Any]], calls: list[dict[str, Any]], allowed: list[str] | None = None,
           mode: str = "batched") -> Any:
    @tool
    def refund(order: str, amount: int) -> str:
        """Refund an order."""
        executed.append({"order": order, "amount": amount})
        return f"refunded {amount} on {order}"

    @tool
    def notify(customer: str, text: str) -> str:
        """Tell a customer."""
        executed.append({"customer": customer, "text": text})
        return "sent"

    model = ScriptedModel(messages=_script(AIMessage(content="", tool_calls=calls), AIMessage(content="done")))
    on: dict[str, Any] = {"refund": {"allowed_decisions": allowed} if allowed else True, "notify": True}
    middleware = HumanInTheLoopMiddleware(interrupt_on=on, interrupt_mode=mode)  # type: ignore[arg-type]
    return create_agent(model, tools=[refund, notify], middleware=[middleware], checkpointer=InMemorySaver())


REFUND = {"name": "refund", "args": {"order": "A-17", "amount": 250}, "id": "call_refund_1", "type": "tool_call"}
CONFIG = {"configurable": {"thread_id": "t1"}}
INPUT = {"messages": [{"role": "user", "content": "refund order A-17"}]}


def _tool_messages(result: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in result["messages"] if isinstance(m, ToolMessage)]


async def test_approved(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    task = asyncio.create_task(arun_with_approvals(_agent(executed, [REFUND]), INPUT, CONFIG, client=h.client,
                                                   agent="support-bot"))
    rec = await card_for(h, "refund")
    assert rec.request.params == {"order": "A-17", "amount": 250} and rec.request.agent == "support-bot"
    assert edit_offered(h, rec)
    assert not executed  # nothing runs before the click
    await approve(h, rec)
    result = await task
    assert executed == [{"order": "A-17", "amount": 250}]
    assert _tool_messages(result)[0].content == "refunded 250 on A-17"


async def test_edited_arguments_are_what_runs(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    task = asyncio.create_task(arun_with_approvals(_agent(executed, [REFUND]), INPUT, CONFIG, client=h.client))
    rec = await card_for(h, "refund")
    await edit(h, rec, {"amount": 200})
    await task
    assert executed == [{"order": "A-17", "amount": 200}]


async def test_rejected_with_the_reviewers_reason(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    task = asyncio.create_task(arun_with_approvals(_agent(executed, [REFUND]), INPUT, CONFIG, client=h.client))
    rec = await card_for(h, "refund")
    await reject(h, rec, "Already refunded last week")
    result = await task
    assert executed == []
    text = str(_tool_messages(result)[0].content)
    assert "Already refunded last week" in text and "wrong_params" in text


async def test_expired_runs_nothing(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    result = await arun_with_approvals(_agent(executed, [REFUND]), INPUT, CONFIG, client=h.client, timeout_s=1)
    assert executed == []
    assert "in time" in str(_tool_messages(result)[0].content)
    rid = (await h.store.redis.zrange(h.store.keys.pending, 0, -1)) or []
    assert rid == []  # decided (expired), nothing left open


async def test_no_edit_offered_when_the_tool_does_not_allow_it(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    task = asyncio.create_task(arun_with_approvals(_agent(executed, [REFUND], ["approve", "reject"]), INPUT,
                                                   CONFIG, client=h.client))
    rec = await card_for(h, "refund")
    assert rec.request.editable == [] and not edit_offered(h, rec)
    await approve(h, rec)
    await task
    assert executed == [{"order": "A-17", "amount": 250}]


async def test_per_call_mode_honours_each_tools_allowed_decisions(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    task = asyncio.create_task(arun_with_approvals(_agent(executed, [REFUND], ["approve", "reject"], "per_call"),
                                                   INPUT, CONFIG, client=h.client))
    rec = await card_for(h, "refund")
    assert rec.request.editable == [] and not edit_offered(h, rec)
    await reject(h, rec, "No refunds today")
    result = await task
    assert executed == [] and "No refunds today" in str(_tool_messages(result)[0].content)


async def test_per_call_mode_edit(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    task = asyncio.create_task(arun_with_approvals(_agent(executed, [REFUND], None, "per_call"), INPUT, CONFIG,
                                                   client=h.client))
    rec = await card_for(h, "refund")
    assert rec.request.editable == ["order", "amount"]
    await edit(h, rec, {"amount": 120})
    await task
    assert executed == [{"order": "A-17", "amount": 120}]


async def test_an_approval_of_a_tool_that_allows_edit_but_not_approve_runs_it(h: Harness) -> None:
    """`allowed_decisions: ["edit", "reject"]`: a reviewer's plain Approve is an edit that
    changes nothing (it raised NotApproved for an approved call, and the graph stayed stuck)."""
    for mode in ("batched", "per_call"):
        executed: list[dict[str, Any]] = []
        task = asyncio.create_task(arun_with_approvals(_agent(executed, [REFUND], ["edit", "reject"], mode), INPUT,
                                                       {"configurable": {"thread_id": f"t-{mode}"}}, client=h.client))
        rec = await card_for(h, "refund")
        assert edit_offered(h, rec)
        await approve(h, rec)
        await task
        assert executed == [{"order": "A-17", "amount": 250}], mode


async def test_per_call_allowed_decisions_are_read_from_the_schema_not_the_tools_arguments(h: Harness) -> None:
    """A tool whose own argument schema names a decision ("reject" here) does not make that
    decision allowed: a rejection of a tool allowing approve, edit and respond is a respond
    (the adapter sent "reject", which LangGraph refused, and the run failed)."""
    executed: list[str] = []

    @tool
    def merge(branch: str, on_conflict: Literal["ours", "reject"]) -> str:
        """Merge a branch."""
        executed.append(branch)
        return "merged"

    call = {"name": "merge", "args": {"branch": "release", "on_conflict": "ours"}, "id": "call_m", "type": "tool_call"}
    model = ScriptedModel(messages=_script(AIMessage(content="", tool_calls=[call]), AIMessage(content="done")))
    middleware = HumanInTheLoopMiddleware(interrupt_on={"merge": {"allowed_decisions": ["approve", "edit", "respond"]}},
                                          interrupt_mode="per_call")
    agent = create_agent(model, tools=[merge], middleware=[middleware], checkpointer=InMemorySaver())
    task = asyncio.create_task(arun_with_approvals(agent, INPUT, CONFIG, client=h.client))
    await reject(h, await card_for(h, "merge"), "Freeze until Monday")
    result = await task
    assert executed == [] and "Freeze until Monday" in str(_tool_messages(result)[0].content)


async def _edit_item(h: Harness, rec: Any, values: dict[str, Any], user: str = "U0ALICE") -> None:
    """Edit one item of a batch card (its menu's Edit, then the modal)."""
    assert rec.batch and rec.channel and rec.ts
    await h.emu.click(user, rec.channel, rec.ts, BatchActionId.item, value="edit",
                      block_id=batch_item_block_id(rec.batch, rec.id))
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view(user)), what="edit modal")
    result = await h.emu.submit_view(user, view.id, {param_block_id(k): {"value": str(v)} for k, v in values.items()})
    assert result.closed, result.errors
    await h.decided(rec.id)


async def test_an_edit_langchain_cannot_apply_to_its_call_resumes_nothing(h: Harness) -> None:
    """The middleware (batched mode) keeps a reviewer's edit by tool call id: a call without one
    ran with the model's own arguments, and of two calls sharing an id both ran with the one
    edit. run_with_approvals now refuses to resume such an edit: nothing runs."""
    executed: list[dict[str, Any]] = []
    no_id = {**REFUND, "id": ""}
    task = asyncio.create_task(arun_with_approvals(_agent(executed, [no_id]), INPUT, CONFIG, client=h.client))
    await edit(h, await card_for(h, "refund"), {"amount": 1})
    with pytest.raises(RuntimeError, match="edit"):
        await task
    assert executed == []

    other = {**REFUND, "args": {"order": "B-9", "amount": 900}}  # the same id as REFUND
    task = asyncio.create_task(arun_with_approvals(_agent(executed, [REFUND, other]), INPUT,
                                                   {"configurable": {"thread_id": "dup"}}, client=h.client))
    seen: set[str] = set()
    first, second = await card_for(h, "refund", seen=seen), await card_for(h, "refund", seen=seen)
    if first.request.params["order"] != "A-17":
        first, second = second, first
    await _edit_item(h, first, {"amount": 1})
    await approve(h, await h.store.get(second.id))
    with pytest.raises(RuntimeError, match="edit"):
        await task
    assert executed == []


async def test_two_actions_in_one_interrupt_are_one_batch(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    notify = {"name": "notify", "args": {"customer": "ana", "text": "refund coming"}, "id": "call_n", "type": "tool_call"}
    task = asyncio.create_task(arun_with_approvals(_agent(executed, [REFUND, notify]), INPUT, CONFIG,
                                                   client=h.client))
    first, second = await card_for(h, "refund"), await card_for(h, "notify")
    assert first.request.batch_key and first.request.batch_key == second.request.batch_key
    await h.store.get(first.id)
    await reject(h, await h.store.get(first.id), "not this one")
    await approve(h, await h.store.get(second.id))
    await task
    assert executed == [{"customer": "ana", "text": "refund coming"}]



async def test_sync_run_with_approvals(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    client = Client(h.redis_url, name="lc-sync")
    try:
        task = asyncio.create_task(asyncio.to_thread(run_with_approvals, _agent(executed, [REFUND]), INPUT,
                                                     CONFIG, client=client))
        await approve(h, await card_for(h, "refund"))
        await task
    finally:
        await asyncio.to_thread(client.close)
    assert executed == [{"order": "A-17", "amount": 250}]


class QState(TypedDict, total=False):
    answer: Any
    decision: Any


def _plain_graph() -> Any:
    def ask(state: QState) -> QState:
        return {"answer": interrupt({"question": "Which warehouse ships order A-17?"})}

    def act(state: QState) -> QState:
        return {"decision": interrupt({"action": "ship", "args": {"warehouse": state["answer"], "qty": 3}})}

    g = StateGraph(QState)
    g.add_node("ask", ask)
    g.add_node("act", act)
    g.add_edge(START, "ask")
    g.add_edge("ask", "act")
    g.add_edge("act", END)
    return g.compile(checkpointer=InMemorySaver())


async def test_plain_interrupt_graph(h: Harness) -> None:
    task = asyncio.create_task(arun_with_approvals(_plain_graph(), {}, {"configurable": {"thread_id": "p"}},
                                                   client=h.client))
    question = await card_for(h, "question")
    assert question.request.kind.value == "question"
    await answer(h, question, "Berlin")
    await edit(h, await card_for(h, "ship"), {"qty": 2})
    result = await task
    assert result["answer"] == "Berlin"
    assert result["decision"] == {"approved": True, "args": {"warehouse": "Berlin", "qty": 2}, "edited": True}
    assert (await h.client.decision(question.id)).status is Status.answered  # type: ignore[union-attr]
