"""The HTTP API served by `hitl run` beside Slack's endpoints: REST under `/v1/`, HumanLayer
compatibility under `/humanlayer/v1`, signed webhooks (docs/api.md, docs/humanlayer.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.api import humanlayer, routes
from bot.api.auth import Auth
from bot.api.bus import DecisionBus
from bot.api.callbacks import CallbackPolicy
from bot.api.errors import json_errors, json_not_found
from bot.api.hints import HintKey
from bot.api.service import Requests
from bot.api.webhooks import Enqueuer, WebhookWorker
from bot.config import Settings
from store.api_keys import ApiKeys
from store.api_requests import ApiStore
from store.models import MAX_ENTRY_BYTES
from store.redis_store import Store
from store.webhooks import WebhookStore


@dataclass
class Api:
    keys: ApiKeys
    bus: DecisionBus
    service: Requests
    webhooks: WebhookWorker
    enqueuer: Enqueuer
    messages: Enqueuer
    """Interim messages -> deliveries (event `message`)."""

    def background(self) -> dict[str, Any]:
        """Tasks to run while the bot runs (by name)."""
        # The worker always runs: deliveries queued while webhooks were on are still attempted (or
        # dead-lettered as refused) after they are switched off. The enqueuer reads every
        # decision, so it runs only while they are on: off, the API refuses every callback_url.
        tasks: dict[str, Any] = {"api-decisions": self.bus.run, "webhooks": self._webhooks}
        if self.webhooks.policy.enabled:
            tasks["webhook-enqueue"] = self.enqueuer.run
            tasks["webhook-enqueue-messages"] = self.messages.run
        return tasks

    async def metrics(self) -> list[str]:
        """Prometheus families of the API: authentication failures by key id, webhooks."""
        from bot.metrics import _family, _label

        failures = await self.keys.failures()
        due, dead = await self.webhooks.hooks.depth()
        return [
            _family("hitl_api_auth_failures_total", "counter",
                    "API calls refused for a missing or wrong key, by key id (or missing/malformed/unknown).",
                    [(f'{{key_id="{_label(k)}"}}', v) for k, v in sorted(failures.items())] or [("", 0)]),
            _family("hitl_webhooks_due", "gauge", "Webhook deliveries waiting for their next attempt.",
                    [("", due)]),
            _family("hitl_webhooks_dead", "gauge", "Webhook deliveries no receiver accepted (dead-lettered).",
                    [("", dead)]),
        ]

    async def _webhooks(self) -> None:
        try:
            await self.webhooks.run()
        finally:
            await asyncio.shield(self.webhooks.close())


def mount(webapp: web.Application, settings: Settings, store: Store,
          tier_approvers: Callable[[str], Sequence[str] | None] = lambda tier: None,
          hint_key: HintKey | None = None) -> Api:
    """Add the API's routes to the bot's aiohttp app; the caller runs `background()`.
    `tier_approvers`: the approvers the policy in force names for a tier (None: no such tier)."""
    keys = ApiKeys(store.redis, store.keys.prefix)
    auth = Auth(keys, settings.api_rate, settings.api_burst)
    callbacks = CallbackPolicy(settings.webhook_hosts, own_port=settings.port, secret=settings.webhook_secret)
    bus = DecisionBus(ApiStore(store))
    service = Requests(store, bus, callbacks, settings.api_submit_wait_s)
    hooks = WebhookStore(store)
    worker = WebhookWorker(store, hooks, callbacks, retry_s=settings.webhook_retry_s,
                           give_up_s=settings.webhook_give_up_s)
    enqueuer = Enqueuer(hooks, settings.consumer, kick=worker.kick, claim_idle_s=settings.claim_idle_s)
    messages = Enqueuer(hooks, settings.consumer, kick=worker.kick, claim_idle_s=settings.claim_idle_s,
                        messages=True)
    v1 = web.Application(client_max_size=MAX_ENTRY_BYTES + 1024, middlewares=[json_errors])
    v1.add_routes(routes.routes(auth, service, bus))
    hl = web.Application(client_max_size=humanlayer.BODY_LIMIT + 1024, middlewares=[json_errors])
    hl.add_routes(humanlayer.routes(humanlayer.HumanLayerApi(auth, service, tier_approvers, hint_key)))
    webapp.add_subapp("/v1", v1)
    webapp.add_subapp("/humanlayer/v1", hl)
    webapp.middlewares.append(json_not_found)
    return Api(keys, bus, service, worker, enqueuer, messages)

