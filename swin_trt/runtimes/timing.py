"""Latency and throughput of an engine over a sweep of batch sizes.

Each batch size runs ``warmup`` inferences first (allocator, lazy kernel loading, clocks), then
``iters`` timed ones. On a GPU the inputs are produced, each inference enqueued and a pair of CUDA
events recorded around it on the engine's own stream (``engine.stream`` where the engine has one,
e.g. a TensorRT execution context's; else the current stream): the GPU's own clock, so the figures
hold the inference and nothing of Python's launch overhead between them, no synchronisation
inside the loop perturbs the queue, and TensorRT never sees the legacy default stream (on which it
adds device synchronisations of its own). The host waits on that stream once, after the loop.
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


def engine_stream(engine):
    """The CUDA stream ``engine`` runs on: its own where it has one, else the current stream of its
    device; None on the CPU."""
    device = getattr(engine, "device", None)
    if device is None or torch.device(device).type != "cuda":
        return None
    return getattr(engine, "stream", None) or torch.cuda.current_stream(device)


def latencies_ms(engine, images, warmup: int, iters: int) -> list[float]:
    """``iters`` latencies of ``engine.run(images)`` in milliseconds, after ``warmup`` runs."""
    if images.is_cuda:
        stream = engine_stream(engine) or torch.cuda.current_stream(images.device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                engine.run(images)
            for start, stop in events:
                start.record(stream)
                engine.run(images)
                stop.record(stream)
        stream.synchronize()
        return [start.elapsed_time(stop) for start, stop in events]
    for _ in range(warmup):
        engine.run(images)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        engine.run(images)
        times.append((time.perf_counter() - start) * 1000)
    return times


def sweep(engine, image_shape: tuple[int, ...], batches: tuple[int, ...] | list[int] = DEFAULT_BATCHES, warmup: int = 10, iters: int = 50,
          label: str = "the engine") -> list[SweepPoint]:
    """p50/p99 latency and images/s of ``engine`` at each batch size, on random images of
    ``image_shape`` (speed does not depend on the pixel values) already on the engine's device
    (copied there on the engine's stream)."""
    check_batches(batches, engine.batch_range, label)
    generator = torch.Generator().manual_seed(0)
    stream = engine_stream(engine)
    points = []
    for batch in batches:
        host = torch.randn(batch, *image_shape, generator=generator)
        if stream is None:
            images = host.to(engine.device)
        else:
            with torch.cuda.stream(stream):
                images = host.to(engine.device)
        times = np.asarray(latencies_ms(engine, images, warmup, iters))
        p50 = float(np.median(times))
        points.append(SweepPoint(batch, p50, float(np.quantile(times, 0.99, method="higher")), batch / p50 * 1000.0))
    return points
