"""`hitl demo`: the whole loop on one machine, with the built-in Slack emulator.

`Demo` starts a private `redis-server` (temporary directory, free port, stopped on exit), or
uses the Redis that REDIS_URL names when it is set explicitly: never whatever happens to answer
at localhost:6379, whose data is not the demo's. Then it starts the emulator and its web page,
the bot on the demo policy, and a demo agent; leaving `async with Demo(...)` stops everything
it started. Unless HITL_AUDIT_KEY_FILE or HITL_AUDIT_KEY is set, the audit checkpoints are signed
with a throwaway Ed25519 key made for the run (in a temporary directory, removed on exit), so the
demo shows the audit as it runs in production. `demo()` is the command: it prints the URL and
waits for Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hitl.config import shown_url
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from redis.exceptions import AuthenticationError

from bot.app import build_app
from bot.client import HitlClient
from bot.config import Settings
from bot.evidence.signing import key_id
from emulator import Emulator
from store.connect import BadRedisUrl, connect
from store.connect import parse as parse_redis_url
from store.models import Decision

DEMO_PREFIX = "hitl-demo"
DEMO_POLICY = Path(__file__).with_name("demo_policy.yml")

TRY = """\
  Try it: you are Alice. In #approvals, approve the $250 refund; Edit the VIP email draft;
  answer the warehouse question; reject one tag update with a reason (its ⋯ menu), then
  approve the others at once; type /hitl help. Then act as Carol (the switcher at the top
  left) and try to approve the deletion in #approvals-high: only @managers (Alice and Bob)
  may, and it needs both of them. The steps: docs/demo.md, "Things to try"."""
KEY_VARS = ("HITL_AUDIT_KEY_FILE", "HITL_AUDIT_KEY")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _reachable(url: str) -> bool:
    return await _why_not(url) is None


async def _why_not(url: str) -> str | None:
    """None when the Redis at `url` answers PING, else what went wrong and what to do, in words."""
    try:  # as the bot connects to it (a Sentinel master too)
        client = connect(url, socket_timeout=1, socket_connect_timeout=1, retry=False)
    except BadRedisUrl as e:
        return f"{e}.\nFix REDIS_URL, or unset it"
    try:
        await client.ping()
        return None
    except AuthenticationError:
        if urlsplit(url).password is None:
            return ("it asks for a password, and REDIS_URL has none: redis://:PASSWORD@host:port/0 "
                    "(or redis://USER:PASSWORD@...).\nFix REDIS_URL, or unset it")
        return "it refused the password (or user) in REDIS_URL.\nFix REDIS_URL, or unset it"
    except Exception:
        return "nothing answers there.\nStart that Redis, or unset REDIS_URL"
    finally:
        await client.aclose()


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, be sent SIGTERM when the demo dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class PrivateRedis:
    """A `redis-server` on a free port in a temporary directory, no persistence.

    It runs in a session of its own: Ctrl-C in a terminal signals the whole foreground process
    group, and the server must outlive the bot, which finishes its in-flight work on the way out;
    the demo stops it last (and on Linux the kernel stops it if the demo is killed outright)."""

    def __init__(self, binary: str) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="hitl-demo-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def stop(self) -> None:
        """Terminate the server (kill it if it does not exit) and remove its directory."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


async def find_redis(url: str | None) -> tuple[str, PrivateRedis | None]:
    """The Redis at `url` when one is given (it must answer), else a private redis-server."""
    if url:
        with contextlib.suppress(BadRedisUrl):  # said below, in the words of the check
            if parse_redis_url(url).kind == "cluster":
                raise SystemExit(
                    f"hitl demo: REDIS_URL={shown_url(url)} is a Redis Cluster; the demo runs on one Redis "
                    "server.\nPoint REDIS_URL at one, or unset it and the demo "
                    "starts a private redis-server.")
        why = await _why_not(url)
        if why is None:
            return url, None
        raise SystemExit(f"hitl demo: REDIS_URL={shown_url(url)}: {why}, "
                         "and the demo starts a private redis-server.")
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit(
            "hitl demo needs Redis: it starts a private redis-server, which is not installed.\n"
            "Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis),\n"
            "run ./run demo (it installs it when run as root), or set REDIS_URL to a Redis of yours\n"
            "(the demo then uses and empties only keys under hitl-demo:).")
    server = PrivateRedis(binary)
    for _ in range(100):
        if await _reachable(server.url):
            return server.url, server
        if server.proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    server.stop()
    raise SystemExit(f"hitl demo: could not start a private redis-server on port {server.port}")


DEMO_REQUESTS: list[dict[str, Any]] = [
    {"agent": "billing-agent", "action": "refund", "id": "demo-refund",
     "summary": "Refund $250 to Ana Lima: she was charged twice for order #4711.",
     "params": {"order": "4711", "amount": 250, "customer": "Ana Lima"}, "editable": ["amount"],
     "confidence": 0.72, "risk": {"amount": 250, "currency": "USD", "reversible": False, "domain": "billing"},
     "context": {"goal": "Resolve a double-charge complaint",
                 "conversation": [{"role": "customer", "text": "I was charged twice for my order!"},
                                  {"role": "agent", "text": "I can see two charges of $250 on 3 Nov."}],
                 "recommendation": "Refund the duplicate charge of $250."}},
    {"agent": "support-agent", "action": "send_email", "kind": "review", "id": "demo-email",
     "summary": "Reply to VIP customer Globex about the delayed shipment.",
     "draft": "Dear Ms. Chen,\n\nI am sorry your shipment is late. It left our warehouse today and "
              "will arrive on Thursday. As an apology we have upgraded you to express delivery.\n\nBest,\nSupport",
     "params": {"to": "m.chen@globex.example", "subject": "Your shipment"}, "editable": ["draft", "subject"],
     "confidence": 0.81, "risk": {"tags": ["vip"]}},
    {"agent": "ops-agent", "action": "delete_record", "id": "demo-delete",
     "summary": "Delete customer record #88123 (duplicate of #88122).",
     "params": {"record": 88123}, "confidence": 0.93, "risk": {"reversible": False}},
    {"agent": "support-agent", "action": "reply", "id": "demo-legal",
     "summary": "Customer says they will contact their lawyer about a damaged delivery.",
     "confidence": 0.4, "risk": {"sentiment": -0.8},
     "context": {"goal": "Answer a complaint about a damaged sofa",
                 "conversation": [{"role": "customer", "text": "This is the third time. I'm calling my lawyer."}],
                 "recommendation": "Offer a full refund and a pickup."}},
    {"agent": "research-agent", "action": "ask", "kind": "question", "id": "demo-question",
     "summary": "Which warehouse should ship the Berlin order: Leipzig or Hamburg?",
     "options": ["Leipzig", "Hamburg"]},
    *[{"agent": "crm-agent", "action": "update_tag", "id": f"demo-tag-{i}", "batch_key": "crm-tags",
       "summary": f"Tag contact #{1000 + i} as 'churn-risk'.", "params": {"contact": 1000 + i, "tag": "churn-risk"},
       "confidence": 0.66} for i in range(5)],
    {"agent": "support-agent", "action": "lookup_order", "id": "demo-lookup",
     "summary": "Look up the status of order #4711.", "params": {"order": "4711"}, "confidence": 0.99},
]


class DemoAgent:
    """Pushes DEMO_REQUESTS (ids made unique per run) and reports each decision as it arrives."""

    def __init__(self, client: HitlClient, out: Callable[[str], None]) -> None:
        self.client = client
        self.out = out
        self.ids: dict[str, str] = {}  # DEMO_REQUESTS id -> the id pushed this run
        self.decisions: dict[str, Decision] = {}  # pushed id -> decision

    async def push(self) -> None:
        for req in DEMO_REQUESTS:
            rid = f"{req['id']}-{secrets.token_hex(2)}"
            self.ids[req["id"]] = await self.client.request(**{**req, "id": rid})
        self.out(f"  demo agent pushed {len(self.ids)} requests; decisions appear below.")

    async def report(self) -> None:
        await asyncio.gather(*(self._report(rid) for rid in self.ids.values()))

    async def _report(self, rid: str) -> None:
        d = await self.client.wait(rid)
        self.decisions[rid] = d
        self.out(f"  agent got: {rid} -> {report_line(d)}")


def report_line(d: Decision) -> str:
    """`approved (alice) with edits: subject`: the status, who decided (each person once, in the
    order they acted: one who took a case over and then resolved it is named once), what they
    changed, and the reason or note."""
    who = ", ".join(dict.fromkeys(v.name or v.user_id for v in d.decided_by)) or "policy"
    edits = f" with edits: {', '.join(d.changes)}" if d.changes else ""
    detail = f": {d.reason}" if d.reason else ""
    return f"{d.status.value} ({who}){edits}{detail}"


class ThrowawayKey:
    """An Ed25519 signing key for one demo run: a PEM file in a temporary directory, named by
    HITL_AUDIT_KEY_FILE while the demo runs; `remove()` puts the environment back and deletes it."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="hitl-demo-key-")  # mode 0700: only this user reads it
        key = Ed25519PrivateKey.generate()
        self.key_id = key_id(key.public_key())
        self.path = Path(self.dir) / "audit-key.pem"
        self.path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        self.path.chmod(0o600)
        os.environ["HITL_AUDIT_KEY_FILE"] = str(self.path)

    def remove(self) -> None:
        if os.environ.get("HITL_AUDIT_KEY_FILE") == str(self.path):
            del os.environ["HITL_AUDIT_KEY_FILE"]
        shutil.rmtree(self.dir, ignore_errors=True)


class Demo:
    """Redis, the emulator, the bot and the demo agent; `async with` starts and stops them all."""

    def __init__(self, *, redis_url: str | None = None, port: int = 8080, host: str = "127.0.0.1",
                 agent: bool = True, policy: Path = DEMO_POLICY,
                 out: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
        self.want_redis = redis_url or os.environ.get("REDIS_URL") or None
        self.port, self.host, self.with_agent, self.policy, self.out = port, host, agent, policy, out
        self.redis_url = ""
        self.private_redis: PrivateRedis | None = None
        self.key: ThrowawayKey | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def url(self) -> str:
        """The page to open."""
        return f"{self.emu.url}/"

    async def __aenter__(self) -> Demo:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        self.redis_url, self.private_redis = await find_redis(self.want_redis)
        if self.private_redis is not None:
            self._stack.callback(self.private_redis.stop)
        secret = secrets.token_hex(16)
        bot_port = _free_port()
        self.emu = Emulator(signing_secret=secret, bot_token="xoxb-demo",
                            request_url=f"http://127.0.0.1:{bot_port}/slack/events")
        try:
            await self.emu.start(self.host, self.port)
        except OSError as e:
            await self.emu.stop()
            raise SystemExit(f"cannot serve the demo page on {self.host}:{self.port} ({e.strerror}); "
                             "try another port: ./run demo --port 8081") from None
        self._stack.push_async_callback(self.emu.stop)
        if not any(os.environ.get(name) for name in KEY_VARS):  # a key of the user's is used as it is
            self.key = ThrowawayKey()
            self._stack.callback(self.key.remove)
        settings = DemoSettings(slack_bot_token="xoxb-demo", slack_signing_secret=secret,
                                 slack_api_url=self.emu.api_url, redis_url=self.redis_url,
                                 prefix=DEMO_PREFIX, policy=self.policy, port=bot_port,
                                 host="127.0.0.1", consumer="demo", housekeeping="inline")
        self.bot = build_app(settings)
        try:
            await self.bot.store.clear()
            await self.bot.start()
        except BaseException:
            await self.bot.store.close()
            raise
        self._stack.push_async_callback(self.bot.stop)
        self.client = HitlClient.from_url(self.redis_url, prefix=DEMO_PREFIX, name="demo-agent")
        self._stack.push_async_callback(self.client.close)
        self.agent = DemoAgent(self.client, self.out)
        self.announce()
        if self.with_agent:
            await self.agent.push()
            task = asyncio.create_task(self.agent.report(), name="demo-agent")
            self._stack.push_async_callback(_cancel, task)

    def announce(self) -> None:
        """Print where to go and what to try."""
        whose = (" (a private redis-server in a temporary directory, removed on exit)"
                 if self.private_redis else
                 f" (yours, from REDIS_URL: only keys under {DEMO_PREFIX}: are used, and emptied)")
        self.out(f"hitl demo is running: open {self.url} in a browser (Ctrl-C stops it).")
        self.out(f"  Redis {shown_url(self.redis_url)}{whose}")  # never the password
        self.out(f"  key prefix {DEMO_PREFIX}; policy {self.policy}")
        key = (f"a throwaway key, id {self.key.key_id} (made for this run, removed on exit)" if self.key
               else "your key (HITL_AUDIT_KEY_FILE or HITL_AUDIT_KEY)")
        self.out(f"  audit checkpoints signed with {key}")
        self.out(TRY)


class DemoSettings(Settings):
    """The demo bot's settings: only the values the demo gives, never the environment's. Someone
    who runs hitl for real has SLACK_APP_TOKEN, HITL_POST_RATE, HITL_REDIS_WAIT_REPLICAS and the
    like exported; they are for that bot, and would make this one a Socket Mode client of the
    emulator, wait for replicas a private Redis does not have, or post one card a minute."""

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def demo(port: int = 8080, agent: bool = True, redis_url: str | None = None) -> int:
    """Run the demo until Ctrl-C (or SIGTERM, or SIGHUP when its terminal closes); everything it
    started is stopped on the way out."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Demo(redis_url=redis_url, port=port, agent=agent):
            await stop.wait()
            print("stopping…", flush=True)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    print("stopped; nothing left running.", flush=True)
    return 0
