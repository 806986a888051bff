"""Token buckets: exact refill arithmetic on a fake clock, deadlines, and thread safety."""

from __future__ import annotations

import threading
import time

import pytest

from gwms.config.factory import Ec2RateLimits
from gwms.factory.providers.base import ThrottledError
from gwms.factory.ratelimit import OverCapacityError, RateLimiter, RateLimitTimeout, TokenBucket


class FakeClock:
    """Time that moves only when someone sleeps (or the test advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def bucket(clock: FakeClock, capacity: float = 5, rate: float = 2) -> TokenBucket:
    return TokenBucket(capacity, rate, name="test", clock=clock, sleep=clock.sleep)


def test_a_full_bucket_serves_a_burst_of_its_capacity_without_waiting(clock: FakeClock) -> None:
    b = bucket(clock)
    assert [b.acquire() for _ in range(5)] == [0, 0, 0, 0, 0]
    assert clock.slept == []
    assert b.available() == 0


def test_past_the_burst_each_call_waits_one_refill_interval(clock: FakeClock) -> None:
    b = bucket(clock, capacity=5, rate=2)
    for _ in range(5):
        b.acquire()
    waits = [b.acquire() for _ in range(4)]
    assert waits == [0.5, 0.5, 0.5, 0.5]
    assert clock.now == pytest.approx(1002.0)


def test_refill_is_rate_times_elapsed_and_stops_at_capacity(clock: FakeClock) -> None:
    b = bucket(clock, capacity=10, rate=4)
    b.acquire(10)
    clock.now += 0.75
    assert b.available() == pytest.approx(3.0)
    clock.now += 100
    assert b.available() == 10


def test_a_cost_is_taken_whole_and_its_wait_is_the_missing_tokens_over_the_rate(
    clock: FakeClock,
) -> None:
    b = bucket(clock, capacity=1000, rate=2)
    assert b.acquire(997) == 0
    assert b.acquire(10) == pytest.approx(3.5)  # 7 tokens missing at 2/s
    assert b.available() == pytest.approx(0.0)


def test_waiting_callers_queue_so_the_second_waits_for_the_first_ones_debt(
    clock: FakeClock,
) -> None:
    b = bucket(clock, capacity=2, rate=1)
    b.acquire(2)
    assert b.reserve(1) == pytest.approx(1.0)
    assert b.reserve(1) == pytest.approx(2.0)
    assert b.available() == pytest.approx(-2.0)


def test_a_wait_past_the_deadline_raises_and_takes_nothing(clock: FakeClock) -> None:
    b = bucket(clock, capacity=3, rate=1)
    b.acquire(3)
    with pytest.raises(RateLimitTimeout, match=r"rate bucket test needs 3\.0 s"):
        b.acquire(3, deadline=clock.now + 2.5)
    assert b.available() == 0
    assert b.acquire(1, deadline=clock.now + 1.0) == pytest.approx(1.0)


def test_a_deadline_timeout_is_a_throttle_the_factory_retries_later(clock: FakeClock) -> None:
    b = bucket(clock, capacity=1, rate=1)
    b.acquire()
    with pytest.raises(ThrottledError):
        b.acquire(deadline=clock.now)


def test_a_cost_larger_than_the_capacity_can_never_be_served(clock: FakeClock) -> None:
    b = bucket(clock, capacity=5)
    with pytest.raises(
        OverCapacityError, match="needs 6 tokens of rate bucket test, which holds 5"
    ):
        b.acquire(6)


def test_refund_gives_tokens_back_up_to_the_capacity(clock: FakeClock) -> None:
    b = bucket(clock, capacity=5)
    b.acquire(3)
    b.refund(10)
    assert b.available() == 5


def test_limiter_takes_from_several_buckets_and_sleeps_once_for_the_longest_wait(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter.from_config(Ec2RateLimits(), clock=clock, sleep=clock.sleep)
    # AWS RunInstances: requests 5 at 2/s, instances 1000 at 2/s
    costs = {"run_instances": 1, "run_instances_instances": 400}
    assert limiter.acquire(costs) == 0
    assert limiter.acquire(costs) == 0
    assert limiter.acquire(costs) == pytest.approx(100.0)  # 200 instances short at 2/s
    assert clock.slept == [pytest.approx(100.0)]
    assert limiter.waited == pytest.approx(100.0)
    assert limiter.buckets["run_instances"].available() == pytest.approx(5.0)


def test_limiter_gives_back_what_it_took_when_another_bucket_would_miss_the_deadline(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter.from_config(Ec2RateLimits(), clock=clock, sleep=clock.sleep)
    limiter.acquire({"run_instances_instances": 1000})
    with pytest.raises(RateLimitTimeout):
        limiter.acquire({"run_instances": 1, "run_instances_instances": 10}, deadline=clock.now + 1)
    assert limiter.buckets["run_instances"].available() == 5


def test_limiter_builds_one_bucket_per_configured_limit() -> None:
    limiter = RateLimiter.from_config(Ec2RateLimits())
    assert set(limiter.buckets) == {
        "run_instances",
        "run_instances_instances",
        "terminate_instances",
        "describe",
        "mutating",
    }
    describe = limiter.buckets["describe"]
    assert (describe.capacity, describe.refill_per_second) == (100, 20)


def test_concurrent_reservations_never_hand_out_the_same_token_twice(clock: FakeClock) -> None:
    b = TokenBucket(10, 5, clock=clock, sleep=lambda _s: None)
    waits: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def worker() -> None:
        start.wait()
        for _ in range(5):
            wait = b.reserve(1)
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # frozen clock: the first 10 are free, then exactly one more per 1/5 s, none shared
    assert sorted(waits) == pytest.approx([0.0] * 10 + [k / 5 for k in range(1, 91)])


def test_concurrent_callers_on_the_real_clock_stay_within_burst_plus_rate() -> None:
    b = TokenBucket(5, 50)
    grants: list[float] = []
    lock = threading.Lock()
    begin = time.monotonic()

    def worker() -> None:
        for _ in range(5):
            b.acquire()
            with lock:
                grants.append(time.monotonic() - begin)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grants.sort()
    assert len(grants) == 40
    assert grants[-1] >= (40 - 5) / 50 - 0.01
    for index, at in enumerate(grants):
        assert index + 1 <= 5 + 50 * at + 1  # +1: a grant lands at its instant
