"""TensorRT runs on its execution context's own CUDA stream, never on stream 0 (the legacy default
stream, on which TensorRT adds device synchronisations and the timings would hold host overhead),
and the caller's stream waits for it.

CPU-only: torch's stream API is replaced by recording stand-ins (``_Streams``) and TensorRT by a
stand-in runtime whose execution context records the stream handle it is given; the tensors are
CPU tensors. What is checked is which stream each call receives and who waits for whom, not CUDA.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from swin_trt.runtimes import tensorrt as trt_runtime
from swin_trt.runtimes import timing


class _Stream:
    """A CUDA stream stand-in: its handle (0 for the legacy default stream) and what it waited on."""

    handles = iter(range(0x5000, 0x6000, 0x10))

    def __init__(self, device=None, handle=None):
        self.cuda_stream = next(self.handles) if handle is None else handle
        self.waited_on: list[_Stream] = []
        self.synchronized = 0

    def wait_stream(self, other):
        self.waited_on.append(other)

    def synchronize(self):
        self.synchronized += 1


class _Streams:
    """torch.cuda's stream functions over ``_Stream``: ``current`` starts as the default stream."""

    def __init__(self, monkeypatch):
        self.default = _Stream(handle=0)
        self.current = self.default
        self.recorded: list[tuple[int, _Stream]] = []  # (tensor address, stream) of record_stream
        monkeypatch.setattr(torch.cuda, "Stream", _Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: self.current)
        monkeypatch.setattr(torch.cuda, "stream", self.use)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.Tensor, "record_stream", lambda tensor, stream: self.recorded.append((tensor.data_ptr(), stream)))

    @contextlib.contextmanager
    def use(self, stream):
        before, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = before


class _Context:
    """``IExecutionContext`` stand-in: every call and the stream that was current during it."""

    def __init__(self, streams: _Streams):
        self.streams, self.calls, self.shape = streams, [], None

    def set_input_shape(self, name, shape):
        self.shape = shape
        self.calls.append(("set_input_shape", self.streams.current))
        return True

    def get_tensor_shape(self, name):
        return (self.shape[0], 10)

    def set_tensor_address(self, name, address):
        self.calls.append(("set_tensor_address", self.streams.current))
        return True

    def execute_async_v3(self, stream_handle):
        self.calls.append(("execute_async_v3", self.streams.current, stream_handle))
        return True


@pytest.fixture
def engine(monkeypatch):
    """An ``Execution`` built by its own constructor over a stand-in TensorRT runtime, on the CPU."""
    streams = _Streams(monkeypatch)
    context = _Context(streams)
    engine = SimpleNamespace(create_execution_context=lambda: context, num_io_tensors=2, get_tensor_name=["images", "logits"].__getitem__,
                             get_tensor_mode=lambda name: "INPUT" if name == "images" else "OUTPUT", get_tensor_dtype=lambda name: "DataType.FLOAT",
                             get_tensor_profile_shape=lambda name, index: [(1, 3, 4, 4), (4, 3, 4, 4), (8, 3, 4, 4)])
    fake = SimpleNamespace(__version__="11.4.0", Logger=type("Logger", (), {"ERROR": 3, "__init__": lambda self, severity: None}),
                           Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda plan: engine), TensorIOMode=SimpleNamespace(INPUT="INPUT"))
    monkeypatch.setattr(trt_runtime, "tensorrt", fake)
    monkeypatch.setattr(trt_runtime, "require_cuda", lambda: ("Stand-in GPU", "9.0"))
    execution = trt_runtime.Execution(b"plan", "stand-in.plan")
    execution.device = torch.device("cpu")  # the tensors stay on the CPU; the streams are what is checked
    return execution, context, streams


def test_each_execution_context_has_its_own_stream_and_the_caller_waits(engine):
    execution, context, streams = engine
    images = torch.zeros(2, 3, 4, 4)
    outputs = execution.run(images)
    enqueued = [call for call in context.calls if call[0] == "execute_async_v3"]
    assert enqueued == [("execute_async_v3", execution.stream, execution.stream.cuda_stream)]
    assert execution.stream.cuda_stream != 0 and execution.stream is not streams.default
    assert all(current is execution.stream for _, current, *_ in context.calls)  # bound and enqueued with the engine's stream current
    assert execution.stream.waited_on == [streams.default]  # the images were produced on the caller's stream
    assert streams.default.waited_on == [execution.stream]  # the caller reads the logits after the engine wrote them
    assert streams.recorded == [(outputs["logits"].data_ptr(), streams.default)]
    assert streams.current is streams.default  # the caller's stream is current again
    other = trt_runtime.Execution(b"plan", "second.plan")
    assert other.stream is not execution.stream and other.stream.cuda_stream != execution.stream.cuda_stream


def test_timing_produces_enqueues_and_records_on_the_engines_stream(engine, monkeypatch):
    """The sweep's CUDA path: inputs copied, warm-up and timed runs enqueued and both events
    recorded on the engine's stream, with no hand-over between streams inside the loop and one
    wait by the host at the end; TensorRT never receives stream 0."""
    execution, context, streams = engine
    events = []

    class _Event:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self, stream=None):
            events.append(stream if stream is not None else streams.current)

        def elapsed_time(self, other):
            return 1.0

    class _CudaImages:
        """The batch as the sweep sees it on a GPU: is_cuda, on the engine's device."""

        def __init__(self, tensor):
            self.tensor, self.is_cuda, self.device, self.shape = tensor, True, "cuda:0", tensor.shape

        def to(self, device=None, dtype=None):
            return self.tensor.to(dtype=dtype)

    host_to, copies = torch.Tensor.to, []

    def to(tensor, *args, **kwargs):
        """A host-to-GPU copy (recorded with the stream it was issued on); a CPU conversion as before."""
        target = kwargs.get("device", args[0] if args else None)
        if target is not None and torch.device(target).type == "cuda":
            copies.append(streams.current)
            return _CudaImages(tensor.clone())
        return host_to(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "Event", _Event)
    monkeypatch.setattr(torch.Tensor, "to", to)
    execution.device = torch.device("cuda", 0)
    execution.batch_range = (1, 8)
    times = timing.latencies_ms(execution, _CudaImages(torch.zeros(2, 3, 4, 4)), warmup=2, iters=3)
    assert times == [1.0, 1.0, 1.0] and events == [execution.stream] * 6 and execution.stream.synchronized == 1
    handles = [call[2] for call in context.calls if call[0] == "execute_async_v3"]
    assert handles == [execution.stream.cuda_stream] * 5 and 0 not in handles
    assert execution.stream.waited_on == [] and streams.default.waited_on == []  # the consumer is the engine's own stream
    assert timing.engine_stream(execution) is execution.stream
    assert timing.engine_stream(SimpleNamespace(device=torch.device("cpu"))) is None
    points = timing.sweep(execution, (3, 4, 4), batches=[4], warmup=1, iters=2)
    assert copies and all(stream is execution.stream for stream in copies)  # the sweep's images are copied on the engine's stream
    assert points[0].batch == 4 and np.isclose(points[0].p50_ms, 1.0)
