"""Per-route call counts, injected failures and the log of routes the fake does not know."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


@dataclass
class InjectedFailure:
    """The next `remaining` calls to a route answer `status` (with Retry-After when set)."""

    status: int
    remaining: int
    retry_after: int | None = None


class RouteHooks:
    """Thread-safe bookkeeping keyed by route, e.g. `POST /compute/v2.1/servers`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.unknown: list[str] = []
        self._failures: dict[str, list[InjectedFailure]] = {}

    def seen(self, route: str) -> InjectedFailure | None:
        """Count a call; return the failure to answer with, if one is queued for the route."""
        with self._lock:
            self.counts[route] += 1
            queue = self._failures.get(route, [])
            while queue and queue[0].remaining <= 0:
                queue.pop(0)
            if not queue:
                return None
            queue[0].remaining -= 1
            return queue[0]

    def unknown_route(self, route: str) -> None:
        with self._lock:
            self.counts[route] += 1
            self.unknown.append(route)

    def inject(self, route: str, failure: InjectedFailure) -> None:
        with self._lock:
            self._failures.setdefault(route, []).append(failure)

    def clear(self) -> None:
        with self._lock:
            self.counts.clear()
            self.unknown.clear()
            self._failures.clear()
