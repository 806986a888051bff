"""Retries of cloud calls: exponential backoff with full jitter, bounded by attempts and a deadline.

Full jitter (wait a uniform random time in [0, ceiling], the ceiling growing by `multiplier`
per retry up to `max_backoff`) spreads the retries of many factory threads apart, which is
what AWS recommends against throttling. Which errors are worth retrying is the provider's
call (throttling, HTTP 5xx); everything else propagates at once. Sleep, clock and random
source are injectable so tests check the bounds without waiting.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from gwms.config.common import Retries

T = TypeVar("T")
OnRetry = Callable[[str, int, BaseException, float], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; `attempts` counts the first try."""

    attempts: int = 5
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("attempts must be >= 1 and backoffs >= 0")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")

    @classmethod
    def from_config(cls, retries: Retries) -> RetryPolicy:
        return cls(
            attempts=retries.attempts,
            initial_backoff=float(retries.initial_backoff),
            max_backoff=float(retries.max_backoff),
            multiplier=float(retries.multiplier),
        )

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number `retry` (1 = before the second try)."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1, got {retry}")
        # min() before the power would overflow for large retry numbers
        exponent = min(retry - 1, 1024)
        try:
            grown = self.initial_backoff * self.multiplier**exponent
        except OverflowError:
            grown = self.max_backoff
        return min(self.max_backoff, grown)


class Retrier:
    """Runs calls under one policy and counts retries per API (for tests and metrics)."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        retryable: Callable[[BaseException], bool],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        on_retry: OnRetry | None = None,
    ) -> None:
        self.policy = policy
        self._retryable = retryable
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._on_retry = on_retry
        self._lock = threading.Lock()
        self.retries: Counter[str] = Counter()  # retries made, per API
        self.slept = 0.0  # seconds spent backing off

    def backoff(self, retry: int) -> float:
        """A full-jitter wait before retry number `retry`: uniform in [0, ceiling(retry)]."""
        return self._rand() * self.policy.ceiling(retry)

    def call(self, fn: Callable[[], T], *, api: str = "call", deadline: float | None = None) -> T:
        """`fn()`, retried on retryable errors; the last error propagates when retries run out.

        Retries stop after `policy.attempts` tries, or when the next wait would end after
        `deadline` (an absolute time on this retrier's clock).
        """
        attempt = 1
        while True:
            try:
                return fn()
            except Exception as exc:
                if not self._retryable(exc) or attempt >= self.policy.attempts:
                    raise
                wait = self.backoff(attempt)
                if deadline is not None and self._clock() + wait > deadline:
                    raise
                with self._lock:
                    self.retries[api] += 1
                    self.slept += wait
                if self._on_retry is not None:
                    self._on_retry(api, attempt, exc, wait)
                self._sleep(wait)
                attempt += 1


__all__ = ["Retrier", "RetryPolicy"]
