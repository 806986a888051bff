"""Retries: exponential ceilings, full-jitter bounds, attempt and deadline limits."""

from __future__ import annotations

import random

import pytest

from gwms.config.common import Retries
from gwms.factory.retry import Retrier, RetryPolicy


class Flaky(Exception):
    """A retryable failure."""


class Fatal(Exception):
    """A failure not worth retrying."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(times: int, exc: type[Exception] = Flaky):
    """A callable that raises `exc` `times` times, then returns how many calls it took."""
    calls = {"n": 0}

    def fn() -> int:
        calls["n"] += 1
        if calls["n"] <= times:
            raise exc(f"failure {calls['n']}")
        return calls["n"]

    return fn


def retrier(clock: FakeClock, policy: RetryPolicy | None = None, rand=lambda: 1.0) -> Retrier:
    return Retrier(
        policy or RetryPolicy(attempts=5, initial_backoff=1, max_backoff=10, multiplier=2),
        retryable=lambda exc: isinstance(exc, Flaky),
        clock=clock,
        sleep=clock.sleep,
        rand=rand,
    )


def test_ceilings_grow_by_the_multiplier_and_stop_at_the_maximum() -> None:
    policy = RetryPolicy(attempts=10, initial_backoff=0.5, max_backoff=6, multiplier=3)
    assert [policy.ceiling(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 6, 6]


def test_a_huge_retry_number_is_capped_not_an_overflow() -> None:
    assert RetryPolicy(max_backoff=60).ceiling(5000) == 60


def test_policy_comes_from_the_cloud_config_retries() -> None:
    policy = RetryPolicy.from_config(
        Retries(attempts=3, initial_backoff="2s", max_backoff="1m", multiplier=1.5)
    )
    assert policy == RetryPolicy(attempts=3, initial_backoff=2, max_backoff=60, multiplier=1.5)


def test_full_jitter_waits_are_uniform_between_zero_and_the_ceiling() -> None:
    seeded = random.Random(7)
    r = retrier(FakeClock(), rand=seeded.random)
    for retry in (1, 2, 3, 4, 5, 6):
        waits = [r.backoff(retry) for _ in range(2000)]
        ceiling = min(10, 2 ** (retry - 1))
        assert min(waits) >= 0
        assert max(waits) <= ceiling
        # spread over the whole range, not bunched near the ceiling (plain exponential)
        assert min(waits) < 0.05 * ceiling
        assert max(waits) > 0.95 * ceiling
        assert sum(waits) / len(waits) == pytest.approx(ceiling / 2, rel=0.1)


def test_retryable_failures_are_retried_with_growing_backoff_until_success() -> None:
    clock = FakeClock()
    r = retrier(clock)
    assert r.call(failing(3), api="RunInstances") == 4
    assert clock.slept == [1, 2, 4]  # rand = 1.0: each wait at its ceiling
    assert r.retries == {"RunInstances": 3}
    assert r.slept == 7


def test_the_last_error_propagates_when_attempts_run_out() -> None:
    clock = FakeClock()
    r = retrier(clock, RetryPolicy(attempts=3, initial_backoff=1, max_backoff=10))
    with pytest.raises(Flaky, match="failure 3"):
        r.call(failing(10))
    assert len(clock.slept) == 2


def test_errors_that_are_not_retryable_propagate_at_once() -> None:
    clock = FakeClock()
    r = retrier(clock)
    with pytest.raises(Fatal):
        r.call(failing(1, Fatal))
    assert clock.slept == []
    assert r.retries == {}


def test_no_wait_goes_past_the_deadline() -> None:
    clock = FakeClock()
    r = retrier(clock)
    with pytest.raises(Flaky, match="failure 3"):
        r.call(failing(10), deadline=clock.now + 5)  # waits 1 + 2 fit, the next 4 does not
    assert clock.slept == [1, 2]
    assert clock.now <= 5


def test_a_single_attempt_policy_never_retries() -> None:
    clock = FakeClock()
    r = retrier(clock, RetryPolicy(attempts=1))
    with pytest.raises(Flaky):
        r.call(failing(1))
    assert clock.slept == []


def test_on_retry_hears_the_api_attempt_error_and_wait() -> None:
    clock = FakeClock()
    heard: list[tuple[str, int, str, float]] = []
    r = Retrier(
        RetryPolicy(attempts=3, initial_backoff=1),
        retryable=lambda exc: True,
        clock=clock,
        sleep=clock.sleep,
        rand=lambda: 0.5,
        on_retry=lambda api, n, exc, wait: heard.append((api, n, str(exc), wait)),
    )
    r.call(failing(2), api="DescribeInstances")
    assert heard == [
        ("DescribeInstances", 1, "failure 1", 0.5),
        ("DescribeInstances", 2, "failure 2", 1.0),
    ]


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"initial_backoff": -1}, {"multiplier": 0.5}])
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
