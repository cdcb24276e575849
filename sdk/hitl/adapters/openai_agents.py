"""OpenAI Agents SDK: send each `ToolApprovalItem` of `result.interruptions` to people in Slack,
then `state.approve(item)` / `state.reject(item, rejection_message=...)` and resume.

    @function_tool(needs_approval=True)
    def refund(order: str, amount: int) -> str: ...

    result = await run_with_approvals(agent, "Refund order A-17", client=hitl.AsyncClient.from_url())

The Agents SDK runs an approved call with the model's own arguments and has no way to change
them, so cards for these calls offer Approve / Reject only (nothing editable).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agents import Agent, Runner, RunResult, RunState, ToolApprovalItem

from hitl.adapters._run import with_client
from hitl.client import AsyncClient
from hitl.review import ToolCall, Verdict, review
from hitl.sync import Client

IDENTITY = frozenset({"id", "call_id", "type", "status", "created_by", "caller"})
"""Fields of a raw tool call that say which call it is, not what it does."""


def _args(item: ToolApprovalItem) -> dict[str, Any]:
    """What the call will do, as people review it. A function call's `arguments`; a shell,
    local shell or apply_patch call has none: what it runs is in its raw item (`action` with
    the commands, `operation` with the path and diff), which is then shown whole."""
    if item.arguments is None:
        raw: Any = item.raw_item
        data = raw.model_dump(mode="json", exclude_none=True) if hasattr(raw, "model_dump") else raw
        if not isinstance(data, dict):
            return {"call": repr(raw)}
        return {k: v for k, v in data.items() if k not in IDENTITY} or {"call": json.dumps(data, default=repr)}
    try:
        args = json.loads(item.arguments or "{}")
    except json.JSONDecodeError:
        args = {"arguments": item.arguments}
    return args if isinstance(args, dict) else {"arguments": args}


def _call(item: ToolApprovalItem) -> ToolCall:
    raw: Any = item.raw_item
    call_id = (raw.get("call_id") or raw.get("id")) if isinstance(raw, dict) else (
        getattr(raw, "call_id", None) or getattr(raw, "id", None))
    return ToolCall(str(call_id or id(item)), item.name or "tool", _args(item), can_edit=False)


async def decide(interruptions: list[ToolApprovalItem], client: Client | AsyncClient | None = None, *,
                 scope: str = "", timeout: float | None = None, **fields: Any) -> list[Verdict]:
    """People's verdicts on these approval items, in order (one batch when there are several)."""
    calls = [_call(item) for item in interruptions]
    return await with_client(client, lambda aio: review(aio, calls, framework="openai-agents", scope=scope,
                                                        timeout=timeout, **fields))


async def resolve(result: RunResult, client: Client | AsyncClient | None = None, *, scope: str = "",
                  timeout: float | None = None, **fields: Any) -> RunState[Any]:
    """The run's state with every interruption approved or rejected as people decided."""
    state = result.to_state()
    verdicts = await decide(list(result.interruptions), client, scope=scope, timeout=timeout, **fields)
    for item, verdict in zip(result.interruptions, verdicts, strict=True):
        if verdict.outcome == "approve":
            state.approve(item)
        else:
            state.reject(item, rejection_message=verdict.message)
    return state


async def run_with_approvals(starting_agent: Agent[Any], agent_input: Any, *, client: Client | AsyncClient | None = None,
                             scope: str = "", timeout: float | None = None, max_rounds: int = 50,
                             run_kwargs: dict[str, Any] | None = None, **fields: Any) -> RunResult:
    """`Runner.run` until no tool call waits for approval; each one goes to people first.

    Keyword arguments other than these are hitl request fields (`agent`, `risk`, `timeout_s`)."""
    result = await Runner.run(starting_agent, agent_input, **(run_kwargs or {}))
    for _ in range(max_rounds):
        if not result.interruptions:
            return result
        state = await resolve(result, client, scope=scope, timeout=timeout, **fields)
        result = await Runner.run(starting_agent, state, **(run_kwargs or {}))
    raise RuntimeError(f"the agent still waited for approvals after {max_rounds} rounds")


def run_with_approvals_sync(starting_agent: Agent[Any], agent_input: Any, *, client: Client | None = None,
                            **kwargs: Any) -> RunResult:
    """`run_with_approvals` for sync code (like `Runner.run_sync`)."""
    return asyncio.run(run_with_approvals(starting_agent, agent_input, client=client, **kwargs))
