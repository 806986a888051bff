"""Token buckets that keep the factory inside a cloud endpoint's API budget (DESIGN.md §5, §6).

A bucket holds `capacity` tokens and gains `refill_per_second`; a call takes `cost` tokens
first. Callers reserve tokens (the balance may go negative) and then sleep until the debt
is paid, so concurrent callers queue in arrival order and the long-run rate never exceeds
the refill rate. Clock and sleep are injectable so tests can check the arithmetic exactly.
An API call may draw on several buckets at once (EC2 RunInstances takes one request token
and one instance token per VM): `RateLimiter` reserves them together and sleeps once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from pydantic import BaseModel

from gwms.config.common import TokenBucket as TokenBucketConfig
from gwms.factory.providers.base import ProviderError, ThrottledError

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class RateLimitTimeout(ThrottledError):
    """Waiting for tokens would pass the caller's deadline; nothing was taken."""


class OverCapacityError(ProviderError):
    """A call costs more tokens than its bucket can ever hold."""


class TokenBucket:
    """One rate limit; thread-safe. Times are on `clock` (monotonic seconds by default)."""

    def __init__(
        self,
        capacity: float,
        refill_per_second: float,
        *,
        name: str = "api",
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if capacity <= 0 or refill_per_second <= 0:
            raise ValueError(f"bucket {name}: capacity and refill rate must be positive")
        self.name = name
        self.capacity = float(capacity)
        self.refill_per_second = float(refill_per_second)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(capacity)
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.refill_per_second)
        self._updated = now

    def available(self) -> float:
        """Tokens in the bucket now (negative while reserved tokens are still owed)."""
        with self._lock:
            self._refill(self._clock())
            return self._tokens

    def reserve(self, cost: float = 1, deadline: float | None = None) -> float:
        """Take `cost` tokens now; return the seconds to wait before using them.

        Raises `RateLimitTimeout` (taking nothing) when the wait would end after `deadline`
        (an absolute time on this bucket's clock), `OverCapacityError` when `cost` exceeds
        the capacity.
        """
        if cost < 0:
            raise ValueError(f"bucket {self.name}: cost must not be negative, got {cost}")
        if cost > self.capacity:
            raise OverCapacityError(
                f"a call needs {cost:g} tokens of rate bucket {self.name}, which holds"
                f" {self.capacity:g}; split the call or raise the bucket's capacity"
            )
        with self._lock:
            now = self._clock()
            self._refill(now)
            wait = max(0.0, cost - self._tokens) / self.refill_per_second
            if deadline is not None and now + wait > deadline:
                raise RateLimitTimeout(
                    f"rate bucket {self.name} needs {wait:.1f} s for {cost:g} tokens, more"
                    f" than the {max(0.0, deadline - now):.1f} s left; retry later"
                )
            self._tokens -= cost
            return wait

    def refund(self, cost: float) -> None:
        """Give back tokens reserved for a call that was not made."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(self.capacity, self._tokens + cost)

    def acquire(self, cost: float = 1, deadline: float | None = None) -> float:
        """Take `cost` tokens, sleeping until they are due; returns the seconds slept."""
        wait = self.reserve(cost, deadline)
        if wait > 0:
            self._sleep(wait)
        return wait


class RateLimiter:
    """The named buckets of one endpoint; a call draws on one or several of them at once."""

    def __init__(
        self,
        buckets: Mapping[str, TokenBucket],
        *,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.buckets = dict(buckets)
        self._sleep = sleep
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting for tokens, for metrics

    @classmethod
    def from_config(
        cls,
        limits: BaseModel,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> RateLimiter:
        """One bucket per `TokenBucket` field of a rate-limits model, named after the field."""
        buckets = {
            name: TokenBucket(
                value.capacity, value.refill_per_second, name=name, clock=clock, sleep=sleep
            )
            for name, value in limits
            if isinstance(value, TokenBucketConfig)
        }
        return cls(buckets, sleep=sleep)

    def acquire(self, costs: Mapping[str, float], deadline: float | None = None) -> float:
        """Take tokens from every named bucket, sleep once for the longest wait, return it.

        All or nothing: if one bucket would pass `deadline`, tokens already taken from
        the others are given back before `RateLimitTimeout` propagates.
        """
        taken: list[tuple[TokenBucket, float]] = []
        wait = 0.0
        try:
            for name, cost in costs.items():
                bucket = self.buckets[name]
                wait = max(wait, bucket.reserve(cost, deadline))
                taken.append((bucket, cost))
        except ProviderError:
            for bucket, cost in taken:
                bucket.refund(cost)
            raise
        if wait > 0:
            with self._lock:
                self.waited += wait
            self._sleep(wait)
        return wait


__all__ = ["OverCapacityError", "RateLimitTimeout", "RateLimiter", "TokenBucket"]
