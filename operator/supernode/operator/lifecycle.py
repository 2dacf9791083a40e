"""Gang semantics: when a group with a failed pod is recreated whole, and when the budget is gone (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from supernode.api.models import RecoverySpec
from supernode.operator.observe import GroupState


@dataclass(frozen=True, slots=True)
class GangDecision:
    action: Literal["none", "restart", "wait", "exhausted"]
    reason: str = ""
    retry_in: float = 0.0  # seconds until a restart is allowed ("wait")


def backoff(recovery: RecoverySpec, restarts: int) -> float:
    """Delay before restart number `restarts + 1`: backoff * 2^(restarts-1), capped."""
    if restarts <= 0:
        return 0.0
    return float(min(recovery.max_backoff_seconds, recovery.backoff_seconds * 2 ** (restarts - 1)))


def decide(group: GroupState, recovery: RecoverySpec, now: float) -> GangDecision:
    failure = group.failure
    if not failure or group.draining:
        return GangDecision("none")
    if group.restarts >= recovery.max_group_restarts:
        return GangDecision("exhausted", f"group {group.index} ({group.name}) failed and used all "
                            f"{recovery.max_group_restarts} restarts: {failure}")
    delay = backoff(recovery, group.restarts)
    since = now - (group.last_restart or 0.0)
    if since < delay:
        return GangDecision("wait", f"group {group.index}: back-off before restart {group.restarts + 1}",
                            retry_in=delay - since)
    return GangDecision("restart", f"group {group.index} ({group.name}) restart {group.restarts + 1}/"
                        f"{recovery.max_group_restarts}: {failure}")
