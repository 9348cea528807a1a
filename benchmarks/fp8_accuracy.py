"""FP32 / INT8 / FP8 (E4M3) fake-quant and onnxruntime-engine top-1 per recipe, the FP8 calibrators,
optional QAT (FP8, and INT8 beside it), and the gate's relative logit error r for FP8 engines against right and wrong
references (docs/fp8.md).

Each model's val logits are computed once per network (FP32, every fake-quant reference, every
engine) and cached as .npy under --workdir, so every comparison reuses them:

    python benchmarks/fp8_accuracy.py --name swin_micro --checkpoint /work/data/micro/swin_micro.pth \
        --data-path /work/data/digits --workdir /tmp/fp8/bench --qat

Calibration: the CLI's defaults (10 x 8 train images, train transform; percentile for INT8, max for
FP8). Engines: `export` (FP32 graph, default target) -> `build` (onnxruntime, exact mode: the mode
`auto` picks for FP8; INT8 engines are built exact too so both formats are compared alike).
Writes benchmarks/results/fp8/<name>.json with the CPU, load average and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # noqa: E402

from swin_trt.api import open_model  # noqa: E402
from swin_trt.data.datasets import build_dataset  # noqa: E402
from swin_trt.data.loader import build_loader  # noqa: E402
from swin_trt.data.transforms import eval_transform  # noqa: E402
from swin_trt.distributed import DistContext  # noqa: E402
from swin_trt.models.checkpoint import read_checkpoint  # noqa: E402
from swin_trt.parity.compare import quantile, relative_errors  # noqa: E402
from swin_trt.pipelines.calibrate import calibrate_checkpoint  # noqa: E402
from swin_trt.pipelines.export import export_checkpoint  # noqa: E402
from swin_trt.pipelines.qat import qat_checkpoint  # noqa: E402
from swin_trt.runtimes.onnxruntime import Engine, build  # noqa: E402
from swin_trt.settings import CalibrationRequest, QatRecipe  # noqa: E402
from swin_trt.versions import package_versions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fp8"
RECIPES = ("1", "2", "trt")
DEFAULT_CALIBRATOR = {"int8": "percentile", "fp8": "max"}


class Val:
    """The val split, its labels, and a logits cache."""

    def __init__(self, data_path: Path, model, workdir: Path, batch_size: int, max_images: int | None = None):
        config = model.swin_trt_config
        dataset = build_dataset(data_path, "val", eval_transform(config.data), False, config.num_classes)
        if max_images is not None and max_images < len(dataset):
            dataset = Subset(dataset, range(max_images))  # the first N in the split's order (Fashion-MNIST's test set is shuffled)
        self.loader = build_loader(dataset, batch_size, DistContext(), workers=0)
        self.workdir = workdir
        self._labels: np.ndarray | None = None

    def labels(self) -> np.ndarray:
        if self._labels is None:
            cached = self.workdir / "labels.npy"
            if not cached.is_file():
                np.save(cached, torch.cat([labels for _, labels in self.loader]).numpy())
            self._labels = np.load(cached)
        return self._labels

    def logits(self, key: str, run) -> np.ndarray:
        cached = self.workdir / f"{key}.npy"
        if not cached.is_file():
            start = time.time()
            with torch.no_grad():
                out = np.concatenate([np.asarray(run(images)) for images, _ in self.loader])
            np.save(cached, out.astype(np.float32))
            print(f"{key}: {len(out)} images in {time.time() - start:.0f} s", flush=True)
        return np.load(cached)

    def top1(self, logits: np.ndarray) -> float:
        return float((logits.argmax(1) == self.labels()).mean() * 100)


def torch_runner(model):
    model = model.eval()
    return lambda images: model(images).numpy()


def engine_runner(path: Path):
    engine = Engine(path, threads=torch.get_num_threads())
    return lambda images: engine(images.numpy())


def calibrate(args, fmt: str, recipe: str, calibrator: str) -> Path:
    out = args.workdir / f"calib_{fmt}_{recipe}_{calibrator}"
    path = out / f"{args.model_name}_calib.pth"
    if not path.is_file():
        request = CalibrationRequest(int8_mode=recipe, calibrator=calibrator, format=fmt)
        calibrate_checkpoint(None, None, args.checkpoint, args.data_path, False, request, out, DistContext(), workers=0)
    return path


def engine_of(args, checkpoint: Path, key: str) -> Path:
    graph, engine = args.workdir / f"{key}.onnx", args.workdir / f"{key}.ort-exact.onnx"
    if not engine.is_file():
        export_checkpoint(checkpoint, graph)
        build(graph, engine, "exact")
    return engine


def selected_epoch(qat_checkpoint_path: Path) -> int | None:
    """The epoch ``qat`` kept (0: the calibrated model), from the checkpoint's provenance."""
    _, meta = read_checkpoint(qat_checkpoint_path)
    return meta["quantization"]["qat"].get("selected_epoch")


def r_figures(engine: np.ndarray, reference: np.ndarray, fp32: np.ndarray) -> dict[str, float]:
    r = relative_errors(engine, reference, fp32)
    return {"r_median": quantile(r, 0.5), "r_p95": quantile(r, 0.95), "agreement": float((engine.argmax(1) == reference.argmax(1)).mean() * 100)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="label of the model in the results (e.g. swin_micro_fashion)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data-path", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--max-images", type=int, help="only the first N val images (a loaded machine cannot run 10,000 per network in time)")
    parser.add_argument("--calibrators", nargs="*", metavar="RECIPE", help="also compare FP8 calibrators (max, percentile, mse) on these recipes")
    parser.add_argument("--qat", action="store_true", help="also run FP8 QAT (1 epoch, constant LR 1e-5 x batch/512, as the seed) per recipe")
    parser.add_argument("--qat-recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--qat-formats", nargs="+", choices=("fp8", "int8"), default=["fp8"], help="QAT of these formats' PTQ checkpoints (INT8 for the side-by-side)")
    parser.add_argument("--qat-train-subset", type=Path, help="data root of a train subset for QAT (val is --data-path's)")
    args = parser.parse_args()
    args.workdir = args.workdir / args.name
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    start = time.time()
    fp = open_model(checkpoint=args.checkpoint).model
    args.model_name = fp.swin_trt_config.name
    val = Val(args.data_path, fp, args.workdir / (f"first{args.max_images}" if args.max_images else "all"), args.batch_size, args.max_images)
    val.workdir.mkdir(exist_ok=True)
    fp32 = val.logits("fp32", torch_runner(fp))
    results: dict = {"model": args.name, "checkpoint": str(args.checkpoint), "data": str(args.data_path), "images": len(fp32),
                     "command": " ".join(sys.argv),
                     "fp32_top1": val.top1(fp32), "ptq": {}, "calibrators": {}, "qat": {}, "pairings": {}, "complete": False}

    def save() -> None:  # after every stage: a run cut short still leaves what it measured
        results.update(machine=machine(), load_average=os.getloadavg(), torch_threads=torch.get_num_threads(), versions=package_versions(),
                       seconds=time.time() - start)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")

    references, engines = {}, {}
    for fmt in ("fp8", "int8"):
        for recipe in RECIPES:
            key = f"{fmt}_{recipe}"
            checkpoint = calibrate(args, fmt, recipe, DEFAULT_CALIBRATOR[fmt])
            references[key] = val.logits(f"fq_{key}", torch_runner(open_model(checkpoint=checkpoint).model))
            engines[key] = val.logits(f"engine_{key}", engine_runner(engine_of(args, checkpoint, key)))
            results["ptq"][key] = {"format": fmt, "recipe": recipe, "calibrator": DEFAULT_CALIBRATOR[fmt],
                                   "fakequant_top1": val.top1(references[key]), "engine_top1": val.top1(engines[key])}
            print(key, results["ptq"][key], flush=True)
            save()
    if args.calibrators:
        for recipe in args.calibrators:
            for calibrator in ("max", "percentile", "mse"):
                logits = val.logits(f"fq_fp8_{recipe}_{calibrator}", torch_runner(open_model(checkpoint=calibrate(args, "fp8", recipe, calibrator)).model))
                results["calibrators"][f"fp8_{recipe}_{calibrator}"] = val.top1(logits)
                save()
        print("calibrators", results["calibrators"], flush=True)
    # right pairing: each FP8 engine against its own reference; wrong: the other recipes' FP8 references and its recipe's INT8 one
    for recipe in RECIPES:
        engine = engines[f"fp8_{recipe}"]
        for reference in [f"fp8_{r}" for r in RECIPES] + [f"int8_{recipe}"]:
            results["pairings"][f"engine fp8_{recipe} vs reference {reference}"] = {
                "right": reference == f"fp8_{recipe}", **r_figures(engine, references[reference], fp32)}
    for recipe in RECIPES:  # INT8 engines' right pairings, for comparison
        results["pairings"][f"engine int8_{recipe} vs reference int8_{recipe}"] = {"right": True, **r_figures(engines[f"int8_{recipe}"], references[f"int8_{recipe}"], fp32)}
    save()
    if args.qat:
        for fmt in args.qat_formats:
            for recipe in args.qat_recipes:
                out = args.workdir / f"qat_{fmt}_{recipe}"
                source = calibrate(args, fmt, recipe, DEFAULT_CALIBRATOR[fmt])
                path = out / f"{args.model_name}_qat.pth"
                if not path.is_file():
                    recipe_settings = QatRecipe(epochs=1, qat_lr=1e-5, lr_schedule="constant", batch_size=64)
                    qat_checkpoint(None, None, source, args.qat_train_subset or args.data_path, False, recipe_settings, out, DistContext(), workers=0,
                                   quant_format=fmt, baseline={"fp_top1": results["fp32_top1"], "ptq_top1": results["ptq"][f"{fmt}_{recipe}"]["fakequant_top1"]})
                key = f"qat_{fmt}_{recipe}"
                reference = val.logits(f"fq_{key}", torch_runner(open_model(checkpoint=path).model))
                engine = val.logits(f"engine_{key}", engine_runner(engine_of(args, path, key)))
                results["qat"][key] = {"fakequant_top1": val.top1(reference), "engine_top1": val.top1(engine), "selected_epoch": selected_epoch(path),
                                       "train_data": str(args.qat_train_subset or args.data_path), **r_figures(engine, reference, fp32)}
                print(key, results["qat"][key], flush=True)
                save()
    results["complete"] = True
    save()
    print(json.dumps({k: results[k] for k in ("fp32_top1", "ptq", "calibrators", "qat")}, indent=1))


if __name__ == "__main__":
    main()
