"""Export a (fake-)quantized Swin to ONNX with QuantizeLinear/DequantizeLinear.

torch.onnx's dynamo exporter (``torch.export`` + opset 19, whose Q/DQ also take float16) is used: it keeps the batch dimension
symbolic through Swin's window partition, roll and shift mask, and maps torch's
``quantized_decomposed`` quantize/dequantize ops to QuantizeLinear/DequantizeLinear. The legacy
TorchScript exporter is deprecated, so it is not used.
"""

from __future__ import annotations

import ast
import collections
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the quantized_decomposed ops)
from torch import nn

from swin_trt.io import atomic_path
from swin_trt.onnx.fuse import export_fusions
from swin_trt.onnx.graph import drop_int8_clips, fold_weight_clips
from swin_trt.onnx.hashing import file_sha256
from swin_trt.onnx.layout import DEFAULT_LAYOUT, layout
from swin_trt.quantization.model import named_quantizers, uncalibrated
from swin_trt.quantization.quantizer import UncalibratedError
from swin_trt.versions import package_versions

OPSET = 19
INPUT_NAME, OUTPUT_NAME = "images", "logits"


@contextmanager
def export_mode(model: nn.Module) -> Iterator[None]:
    """Switch every quantizer to explicit quantize/dequantize ops with frozen scales."""
    missing = uncalibrated(model)
    if missing:
        raise UncalibratedError(f"{len(missing)} enabled quantizers have no amax (first: {missing[0]}): calibrate before exporting")
    quantizers = [q for _, q in named_quantizers(model)]
    for quantizer in quantizers:
        quantizer.exporting = True
        if quantizer.enabled and not quantizer.per_channel:
            quantizer.export_scale = float(quantizer.scale())
    try:
        yield
    finally:
        for quantizer in quantizers:
            quantizer.exporting = False


def export_onnx(model: nn.Module, example_batch: int = 2, fusions: bool = True, token_layout: str = DEFAULT_LAYOUT):
    """``model`` (eval mode, CPU) as an ONNX ``ModelProto`` with a dynamic batch axis, Q/DQ pairs
    adjacent (see :func:`swin_trt.onnx.graph.drop_int8_clips`); weights of fewer than 8 bits are
    clamped in place (:func:`swin_trt.onnx.graph.fold_weight_clips`); zero-width Pads dropped and
    each shifted block's position bias and mask added as one constant (:mod:`swin_trt.onnx.fuse`;
    ``fusions=False`` leaves them as the exporter wrote them, for measuring what they gain); the
    shifted windows moved as ``token_layout`` says (:mod:`swin_trt.onnx.layout`)."""
    config = model.swin_trt_config
    model = model.eval().cpu()
    example = torch.randn(example_batch, config.in_chans, config.img_size, config.img_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with export_mode(model), layout(model, token_layout), torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    proto = program.model_proto
    name_qdq_nodes(proto, {name for name, _ in named_quantizers(model)})
    for node in proto.graph.node:  # the exporter's per-node stack traces: half the file, and local paths
        del node.metadata_props[:]
    drop_int8_clips(proto)
    fold_weight_clips(proto)
    if fusions:
        export_fusions(proto)
    return proto


def name_qdq_nodes(proto, quantizer_names: Collection[str]) -> int:
    """Name each QuantizeLinear/DequantizeLinear after the quantizer it came from, e.g.
    ``layers.0.blocks.1.attn.qkv.input_quantizer.DequantizeLinear``, so a graph tensor can be
    matched to the PyTorch module that computes it (``bench --localize``; TensorRT's layer names).
    The exporter records each node's module path in the ``pkg.torch.onnx.name_scopes`` metadata,
    which is read here before the metadata is dropped. Returns how many nodes were named."""
    named = 0
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scopes = next((ast.literal_eval(p.value) for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), [])
        owner = next((scope for scope in reversed(scopes) if scope in quantizer_names), None)
        if owner is not None:
            node.name = f"{owner}.{node.op_type}"
            named += 1
    return named


def save_onnx(proto, output: str | Path) -> Path:
    """Check ``proto`` (checker + shape inference) and write it; the file appears only if valid."""
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx.checker.check_model(inferred, full_check=True)
    output = Path(output)
    with atomic_path(output) as tmp:
        onnx.save(proto, str(tmp))
    return output


def count_ops(path: str | Path) -> dict[str, int]:
    return dict(collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node))


def sidecar(onnx_path: Path, model: nn.Module, source: str | Path | None, weights: str) -> dict[str, Any]:
    """What the graph is: recipe, opset, input spec, source checkpoint hash, versions."""
    config = model.swin_trt_config
    recipe = getattr(model, "quant_recipe", None)
    ops = count_ops(onnx_path)
    return {
        "onnx": str(onnx_path),
        "model": config.name,
        "int8_mode": recipe.name if recipe is not None else None,
        "format": getattr(model, "quant_format", "int8") if recipe is not None else None,
        "per_channel_weights": getattr(model, "per_channel_weights", None),
        "weight_bits": getattr(model, "weight_bits", None) if recipe is not None else None,
        "activation_bits": getattr(model, "activation_bits", None) if recipe is not None else None,
        "quantizers_enabled": sum(1 for _, q in named_quantizers(model) if q.enabled),
        "blocks": sum(config.depths),
        "merges": len(config.depths) - 1,
        "opset": OPSET,
        "input": {"name": INPUT_NAME, "shape": ["batch", config.in_chans, config.img_size, config.img_size], "dtype": "float32",
                  "mean": list(config.data.mean), "std": list(config.data.std)},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", config.num_classes]},
        "weights": weights,
        "source_checkpoint": str(source) if source else None,
        "source_sha256": file_sha256(source) if source else None,
        "q_nodes": ops.get("QuantizeLinear", 0),
        "dq_nodes": ops.get("DequantizeLinear", 0),
        "bytes": onnx_path.stat().st_size,
        "versions": package_versions(),
    }
