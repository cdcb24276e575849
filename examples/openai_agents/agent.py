"""An OpenAI Agents SDK agent whose refund tool needs approval in Slack.

Offline by default: a scripted Model proposes the tool call. With OPENAI_API_KEY set, the
agent uses a real model. The Agents SDK cannot run an approved call with edited arguments,
so the card offers Approve / Reject only.
    REDIS_URL=... HITL_PREFIX=... python examples/openai_agents/agent.py
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import hitl
from agents import Agent, Model, ModelResponse, Usage, function_tool, set_tracing_disabled
from hitl.adapters.openai_agents import run_with_approvals
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)


@function_tool(needs_approval=True)
def refund(order: str, amount: int) -> str:
    """Refund an order."""
    return f"refunded {amount} on {order}"


class ScriptedModel(Model):
    """Calls `refund` once, then reports the tool's answer."""

    async def get_response(self, system_instructions: str | None, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        outputs = [i for i in input if isinstance(i, dict) and i.get("type") == "function_call_output"] \
            if isinstance(input, list) else []
        item: Any
        if outputs:
            item = ResponseOutputMessage(id="m1", type="message", role="assistant", status="completed", content=[
                ResponseOutputText(type="output_text", text=f"tool: {outputs[-1]['output']}", annotations=[])])
        else:
            item = ResponseFunctionToolCall(type="function_call", call_id="call_1", name="refund", id="fc_1",
                                            arguments=json.dumps({"order": "A-17", "amount": 250}), status="completed")
        return ModelResponse(output=[item], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


async def main() -> None:
    if not os.environ.get("OPENAI_API_KEY"):
        set_tracing_disabled(True)
    model: Any = "gpt-4.1-mini" if os.environ.get("OPENAI_API_KEY") else ScriptedModel()
    agent = Agent(name="support", instructions="Refund orders when asked.", model=model, tools=[refund])
    async with hitl.AsyncClient.from_url(agent="openai-agent") as client:
        result = await run_with_approvals(agent, "Refund order A-17, $250", client=client)
    print(result.final_output)


if __name__ == "__main__":
    asyncio.run(main())
