"""Replica heartbeats and the per-replica share of pool capacity.

Each replica writes its name into one sorted set scored by "alive until" (Redis clock) every
heartbeat; the live members, sorted, give every replica the same N and its own rank. Pool capacity
C is then split without any Redis call on the request path: replica r admits
``C // N + (1 if r < C % N else 0)`` (at least 1 while C > 0), so the fleet admits exactly C
(or N when C < N). While Redis is unreachable the last N stays in force.
"""

from __future__ import annotations

from typing import Any

from supernode.router.contracts import PoolCapacity, PoolKey

HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 4)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def share(capacity: int, replicas: int, rank: int) -> int:
    """This replica's part of ``capacity`` (pure; see the module docstring)."""
    if capacity <= 0:
        return 0
    n = max(1, replicas)
    return max(1, capacity // n + (1 if rank % n < capacity % n else 0))


class Replicas:
    def __init__(self, client: Any, prefix: str, name: str, *, ttl_s: float) -> None:
        self.client = client
        self.key = f"{prefix}:replicas"
        self.name = name
        self.ttl_ms = int(ttl_s * 1000)
        self.members: list[str] = [name]
        self._beat = client.register_script(HEARTBEAT)

    @property
    def count(self) -> int:
        return max(1, len(self.members))

    @property
    def rank(self) -> int:
        return self.members.index(self.name) if self.name in self.members else 0

    async def beat(self, alive: bool = True) -> list[str]:
        got = await self._beat(keys=[self.key], args=[self.name, "1" if alive else "0", self.ttl_ms])
        members = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in got)
        if alive:
            self.members = members if self.name in members else sorted([*members, self.name])
        return members


class SharedCapacity:
    """``PoolCapacity`` for one replica of a fleet: its share of what discovery reports."""

    def __init__(self, inner: PoolCapacity, replicas: Replicas) -> None:
        self.inner = inner
        self.replicas = replicas

    def capacity(self, pool: PoolKey) -> int:
        return share(self.inner.capacity(pool), self.replicas.count, self.replicas.rank)
