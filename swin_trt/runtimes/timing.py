"""Latency and throughput of an engine over a sweep of batch sizes.

Each batch size runs ``warmup`` inferences first (allocator, lazy kernel loading, clocks), then
``iters`` timed ones. On a GPU each inference is timed by a pair of CUDA events recorded on the
engine's stream around it: the GPU's own clock, so the figures hold the inference and nothing of
Python's launch overhead between them, and no synchronisation inside the loop perturbs the queue.
On the CPU, ``time.perf_counter`` around the (synchronous) call. Images/s is the batch over the
median latency; p99 is an observed latency (``numpy.quantile(method="higher")``: below 100
iterations, the largest).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from swin_trt.errors import SwinTrtError
from swin_trt.lazy import lazy_import

np = lazy_import("numpy")
torch = lazy_import("torch")  # lazily: `swin-trt bench --help` reads DEFAULT_BATCHES

DEFAULT_BATCHES = (1, 8, 32, 128)


@dataclass(frozen=True)
class SweepPoint:
    batch: int
    p50_ms: float
    p99_ms: float
    images_per_s: float

    def as_json(self) -> dict[str, float]:
        return asdict(self)


def check_batches(batches: tuple[int, ...] | list[int], batch_range: tuple[int, int | None], label: str) -> None:
    """Refuse, before any work, a sweep with a batch the engine's profile does not admit."""
    low, high = batch_range
    outside = [b for b in batches if b < low or (high is not None and b > high)]
    if outside:
        raise SwinTrtError(f"--sweep batch {outside[0]} is outside {label}'s profile ({low} to {high}): sweep within it or rebuild with --min-batch/--max-batch")


def latencies_ms(engine, images, warmup: int, iters: int) -> list[float]:
    """``iters`` latencies of ``engine.run(images)`` in milliseconds, after ``warmup`` runs."""
    for _ in range(warmup):
        engine.run(images)
    if images.is_cuda:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, stop in events:
            start.record()
            engine.run(images)
            stop.record()
        torch.cuda.synchronize(images.device)
        return [start.elapsed_time(stop) for start, stop in events]
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        engine.run(images)
        times.append((time.perf_counter() - start) * 1000)
    return times


def sweep(engine, image_shape: tuple[int, ...], batches: tuple[int, ...] | list[int] = DEFAULT_BATCHES, warmup: int = 10, iters: int = 50,
          label: str = "the engine") -> list[SweepPoint]:
    """p50/p99 latency and images/s of ``engine`` at each batch size, on random images of
    ``image_shape`` (speed does not depend on the pixel values) already on the engine's device."""
    check_batches(batches, engine.batch_range, label)
    generator = torch.Generator().manual_seed(0)
    points = []
    for batch in batches:
        images = torch.randn(batch, *image_shape, generator=generator).to(engine.device)
        times = np.asarray(latencies_ms(engine, images, warmup, iters))
        p50 = float(np.median(times))
        points.append(SweepPoint(batch, p50, float(np.quantile(times, 0.99, method="higher")), batch / p50 * 1000.0))
    return points
