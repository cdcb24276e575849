"""API keys: scope, revocation, 401/403/429, failure counters, and no key in any log."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

from blocks.ids import ActionId
from store.api_keys import ApiKeys
from store.models import utcnow
from tests.api_util import LOOKUP, REFUND, Api, api_harness, new_key


async def test_scope_revocation_and_failures(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with api_harness(redis_url) as h:
        billing = await new_key(h, "billing-bot")
        ops = await new_key(h, "ops-bot")
        api = Api(h, billing)
        try:
            status, body, _ = await api.call("POST", "/v1/requests", json={**REFUND, "id": "b-1"})
            assert status == 201
            # a key for billing-bot cannot act as ops-bot, nor read billing's requests with ops' key
            status, body, _ = await api.call("POST", "/v1/requests", json={**REFUND, "agent": "ops-bot"})
            assert status == 403 and body["error"]["code"] == "forbidden"
            for path in ("/v1/requests/b-1", "/v1/requests/b-1/decision", ):
                status, body, _ = await api.call("GET", path, key=ops)
                assert status == 403, path
            status, _, _ = await api.call("POST", "/v1/requests/b-1/cancel", key=ops)
            assert status == 403
            # the same id from another agent's key is not theirs to see
            status, body, _ = await api.call("POST", "/v1/requests", json={**REFUND, "agent": "ops-bot", "id": "b-1"},
                                             key=ops)
            assert status == 409 and body["error"]["code"] == "id_taken"
            # missing, malformed, wrong secret: 401, counted by key id
            status, body, hdrs = await api.call("GET", "/v1/requests/b-1", key="")
            assert status == 401 and hdrs["WWW-Authenticate"].startswith("Bearer")
            key_id = billing.split("_")[1]
            wrong = billing[:-4] + ("AAAA" if not billing.endswith("AAAA") else "BBBB")
            for _ in range(2):
                status, _, _ = await api.call("GET", "/v1/requests/b-1", key=wrong)
                assert status == 401
            status, _, _ = await api.call("GET", "/v1/requests/b-1", key="not-a-key")
            assert status == 401
            failures = await ApiKeys(h.store.redis, "hitl").failures()
            assert failures == {"missing": 1, key_id: 2, "malformed": 1}
            async with api.session.get(api.base + "/metrics") as r:
                metrics = await r.text()
            assert f'hitl_api_auth_failures_total{{key_id="{key_id}"}} 2' in metrics
            # revocation takes effect at once
            assert await ApiKeys(h.store.redis, "hitl").revoke(key_id, utcnow())
            status, _, _ = await api.call("GET", "/v1/requests/b-1")
            assert status == 401
        finally:
            await api.close()
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert billing not in logged and ops not in logged and billing.split("_", 2)[2] not in logged
    assert "authentication failed" in caplog.text  # failures are logged, by key id only


async def test_rate_limit_answers_429_with_retry_after(redis_url: str) -> None:
    async with api_harness(redis_url, api_rate=0.5, api_burst=3) as h:
        api = Api(h, await new_key(h, "support-bot"))
        try:
            codes = [(await api.call("GET", "/v1/requests/none"))[0] for _ in range(3)]
            assert codes == [404, 404, 404]
            status, body, hdrs = await api.call("POST", "/v1/requests", json=LOOKUP)
            assert status == 429 and body["error"]["code"] == "rate_limited" and int(hdrs["Retry-After"]) >= 1
            # another key has its own bucket
            status, _, _ = await api.call("GET", "/v1/requests/none", key=await new_key(h, "support-bot"))
            assert status == 404
            assert await h.store.redis.xlen(h.store.keys.requests) == 0  # the refused submit stored nothing
        finally:
            await api.close()


async def test_a_wrong_secret_never_spends_the_real_keys_tokens(redis_url: str) -> None:
    # the key check and the token are one step: a caller who knows only the key id cannot
    # drain the owner's bucket (nor can a revoked key)
    async with api_harness(redis_url, api_rate=0.5, api_burst=2) as h:
        key = await new_key(h, "support-bot")
        api = Api(h, key)
        try:
            wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
            for _ in range(5):
                assert (await api.call("GET", "/v1/requests/none", key=wrong))[0] == 401
            codes = [(await api.call("GET", "/v1/requests/none"))[0] for _ in range(3)]
            assert codes == [404, 404, 429]
        finally:
            await api.close()


def test_hitl_keys_create_list_revoke(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}

    def hitl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot.cli", "keys", *args], capture_output=True, text=True,
                              env=env, timeout=30, check=False)

    made = hitl("create", "--agent", "billing-bot", "--agent", "ops-bot", "--name", "ci")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    key_id = key.split("_")[1]
    assert key.startswith("hitl_") and "shown only once" in made.stderr
    listed = hitl("list")
    assert key_id in listed.stdout and "billing-bot,ops-bot" in listed.stdout and "active" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout  # never the secret
    assert hitl("revoke", key_id).returncode == 0
    assert "revoked" in hitl("list").stdout
    assert hitl("revoke", "000000000000").returncode == 1
    assert hitl("create", "--agent", " ").returncode == 2


async def test_a_key_revoked_while_it_waits_reads_no_decision(redis_url: str) -> None:
    # "revocation is immediate": a long poll or an event stream opened before the key was
    # revoked must not hand over a decision taken after it
    async with api_harness(redis_url) as h:
        key = await new_key(h, "billing-bot")
        key_id = key.split("_")[1]
        api = Api(h, key)
        try:
            status, body, _ = await api.call("POST", "/v1/requests", json={**REFUND, "id": "rv-1"})
            assert status == 201 and body["state"] == "pending"
            rec = await h.card("rv-1")
            waiting = asyncio.ensure_future(api.call("GET", "/v1/requests/rv-1/decision?wait=30"))
            async with api.session.get(api.base + "/v1/events", headers=api.headers()) as resp:
                assert resp.status == 200
                await resp.content.readline()  # the opening comment
                await resp.content.readline()
                await asyncio.sleep(0.3)  # both wait on the feed
                assert await ApiKeys(h.store.redis, "hitl").revoke(key_id, utcnow())
                await h.click(rec, "U0ALICE", ActionId.approve)
                await h.decided("rv-1")
                rest = await asyncio.wait_for(resp.content.read(), 10)  # the stream ends, saying nothing
            assert b"event: decision" not in rest and b"rv-1" not in rest
            status, body, _ = await waiting
            assert status == 401 and body["error"]["code"] == "unauthorized"
        finally:
            await api.close()
