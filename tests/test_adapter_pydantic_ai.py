"""pydantic-ai deferred tools against the real bot: a real Agent (FunctionModel) whose
`requires_approval` tool call people approve, edit, reject, or leave to expire."""

from __future__ import annotations

import asyncio
from typing import Any

from hitl.adapters.pydantic_ai import run_with_approvals
from pydantic_ai import Agent, CallDeferred, DeferredToolRequests
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from blocks.ids import ActionId, BlockId
from tests.harness import Harness
from tests.reviewer import answer, approve, card_for, edit, edit_offered, h, reject
from tests.util import eventually

__all__ = ["h"]


def _scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returns = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
    if returns:
        return ModelResponse(parts=[TextPart(f"tool said: {returns[-1].content}")])
    return ModelResponse(parts=[ToolCallPart("refund", {"order": "A-17", "amount": 250}, tool_call_id="pc_1")])


def _agent(executed: list[dict[str, Any]]) -> Agent[None, str | DeferredToolRequests]:
    agent: Agent[None, str | DeferredToolRequests] = Agent(FunctionModel(_scripted),
                                                          output_type=[str, DeferredToolRequests])

    @agent.tool_plain(requires_approval=True)
    def refund(order: str, amount: int) -> str:
        """Refund an order."""
        executed.append({"order": order, "amount": amount})
        return f"refunded {amount} on {order}"

    return agent


async def test_approved(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    task = asyncio.create_task(run_with_approvals(_agent(executed), "refund A-17", client=h.client))
    rec = await card_for(h, "refund")
    assert rec.request.params == {"order": "A-17", "amount": 250} and edit_offered(h, rec)
    assert not executed
    await approve(h, rec)
    result = await task
    assert executed == [{"order": "A-17", "amount": 250}]
    assert result.output == "tool said: refunded 250 on A-17"


async def test_edited_arguments_are_what_runs(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    task = asyncio.create_task(run_with_approvals(_agent(executed), "refund A-17", client=h.client))
    await edit(h, await card_for(h, "refund"), {"amount": 200})
    result = await task
    assert executed == [{"order": "A-17", "amount": 200}]
    assert result.output == "tool said: refunded 200 on A-17"


async def test_rejected_tells_the_model_why(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    task = asyncio.create_task(run_with_approvals(_agent(executed), "refund A-17", client=h.client))
    await reject(h, await card_for(h, "refund"), "Already refunded last week")
    result = await task
    assert executed == []
    assert "Already refunded last week" in result.output


async def test_expired_runs_nothing(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    result = await run_with_approvals(_agent(executed), "refund A-17", client=h.client, timeout_s=1)
    assert executed == []
    assert "in time" in result.output


def _asks(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returns = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
    if returns:
        return ModelResponse(parts=[TextPart(f"people said: {returns[-1].content}")])
    return ModelResponse(parts=[ToolCallPart("ask_user", {"question": "Which warehouse ships A-17?"},
                                             tool_call_id="q_1")])


async def test_a_question_deferred_to_people_is_answered(h: Harness) -> None:
    agent: Agent[None, str | DeferredToolRequests] = Agent(FunctionModel(_asks), output_type=[str, DeferredToolRequests])

    @agent.tool_plain
    def ask_user(question: str) -> str:
        """Ask the user."""
        raise CallDeferred(kind="question")

    task = asyncio.create_task(run_with_approvals(agent, "ship A-17", client=h.client))
    rec = await card_for(h, "ask_user")
    assert rec.request.kind.value == "question" and rec.request.summary == "Which warehouse ships A-17?"
    await answer(h, rec, "Berlin")
    assert (await task).output == "people said: Berlin"


async def test_a_call_handed_back_tells_the_model_the_persons_instructions(h: Harness) -> None:
    """The user asked for a person, so the call is a handover; the person hands it back with
    instructions (status answered): the tool does not run and the model reads them (it was
    told only 'request ... was answered by carol')."""
    executed: list[dict[str, Any]] = []
    task = asyncio.create_task(run_with_approvals(
        _agent(executed), "refund A-17", client=h.client,
        context={"conversation": ["Refund A-17", "No wait, let me talk to a human"]}))
    rec = await card_for(h, "refund")
    assert rec.route.mode.value == "escalate"
    await h.click(rec, "U0CAROL", ActionId.hand_back)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0CAROL")), what="hand back modal")
    result = await h.emu.submit_view("U0CAROL", view.id,
                                     {BlockId.instructions_text.value: {"value": "Offer a voucher, no refund"}})
    assert result.closed, result.errors
    out = (await task).output
    assert executed == []
    assert "handed it back" in out and "Offer a voucher, no refund" in out
