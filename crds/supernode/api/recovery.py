"""Gang-restart back-off: one rule for the operator (pods of a group) and `supernode up` (processes).

A failed group is restarted whole, but not at once: restart number n + 1 (n restarts already used)
waits `backoffSeconds * 2**n`, capped at `maxBackoffSeconds`, counted from when the failure was
seen. So the first restart waits `backoffSeconds` everywhere.
"""

from __future__ import annotations

_MAX_DOUBLINGS = 62  # beyond this the cap always wins; keeps the arithmetic finite for any budget


def restart_delay(restarts_used: int, backoff_seconds: float, max_backoff_seconds: float) -> float:
    """Seconds between seeing a group fail and restarting it, when `restarts_used` restarts were used."""
    doublings = min(max(restarts_used, 0), _MAX_DOUBLINGS)
    return float(min(max_backoff_seconds, backoff_seconds * 2**doublings))
