"""A LangChain agent whose refund tool waits for people in Slack (HumanInTheLoopMiddleware).

Offline by default: a scripted chat model proposes the tool call. With OPENAI_API_KEY set and
`langchain-openai` installed, a real model is used instead.
    REDIS_URL=... HITL_PREFIX=... python examples/langchain/agent.py
"""

from __future__ import annotations

import os
from typing import Any

import hitl
from hitl.adapters.langchain import run_with_approvals
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver


@tool
def refund(order: str, amount: int) -> str:
    """Refund an order."""
    return f"refunded {amount} on {order}"


class ScriptedModel(GenericFakeChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def model() -> Any:
    if os.environ.get("OPENAI_API_KEY"):
        from langchain.chat_models import init_chat_model

        return init_chat_model("openai:gpt-4o-mini")
    call = {"name": "refund", "args": {"order": "A-17", "amount": 250}, "id": "call_1", "type": "tool_call"}
    return ScriptedModel(messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="Done.")]))


def main() -> None:
    agent = create_agent(model(), tools=[refund], checkpointer=InMemorySaver(),
                         middleware=[HumanInTheLoopMiddleware(interrupt_on={"refund": True})])
    with hitl.Client(agent="langchain-agent") as client:
        result = run_with_approvals(agent, {"messages": [{"role": "user", "content": "Refund order A-17, $250"}]},
                                    {"configurable": {"thread_id": "example-1"}}, client=client)
    for message in result["messages"]:
        if message.type == "tool":
            print("tool:", message.content)


if __name__ == "__main__":
    main()
