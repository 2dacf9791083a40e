"""Gang semantics: when a group with a failed pod is recreated whole, and when the budget is gone (pure).

The back-off is `supernode.api.recovery.restart_delay` (the rule `supernode up` uses too), counted from
when the failure was first seen: the executor stamps that time on the workload ("mark"), restarts once
the delay has passed ("restart", which clears the stamp) and clears a stamp whose failure went away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from supernode.api.models import RecoverySpec
from supernode.api.recovery import restart_delay
from supernode.operator.observe import GroupState


@dataclass(frozen=True, slots=True)
class GangDecision:
    action: Literal["none", "mark", "clear", "restart", "wait", "exhausted"]
    reason: str = ""
    retry_in: float = 0.0  # seconds until a restart is allowed ("mark", "wait")


def backoff(recovery: RecoverySpec, restarts: int) -> float:
    """Delay between seeing a failure and restart number `restarts + 1`."""
    return restart_delay(restarts, recovery.backoff_seconds, recovery.max_backoff_seconds)


def decide(group: GroupState, recovery: RecoverySpec, now: float) -> GangDecision:
    failure = group.failure
    if not failure or group.draining:
        return GangDecision("clear" if group.failure_seen is not None else "none")
    if group.restarts >= recovery.max_group_restarts:
        return GangDecision("exhausted", f"group {group.index} ({group.name}) failed and used all "
                            f"{recovery.max_group_restarts} restarts: {failure}")
    delay = backoff(recovery, group.restarts)
    if group.failure_seen is None:
        return GangDecision("mark", f"group {group.index}: failed ({failure}); restart {group.restarts + 1} "
                            f"in {delay:g}s", retry_in=delay)
    since = now - group.failure_seen
    if since < delay:
        return GangDecision("wait", f"group {group.index}: back-off before restart {group.restarts + 1}",
                            retry_in=delay - since)
    return GangDecision("restart", f"group {group.index} ({group.name}) restart {group.restarts + 1}/"
                        f"{recovery.max_group_restarts}: {failure}")
