"""What every cloud provider shares: its rate buckets, its retries, and counting its calls."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from gwms.factory.ratelimit import RateLimiter
from gwms.factory.retry import Retrier, RetryPolicy


class MeteredProvider:
    """Base of the cloud providers: calls take rate tokens, retry with backoff, are counted."""

    def __init__(
        self,
        cloud: Any,
        *,
        factory: str,
        retryable: Callable[[BaseException], bool],
        limiter: RateLimiter | None,
        retrier: Retrier | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        rand: Callable[[], float],
        page_size: int,
        max_wait: float,
        all_or_nothing: bool,
    ) -> None:
        self.name = cloud.name
        self.cloud = cloud
        self.factory = factory
        self.calls: Counter[str] = Counter()  # API requests made, per API
        self._calls_lock = threading.Lock()
        self.page_size = page_size
        self.max_wait = max_wait
        self.all_or_nothing = all_or_nothing
        self._clock = clock
        self.limiter = limiter or RateLimiter.from_config(
            cloud.rate_limits, clock=clock, sleep=sleep
        )
        self.retrier = retrier or Retrier(
            RetryPolicy.from_config(cloud.retries),
            retryable=retryable,
            clock=clock,
            sleep=sleep,
            rand=rand,
            on_retry=self._log_retry,
        )

    def _log_retry(self, api: str, attempt: int, exc: BaseException, wait: float) -> None:
        raise NotImplementedError

    def _count(self, api: str) -> None:
        with self._calls_lock:
            self.calls[api] += 1

    def _deadline(self) -> float:
        return self._clock() + self.max_wait
