"""Tenant limits shared by every router replica: one atomic Lua script per admission decision.

Per tenant (keys hash-tagged on the tenant, so a Redis Cluster keeps them in one slot):
``rpm`` / ``tpm`` token buckets (hash: level, stamp in ms of the Redis clock), ``leases`` (sorted set of
reservation ids scored by their expiry), ``est`` (reservation id → token estimate), ``reserved`` (sum
of live estimates) and ``q:<YYYY-MM>`` (tokens settled this month).

``reserve`` checks quota (settled + reserved + this prompt must leave room; the completion tokens
granted are capped at that room, as the local store does), concurrency (live leases), RPM and TPM,
and charges all of them in the same script. ``settle`` replaces the estimate with real usage (TPM refund, quota
charge); a refund is a settle of 0. A reservation is a lease: the replica renews it while the request
runs; a replica that dies stops renewing and the next script run on that tenant drops it (its
estimate leaves ``reserved``; TPM keeps it spent). Times come from the Redis server (one clock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from supernode.router.admission.limits import month_start

RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, prompt, max_tokens = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[9])
local rpm, tpm, maxc, quota = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ttl, month_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local expired = 0
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  local e = tonumber(redis.call('HGET', KEYS[4], dead) or '0')
  redis.call('HDEL', KEYS[4], dead)
  redis.call('ZREM', KEYS[3], dead)
  redis.call('DECRBY', KEYS[6], e)
  expired = expired + 1
end
local used = tonumber(redis.call('GET', KEYS[5]) or '0')
local reserved = tonumber(redis.call('GET', KEYS[6]) or '0')
if reserved < 0 then reserved = 0; redis.call('SET', KEYS[6], 0) end
local function bucket(key, limit)
  local v = redis.call('HMGET', key, 'l', 's')
  local level, stamp = tonumber(v[1]), tonumber(v[2])
  if level == nil then level, stamp = limit, now end
  if now > stamp then level = math.min(limit, level + (now - stamp) * limit / 60000.0); stamp = now end
  return level
end
local granted = max_tokens
if quota > 0 then
  local room = quota - used - reserved - prompt
  if room < 1 then return {0, 'monthly_token_quota', 0, used, reserved, expired, 0} end
  if room < granted then granted = room end
end
local est = prompt + granted
if maxc > 0 and redis.call('ZCARD', KEYS[3]) >= maxc then
  return {0, 'max_concurrent', 1000, used, reserved, expired, 0}
end
local rl, tl = 0, 0
if rpm > 0 then
  rl = bucket(KEYS[1], rpm)
  if rl < 1 then return {0, 'rpm', math.ceil((1 - rl) * 60000 / rpm), used, reserved, expired, 0} end
end
if tpm > 0 then
  tl = bucket(KEYS[2], tpm)
  local need = math.min(est, tpm)
  if tl < need then return {0, 'tpm', math.ceil((need - tl) * 60000 / tpm), used, reserved, expired, 0} end
end
if rpm > 0 then
  redis.call('HSET', KEYS[1], 'l', tostring(rl - 1), 's', now); redis.call('PEXPIRE', KEYS[1], 120000)
end
if tpm > 0 then
  redis.call('HSET', KEYS[2], 'l', tostring(tl - est), 's', now); redis.call('PEXPIRE', KEYS[2], 120000)
end
redis.call('ZADD', KEYS[3], now + ttl, id)
redis.call('HSET', KEYS[4], id, est)
redis.call('INCRBY', KEYS[6], est)
for i = 3, 6 do if i ~= 5 then redis.call('PEXPIRE', KEYS[i], ttl * 4) end end
if redis.call('EXISTS', KEYS[5]) == 0 then redis.call('SET', KEYS[5], 0, 'EX', month_ttl) end
return {1, '', 0, used, reserved + est, expired, granted}
"""

SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, used, tpm, month_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local est = redis.call('HGET', KEYS[3], id)
local give = -used
if est then
  est = tonumber(est)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('DECRBY', KEYS[5], est)
  give = est - used
end
if tpm > 0 and give ~= 0 then
  local v = redis.call('HMGET', KEYS[1], 'l', 's')
  local level, stamp = tonumber(v[1]), tonumber(v[2])
  if level == nil then level, stamp = tpm, now end
  if now > stamp then level = math.min(tpm, level + (now - stamp) * tpm / 60000.0) end
  redis.call('HSET', KEYS[1], 'l', tostring(math.min(tpm, level + give)), 's', now)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
if used > 0 then
  redis.call('INCRBY', KEYS[4], used)
  redis.call('EXPIRE', KEYS[4], month_ttl)
end
if est then return 1 end
return 0
"""

RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[i]) end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 4) end
return n
"""

MONTH_TTL_S = 40 * 86400


def month_tag(wall: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(month_start(wall)))


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    monthly_token_quota: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    ok: bool
    limit: str = ""
    retry_after: float = 0.0
    month_used: int = 0
    reserved: int = 0
    expired: int = 0
    granted: int = 0  # completion tokens granted (the request's max_tokens, capped by the quota)


class TenantKeys:
    def __init__(self, prefix: str, tenant: str) -> None:
        base = f"{prefix}:t:{{{tenant}}}"
        self.rpm, self.tpm = f"{base}:rpm", f"{base}:tpm"
        self.leases, self.est, self.reserved = f"{base}:leases", f"{base}:est", f"{base}:reserved"
        self._base = base

    def month(self, wall: float) -> str:
        return f"{self._base}:q:{month_tag(wall)}"


class RedisLimits:
    """The scripts bound to one client and key prefix. Redis errors propagate (the caller applies the
    tenant's outage policy)."""

    def __init__(self, client: Any, prefix: str, *, lease_ttl_s: float) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_ms = int(lease_ttl_s * 1000)
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)
        self._renew = client.register_script(RENEW)

    def keys(self, tenant: str) -> TenantKeys:
        return TenantKeys(self.prefix, tenant)

    async def reserve(self, tenant: str, lease: str, prompt: int, max_tokens: int, limits: Limits,
                      wall: float) -> Decision:
        k = self.keys(tenant)
        got = await self._reserve(
            keys=[k.rpm, k.tpm, k.leases, k.est, k.month(wall), k.reserved],
            args=[lease, max(0, int(prompt)), limits.rpm or 0, limits.tpm or 0, limits.max_concurrent or 0,
                  limits.monthly_token_quota or 0, self.ttl_ms, MONTH_TTL_S, max(1, int(max_tokens))])
        ok, limit, retry_ms, used, reserved, expired, granted = got
        name = limit.decode() if isinstance(limit, bytes) else str(limit)
        return Decision(bool(int(ok)), name, int(retry_ms) / 1000.0, int(used), int(reserved), int(expired),
                        int(granted))

    async def settle(self, tenant: str, lease: str, used: int, tpm: int | None, wall: float) -> bool:
        """True when the lease was still live (False: it had expired; usage is charged anyway)."""
        k = self.keys(tenant)
        got = await self._settle(keys=[k.tpm, k.leases, k.est, k.month(wall), k.reserved],
                                 args=[lease, max(0, int(used)), tpm or 0, MONTH_TTL_S])
        return bool(int(got))

    async def renew(self, tenant: str, leases: list[str]) -> int:
        if not leases:
            return 0
        k = self.keys(tenant)
        return int(await self._renew(keys=[k.leases, k.est, k.reserved], args=[self.ttl_ms, *leases]))

    async def seed_month(self, totals: dict[str, int], wall: float) -> None:
        """Monthly counters from the ledger, for tenants Redis does not know yet (SET NX: a live
        counter is never overwritten)."""
        if not totals:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for tenant, used in totals.items():
                pipe.set(self.keys(tenant).month(wall), int(used), nx=True, ex=MONTH_TTL_S)
            await pipe.execute()

    async def snapshot(self, tenant: str, wall: float) -> tuple[int, int, int]:
        """(live leases, reserved tokens, month tokens) — for /admin/tenants and tests."""
        k = self.keys(tenant)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcount(k.leases, int(time.time() * 1000), "+inf")
            pipe.get(k.reserved)
            pipe.get(k.month(wall))
            n, reserved, used = await pipe.execute()
        return int(n), int(reserved or 0), int(used or 0)
