"""The report's figures (matplotlib's object API: no pyplot state, safe without a display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from swin_trt.io import atomic_path
from swin_trt.lazy import lazy_import

mpl_figure = lazy_import("matplotlib.figure")


def _save(figure: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path


def sensitivity_plot(result: Mapping[str, Any], path: str | Path) -> Path:
    """One horizontal bar per group, most sensitive on top: top-1 with the group alone disabled
    (left, against the FP32 and all-quantized lines) and the KL against FP32 of the group alone
    enabled (right), from the JSON that ``swin-trt sensitivity`` writes."""
    groups: Sequence[str] = result["ranking"]
    rows = [result[name] for name in groups]
    figure = mpl_figure.Figure(figsize=(11, max(3.0, 0.26 * len(groups) + 1.4)), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    positions = range(len(groups))
    left.barh(positions, [row["disabled_top1"] for row in rows], color="tab:blue")
    left.axvline(result["fp32_top1"], color="tab:green", linestyle="--", label=f"FP32 {result['fp32_top1']:.2f} %")
    left.axvline(result["quant_top1"], color="tab:red", linestyle="--", label=f"all quantized {result['quant_top1']:.2f} %")
    low = min([row["disabled_top1"] for row in rows] + [result["quant_top1"], result["fp32_top1"]])
    high = max([row["disabled_top1"] for row in rows] + [result["fp32_top1"]])
    left.set_xlim(max(0.0, low - 1.0), min(100.0, high + 0.5))
    left.set_xlabel("top-1 % with the group alone in higher precision")
    left.legend(loc="lower right", fontsize="small")
    left.set_yticks(list(positions), groups, fontsize="small")
    left.invert_yaxis()
    enabled = [row["enabled_kl"] if row["enabled_kl"] is not None else 0.0 for row in rows]
    right.barh(positions, enabled, color="tab:orange")
    right.set_xlabel("KL(FP32 || quantized) with the group alone quantized")
    figure.suptitle(f"sensitivity ({result['granularity']} groups, {result['images']} images, quantized KL {result['quant_kl']:.4f})")
    return _save(figure, path)


def amax_plot(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """amax / observed max of every calibrated activation quantizer (1 = no clipping)."""
    figure = mpl_figure.Figure(figsize=(11, max(3.0, 0.2 * len(rows) + 1.2)), layout="constrained")
    axes = figure.add_subplot()
    positions = range(len(rows))
    axes.barh(positions, [row["amax"] / row["observed_max"] for row in rows], color="tab:purple")
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_yticks(list(positions), [row["quantizer"] for row in rows], fontsize="x-small")
    axes.invert_yaxis()
    axes.set_xlabel("amax / observed max (below 1: the calibrator clipped)")
    return _save(figure, path)


def throughput_plot(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """images/s against batch size, one line per runtime / engine."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        series.setdefault(row["runtime"], []).append((row["batch"], row["images_per_s"]))
    # the legend goes below the axes and grows with the number of runtimes, so the axes keep their size
    figure = mpl_figure.Figure(figsize=(8, 4.5 + 0.17 * len(series)), layout="constrained")
    axes = figure.add_subplot()
    for label, points in series.items():
        points.sort()
        axes.plot([b for b, _ in points], [v for _, v in points], marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("batch size")
    axes.set_yscale("log")  # models of very different sizes share the axes
    axes.set_ylabel("images/s")
    axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=1)
    return _save(figure, path)
