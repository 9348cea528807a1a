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


def throughput_bars(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """images/s of one run on one kind of machine: a group of bars per runtime, one bar per batch
    size side by side, each labelled with its ratio to torch FP32 when the run has it. Bars, not
    lines: runtimes are categories, and two machines never share the axes."""
    runtimes = list(dict.fromkeys(row["runtime"] for row in rows))
    batches = sorted({row["batch"] for row in rows})
    height = 0.8 / len(batches)
    figure = mpl_figure.Figure(figsize=(11, 1.6 + 0.22 * len(runtimes) * len(batches)), layout="constrained")
    axes = figure.add_subplot()
    for index, batch in enumerate(batches):
        chosen = {row["runtime"]: row for row in rows if row["batch"] == batch}
        positions = [runtimes.index(name) + (index - (len(batches) - 1) / 2) * height for name in chosen]
        values = [row["images_per_s"] for row in chosen.values()]
        bars = axes.barh(positions, values, height=height * 0.95, label=f"batch {batch}")
        ratios = [f" {row['images_per_s']:.1f}" + (f" ({row['vs_torch']:.2f}x)" if row.get("vs_torch") else "") for row in chosen.values()]
        axes.bar_label(bars, ratios, fontsize="x-small")
    axes.set_yticks(range(len(runtimes)), runtimes, fontsize="small")
    axes.invert_yaxis()
    axes.set_xlabel("images/s (in brackets: / torch FP32 at the same batch)")
    axes.margins(x=0.25)
    axes.legend(fontsize="small", loc="lower right")
    axes.set_title(title, fontsize="medium")
    return _save(figure, path)


def gate_plot(engines: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """The parity gate as the distribution it judges: r per image, sorted (the quantile function
    from each bench's ``rel_error_percentiles``), one panel per engine, with the gate's median and
    95th-percentile bounds drawn where they apply (at 50 % and 95 % of the images)."""
    columns = min(3, len(engines))
    rows = -(-len(engines) // columns)
    figure = mpl_figure.Figure(figsize=(4 * columns, 3 * rows + 0.6), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes, engine in zip(panels, engines):
        points = [(k, r) for k, r in enumerate(engine["percentiles"]) if r is not None]
        axes.plot([k for k, _ in points], [max(r, 1e-6) for _, r in points], color="tab:green" if engine["passed"] else "tab:red")
        for at, bound, name in ((50, engine.get("max_rel_error"), "median bound"), (95, engine.get("max_rel_error_p95"), "p95 bound")):
            if bound is not None:
                axes.hlines(bound, at - 8, at + 4, colors="black", linestyles="--")
                axes.annotate(f"{name} {bound:g}", (at - 8, bound), fontsize="x-small", va="bottom")
        axes.set_yscale("log")
        axes.set_xlim(0, 100)
        axes.set_title(engine["label"].rsplit("/", 1)[-1], fontsize="x-small")  # the file's name: a panel is a third of the page wide
        axes.set_xlabel("% of images", fontsize="small")
        axes.set_ylabel("r (floor 1e-6)", fontsize="small")
    for axes in panels[len(engines):]:
        axes.set_visible(False)
    figure.suptitle("r per image, sorted\n(green: the gate passed, red: failed)", fontsize="medium")
    return _save(figure, path)
