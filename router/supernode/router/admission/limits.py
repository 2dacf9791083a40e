"""Per-tenant limiters: pure state machines over an injected clock (seconds, monotonic)."""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from supernode.router.admission.tenants import TenantSpec


@dataclass(slots=True)
class TokenBucket:
    """Capacity ``capacity``, refilled at ``rate`` per second. May go negative when a charge is settled
    upwards (real usage above the estimate): the debt delays the tenant's next requests."""

    capacity: float
    rate: float
    level: float
    stamp: float

    @classmethod
    def per_minute(cls, limit: int, now: float) -> TokenBucket:
        return cls(capacity=float(limit), rate=limit / 60.0, level=float(limit), stamp=now)

    def _refill(self, now: float) -> None:
        if now < self.stamp:  # a different clock than at creation (e.g. built before the loop ran)
            self.stamp = now
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` fits (0 = now). A cost above capacity needs a full bucket."""
        self._refill(now)
        need = min(cost, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, cost: float, now: float) -> None:
        self._refill(now)
        self.level -= cost

    def give(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def resize(self, limit: int, now: float) -> None:
        """New limit, same consumption: what was used in the current window stays used."""
        self._refill(now)
        used = self.capacity - self.level
        self.capacity, self.rate = float(limit), limit / 60.0
        self.level = self.capacity - used


def month_start(unix: float) -> float:
    """Start of the UTC calendar month containing ``unix``."""
    t = time.gmtime(unix)
    return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))


def next_month_start(unix: float) -> float:
    t = time.gmtime(unix)
    year, mon = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(calendar.timegm((year, mon, 1, 0, 0, 0)))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of a limit check: ``limit`` names the exceeded limit (empty = admitted)."""

    limit: str = ""
    retry_after: float = 0.0
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.limit


OK = Verdict()


@dataclass(slots=True)
class TenantLimiter:
    """RPM and TPM buckets, concurrency and monthly quota of one tenant."""

    spec: TenantSpec
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    in_flight: int = 0
    month: float = 0.0  # start of the month ``used_tokens`` counts
    used_tokens: int = 0
    reserved_tokens: int = 0  # admitted, not yet settled: counted against the quota while in flight

    @classmethod
    def create(cls, spec: TenantSpec, now: float, wall: float, used_tokens: int = 0) -> TenantLimiter:
        lim = cls(spec=spec, month=month_start(wall), used_tokens=used_tokens)
        lim.update(spec, now)
        return lim

    def update(self, spec: TenantSpec, now: float) -> None:
        """Apply new limits (live reload) keeping the current state."""
        self.spec = spec
        self.rpm = _resized(self.rpm, spec.rpm, now)
        self.tpm = _resized(self.tpm, spec.tpm, now)

    def _roll_month(self, wall: float) -> None:
        start = month_start(wall)
        if start != self.month:
            self.month, self.used_tokens = start, 0

    def check(self, tokens_estimate: int, now: float, wall: float) -> Verdict:
        """Check every limit without charging; the first one exceeded is reported."""
        self._roll_month(wall)
        s = self.spec
        if s.monthly_token_quota is not None and self.used_tokens + self.reserved_tokens >= s.monthly_token_quota:
            return self._quota_verdict(wall)
        if s.max_concurrent is not None and self.in_flight >= s.max_concurrent:
            return Verdict("max_concurrent", 1.0, f"{self.in_flight} requests in flight (limit {s.max_concurrent})")
        if self.rpm is not None and (w := self.rpm.wait_for(1, now)) > 0:
            return Verdict("rpm", w, f"rate limit of {s.rpm} requests per minute reached")
        if self.tpm is not None and (w := self.tpm.wait_for(tokens_estimate, now)) > 0:
            return Verdict("tpm", w, f"rate limit of {s.tpm} tokens per minute reached")
        return OK

    def _quota_verdict(self, wall: float) -> Verdict:
        s = self.spec
        return Verdict(
            "monthly_token_quota",
            max(1.0, next_month_start(wall) - wall),
            f"monthly token quota of {s.monthly_token_quota} exhausted "
            f"({self.used_tokens} used, {self.reserved_tokens} reserved by requests in flight)",
        )

    def grantable(self, prompt_tokens: int, max_tokens: int, wall: float) -> int | Verdict:
        """Completion tokens the quota still allows for a request (at most ``max_tokens``): the quota
        minus what is used and what requests in flight reserved, minus this prompt."""
        self._roll_month(wall)
        quota = self.spec.monthly_token_quota
        if quota is None:
            return max_tokens
        room = quota - self.used_tokens - self.reserved_tokens - prompt_tokens
        if room < 1:
            return self._quota_verdict(wall)
        return min(max_tokens, room)

    def charge(self, tokens_estimate: int, now: float) -> None:
        """Charge an admitted request: one request, its token estimate (TPM and the quota's in-flight
        reservation), one concurrency slot."""
        if self.rpm is not None:
            self.rpm.take(1, now)
        if self.tpm is not None:
            self.tpm.take(tokens_estimate, now)
        self.reserved_tokens += tokens_estimate
        self.in_flight += 1

    def settle(self, tokens_estimate: int, tokens_used: int, now: float, wall: float) -> None:
        """Release the slot and the reservation; replace the estimate with real usage in TPM; count
        usage in the quota. ``tokens_used`` 0 = a refund (the request never ran)."""
        self.in_flight = max(0, self.in_flight - 1)
        self.reserved_tokens = max(0, self.reserved_tokens - tokens_estimate)
        if self.tpm is not None:
            self.tpm.give(tokens_estimate - tokens_used, now)
        self._roll_month(wall)
        self.used_tokens += tokens_used


def _resized(bucket: TokenBucket | None, limit: int | None, now: float) -> TokenBucket | None:
    if limit is None:
        return None
    if bucket is None:
        return TokenBucket.per_minute(limit, now)
    bucket.resize(limit, now)
    return bucket
