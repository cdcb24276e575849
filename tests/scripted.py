"""Scripted models for agent frameworks: real agents, no network, the same tool call each run."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from agents import Model, ModelResponse, Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)


class ScriptedOpenAIModel(Model):
    """Calls `tool` with `args` first; once a tool result (or a rejection) is in its input, says
    what it saw. Records every input it was given."""

    def __init__(self, tool: str, args: dict[str, Any], call_id: str = "call_1") -> None:
        self.tool, self.args, self.call_id = tool, args, call_id
        self.inputs: list[Any] = []

    async def get_response(self, system_instructions: str | None, input: Any, *args: Any,
                           **kwargs: Any) -> ModelResponse:
        self.inputs.append(input)
        outputs = [i for i in (input if isinstance(input, list) else [])
                   if isinstance(i, dict) and i.get("type") == "function_call_output"]
        if outputs:
            text = f"tool said: {outputs[-1].get('output')}"
            item: Any = ResponseOutputMessage(id="msg_1", type="message", role="assistant", status="completed",
                                              content=[ResponseOutputText(type="output_text", text=text,
                                                                          annotations=[])])
        else:
            item = ResponseFunctionToolCall(type="function_call", call_id=self.call_id, name=self.tool,
                                            arguments=json.dumps(self.args), id="fc_1", status="completed")
        return ModelResponse(output=[item], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the scripted model does not stream")


class ScriptedItemModel(Model):
    """Outputs `item` (any tool call: a shell call, an apply_patch call) first; once a tool
    output (or a rejection) is in its input, says what it saw. Records every input."""

    def __init__(self, item: Any) -> None:
        self.item = item
        self.inputs: list[Any] = []

    async def get_response(self, system_instructions: str | None, input: Any, *args: Any,
                           **kwargs: Any) -> ModelResponse:
        self.inputs.append(input)
        outputs = [i for i in (input if isinstance(input, list) else [])
                   if isinstance(i, dict) and str(i.get("type", "")).endswith("_output")]
        if not outputs:
            return ModelResponse(output=[self.item], usage=Usage(), response_id=None)
        text = f"tool said: {outputs[-1].get('output')}"
        message = ResponseOutputMessage(id="msg_1", type="message", role="assistant", status="completed",
                                        content=[ResponseOutputText(type="output_text", text=text, annotations=[])])
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the scripted model does not stream")
