"""Wiring: `build_app(...)` constructs everything once; `Bot.start()`/`stop()` run it.

HTTP mode serves `POST /slack/events` (interactivity, slash commands, events),
`GET /healthz`, `GET /metrics` and the HTTP API (`/v1/`, `/humanlayer/v1`: bot.api); with
`SLACK_APP_TOKEN` Slack traffic arrives over Socket Mode instead and the HTTP server keeps
health, metrics and the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from blocks.batch import batch_card
from blocks.cards import card
from bot import charts, housekeeping, http_ack
from bot.api import mount
from bot.api.hints import SECRET as HINTS_SECRET
from bot.api.hints import HintKey, HonourHints
from bot.autonomy import AwayState
from bot.backlog import Backlog
from bot.config import Settings
from bot.delivery import Delivery
from bot.directory import SlackDirectory
from bot.evidence import wiring as evidence
from bot.gateway import Gateway, web_client
from bot.housekeeping import Companion
from bot.inbound import bolt_request
from bot.inbound import check as check_inbound
from bot.intake import Intake
from bot.metrics import render_metrics
from bot.outage import UNREACHABLE
from bot.policy import PolicyEngine, PolicyError, PolicyHolder
from bot.scheduler import Scheduler
from bot.socket_door import SocketDoor
from bot.stats import PauseState, policy_lines
from bot.worker import cancel_all, supervised
from handlers import batch, cards, escalations, questions, review_batch, trust, trust_commands
from handlers import commands as command_handlers
from handlers import home as home_handlers
from handlers.deps import CONTEXT_KEY, Deps
from handlers.once import once_only
from handlers.org import only_our_people
from handlers.slack_urls import only_slack_response_urls
from store.models import Record, utcnow
from store.redis_store import Store
from store.trust import Away

log = logging.getLogger("hitl")
DRAIN_S = 10.0
"""How long a stopping bot waits for the Slack requests it acknowledged (Slack told the person
they went through) to finish before it closes Redis."""


def render(record: Record, pause: tuple[bool, str | None] = (False, None),
           absences: Mapping[str, Away] | None = None) -> dict[str, Any]:
    """The card for a record in its current state; while automation is paused, every open card
    says so, and why; an open card naming an approver away now says who decides for them."""
    paused, reason = pause
    return card(record, paused=paused, paused_reason=reason, absences=absences, now=utcnow())


def _paused(store: Store, pause: PauseState, paused: bool, reason: str | None) -> None:
    """Pause or resume noted here at once; every open card is redrawn to show it. The redraw
    waits a moment, so the other replicas (which re-read the switch every second) agree."""
    pause.note(paused, reason)

    async def redraw() -> None:
        due = int(time.time() * 1000) + REDRAW_AFTER_MS
        await store.enqueue_many([f"update:{rid}" for rid in await store.pending_ids(MAX_REDRAW)], due)

    task = asyncio.ensure_future(redraw())
    _REDRAWS.add(task)
    task.add_done_callback(_REDRAWS.discard)


REDRAW_AFTER_MS = 1500
MAX_REDRAW = 1000
_REDRAWS: set[asyncio.Future[None]] = set()


class _TokenFromClient(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment even when given a client built with that
    very token, then warns that the token is unused; that warning is false here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("hitl.bolt")
    if not any(isinstance(f, _TokenFromClient) for f in logger.filters):
        logger.addFilter(_TokenFromClient())
    return logger


async def _dm(client: AsyncWebClient, user: str, message: dict[str, Any]) -> None:
    """A direct message from the bot (trust notices, canary feedback); a failure is logged."""
    try:
        dm = await client.conversations_open(users=user)
        await client.chat_postMessage(channel=str(dm["channel"]["id"]), **message)
    except Exception:
        log.exception("direct message to %s failed", user)



@dataclass
class Bot:
    """The running product: Bolt app, web server, intake and delivery."""

    settings: Settings
    store: Store
    bolt: AsyncApp
    web: web.Application
    intake: Intake
    delivery: Delivery
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    runner: Any = None
    port: int = 0
    socket_handler: SocketDoor | None = None
    policy: PolicyHolder = field(default_factory=PolicyHolder)
    _policy_mtime: float = 0.0
    background: dict[str, Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=dict)
    """More tasks to run while the bot runs (by name); cancelled first on stop."""
    api: Any = None
    """The HTTP API (bot.api.Api): REST, HumanLayer compatibility, webhooks."""
    scheduler: Scheduler | None = None
    """Reminders, escalation levels and expiry (runs as the background task `scheduler`)."""
    gateway: Gateway | None = None
    """The one door to Slack's Web API (delivery, scheduler, directory); shares its session with Bolt."""
    companion: Companion | None = None
    """`hitl housekeep` beside this process (HITL_HOUSEKEEPING=process: bot.housekeeping)."""
    closing: bool = False
    """`stop()` has begun: Slack's new requests are turned away (503)."""

    async def start(self) -> None:
        if self.settings.socket_mode:  # first: a refused token stops start() before anything runs
            self.socket_handler = SocketDoor(self.bolt, str(self.settings.slack_app_token), self.settings.slack_api_url)
            await self.socket_handler.connect_async()
        if self.gateway is not None:
            self.gateway.open(self.bolt.client)
        self.runner = web.AppRunner(self.web, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.settings.host, self.settings.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        self._policy_mtime = self._mtime()
        self.tasks = [asyncio.create_task(self.intake.run(), name="intake"),
                      asyncio.create_task(self.delivery.run(), name="delivery"),
                      asyncio.create_task(self._watch_policy(), name="policy-watch")]
        self.tasks += [asyncio.create_task(supervised(name, run), name=name) for name, run in self.background.items()]
        if self.companion is not None:
            await self.companion.start()
        log.info("hitl: listening on %s:%s (%s mode)", self.settings.host, self.port,
                 "Socket" if self.settings.socket_mode else "HTTP")

    def _mtime(self) -> float:
        path = self.settings.policy
        try:
            return path.stat().st_mtime if path else 0.0
        except OSError:
            return 0.0

    async def reload_policy(self) -> bool:
        """Re-read the policy file; an invalid one is audited and the policy in force is kept.
        A new policy goes into force only once its `policy_changed` entry is written: when the
        audit fails (Redis away, out of memory) this raises and the old policy stays."""
        now = utcnow()
        try:
            found = self.policy.candidate()
        except PolicyError as e:
            await self.store.audit_system("policy_rejected", "system",
                                          {"source": e.source, "errors": e.errors}, now)
            return False
        if found is None:
            return False
        engine, digest = found
        await self.store.policy_in_force(digest, engine.source, now)  # '' when another replica audited it
        self.policy.install(engine, digest)
        return True

    async def _watch_policy(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            mtime = self._mtime()
            if mtime != self._policy_mtime:
                try:
                    await self.reload_policy()
                    self._policy_mtime = mtime  # read again every 2 s until it goes in (audited)
                except UNREACHABLE as e:
                    log.warning("policy change not in force yet: Redis unavailable to audit it (%s)",
                                type(e).__name__)
                except Exception:
                    log.exception("policy reload failed; trying again")

    async def stop(self) -> None:
        """Stop taking Slack's requests and reading new entries, finish in-flight work (the
        clicks Slack was told went through included), close everything."""
        # Slack's new requests are turned away (HTTP: 503 and /healthz 503, so a balancer moves
        # traffic; Socket Mode: left unacknowledged, so Slack sends them to a replica that runs);
        # those already inside are answered, over the connection still open, before it closes
        self.closing = True
        if self.socket_handler is not None:
            await self.socket_handler.finish(DRAIN_S)
            await self.socket_handler.close_async()
            self.socket_handler = None
        if left := await http_ack.drain(DRAIN_S):
            log.warning("hitl: %d acknowledged Slack request(s) still running after %.0f s; stopping anyway",
                        left, DRAIN_S)
        background = [t for t in self.tasks if t.get_name() not in ("intake", "delivery")]
        if self.companion is not None:  # told first; waited for after the bot's own work is done
            await self.companion.terminate()
        if self.scheduler is not None:
            self.scheduler.stop()
        await cancel_all(background)
        self.intake.stop()
        for t in self.tasks:
            if t.get_name() == "intake":
                await asyncio.wait([t], timeout=15)
        self.delivery.stop()
        await asyncio.wait(self.tasks, timeout=15)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.companion is not None:
            await self.companion.stop()
        if self.socket_handler is not None:
            await self.socket_handler.close_async()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.intake.close()
        await self.store.close()
        if self.gateway is not None:
            await self.gateway.close()


def _tier_approvers(engine: PolicyEngine, tier: str) -> tuple[str, ...] | None:
    """The approvers the policy names for `tier` (empty: anyone), None when it has no such tier."""
    found = engine.tiers.get(tier)
    return found.approvers if found is not None else None


async def _secrets(store: Store, hint_key: HintKey, policy: PolicyHolder) -> None:
    """The deployment's secrets routing needs, read when intake starts: the key sealing
    HumanLayer hints, and the salt that sampling and canary picks are keyed by; and the policy
    in force, audited when it changed since the trail last named one."""
    found = await store.secrets([HINTS_SECRET, "sample"])  # one round trip at each start
    await hint_key.load(store, found[HINTS_SECRET])
    policy.sample_salt = found["sample"]
    # the policy in force, audited before the first request is routed by it when it is not the
    # one the trail last named (the file changed while the bot was down: a deploy)
    await store.policy_in_force(policy.digest, policy().source, utcnow())


def _kick_both(delivery: Delivery, scheduler: Scheduler) -> None:
    """A new request: its card is due now, and so may be its first deadline."""
    delivery.kick()
    scheduler.kick()


def build_app(settings: Settings, store: Store | None = None, policy: PolicyHolder | None = None) -> Bot:
    """Construct the whole bot from settings; nothing runs until `Bot.start()`.

    Raises PolicyError when the policy file is invalid (the bot does not start on it).
    """
    policy = policy or PolicyHolder(settings.policy)
    store = store or Store.from_url(settings.redis_url, settings.prefix,
                                    wait_replicas=settings.redis_wait_replicas)
    bolt_client = web_client(settings.slack_bot_token, settings.slack_api_url, retries=True)
    gateway = Gateway(web_client(settings.slack_bot_token, settings.slack_api_url))
    store.redact = evidence.redactor(policy)  # the policy's `redact:` applies before audit writes
    pause = PauseState(store)
    away = AwayState(store)
    delivery = Delivery(store, gateway,
                        lambda r: render(r, pause.current(), away.current()),
                        lambda b, rs: batch_card(b, rs, paused=pause.current()[0], paused_reason=pause.current()[1],
                                                 absences=away.current(), now=utcnow()),
                        backlog=Backlog(store, settings.backlog_at), post_rate=settings.post_rate,
                        post_burst=settings.post_burst)
    hint_key = HintKey()  # seals HumanLayer calls' hints (the API) and checks them (intake)
    intake = Intake(store, lambda: HonourHints(policy(), lambda: hint_key.value), redis_url=settings.redis_url,
                    consumer=settings.consumer, prepare=lambda: _secrets(store, hint_key, policy),
                    claim_idle_s=settings.claim_idle_s, max_deliveries=settings.max_deliveries,
                    dead_max_len=settings.dead_max_len, dead_max_age_s=settings.dead_max_age_s,
                    on_accepted=lambda: _kick_both(delivery, scheduler))
    directory = SlackDirectory(gateway)
    scheduler = Scheduler(store, gateway, lambda: intake.router(),
                          on_change=delivery.kick, slot_window=delivery.slot_window, directory=directory)
    d = Deps(store=store, directory=directory, external_teams=lambda: policy().external_teams, kick=delivery.kick,
             admins=lambda: frozenset(policy().admins), paused=pause.current, on_pause=lambda paused, reason: _paused(store, pause, paused, reason),
             policy_lines=lambda: policy_lines(policy(), policy.last_error), chart=charts.png,
             trust_after=lambda: policy().policy.trust.after,
             grant_terms=lambda tier: policy().grant_terms(tier), on_away=away.note, dm=lambda user, message: _dm(bolt_client, user, message))
    scheduler.recount = lambda rid: trust.recount(d, rid)
    bolt = AsyncApp(signing_secret=settings.slack_signing_secret or "unused",
                    client=bolt_client, request_verification_enabled=not settings.socket_mode,
                    process_before_response=False, logger=_bolt_logger(),
                    user_facing_authorize_error_message=http_ack.UNAUTHORIZED)
    bolt.error(http_ack.remember_error)

    @bolt.middleware
    async def inject(context: AsyncBoltContext, next: Callable[[], Awaitable[None]]) -> None:
        context[CONTEXT_KEY] = d
        await next()

    bolt.middleware(only_slack_response_urls(settings.slack_api_url))
    bolt.middleware(only_our_people)
    bolt.middleware(once_only)

    cards.register(bolt)
    batch.register(bolt)
    review_batch.register(bolt)
    escalations.register(bolt)
    questions.register(bolt)
    command_handlers.register(bolt)
    home_handlers.register(bolt)
    trust_commands.register(bolt)
    webapp = web.Application()
    bot = Bot(settings=settings, store=store, bolt=bolt, web=webapp, intake=intake, delivery=delivery,
              policy=policy, gateway=gateway)
    bot.background.update({"pause-watch": pause.run, "away-watch": away.run})
    bot.scheduler = scheduler
    bot.background["scheduler"] = scheduler.run
    if settings.housekeeping == "inline":
        bot.background.update(housekeeping.duties(settings, store))
    else:
        evidence.signer()  # a bad signing key stops `hitl run` here, not its companion in a loop
        if settings.housekeeping == "process":
            bot.companion = Companion()

    async def events(request: web.Request) -> web.Response:
        if bot.closing:  # stopping: this replica takes no new work (/healthz says so too)
            return web.json_response({"ok": False, "error": "hitl is restarting; try again"}, status=503)
        raw = await request.read()
        refused = check_inbound(settings.slack_signing_secret or "", request.headers, raw, request.content_type)
        if refused is not None:
            return refused
        try:
            slack = bolt_request(raw, request.content_type, request.query_string, request.headers)
            return await to_aiohttp_response(await http_ack.dispatch(bolt, slack))
        except Exception:  # a signed request our checks let through and Bolt tripped over
            log.exception("slack request could not be handled")
            return web.json_response({"ok": False, "error": "this request could not be handled"}, status=400)

    async def healthz(_: web.Request) -> web.Response:
        try:
            redis_ok = await asyncio.wait_for(store.ping(), 2)
        except Exception:
            redis_ok = False
        ok = redis_ok and intake.running and not bot.closing
        body: dict[str, Any] = {"redis": "ok" if redis_ok else "down",
                                "intake": "running" if intake.running else "stopped",
                                "housekeeping": bot.companion.state if bot.companion is not None
                                else settings.housekeeping}
        if not intake.running and intake.stopped_by:  # why: Redis read-only, out of memory, away
            body["intake_error"] = intake.stopped_by
        if bot.closing:  # stopping: it turns Slack's requests away, so balancers should move them
            body["closing"] = True
        if bot.socket_handler is not None:  # Socket Mode: down past its grace, no click reaches us
            body["slack_socket"] = bot.socket_handler.state()
            ok = ok and body["slack_socket"] != "down"
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=await render_metrics(bot), content_type="text/plain", charset="utf-8")

    bot.api = mount(webapp, settings, store, tier_approvers=lambda tier: _tier_approvers(policy(), tier),
                    hint_key=hint_key)
    bot.background.update(bot.api.background())
    if not settings.socket_mode:
        webapp.router.add_post("/slack/events", events)
    webapp.router.add_get("/healthz", healthz)
    webapp.router.add_get("/metrics", metrics)
    return bot
