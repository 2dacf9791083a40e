"""The fair priority queue (pure; no asyncio): tier first, then token-weighted fairness between tenants
of a tier (start-time fair queuing on tokens served), FIFO within a tenant.

Each tenant of a tier has a virtual time = tokens granted to it. The next grant goes to the tenant with
the smallest virtual time that has a grantable waiter, so a tenant sending big or many requests
cannot starve the others. A tenant that becomes active again starts at the tier's current virtual
time (the start tag of the last grant), so idling banks no credit.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from supernode.router.contracts import PoolKey


@dataclass(eq=False, slots=True)
class Waiter:
    tenant: str
    priority: int
    cost: int  # token estimate (prompt + max_tokens)
    pools: tuple[PoolKey, ...]  # candidates in spill-over order
    enqueued_at: float
    seq: int = 0
    handle: Any = None  # the async side's future; opaque here


@dataclass(slots=True)
class _Tier:
    floor: float = 0.0  # start tag of the last grant in this tier
    vtime: dict[str, float] = field(default_factory=dict)
    queues: dict[str, deque[Waiter]] = field(default_factory=dict)


class FairQueue:
    def __init__(self) -> None:
        self._tiers: dict[int, _Tier] = {}
        self._seq = itertools.count()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Waiter]:
        for prio in sorted(self._tiers):
            for q in self._tiers[prio].queues.values():
                yield from q

    def add(self, w: Waiter) -> None:
        tier = self._tiers.setdefault(w.priority, _Tier())
        w.seq = next(self._seq)
        q = tier.queues.get(w.tenant)
        if q is None:
            q = tier.queues[w.tenant] = deque()
            tier.vtime[w.tenant] = max(tier.vtime.get(w.tenant, 0.0), tier.floor)
        q.append(w)
        self._len += 1

    def remove(self, w: Waiter) -> bool:
        tier = self._tiers.get(w.priority)
        q = tier.queues.get(w.tenant) if tier else None
        if tier is None or q is None or w not in q:
            return False
        q.remove(w)
        self._len -= 1
        if not q:
            del tier.queues[w.tenant]
        return True

    def pop_grantable(self, room: Callable[[PoolKey], bool]) -> tuple[Waiter, PoolKey] | None:
        """Remove and return the next waiter (in fair order) with a candidate pool that has room,
        and that pool (the first such in its spill-over order); charge its tenant's virtual time."""
        seen: dict[PoolKey, bool] = {}

        def has_room(p: PoolKey) -> bool:
            if p not in seen:
                seen[p] = room(p)
            return seen[p]

        for prio in sorted(self._tiers):
            tier = self._tiers[prio]
            for tenant in sorted(tier.queues, key=lambda t: (tier.vtime[t], tier.queues[t][0].seq)):
                for w in tier.queues[tenant]:
                    pool = next((p for p in w.pools if has_room(p)), None)
                    if pool is not None:
                        self.remove(w)
                        tier.floor = max(tier.floor, tier.vtime[tenant])
                        tier.vtime[tenant] += w.cost
                        return w, pool
        return None

    def settle(self, tenant: str, priority: int, delta_tokens: float) -> None:
        """Correct a tenant's virtual time once real usage is known (used - estimate)."""
        tier = self._tiers.get(priority)
        if tier is not None and tenant in tier.vtime:
            tier.vtime[tenant] = max(tier.floor, tier.vtime[tenant] + delta_tokens)

    def ahead_of(self, priority: int, pools: tuple[PoolKey, ...]) -> int:
        """Waiters that would be served before a new one: same or better tier, sharing a pool."""
        wanted = set(pools)
        return sum(
            1
            for prio, tier in self._tiers.items()
            if prio <= priority
            for q in tier.queues.values()
            for w in q
            if wanted.intersection(w.pools)
        )

    def prune(self) -> None:
        """Forget idle tenants whose virtual time carries no debt (bounds the state)."""
        for prio in list(self._tiers):
            tier = self._tiers[prio]
            for t in [t for t, v in tier.vtime.items() if t not in tier.queues and v <= tier.floor]:
                del tier.vtime[t]
            if not tier.queues and not tier.vtime:
                del self._tiers[prio]
