"""The Python client for agents now lives in the agent SDK (`hitl-slack-sdk`, import `hitl`).

These names stay for code written against the bot's package: `HitlClient` is
`hitl.AsyncClient`, `SyncHitlClient` is `hitl.Client`.
"""

from hitl.client import AsyncClient as HitlClient
from hitl.sync import Client as SyncHitlClient

__all__ = ["HitlClient", "SyncHitlClient"]
