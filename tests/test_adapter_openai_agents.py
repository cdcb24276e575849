"""OpenAI Agents SDK approvals against the real bot: a real Agent (scripted Model) whose
`needs_approval` tool call people approve, reject, or leave to expire. The Agents SDK cannot
apply edits, so the card offers none."""

from __future__ import annotations

import asyncio
from typing import Any

from agents import Agent, ApplyPatchTool, ShellTool, function_tool, set_tracing_disabled
from hitl.adapters.openai_agents import run_with_approvals, run_with_approvals_sync
from hitl.sync import Client
from openai.types.responses import ResponseApplyPatchToolCall, ResponseFunctionShellToolCall

from tests.harness import Harness
from tests.reviewer import approve, card_for, edit_offered, h, reject
from tests.scripted import ScriptedItemModel, ScriptedOpenAIModel

__all__ = ["h"]
set_tracing_disabled(True)  # no trace export: the tests make no network calls


def _agent(executed: list[dict[str, Any]]) -> tuple[Agent[Any], ScriptedOpenAIModel]:
    @function_tool(needs_approval=True)
    def refund(order: str, amount: int) -> str:
        """Refund an order."""
        executed.append({"order": order, "amount": amount})
        return f"refunded {amount} on {order}"

    model = ScriptedOpenAIModel("refund", {"order": "A-17", "amount": 250})
    return Agent(name="support", instructions="Refund when asked.", model=model, tools=[refund]), model


async def test_approved(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    agent, _ = _agent(executed)
    task = asyncio.create_task(run_with_approvals(agent, "refund A-17", client=h.client, agent="support"))
    rec = await card_for(h, "refund")
    assert rec.request.params == {"order": "A-17", "amount": 250}
    assert rec.request.editable == [] and not edit_offered(h, rec)  # the SDK cannot apply edits
    assert not executed
    await approve(h, rec)
    result = await task
    assert executed == [{"order": "A-17", "amount": 250}]
    assert result.final_output == "tool said: refunded 250 on A-17"


async def test_rejected_tells_the_model_why(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    agent, model = _agent(executed)
    task = asyncio.create_task(run_with_approvals(agent, "refund A-17", client=h.client))
    await reject(h, await card_for(h, "refund"), "Already refunded last week")
    result = await task
    assert executed == []
    assert "Already refunded last week" in str(result.final_output)
    assert "Already refunded last week" in str(model.inputs[-1])  # what the model was told


async def test_expired_runs_nothing(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    agent, _ = _agent(executed)
    result = await run_with_approvals(agent, "refund A-17", client=h.client, timeout_s=1)
    assert executed == []
    assert "in time" in str(result.final_output) and "expired" in str(result.final_output)


async def test_sync_runner(h: Harness) -> None:
    executed: list[dict[str, Any]] = []
    agent, _ = _agent(executed)
    client = Client(h.redis_url, name="oa-sync")
    try:
        task = asyncio.create_task(asyncio.to_thread(run_with_approvals_sync, agent, "refund", client=client))
        await approve(h, await card_for(h, "refund"))
        await task
    finally:
        await asyncio.to_thread(client.close)
    assert executed == [{"order": "A-17", "amount": 250}]


async def test_a_shell_call_is_reviewed_with_its_commands(h: Harness) -> None:
    """A ShellTool call carries its commands in the raw item's `action`, not in `arguments`:
    the card must show them (it showed `shell()`, so people approved a command they never saw)."""
    ran: list[list[str]] = []

    def executor(request: Any) -> str:
        ran.append(list(request.data.action.commands))
        return "removed"

    call = ResponseFunctionShellToolCall(type="shell_call", call_id="call_sh", id="sh_1", status="completed",
                                         action={"commands": ["rm -rf /srv/data"]})
    agent = Agent(name="ops", model=ScriptedItemModel(call), tools=[ShellTool(executor=executor, needs_approval=True)])
    task = asyncio.create_task(run_with_approvals(agent, "clean up", client=h.client))
    rec = await card_for(h, "shell")
    assert "rm -rf /srv/data" in rec.request.summary
    assert rec.request.params["action"]["commands"] == ["rm -rf /srv/data"]
    assert not ran
    await reject(h, rec, "Not that directory")
    result = await task
    assert ran == [] and "Not that directory" in str(result.final_output)


async def test_an_apply_patch_call_is_reviewed_with_its_operation(h: Harness) -> None:
    applied: list[Any] = []

    class Editor:
        def create_file(self, operation: Any) -> Any:
            applied.append(operation)

        def update_file(self, operation: Any) -> Any:
            applied.append(operation)

        def delete_file(self, operation: Any) -> Any:
            applied.append(operation)

    call = ResponseApplyPatchToolCall(type="apply_patch_call", call_id="call_ap", id="ap_1", status="completed",
                                      operation={"type": "delete_file", "path": "src/billing.py"})
    agent = Agent(name="dev", model=ScriptedItemModel(call),
                  tools=[ApplyPatchTool(editor=Editor(), needs_approval=True)])
    task = asyncio.create_task(run_with_approvals(agent, "tidy", client=h.client))
    rec = await card_for(h, "apply_patch")
    assert "src/billing.py" in rec.request.summary and "delete_file" in rec.request.summary
    assert not applied
    await approve(h, rec)
    await task
    assert [op.path for op in applied] == ["src/billing.py"]
