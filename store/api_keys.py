"""API keys of the REST API: stored only as SHA-256 hashes, scoped to agent names.

A key reads `hitl_<id>_<secret>`: the id (12 hex digits) finds the stored hash, the secret
(256 random bits) is never stored. Failures are counted per key id (for ids that exist) and
in the buckets `missing`, `malformed` and `unknown` otherwise, so an attacker cannot grow
the counters without bound. The per-key rate limit is a token bucket in one Lua script.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store.models import from_epoch

KEY_RE = re.compile(r"^hitl_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")

_TAKE = """
local function take(bucket, now, rate, burst)
  local t = redis.call('HMGET', bucket, 'tokens', 'at')
  local tokens = tonumber(t[1]) or burst
  local at = tonumber(t[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
  local wait = 0
  if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
  return wait
end
"""

_BUCKET = _TAKE + """
-- KEYS: the key's rate bucket ; ARGV: now_ms, rate, burst
return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
"""

_ADMIT = _TAKE + """
-- KEYS: the key's hash, its rate bucket ; ARGV: SHA-256 of the presented key, now_ms, rate, burst
-- One round trip for every API call: the key checked (known, this hash, not revoked), then a
-- token taken from its bucket (never for a key that failed). Returns {'unknown'}, {'refused'}
-- or {'ok', wait_ms, agents, name, created_at}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
local k = redis.call('HMGET', KEYS[1], 'hash', 'revoked_at', 'agents', 'name', 'created_at')
if k[1] ~= ARGV[1] or (k[2] and k[2] ~= '') then return {'refused'} end
local wait = take(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
return {'ok', wait, k[3] or '', k[4] or '', k[5] or '0'}
"""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A stored key's public facts (never the key itself)."""

    id: str
    agents: tuple[str, ...]
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class ApiKeys:
    """Create, list, revoke and verify API keys; count failures; rate-limit per key."""

    def __init__(self, client: Any, prefix: str = "hitl") -> None:
        self.redis: Any = client
        self.prefix = prefix
        self._bucket = client.register_script(_BUCKET)
        self._admit = client.register_script(_ADMIT)

    def _key(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:apikeys"

    @property
    def _failures(self) -> str:
        return f"{self.prefix}:apikeys:failures"

    async def create(self, agents: list[str], now: datetime, name: str = "") -> tuple[str, ApiKey]:
        """A new key for `agents`: (the key, shown once; its stored facts)."""
        if not agents:
            raise ValueError("a key needs at least one agent")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key = f"hitl_{key_id}_{secret}"
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self._key(key_id), mapping={"hash": _digest(key), "agents": json.dumps(agents),
                                               "name": name, "created_at": now.timestamp()})
            p.sadd(self._index, key_id)
            await p.execute()
        return key, ApiKey(key_id, tuple(agents), name, now)

    async def list(self) -> list[ApiKey]:
        """Every key (active and revoked), oldest first."""
        ids = sorted(await self.redis.smembers(self._index))
        async with self.redis.pipeline(transaction=False) as p:
            for key_id in ids:
                p.hgetall(self._key(key_id))
            rows = await p.execute()
        keys = [_key(i, r) for i, r in zip(ids, rows, strict=True) if r]
        return sorted(keys, key=lambda k: k.created_at)

    async def get(self, key_id: str) -> ApiKey | None:
        """A key's stored facts (None: no such key)."""
        raw = await self.redis.hgetall(self._key(key_id))
        return _key(key_id, raw) if raw else None

    async def revoke(self, key_id: str, now: datetime) -> bool:
        """Revoke a key at once (kept, marked revoked, for the record); False if unknown."""
        if not await self.redis.exists(self._key(key_id)):
            return False
        await self.redis.hsetnx(self._key(key_id), "revoked_at", now.timestamp())
        return True

    async def active(self, key_id: str) -> bool:
        """Whether key `key_id` exists and is not revoked: a call admitted before a revocation
        (a long poll, an event stream) asks again before it hands anything over."""
        digest, revoked = await self.redis.hmget(self._key(key_id), ["hash", "revoked_at"])
        return bool(digest) and not revoked

    async def verify(self, token: str | None) -> tuple[ApiKey | None, str]:
        """The active key `token` is, or None and the failure bucket (key id or a reason)."""
        if not token:
            return None, "missing"
        m = KEY_RE.match(token)
        if m is None:
            return None, "malformed"
        raw = await self.redis.hgetall(self._key(m.group(1)))
        if not raw:
            return None, "unknown"
        if not hmac.compare_digest(raw.get("hash", ""), _digest(token)) or raw.get("revoked_at"):
            return None, m.group(1)
        return _key(m.group(1), raw), m.group(1)

    async def admit(self, token: str | None, now_ms: int, rate: float, burst: float
                    ) -> tuple[ApiKey | None, str, int]:
        """`verify`, then `take` for a key that passed, in one round trip: (the key or None,
        the failure bucket as `verify` names it, milliseconds to wait (0: go ahead))."""
        if not token:
            return None, "missing", 0
        m = KEY_RE.match(token)
        if m is None:
            return None, "malformed", 0
        key_id = m.group(1)
        res = await self._admit(keys=[self._key(key_id), f"{self.prefix}:apirate:{key_id}"],
                                args=[_digest(token), now_ms, rate, burst])
        if res[0] == "unknown":
            return None, "unknown", 0
        if res[0] != "ok":
            return None, key_id, 0
        raw = {"agents": res[2], "name": res[3], "created_at": res[4]}
        return _key(key_id, raw), key_id, int(res[1])

    async def note_failure(self, bucket: str) -> None:
        await self.redis.hincrby(self._failures, bucket, 1)

    async def failures(self) -> dict[str, int]:
        """Authentication failures by key id (or `missing` / `malformed` / `unknown`)."""
        return {k: int(v) for k, v in (await self.redis.hgetall(self._failures)).items()}

    async def take(self, key_id: str, now_ms: int, rate: float, burst: float) -> int:
        """Take one request from the key's bucket: 0 if allowed, else milliseconds to wait."""
        return int(await self._bucket(keys=[f"{self.prefix}:apirate:{key_id}"], args=[now_ms, rate, burst]))


def _key(key_id: str, raw: dict[str, str]) -> ApiKey:
    revoked = raw.get("revoked_at")
    return ApiKey(key_id, tuple(json.loads(raw.get("agents") or "[]")), raw.get("name", ""),
                  from_epoch(float(raw["created_at"])),
                  from_epoch(float(revoked)) if revoked else None)
