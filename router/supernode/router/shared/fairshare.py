"""Token-weighted fair share across replicas: the fair queue's per-tenant virtual times, summed fleet-wide.

Each replica's ``FairQueue`` keeps its own waiters (queues stay local). Its virtual times (tokens
granted to each tenant of a tier) are synced every heartbeat: the change since the last sync is
added to one Redis hash per tier (HINCRBYFLOAT), the tier floor is raised to the fleet maximum, and
the fleet totals replace the local ones. A tenant flooding replica A therefore arrives at replica B
with A's tokens already counted. Between two syncs a replica orders by its own view (bounded
staleness: one heartbeat).
"""

from __future__ import annotations

from typing import Any

from supernode.router.admission.fairqueue import FairQueue, _Tier

SYNC = """
local out = {}
for i = 1, #ARGV, 2 do
  if ARGV[i] == '__floor' then
    local cur = tonumber(redis.call('HGET', KEYS[1], '__floor') or '0')
    if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], '__floor', ARGV[i + 1]) end
  else
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('EXPIRE', KEYS[1], 86400)
return redis.call('HGETALL', KEYS[1])
"""


class SharedFairness:
    def __init__(self, client: Any, prefix: str) -> None:
        self.prefix = prefix
        self._sync = client.register_script(SYNC)
        self._base: dict[int, dict[str, float]] = {}  # fleet values as of the last sync

    async def sync(self, queue: FairQueue, priorities: set[int]) -> None:
        """``priorities``: the tiers the tenants file defines (a tier idle here still gets the fleet's view)."""
        for prio in sorted(set(queue._tiers) | priorities):
            tier = queue._tiers.get(prio)
            base = self._base.get(prio, {})
            args: list[Any] = []
            if tier is not None:
                for tenant, v in tier.vtime.items():
                    delta = v - base.get(tenant, 0.0)
                    if delta:
                        args += [tenant, repr(float(delta))]
                args += ["__floor", repr(float(tier.floor))]
            got = await self._sync(keys=[f"{self.prefix}:fair:{prio}"], args=args)
            fleet = {_s(got[i]): float(got[i + 1]) for i in range(0, len(got), 2)}
            floor = fleet.pop("__floor", 0.0)
            tier = queue._tiers.get(prio)
            if tier is None:  # idle here: keep the fleet's view, so a tenant arriving here is not fresh
                tier = queue._tiers[prio] = _Tier(floor=floor)
            tier.floor = max(tier.floor, floor)
            for tenant, v in fleet.items():
                if tenant in tier.queues or v > tier.floor:
                    tier.vtime[tenant] = v
            self._base[prio] = {t: tier.vtime.get(t, v) for t, v in fleet.items()}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
