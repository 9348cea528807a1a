"""``swin-trt demo``: the whole pipeline on the bundled digits and ``swin_micro``.

Stages done by an earlier run are reused (the dataset, and the trained model when its recipe and
config are unchanged), so a second ``make demo`` takes seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from swin_trt.cli.common import emit_json

NAME = "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="run the pipeline on bundled data",
        description="digits dataset -> train swin_micro (cached) -> FP32 eval (folder and zip layouts).",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="where data and checkpoints go (default runs/demo)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a matching checkpoint exists")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as one JSON object")
    parser.set_defaults(run=run)


def _cached_model(checkpoint: Path, config_dict: dict, recipe_dict: dict) -> bool:
    from swin_trt.models.checkpoint import read_checkpoint

    if not checkpoint.is_file():
        return False
    _, meta = read_checkpoint(checkpoint)
    return meta.get("config") == config_dict and meta.get("recipe") == recipe_dict


def run(args: argparse.Namespace) -> int:
    from swin_trt.api import load_model
    from swin_trt.console import print_table
    from swin_trt.data.datasets import build_dataset
    from swin_trt.data.digits import is_digits_dataset, write_digits
    from swin_trt.data.loader import build_loader
    from swin_trt.data.transforms import eval_transform
    from swin_trt.distributed import DistContext
    from swin_trt.engine.evaluate import evaluate
    from swin_trt.models.zoo import MICRO
    from swin_trt.settings import TrainRecipe
    from swin_trt.workflows import train_reference

    context = DistContext()
    stages: list[tuple[str, str, str]] = []
    data_dir = args.workdir / "digits"

    start = time.perf_counter()
    if is_digits_dataset(data_dir):
        stages.append(("data", f"reused {data_dir}", "-"))
    else:
        summary = write_digits(data_dir, overwrite=True)
        stages.append(("data", f"digits: {summary['train']} train / {summary['val']} val", f"{time.perf_counter() - start:.1f}"))

    recipe = TrainRecipe()
    checkpoint = args.workdir / f"{MICRO.name}.pth"
    start = time.perf_counter()
    if not args.retrain and _cached_model(checkpoint, MICRO.to_dict(), recipe.as_dict()):
        stages.append(("train", f"reused {checkpoint}", "-"))
    else:
        print(f"training {MICRO.name} for {recipe.epochs} epochs on 2 CPU cores takes a few minutes ...", flush=True)
        outcome = train_reference(MICRO.name, None, None, data_dir, False, args.workdir, recipe, context)
        stages.append(("train", f"{recipe.epochs} epochs, final loss {outcome.losses[-1]:.3f}", f"{time.perf_counter() - start:.1f}"))

    model = load_model(checkpoint=checkpoint)
    results = {}
    for layout, use_zip in (("folder", False), ("zip", True)):
        start = time.perf_counter()
        dataset = build_dataset(data_dir, "val", eval_transform(MICRO.data), use_zip, MICRO.num_classes)
        results[layout] = evaluate(model, build_loader(dataset, 128, context, workers=0), context, description=f"eval ({layout})")
        result = results[layout]
        stages.append((f"eval FP32 ({layout})", f"top-1 {result.top1:.2f} %  top-5 {result.top5:.2f} %  ({result.images} images)", f"{time.perf_counter() - start:.1f}"))

    print_table(f"swin-trt demo: {MICRO.name} on digits", ("stage", "result", "seconds"), stages)
    fp32 = results["folder"]
    print(f"swin_micro FP32 top-1: {fp32.top1:.2f} %")
    emit_json(args, {"checkpoint": str(checkpoint), **fp32.as_json()})
    return 0
