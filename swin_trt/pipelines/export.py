"""Stage ``export``: a checkpoint to an ONNX graph (default or TensorRT target) with its sidecar."""

from __future__ import annotations

from pathlib import Path

import torch

from swin_trt.api import open_model
from swin_trt.errors import SwinTrtError
from swin_trt.io import write_sidecar
from swin_trt.lazy import lazy_import
from swin_trt.quantization.model import set_scale_dtype

onnx_export = lazy_import("swin_trt.onnx.export")  # onnx and the exporter load only when exporting
onnx_graph = lazy_import("swin_trt.onnx.graph")
onnx_tensorrt = lazy_import("swin_trt.onnx.tensorrt")


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path | None,
    model: str | None = None,
    cfg: str | Path | None = None,
    int8_mode: str | None = None,
    weights: str | None = None,
    no_quant: bool = False,
    precision: str | None = None,
    target: str = "onnxruntime",
) -> dict:
    """Export a calibrated checkpoint (or its FP weights, or an FP checkpoint) to ONNX, with a
    JSON sidecar beside it; returns the sidecar. ``precision`` is that of the non-quantized
    parts (fp16 halves them; inputs and logits stay float32), and an fp16 graph's scales are
    float16, so the model rounds its scales the same way before export. ``target="tensorrt"``
    gives the graph TensorRT should get (``swin_trt.onnx.tensorrt``): fp16 and INT8 weights by
    default, and only for recipes without GEMM-output quantizers. An FP8 checkpoint exports FP8
    Q/DQ (``float8e4m3fn`` zero points); its stored weights are ``fp8`` (``int8`` is refused).
    Without ``output`` the graph goes to ``export/<model>_<int8-modeN or fp32>[_fp8][_wXaY][_w8]
    [_fp16][_trt].onnx`` (``_wXaY`` when a precision is below 8 bits; ``_w8`` for weights stored
    in 8 bits, INT8 or FP8)."""

    loaded = open_model(model, cfg, checkpoint, int8_mode)
    quantized = loaded.quantized and not no_quant
    fp8 = quantized and loaded.model.quant_format == "fp8"
    stored = "fp8" if fp8 else "int8"
    weights = weights or (stored if target == "tensorrt" and quantized else "fp32")
    precision = precision or ("fp16" if target == "tensorrt" else "fp32")
    if weights in ("int8", "fp8") and not quantized:
        raise SwinTrtError(f"--weights {weights} needs quantized weights: export a calibrated checkpoint without --no-quant")
    if quantized and weights not in ("fp32", stored):
        raise SwinTrtError(f"--weights {weights}: {checkpoint} is calibrated for {loaded.model.quant_format}, so its weights are stored as "
                           f"{stored} (or fp32)")
    network = loaded.model if quantized else loaded.fp_model()
    if target == "tensorrt" and quantized and network.quant_recipe.gemm_outputs:
        raise SwinTrtError(
            f"--target tensorrt needs --int8-mode trt: int8-mode {network.quant_recipe.name} quantizes GEMM outputs ahead of the bias, "
            "which TensorRT cannot fuse (calibrate with --int8-mode trt, or export this recipe without --target tensorrt)"
        )
    if quantized:
        set_scale_dtype(network, torch.float16 if precision == "fp16" else None)
    if output is None:
        tag = f"int8-mode{network.quant_recipe.name}" + ("_fp8" if fp8 else "") if quantized else "fp32"
        if quantized and (network.weight_bits, network.activation_bits) != (8, 8):
            tag += f"_w{network.weight_bits}a{network.activation_bits}"
        suffix = ("_w8" if weights in ("int8", "fp8") else "") + ("_fp16" if precision == "fp16" else "") + ("_trt" if target == "tensorrt" else "")
        output = Path("export") / f"{network.swin_trt_config.name}_{tag}{suffix}.onnx"
    proto = onnx_export.export_onnx(network, fusions=precision == "fp32")  # FP16: see docs/onnx.md (fusion passes)
    if weights == "int8":
        onnx_graph.store_int8_weights(proto)
    elif weights == "fp8":
        onnx_graph.store_fp8_weights(proto)
    if precision == "fp16":
        proto = onnx_graph.to_float16(proto)
    if target == "tensorrt":
        proto = onnx_tensorrt.prepare_for_tensorrt(proto)
    path = onnx_export.save_onnx(proto, output)
    details = {**onnx_export.sidecar(path, network, checkpoint, weights), "precision": precision, "target": target,
               "scale_dtype": "float16" if quantized and precision == "fp16" else "float32",
               "disabled": list(network.disabled_quantizers) if quantized else []}
    write_sidecar(output, details)
    return details
