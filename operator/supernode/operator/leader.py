"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it.

`decide` is the pure core: from the Lease as read, who we are and when we last saw the Lease change,
it says create / acquire / renew / wait. Expiry is judged on *our* monotonic clock from the moment we
observed the holder's last renewal (not on the holder's wall-clock `renewTime`), so clock skew between
nodes cannot make two replicas leaders at once. `LeaderElector` is the edge: it reads and writes the
Lease through `KubeClient` (optimistic concurrency: a PUT with the read resourceVersion, so of two
candidates racing for an expired Lease exactly one wins and the other gets 409).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from supernode.operator.kube import TRANSPORT_ERRORS, ApiError, KubeClient

log = logging.getLogger("supernode.operator.leader")


class Action(StrEnum):
    CREATE = "create"  # no Lease yet
    ACQUIRE = "acquire"  # free (released) or expired: take it over
    RENEW = "renew"  # ours: extend it
    WAIT = "wait"  # someone else holds a live Lease


@dataclass(frozen=True, slots=True)
class ElectionConfig:
    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0  # how long a standby waits after the last renewal it saw
    renew_deadline: float = 10.0  # the leader gives up when it could not renew for this long
    retry_period: float = 2.0  # between attempts (acquire and renew)

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("leader election: identity must not be empty")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election: need 0 < retry-period < renew-deadline < lease-duration "
                             f"(got {self.retry_period}, {self.renew_deadline}, {self.lease_duration})")


def default_identity() -> str:
    """POD_NAME (downward API) in a cluster, else hostname_pid (unique per process on one machine)."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def holder(lease: dict[str, Any] | None) -> str:
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def record_key(lease: dict[str, Any] | None) -> tuple[str, str, str]:
    """What changes whenever the holder renews or changes: a new value restarts the expiry clock."""
    spec = (lease or {}).get("spec") or {}
    return holder(lease), str(spec.get("renewTime") or ""), str(spec.get("leaseTransitions") or 0)


def decide(lease: dict[str, Any] | None, identity: str, now: float, observed_at: float,
           default_duration: float) -> Action:
    """`now` and `observed_at` (when the current `record_key` was first seen) on the same monotonic clock."""
    if lease is None:
        return Action.CREATE
    who = holder(lease)
    if who == identity:
        return Action.RENEW
    if not who:
        return Action.ACQUIRE
    duration = float((lease.get("spec") or {}).get("leaseDurationSeconds") or default_duration)
    return Action.ACQUIRE if now >= observed_at + duration else Action.WAIT


def micro_time(wall: datetime.datetime) -> str:
    return wall.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_spec(previous: dict[str, Any] | None, identity: str, duration: float,
               wall: datetime.datetime) -> dict[str, Any]:
    """The spec we write to hold the Lease: acquireTime and leaseTransitions change only on a new holder."""
    prev = (previous or {}).get("spec") or {}
    stamp = micro_time(wall)
    taking_over = holder(previous) != identity
    transitions = int(prev.get("leaseTransitions") or 0) + (1 if taking_over and previous is not None else 0)
    return {"holderIdentity": identity, "leaseDurationSeconds": max(1, round(duration)),
            "acquireTime": stamp if taking_over else prev.get("acquireTime", stamp), "renewTime": stamp,
            "leaseTransitions": transitions}


def released_spec(previous: dict[str, Any]) -> dict[str, Any]:
    """Given up on shutdown: no holder, so a standby acquires at its next retry instead of waiting."""
    prev = previous.get("spec") or {}
    return {**prev, "holderIdentity": None, "leaseDurationSeconds": 1}


class LeaderElector:
    """Acquire, hold and release one Lease. Not reentrant: one task drives it."""

    def __init__(self, client: KubeClient, config: ElectionConfig, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.client, self.config, self._clock, self._wall = client, config, clock, wall
        self._observed: tuple[tuple[str, str, str], float] | None = None
        self._lease: dict[str, Any] | None = None  # last Lease we wrote while leader
        self._on_change = on_change  # called with the new role on every change (metrics)
        self._is_leader = False

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    @is_leader.setter
    def is_leader(self, value: bool) -> None:
        changed, self._is_leader = value != self._is_leader, value
        if changed and self._on_change is not None:
            self._on_change(value)

    async def try_once(self) -> bool:
        """One read-decide-write round; True when we hold the Lease afterwards. API errors count as False."""
        cfg = self.config
        try:
            lease = await self.client.get_lease(cfg.namespace, cfg.name)
            now = self._clock()
            key = record_key(lease)
            if self._observed is None or self._observed[0] != key:
                self._observed = (key, now)
            action = decide(lease, cfg.identity, now, self._observed[1], cfg.lease_duration)
            if action is Action.WAIT:
                if self.is_leader:
                    log.warning("leader election: lease %s/%s taken over by %s", cfg.namespace, cfg.name,
                                holder(lease))
                self.is_leader = False
                return False
            spec = lease_spec(lease, cfg.identity, cfg.lease_duration, self._wall())
            if action is Action.CREATE:
                self._lease = await self.client.create_lease(cfg.namespace, cfg.name, spec)
            else:
                assert lease is not None
                self._lease = await self.client.update_lease(lease, spec)
            if not self.is_leader:
                log.info("leader election: %s acquired lease %s/%s (%s)", cfg.identity, cfg.namespace, cfg.name,
                         action.value)
            self.is_leader = True
            return True
        except ApiError as e:
            if e.status != 409:  # 409: another candidate wrote first; not worth a warning
                log.warning("leader election: %s", e)
        except TRANSPORT_ERRORS as e:
            log.warning("leader election: API unreachable: %s", e)
        return False

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until leader (True) or `stop` is set (False)."""
        log.info("leader election: %s waiting for lease %s/%s", self.config.identity, self.config.namespace,
                 self.config.name)
        while not stop.is_set():
            if await self._attempt(self.config.retry_period * 2):
                return True
            await _sleep_or_stop(stop, self.config.retry_period)
        return False

    async def hold(self, stop: asyncio.Event) -> bool:
        """Renew every retry period while `stop` is unset. Returns False as soon as leadership is lost:
        another holder, or no successful renewal within the renew deadline."""
        cfg = self.config
        last_ok = self._clock()
        while not stop.is_set():
            await _sleep_or_stop(stop, cfg.retry_period)
            if stop.is_set():
                break
            left = cfg.renew_deadline - (self._clock() - last_ok)
            if left > 0 and await self._attempt(left):
                last_ok = self._clock()
                continue
            if not self.is_leader or self._clock() - last_ok >= cfg.renew_deadline:
                log.error("leader election: %s lost lease %s/%s", cfg.identity, cfg.namespace, cfg.name)
                self.is_leader = False
                return False
        return True

    async def release(self) -> None:
        """Best effort, on a clean shutdown while leader."""
        if not self.is_leader or self._lease is None:
            return
        self.is_leader = False
        try:
            await asyncio.wait_for(self.client.update_lease(self._lease, released_spec(self._lease)),
                                   self.config.retry_period * 2)
            log.info("leader election: released lease %s/%s", self.config.namespace, self.config.name)
        except (ApiError, *TRANSPORT_ERRORS) as e:  # type: ignore[misc]
            log.warning("leader election: release failed (standbys wait for expiry): %s", e)

    async def _attempt(self, timeout: float) -> bool:
        try:
            return await asyncio.wait_for(self.try_once(), timeout)
        except TimeoutError:
            return False


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
