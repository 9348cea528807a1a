"""Stage ``export``: a checkpoint to an ONNX graph (default or TensorRT target) with its sidecar.

The graph is a pure function of the checkpoint and the settings the sidecar records under
``export`` (:class:`ExportSettings`): the parity gate re-exports ``--reference`` in memory with
those settings and compares the engine's source graph with it tensor by tensor
(:mod:`swin_trt.parity.conformance`), so the export must be deterministic (tested)."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from swin_trt.api import open_model
from swin_trt.errors import SwinTrtError
from swin_trt.io import write_sidecar
from swin_trt.lazy import lazy_import
from swin_trt.onnx.hashing import file_sha256
from swin_trt.onnx.layout import DEFAULT_LAYOUT
from swin_trt.quantization.model import set_scale_dtype

onnx = lazy_import("onnx")
onnx_export = lazy_import("swin_trt.onnx.export")  # onnx and the exporter load only when exporting
onnx_graph = lazy_import("swin_trt.onnx.graph")
onnx_tensorrt = lazy_import("swin_trt.onnx.tensorrt")


@dataclass(frozen=True)
class ExportSettings:
    """Everything besides the checkpoint that decides the graph's bytes (the sidecar's ``export``)."""

    model: str | None = None
    cfg: str | None = None
    int8_mode: str | None = None
    weights: str = "fp32"  # fp32: QuantizeLinear(float weight); int8 / fp8: the integers / FP8 values stored
    no_quant: bool = False
    precision: str = "fp32"  # of everything outside Q/DQ
    target: str = "onnxruntime"
    fusions: bool = True  # the standard-ONNX export passes (swin_trt.onnx.fuse.export_fusions); off for FP16, see docs/onnx.md
    format: str = "int8"  # the Q/DQ format (the checkpoint's --format): int8, or fp8 (float8e4m3fn zero points); int8 for a graph without Q/DQ
    layout: str = DEFAULT_LAYOUT  # how shifted windows move (swin_trt.onnx.layout.LAYOUTS): gather, or timm (every graph before 0.3)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_sidecar(cls, sidecar: dict[str, Any]) -> ExportSettings:
        """The settings a graph's sidecar records; a sidecar written before ``export`` was
        recorded gives them from its other fields (fusions were then on exactly for FP32), and one
        written before ``layout`` was recorded had timm's."""
        quant_format = sidecar.get("format") or "int8"  # recorded beside ``export`` before ``export`` recorded it
        if "export" in sidecar:
            return cls(**{"format": quant_format, "layout": "timm", **sidecar["export"]})
        precision = sidecar.get("precision") or "fp32"
        return cls(int8_mode=sidecar.get("int8_mode"), weights=sidecar.get("weights") or "fp32", no_quant=sidecar.get("int8_mode") is None,
                   precision=precision, target=sidecar.get("target") or "onnxruntime", fusions=precision == "fp32", format=quant_format,
                   layout="timm")


@dataclass(frozen=True)
class ExportedGraph:
    proto: Any  # onnx.ModelProto
    hoisted_transposes: dict[str, list[int]]  # quantizer -> the permutation moved above its Q/DQ (TensorRT target)


def resolve_settings(quantized: bool, model: str | None = None, cfg: str | Path | None = None, int8_mode: str | None = None,
                     weights: str | None = None, no_quant: bool = False, precision: str | None = None, target: str = "onnxruntime",
                     quant_format: str = "int8", layout: str = DEFAULT_LAYOUT) -> ExportSettings:
    """The CLI's options with their defaults filled in (the TensorRT target: FP16 and weights stored
    in the checkpoint's format, INT8 or FP8); ``quant_format``: the checkpoint's format."""
    quantized = quantized and not no_quant
    quant_format = quant_format if quantized else "int8"
    weights = weights or (quant_format if target == "tensorrt" and quantized else "fp32")
    precision = precision or ("fp16" if target == "tensorrt" else "fp32")
    return ExportSettings(model, str(cfg) if cfg is not None else None, int8_mode, weights, no_quant, precision, target, fusions=precision == "fp32",
                          format=quant_format, layout=layout)


def export_graph(checkpoint: str | Path | None, settings: ExportSettings, loaded: Any = None) -> ExportedGraph:
    """The ONNX graph of ``checkpoint`` under ``settings``, in memory (no file is written);
    ``loaded``: the checkpoint already opened with the settings' model, cfg and int8 mode."""
    loaded = loaded if loaded is not None else open_model(settings.model, settings.cfg, checkpoint, settings.int8_mode)
    quantized = loaded.quantized and not settings.no_quant
    if settings.weights in ("int8", "fp8") and not quantized:
        raise SwinTrtError(f"--weights {settings.weights} needs quantized weights: export a calibrated checkpoint without --no-quant")
    if quantized and loaded.model.quant_format != settings.format:
        raise SwinTrtError(f"{checkpoint} is calibrated for {loaded.model.quant_format}, the settings ask for {settings.format} Q/DQ "
                           "(the format is the checkpoint's: calibrate with --format to change it)")
    stored = settings.format if quantized else "int8"
    if quantized and settings.weights not in ("fp32", stored):
        raise SwinTrtError(f"--weights {settings.weights}: {checkpoint} is calibrated for {stored}, so its weights are stored as {stored} (or fp32)")
    network = loaded.model if quantized else loaded.fp_model()
    if settings.target == "tensorrt" and quantized and network.quant_recipe.gemm_outputs:
        raise SwinTrtError(
            f"--target tensorrt needs --int8-mode trt: int8-mode {network.quant_recipe.name} quantizes GEMM outputs ahead of the bias, "
            "which TensorRT cannot fuse (calibrate with --int8-mode trt, or export this recipe without --target tensorrt)"
        )
    if quantized:
        set_scale_dtype(network, torch.float16 if settings.precision == "fp16" else None)
    proto = onnx_export.export_onnx(network, fusions=settings.fusions, token_layout=settings.layout)
    if settings.weights == "int8":
        onnx_graph.store_int8_weights(proto)
    elif settings.weights == "fp8":
        onnx_graph.store_fp8_weights(proto)
    if settings.precision == "fp16":
        proto = onnx_graph.to_float16(proto)
    hoisted = onnx_tensorrt.prepare_for_tensorrt(proto) if settings.target == "tensorrt" else {}
    return ExportedGraph(proto, hoisted)


RECENT_EXPORT_BYTES = 1 << 30  # serialized graphs kept by exported_onnx: a Swin-L graph (about 800 MB) alone, or hundreds of small ones
# (checkpoint path, its SHA-256, settings) -> (serialized graph, hoisted transposes as JSON), oldest first
_recent: OrderedDict[tuple[str, str, ExportSettings], tuple[bytes, str]] = OrderedDict()


def exported_onnx(checkpoint: str | Path, settings: ExportSettings, loaded: Any = None) -> tuple[Any, dict[str, list[int]]]:
    """The graph of ``checkpoint`` under ``settings`` and its hoisted transposes, as :func:`export_graph`
    makes them (from ``loaded`` when given), made once per checkpoint content and settings in a
    process. Why a cache: the exporter traces the model for seconds (a Swin-T: tens), and a process
    that exports a checkpoint and then gates an engine of it (the demo, the API, the test suite)
    would trace it again for the gate's graph check; the graph is a function of the checkpoint's
    bytes and the settings alone (the export is deterministic across processes:
    tests/test_graph_check.py), and the cache hands out copies. Written out rather than
    ``functools.lru_cache``: the opened model ``loaded`` must reach the export without being part
    of the key (``export`` would otherwise load the checkpoint twice)."""
    key = (str(checkpoint), file_sha256(checkpoint), settings)
    if key not in _recent:
        exported = export_graph(checkpoint, settings, loaded)
        _recent[key] = (exported.proto.SerializeToString(), json.dumps(exported.hoisted_transposes))
        while len(_recent) > 1 and sum(len(data) for data, _ in _recent.values()) > RECENT_EXPORT_BYTES:
            _recent.popitem(last=False)
    _recent.move_to_end(key)
    data, hoisted = _recent[key]
    return onnx.ModelProto.FromString(data), json.loads(hoisted)


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
    layout: str = DEFAULT_LAYOUT,
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
    in 8 bits, INT8 or FP8). ``layout``: how shifted windows move (:mod:`swin_trt.onnx.layout`)."""

    loaded = open_model(model, cfg, checkpoint, int8_mode)
    settings = resolve_settings(loaded.quantized, model, cfg, int8_mode, weights, no_quant, precision, target, getattr(loaded.model, "quant_format", "int8"),
                                layout)
    proto, hoisted = exported_onnx(checkpoint, settings, loaded)
    quantized = loaded.quantized and not settings.no_quant
    network = loaded.model if quantized else loaded.fp_model()  # what was exported, or its twin on a cache hit: the sidecar reads names, bits, recipe
    fp8 = quantized and settings.format == "fp8"
    if output is None:
        tag = f"int8-mode{network.quant_recipe.name}" + ("_fp8" if fp8 else "") if quantized else "fp32"
        if quantized and (network.weight_bits, network.activation_bits) != (8, 8):
            tag += f"_w{network.weight_bits}a{network.activation_bits}"
        suffix = ("_w8" if settings.weights in ("int8", "fp8") else "") + ("_fp16" if settings.precision == "fp16" else "") + ("_trt" if target == "tensorrt" else "")
        output = Path("export") / f"{network.swin_trt_config.name}_{tag}{suffix}.onnx"
    path = onnx_export.save_onnx(proto, output)
    details = {**onnx_export.sidecar(path, network, checkpoint, settings.weights), "precision": settings.precision, "target": target,
               "scale_dtype": "float16" if quantized and settings.precision == "fp16" else "float32",
               "disabled": list(network.disabled_quantizers) if quantized else [],
               "export": settings.as_json(), "hoisted_transposes": hoisted}
    return write_sidecar(output, details)
