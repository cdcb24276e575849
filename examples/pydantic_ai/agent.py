"""A pydantic-ai agent with a deferred (requires_approval) refund tool, decided in Slack.

Offline by default: a FunctionModel proposes the tool call. With OPENAI_API_KEY set, a real
model is used. Edits in Slack reach the tool as `ToolApproved(override_args=...)`.
    REDIS_URL=... HITL_PREFIX=... python examples/pydantic_ai/agent.py
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import hitl
from hitl.adapters.pydantic_ai import run_with_approvals
from pydantic_ai import Agent, DeferredToolRequests
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel


def scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returns = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
    if returns:
        return ModelResponse(parts=[TextPart(f"tool: {returns[-1].content}")])
    return ModelResponse(parts=[ToolCallPart("refund", {"order": "A-17", "amount": 250}, tool_call_id="pc_1")])


model: Any = "openai:gpt-4o-mini" if os.environ.get("OPENAI_API_KEY") else FunctionModel(scripted)
agent: Agent[None, str | DeferredToolRequests] = Agent(model, output_type=[str, DeferredToolRequests])


@agent.tool_plain(requires_approval=True)
def refund(order: str, amount: int) -> str:
    """Refund an order."""
    return f"refunded {amount} on {order}"


async def main() -> None:
    async with hitl.AsyncClient.from_url(agent="pydantic-ai-agent") as client:
        result = await run_with_approvals(agent, "Refund order A-17, $250", client=client)
    print(result.output)


if __name__ == "__main__":
    asyncio.run(main())
