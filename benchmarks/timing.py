"""Timing by duration: each runner is called again and again until a repeat has lasted at least
``min_seconds``, and a repeat's figure is its seconds per call.

Why not a fixed count: one call of a batch-1 engine lasts tens of milliseconds, so a timing of one
call (or seven) measures the scheduler as much as the engine; the same engine read 25.6 img/s in
one run and 14.5 a minute later. Two seconds of calls per repeat average that jitter away, and the
repeats' spread (min / median / max, all kept) says how much is left. The runners take turns within
a repeat, so a burst of load on the shared machine hits them alike and ratios measured in one run
stay comparable.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """One runner's repeats: seconds per call and the number of calls, per repeat."""

    seconds_per_call: tuple[float, ...]
    calls: tuple[int, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds_per_call)

    def rate(self, items_per_call: int = 1) -> dict[str, float]:
        """Items per second: median over the repeats, and the slowest and fastest repeat."""
        return {"median": items_per_call / self.median, "min": items_per_call / max(self.seconds_per_call),
                "max": items_per_call / min(self.seconds_per_call)}

    def as_json(self) -> dict:
        return {"seconds_per_call_median": self.median, "seconds_per_call_min": min(self.seconds_per_call),
                "seconds_per_call_max": max(self.seconds_per_call), "seconds_per_call": list(self.seconds_per_call), "calls": list(self.calls)}


def time_by_duration(runners: Mapping[str, Callable[[], object]], repeats: int, min_seconds: float,
                     clock: Callable[[], float] = time.perf_counter, turn_warmup: int = 0) -> dict[str, Timing]:
    """Each runner, once to warm up, then ``repeats`` times: called until ``min_seconds`` have passed
    (at least once). The runners take turns within each repeat.

    ``turn_warmup`` untimed calls open every turn. Taking turns has a price where a runner's
    memory is large: a Swin-T training step that follows another model's steps ran 1.5-2x slower
    for its first two or three steps (AVX2 EPYC, the allocator re-faulting the other model's
    freed memory into its own sizes), which a training run, one model throughout, never pays."""
    if repeats < 1 or min_seconds < 0 or turn_warmup < 0:
        raise ValueError(f"repeats must be >= 1, min_seconds and turn_warmup >= 0 (got {repeats}, {min_seconds}, {turn_warmup})")
    for run in runners.values():
        run()
    per_call: dict[str, list[float]] = {name: [] for name in runners}
    calls: dict[str, list[int]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            for _ in range(turn_warmup):
                run()
            count, start = 0, clock()
            while True:
                run()
                count += 1
                elapsed = clock() - start
                if elapsed >= min_seconds:
                    break
            per_call[name].append(elapsed / count)
            calls[name].append(count)
    return {name: Timing(tuple(per_call[name]), tuple(calls[name])) for name in runners}
