"""benchmarks/timing.py: repeats last a duration, not a count, and runners take turns (a fake clock)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from timing import time_by_duration  # noqa: E402


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_repeat_calls_until_the_duration_and_runners_take_turns():
    clock, order = FakeClock(), []

    def runner(name: str, costs: list[float]):
        def run() -> None:
            order.append(name)
            clock.now += costs.pop(0)

        return run

    # fast: warm-up, then 0.3 s calls (4 reach 1.0 s: 1.2 s), then a slow repeat of 0.5 s calls (2 calls);
    # slow: 1.5 s per call, one call per repeat
    fast = [9.0] + [0.3] * 4 + [0.5] * 2
    slow = [9.0, 1.5, 2.5]
    timings = time_by_duration({"fast": runner("fast", fast), "slow": runner("slow", slow)}, repeats=2, min_seconds=1.0, clock=clock)

    assert order == ["fast", "slow"] + ["fast"] * 4 + ["slow"] + ["fast"] * 2 + ["slow"]
    assert timings["fast"].calls == (4, 2)
    assert timings["fast"].seconds_per_call == pytest.approx((0.3, 0.5))
    assert timings["slow"].calls == (1, 1)
    assert timings["slow"].seconds_per_call == pytest.approx((1.5, 2.5))
    rate = timings["fast"].rate(items_per_call=8)  # 8 images per call
    assert rate["median"] == pytest.approx(8 / 0.4)
    assert (rate["min"], rate["max"]) == pytest.approx((8 / 0.5, 8 / 0.3))
    assert not fast and not slow  # no call beyond what the durations needed


def test_turn_warmup_calls_open_every_turn_untimed():
    clock, order = FakeClock(), []

    def runner(name: str, first: float, then: float):
        def run() -> None:  # slow on the first call after another runner's (re-warming), fast after its own
            clock.now += then if order and order[-1] == name else first
            order.append(name)

        return run

    runners = {"a": runner("a", 5.0, 1.0), "b": runner("b", 7.0, 2.0)}
    timings = time_by_duration(runners, repeats=2, min_seconds=2.0, clock=clock, turn_warmup=1)
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 2 + ["a"] * 3 + ["b"] * 2
    assert timings["a"].seconds_per_call == pytest.approx((1.0, 1.0)) and timings["a"].calls == (2, 2)
    assert timings["b"].seconds_per_call == pytest.approx((2.0, 2.0)) and timings["b"].calls == (1, 1)
    with pytest.raises(ValueError, match="turn_warmup"):
        time_by_duration(runners, repeats=1, min_seconds=1.0, clock=clock, turn_warmup=-1)


def test_zero_duration_times_one_call_per_repeat_and_bad_arguments_are_refused():
    clock = FakeClock()

    def run() -> None:
        clock.now += 0.25

    assert time_by_duration({"x": run}, repeats=3, min_seconds=0.0, clock=clock)["x"].calls == (1, 1, 1)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        time_by_duration({"x": run}, repeats=0, min_seconds=1.0, clock=clock)
