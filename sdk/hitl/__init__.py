"""hitl agent SDK: ask people in Slack before an AI agent acts.

`hitl.protocol` holds the wire models shared with the bot (request, decision, messages).
"""

from hitl.protocol import AgentMessage, Decision, Request, Status

__all__ = ["AgentMessage", "Decision", "Request", "Status"]
