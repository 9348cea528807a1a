"""Why an FP16 graph cannot match the FP32 fake-quant reference, and why no FP16 reference fixes it.

Three measurements on one calibrated swin_micro (the `trt` recipe of `swin-trt demo`), digits val:

1. the flip cascade: the reference with every activation quantizer's input rounded to float16
   first (what an FP16 graph hands its QuantizeLinear), against the reference itself. Per
   quantizer: the share of values that land on another integer from that quantizer's own
   rounding alone (``isolated``), and the share that differ once the earlier layers' flips have
   propagated (``total``);
2. candidate references and FP16 runtimes against each other, in the gate's unit r (median, p95
   over the images): the FP32 reference with float16 scales (what `bench` uses), the same with
   float16-rounded quantizer inputs, PyTorch's half-precision model (quantizer math in float32
   on float16 scales, as onnxruntime does), and onnxruntime running the FP16 TensorRT-target
   graph on the CPU (exact and fast mode);
3. how onnxruntime's CPU provider runs that FP16 graph: which operators it computes in float16
   and which it wraps in Casts to float32 (its InsertCastTransformer), from the optimised graph.

    python benchmarks/fp16_references.py --workdir runs/demo [--images 360]

Saves benchmarks/results/fp16_references.json (with the CPU model and ISA flags).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from swin_trt.api import open_model
from swin_trt.cli import demo
from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.data.datasets import build_dataset
from swin_trt.data.transforms import eval_transform
from swin_trt.parity.compare import quantile, relative_errors
from swin_trt.pipelines.export import export_checkpoint
from swin_trt.quantization.model import is_weight_quantizer, named_quantizers, set_scale_dtype
from swin_trt.runtimes.onnxruntime import Engine, build, session_options
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "fp16_references.json"
CHUNK = 60


def activation_quantizers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(name, q) for name, q in named_quantizers(model) if q.enabled and not is_weight_quantizer(name)]


def round_inputs_to_float16(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose activation quantizers see their input rounded to float16 first."""
    model = copy.deepcopy(model)
    for _, quantizer in activation_quantizers(model):
        quantizer.register_forward_pre_hook(lambda _m, args: (args[0].half().float(),))
    return model


def torch_half(model: torch.nn.Module) -> torch.nn.Module:
    """PyTorch's half-precision model as a second FP16 runtime: weights fake-quantized in FP32
    and then halved (the graph's DequantizeLinear output), every other op in float16 (rounded
    after each op), and the quantizers' arithmetic in float32 on float16 scales (as onnxruntime
    computes QuantizeLinear). A plain ``model.half()`` would also halve amax and divide in
    float16, which is neither the graph's scale nor its arithmetic."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for module in model.modules():
            quantizer = getattr(module, "weight_quantizer", None)
            if quantizer is not None and quantizer.enabled:
                module.weight.copy_(quantizer(module.weight))
                quantizer.enabled = False
    amax = {name: q.amax.clone() for name, q in named_quantizers(model)}
    model.half()
    for name, quantizer in named_quantizers(model):
        quantizer.amax = amax[name]
        if quantizer.enabled:
            def quantize(x, q=quantizer):
                scale = q.scale()
                return (torch.round(x.float() / scale).clamp(q.qmin, q.qmax) * scale).to(x.dtype)
            quantizer.forward = quantize
    return model


@torch.no_grad()
def flips(reference: torch.nn.Module, images: torch.Tensor) -> list[dict]:
    """Per activation quantizer, in execution order: the isolated and the total share of its
    values that change integer when every quantizer input is rounded to float16."""
    rounded = round_inputs_to_float16(reference)
    seen: dict[str, dict] = {}

    def record(model, key):
        def pre(module, args, name):
            seen.setdefault(name, {})[key + "_in"] = args[0].detach().float()

        def post(module, args, output, name):
            seen[name][key] = output.detach().float()
        return [h for name, q in activation_quantizers(model)
                for h in (q.register_forward_pre_hook(lambda m, a, n=name: pre(m, a, n)), q.register_forward_hook(lambda m, a, o, n=name: post(m, a, o, n)))]

    handles = record(reference, "fp32") + record(rounded, "fp16")
    reference(images)
    rounded(images)
    for handle in handles:
        handle.remove()
    scales = {name: float(q.scale()) for name, q in activation_quantizers(reference)}
    rows = []
    for name, values in seen.items():
        scale, x = scales[name], values["fp32_in"]
        isolated = (torch.round(x.half().float() / scale) != torch.round(x / scale)).float().mean().item()
        total = ((values["fp32"] - values["fp16"]).abs() > scale / 2).float().mean().item()
        rows.append({"quantizer": name, "isolated": isolated, "total": total})
    return rows


def ort_float16_kernels(graph: Path, optimized: Path) -> dict:
    """Which operators onnxruntime's CPU provider runs in float16 in ``graph`` (an FP16 graph),
    and how many Casts to float32 it inserts for the others."""
    options = session_options("exact")
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    model = onnx.shape_inference.infer_shapes(onnx.load(str(optimized)))
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    computed = Counter()
    for node in model.graph.node:
        if node.op_type in ("Cast", "QuantizeLinear", "DequantizeLinear"):
            continue
        kind = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.FLOAT: "float32"}.get(types.get(node.output[0]), "other")
        computed[(node.op_type, kind)] += 1
    ops = {}
    for (op, kind), count in sorted(computed.items()):
        ops.setdefault(op, {})[kind] = count
    return {"inserted_casts": sum(n.op_type == "Cast" for n in model.graph.node) - sum(n.op_type == "Cast" for n in onnx.load(str(graph)).graph.node),
            "ops": ops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="a `swin-trt demo` workdir")
    parser.add_argument("--images", type=int, default=360, help="val images (default: all 360)")
    args = parser.parse_args()
    checkpoint = demo.calibration_dir(args.workdir, demo.setting_tag("trt")) / "swin_micro_calib.pth"
    if not checkpoint.is_file():
        raise SystemExit(f"fp16_references.py: error: {checkpoint} not found: run `python -m swin_trt demo --workdir {args.workdir}` first")
    loaded = open_model(checkpoint=checkpoint)
    reference = loaded.model
    set_scale_dtype(reference, torch.float16)
    dataset = build_dataset(demo.data_root(args.workdir), "val", eval_transform(reference.swin_trt_config.data))
    images = torch.stack([dataset[i][0] for i in range(min(args.images, len(dataset)))])

    def logits(run) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([np.asarray(run(chunk), dtype=np.float32) for chunk in images.split(CHUNK)])

    cascade = flips(reference, images[:32])
    with tempfile.TemporaryDirectory() as folder:
        graph = Path(export_checkpoint(checkpoint, Path(folder) / "fp16.onnx", target="tensorrt")["onnx"])
        fp_model, rounded, half = loaded.fp_model(), round_inputs_to_float16(reference), torch_half(reference)
        runtimes = {
            "fp32": logits(lambda x: fp_model(x).numpy()),
            "reference (FP32, float16 scales)": logits(lambda x: reference(x).numpy()),
            "reference, float16 quantizer inputs": logits(lambda x: rounded(x).numpy()),
            "PyTorch half model": logits(lambda x: half(x.half()).float().numpy()),
        }
        for mode in ("exact", "fast"):
            engine = Engine(build(graph, Path(folder) / f"fp16.{mode}.onnx", mode)["engine"])
            runtimes[f"onnxruntime FP16 graph ({mode})"] = logits(lambda x, e=engine: e(x.numpy()))
        kernels = ort_float16_kernels(graph, Path(folder) / "optimized.onnx")
    fp32 = runtimes.pop("fp32")
    names = list(runtimes)
    distances = [{"a": a, "b": b, "rel_error_median": quantile(r := relative_errors(runtimes[a], runtimes[b], fp32), 0.5), "rel_error_p95": quantile(r, 0.95)}
                 for i, a in enumerate(names) for b in names[:i]]

    print_table("flip cascade: share of values on another integer when quantizer inputs are float16 (32 images)", ("quantizer", "isolated %", "total %"),
                [(row["quantizer"], f"{100 * row['isolated']:.2f}", f"{100 * row['total']:.2f}") for row in cascade])
    print_table("r between FP16 runtimes and candidate references (unit: ||a - b|| / ||b - fp32||)", ("a", "b", "r median", "r p95"),
                [(d["a"], d["b"], f"{d['rel_error_median']:.3f}", f"{d['rel_error_p95']:.3f}") for d in distances])
    print(f"onnxruntime CPU on the FP16 graph: {kernels['inserted_casts']} Casts inserted; ops by computing type: {kernels['ops']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": "swin_micro", "checkpoint": str(checkpoint), "images": len(images), "cascade_images": 32, "cascade": cascade,
                                   "distances": distances, "onnxruntime_fp16_graph": kernels, "cpu": read_cpu().as_json(), "versions": package_versions()},
                                  indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
