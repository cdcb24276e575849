"""pydantic-ai deferred tools: `DeferredToolRequests.approvals` -> people in Slack ->
`DeferredToolResults` with `ToolApproved(override_args=...)` for edits and `ToolDenied(message)`.

    agent = Agent(model, output_type=[str, DeferredToolRequests])

    @agent.tool_plain(requires_approval=True)
    def refund(order: str, amount: int) -> str: ...

    result = await run_with_approvals(agent, "Refund order A-17", client=hitl.AsyncClient.from_url())

Calls deferred as questions (`CallDeferred(kind="question")`) are asked on a question card; the
answer becomes the call's result.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults, ToolApproved, ToolDenied
from pydantic_ai.messages import ToolCallPart

from hitl.adapters._run import with_client
from hitl.client import AsyncClient
from hitl.review import ToolCall, review
from hitl.sync import Client


def _call(part: ToolCallPart, *, question: bool = False) -> ToolCall:
    args = part.args_as_dict()
    if question:
        text = str(args.get("question") or args.get("text") or args or part.tool_name)
        options = [str(o) for o in args.get("options") or []] if isinstance(args.get("options"), list) else []
        return ToolCall(part.tool_call_id, part.tool_name, args, text, question=True, options=options)
    return ToolCall(part.tool_call_id, part.tool_name, args)


async def decide(requests: DeferredToolRequests, client: Client | AsyncClient | None = None, *,
                 scope: str = "", timeout: float | None = None, **fields: Any) -> DeferredToolResults:
    """People's answers to these deferred calls, as pydantic-ai's `DeferredToolResults`.

    Approvals and questions go to Slack (one batch when there are several); calls that wait for
    an external result are left out for the caller to fill in."""
    parts = list(requests.approvals)
    calls = [_call(p) for p in parts]
    for part in requests.calls:
        if requests.kind(part.tool_call_id) == "question":
            parts.append(part)
            calls.append(_call(part, question=True))
    verdicts = await with_client(client, lambda aio: review(aio, calls, framework="pydantic-ai", scope=scope,
                                                            timeout=timeout, **fields))
    results = DeferredToolResults()
    for part, verdict in zip(parts, verdicts, strict=True):
        who = ",".join(v.user_id for v in verdict.decision.decided_by) or "hitl-policy"
        results.answered_by[part.tool_call_id] = who
        if verdict.call.question:
            if verdict.outcome == "answer":
                results.calls[part.tool_call_id] = verdict.message
            else:
                from pydantic_ai import ModelRetry

                results.calls[part.tool_call_id] = ModelRetry(verdict.message)
        elif verdict.outcome == "edit":
            results.approvals[part.tool_call_id] = ToolApproved(override_args=verdict.args)
        elif verdict.outcome == "approve":
            results.approvals[part.tool_call_id] = ToolApproved()
        else:
            results.approvals[part.tool_call_id] = ToolDenied(verdict.message)
    return results


async def run_with_approvals(agent: Agent[Any, Any], prompt: Any = None, *,
                             client: Client | AsyncClient | None = None, scope: str = "",
                             timeout: float | None = None, max_rounds: int = 50,
                             run_kwargs: dict[str, Any] | None = None, **fields: Any) -> Any:
    """`agent.run` until its output is no longer `DeferredToolRequests`; people decide each round.

    The agent's `output_type` must include `DeferredToolRequests`. Other keyword arguments are
    hitl request fields (`agent`, `risk`, `timeout_s`, ...)."""
    kwargs = dict(run_kwargs or {})
    result = await agent.run(prompt, **kwargs)
    for _ in range(max_rounds):
        if not isinstance(result.output, DeferredToolRequests):
            return result
        results = await decide(result.output, client, scope=scope, timeout=timeout, **fields)
        kwargs.pop("message_history", None)
        result = await agent.run(message_history=result.all_messages(), deferred_tool_results=results, **kwargs)
    raise RuntimeError(f"the agent still deferred tool calls after {max_rounds} rounds")


def run_with_approvals_sync(agent: Agent[Any, Any], prompt: Any = None, *, client: Client | None = None,
                            **kwargs: Any) -> Any:
    """`run_with_approvals` for sync code (like `agent.run_sync`)."""
    return asyncio.run(run_with_approvals(agent, prompt, client=client, **kwargs))
