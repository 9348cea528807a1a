"""Where an engine leaves its reference: the engine's source graph with every quantized tensor
exposed, against the fake-quant model with forward hooks at the same quantizers.

Points are matched by name: export names each DequantizeLinear after its quantizer
(``layers.0.blocks.1.attn.qkv.input_quantizer.DequantizeLinear``), so no graph pattern matching
is needed. Each point gets the gate's own criterion, ``||engine - fakequant|| / ||fakequant -
fp32||`` per image at that tensor, as a median over the images; the first point in execution
order above the bound is where the drift starts. FP32 at a point is the reference with every
quantizer passing values through while recording them (its collecting state): disabling them
would not do, since a Linear skips a disabled output quantizer and adds its bias in the GEMM.
A point the graph quantizes and the reference does not (another recipe) is infinitely far.
The last row is the engine itself (its logits), so a drift that only the backend's fused
kernels cause, which exposing tensors can prevent, still shows.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from swin_trt.errors import SwinTrtError
from swin_trt.io import atomic_path, read_sidecar, write_sidecar
from swin_trt.lazy import lazy_import
from swin_trt.parity.compare import quantile, relative_errors
from swin_trt.parity.conformance import DEQUANTIZE
from swin_trt.quantization.model import is_weight_quantizer, named_quantizers
from swin_trt.runtimes import backend_module

onnx = lazy_import("onnx")
mpl_figure = lazy_import("matplotlib.figure")

ENGINE_LOGITS = "logits (engine)"
CHUNK = 4  # images per run: Swin-T's stage-1 tensors are ~1 MB per image each, and there are ~135 of them


@dataclasses.dataclass(frozen=True)
class LayerError:
    name: str
    rel_error: float  # median over images of relative_errors at this tensor
    max_abs_diff: float
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Localization:
    layers: tuple[LayerError, ...]  # execution order, the engine's logits last
    bound: float
    images: int
    reference_only: tuple[str, ...]  # quantizers the reference enables and the graph lacks

    @property
    def first_outside(self) -> LayerError | None:
        return next((layer for layer in self.layers if not layer.rel_error <= self.bound), None)


def quantized_tensors(onnx_path: str | Path) -> dict[str, str]:
    """{quantizer name: the DequantizeLinear output it names}, in graph (execution) order."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    points = {node.name[: -len(DEQUANTIZE)]: node.output[0] for node in graph.node
              if node.op_type == "DequantizeLinear" and node.name.endswith(DEQUANTIZE)}
    if not points:
        raise SwinTrtError(f"{onnx_path} has no DequantizeLinear named after its quantizer: export it again with this version of swin-trt")
    return points


@contextmanager
def _captured(model: torch.nn.Module, names: set[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of each named quantizer during a forward pass."""
    seen: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(lambda _m, _i, output, name=name: seen.setdefault(name, output.detach()))
               for name, module in named_quantizers(model) if name in names]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


class _Recorder:
    """A quantizer's statistics collector that keeps the last tensor it was given; a quantizer
    with a collector passes values through unchanged."""

    value: torch.Tensor | None = None

    def collect(self, value: torch.Tensor) -> None:
        self.value = value


def _recording_fp32(fakequant: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, _Recorder]]:
    """A copy of ``fakequant`` computing in FP32, recording the tensor at each enabled quantizer."""
    fp32 = copy.deepcopy(fakequant)
    recorders = {}
    for name, quantizer in named_quantizers(fp32):
        if quantizer.enabled:
            quantizer.collector = recorders[name] = _Recorder()
    return fp32, recorders


def _host(tensor: torch.Tensor) -> np.ndarray:
    return tensor.float().cpu().numpy()


def check_hoisted(onnx_path: str | Path, hoisted: dict[str, list[int]]) -> None:
    """Each recorded transpose (``hoisted_transposes`` of the graph's sidecar, written by
    :func:`swin_trt.onnx.tensorrt.hoist_transposes_above_qdq`) is in the graph: a Transpose with
    that permutation feeds the quantizer's QuantizeLinear."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producers = {output: node for node in graph.node for output in node.output}
    quantizers = {node.name.removesuffix(".QuantizeLinear"): node for node in graph.node if node.op_type == "QuantizeLinear"}
    for name, perm in hoisted.items():
        source = producers.get(quantizers[name].input[0]) if name in quantizers else None
        found = next((list(a.ints) for a in source.attribute if a.name == "perm"), None) if source is not None and source.op_type == "Transpose" else None
        if found != list(perm):
            raise SwinTrtError(f"localize: the graph's sidecar records a transpose {list(perm)} moved above {name}, the graph has "
                               f"{'no Transpose there' if found is None else f'{found}'}: re-export the graph")


def like_the_reference(name: str, got: np.ndarray, want_shape: tuple[int, ...], perm: list[int] | None) -> np.ndarray:
    """The graph's tensor at ``name`` in the reference's layout: a transpose moved above the
    quantizer undone (``perm``), then the shapes must be equal. No reshape: the same number of
    values in another layout (a kᵀ against k) would compare unrelated values."""
    if perm is not None:
        if got.ndim != len(perm):
            raise SwinTrtError(f"localize: {name} has shape {got.shape} in the graph, which its recorded transpose {perm} does not fit")
        got = got.transpose(np.argsort(perm))
    if got.shape != tuple(want_shape):
        undone = f" after undoing its recorded transpose {perm}" if perm is not None else ""
        raise SwinTrtError(f"localize: {name} has shape {got.shape} in the graph{undone} and {tuple(want_shape)} in the reference: "
                           "not the same tensor layout, so not compared")
    return got


def _rows(name: str, value: np.ndarray, images: int) -> np.ndarray:
    """One row per image; a weight has no image axis (one row). Swin's window partition keeps
    the batch outermost, so an attention tensor's first axis is images x windows."""
    rows = 1 if is_weight_quantizer(name) else images
    if value.size % rows:
        raise SwinTrtError(f"localize: tensor of {name} has shape {value.shape}, not divisible into {images} images")
    return value.reshape(rows, -1)


@torch.no_grad()
def localize(fakequant: torch.nn.Module, engine, onnx_path: str | Path, images: torch.Tensor, bound: float,
             hoisted: dict[str, list[int]] | None = None) -> Localization:
    """Per-layer error of ``engine`` (built from ``onnx_path``) against ``fakequant`` on ``images``;
    ``hoisted``: the transposes export moved above a quantizer (the graph sidecar's
    ``hoisted_transposes``), inverted before comparing."""
    hoisted = hoisted or {}
    check_hoisted(onnx_path, hoisted)
    points = quantized_tensors(onnx_path)
    known = {name for name, _ in named_quantizers(fakequant)}
    strangers = sorted(set(points) - known)
    if strangers:
        raise SwinTrtError(f"{onnx_path} quantizes {strangers[0]}, which the reference does not have: the graph is not from this model")
    fp32, recorders = _recording_fp32(fakequant)
    compared = [name for name in points if name in recorders]
    run_graph = backend_module(engine.details.get("backend", "onnxruntime")).intermediate_outputs(
        onnx_path, [points[name] for name in compared], engine.details)
    errors: dict[str, list[np.ndarray]] = {name: [] for name in [*compared, ENGINE_LOGITS]}
    max_diff = dict.fromkeys(errors, 0.0)
    device = next(fakequant.parameters()).device  # the references run where bench put them (the GPU of the CUDA evaluator)
    for chunk in images.cpu().split(CHUNK):
        exposed = run_graph(chunk.numpy())
        with _captured(fakequant, set(compared)) as reference:
            reference_logits = _host(fakequant(chunk.to(device)))
        fp32_logits = _host(fp32(chunk.to(device)))
        triples = {name: (exposed[points[name]], _host(reference[name]), _host(recorders[name].value)) for name in compared}
        triples[ENGINE_LOGITS] = (_host(engine.run(chunk.to(engine.device))), reference_logits, fp32_logits)
        for name, (got, want, fp) in triples.items():
            got = like_the_reference(name, got, want.shape, hoisted.get(name))
            got, want, fp = (_rows(name, a, len(chunk)) for a in (got, want, fp))
            errors[name].append(relative_errors(got, want, fp))
            max_diff[name] = max(max_diff[name], float(np.abs(got - want).max(initial=0.0)))
    measured = {name: LayerError(name, quantile(np.concatenate(errors[name]), 0.5), max_diff[name]) for name in errors}
    unmatched = LayerError("", float("inf"), float("nan"), "not quantized in the reference")
    layers = tuple(measured.get(name) or dataclasses.replace(unmatched, name=name) for name in [*points, ENGINE_LOGITS])
    return Localization(layers, bound, len(images), tuple(name for name in recorders if name not in points))


def perturb_scale(source: str | Path, target: str | Path, quantizer: str, factor: float) -> Path:
    """A known fault to find: a copy of the graph with one quantizer's scale (its QuantizeLinear
    and DequantizeLinear) multiplied by ``factor``, and the source's sidecar rewritten for the
    copy's bytes (its SHA-256 and size, as someone who edits a graph would), so the provenance
    chain still claims the same reference and verifies: only the graph check and the numbers can tell."""
    source, target = Path(source), Path(target)
    model = onnx.load(str(source))
    nodes = [node for node in model.graph.node if node.name in (f"{quantizer}.QuantizeLinear", f"{quantizer}.DequantizeLinear")]
    scales = {init.name: init for init in model.graph.initializer}
    if len(nodes) != 2 or nodes[0].input[1] not in scales:
        raise SwinTrtError(f"{source} has no QuantizeLinear/DequantizeLinear pair named after {quantizer} with a scale initializer")
    scale = onnx.numpy_helper.to_array(scales[nodes[0].input[1]])
    name = f"{quantizer}.perturbed_scale"
    model.graph.initializer.append(onnx.numpy_helper.from_array((scale * factor).astype(scale.dtype), name))
    for node in nodes:  # a new initializer: quantizers with the same scale value share one
        node.input[1] = name
    return save_edited(model, source, target)


def save_edited(model, source: str | Path, target: str | Path) -> Path:
    """Save an edited copy of the graph ``source`` to ``target`` with ``source``'s sidecar, its
    ``sha256`` and ``bytes`` those of the copy: a consistent chain around an edited graph."""
    with atomic_path(target) as tmp:
        onnx.save(model, str(tmp))
    details = {key: value for key, value in (read_sidecar(source) or {}).items() if key not in ("sha256", "bytes")}
    write_sidecar(target, {**details, "onnx": str(target)})
    return Path(target)


def plot(localization: Localization, path: str | Path) -> Path:
    """The per-layer errors as a PNG (log scale, bound dashed, first layer outside marked)."""
    path = Path(path)
    figure = mpl_figure.Figure(figsize=(max(8.0, 0.12 * len(localization.layers)), 4.5), layout="constrained")
    axes = figure.add_subplot()
    values = [max(layer.rel_error, 1e-6) for layer in localization.layers]
    weights = [index for index, layer in enumerate(localization.layers) if is_weight_quantizer(layer.name)]
    activations = [index for index in range(len(values)) if index not in set(weights)]
    axes.plot(activations, [values[i] for i in activations], marker=".", linewidth=1, label="activations")
    axes.plot(weights, [values[i] for i in weights], marker="x", linestyle="none", color="tab:gray", label="weights")
    axes.axhline(localization.bound, linestyle="--", color="tab:red", label=f"bound {localization.bound:g}")
    first = localization.first_outside
    if first is not None:
        index = localization.layers.index(first)
        axes.plot([index], [values[index]], marker="o", color="tab:red", label=f"first outside: {first.name}")
    axes.set_yscale("log")
    axes.set_xlabel("quantized tensor, execution order (last: the engine's logits)")
    axes.set_ylabel("median ||engine - fq|| / ||fq - fp32||")
    axes.set_title(f"engine vs fake-quant per layer ({localization.images} images; 1e-6 = exact)")
    axes.legend(loc="upper left")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path
