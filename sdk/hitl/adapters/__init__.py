"""Framework adapters, each an optional extra of hitl-slack-sdk and each speaking its
framework's own types: `langchain`, `openai_agents`, `pydantic_ai` (and `hitl.mcp`, `hitl.hook`)."""
