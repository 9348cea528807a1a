"""``swin-trt report``: one HTML page with a pipeline's results, built from the files its commands
wrote (see :mod:`swin_trt.report.sources` for which files and keys).

The page is self-contained (figures inlined as data URIs); the PNGs are also written beside it
(``<page stem>_<figure>.png``) for use elsewhere.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from swin_trt.io import atomic_path
from swin_trt.report import plots
from swin_trt.report.page import Cell, figure, group, note, page, section, table
from swin_trt.report.sources import Source, Sources, amax_against_observed, collect, find_checkpoint, machine_label

SENSITIVITY_ROWS = 12  # the most sensitive groups tabulated (the plot shows all)
GATE_BOUNDS = ("max_rel_error", "max_rel_error_p95", "min_agreement", "max_top1_drop", "max_graph_mismatches")


def write_report(workdir: str | Path, output: str | Path | None = None, benchmarks: str | Path | None = "benchmarks/results") -> Path:
    """Write ``output`` (default ``<workdir>/report.html``) and its PNGs; returns the page's path."""
    workdir = Path(workdir)
    output = Path(output) if output is not None else workdir / "report.html"
    sources = collect(workdir, Path(benchmarks) if benchmarks is not None else None)
    figures = output.parent
    sections = [
        _accuracy(sources),
        _engines(sources, figures / f"{output.stem}_gate.png"),
        _throughput(sources, figures, output.stem),
        _sensitivity(sources, figures, output.stem),
        _amax(sources, workdir, figures, output.stem),
    ]
    html = page(f"swin-trt report: {_display_path(workdir)}", [s for s in sections if s])
    with atomic_path(output) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
    return output


def _display_path(path: Path) -> str:
    """The workdir as the page names it: relative to the current folder when inside it, else its own
    name (a page is shared; the local absolute path means nothing to its reader)."""
    resolved = path.resolve()
    return resolved.relative_to(Path.cwd()).as_posix() if resolved.is_relative_to(Path.cwd()) else resolved.name


def _cell(source: Source, key: str, fmt: str | None = None) -> Cell:
    return Cell(source.data.get(key), source.label, key, fmt)


def _precision(data: dict[str, Any]) -> str:
    return f"W{data.get('weight_bits', 8)}A{data.get('activation_bits', 8)}"


def _accuracy(sources: Sources) -> str:
    rows: list[list[Any]] = []
    for source in sources.by_kind["train"]:
        rows.append(["FP32", "-", "-", "-", _cell(source, "top1"), "-", source.label])
    for source in sources.by_kind["calibrate"]:
        data = source.data
        fallback = f"{len(data['fallback_groups'])} group(s) in higher precision" if "fallback_groups" in data else "-"
        rows.append(["PTQ", data.get("int8_mode"), data.get("calibrator"), _precision(data), _cell(source, "top1"), fallback, source.label])
    for source in sources.by_kind["qat"]:
        rows.append(["QAT", "-", "-", "-", _cell(source, "top1"), "-", source.label])
    if not rows:
        return section("Accuracy", note("no train*.json, calibrate*.json or qat*.json in the workdir"))
    return section("Accuracy (val top-1 %)", table(("stage", "int8 mode", "calibrator", "precision", "top-1 %", "fallback", "file"), rows))


def _engines(sources: Sources, png: Path) -> str:
    rows = []
    for source in sources.by_kind["bench"]:
        data = source.data
        engine = " ".join(str(data[k]) for k in ("engine_backend", "engine_mode", "engine_precision") if data.get(k))
        rows.append([engine or "-", _cell(source, "fp32_top1"), _cell(source, "fakequant_top1"), _cell(source, "engine_top1"),
                     _cell(source, "agreement"), _cell(source, "rel_error_median", ".4f"), Cell(data.get("passed"), source.label, "passed"), source.label])
    if not rows:
        return ""
    bounds = sources.by_kind["bench"][0]
    criterion = table(("bound", "value"), [(key, _cell(bounds, key, ".2f")) for key in GATE_BOUNDS if key in bounds.data])
    plotted = [{"label": source.label, "percentiles": source.data["rel_error_percentiles"], "passed": source.data.get("passed") is not False,
                "max_rel_error": source.data.get("max_rel_error"), "max_rel_error_p95": source.data.get("max_rel_error_p95")}
               for source in sources.by_kind["bench"] if source.data.get("rel_error_percentiles")]
    distribution = (figure(plots.gate_plot(plotted, png), "r per image against the gate's bounds, one panel per engine") if plotted
                    else note("no bench JSON here records rel_error_percentiles (written since 0.2.1): no r plot"))
    return section("Engines against the fake-quant reference (parity gate, docs/parity.md)",
                   table(("engine", "FP32 top-1 %", "fake-quant top-1 %", "engine top-1 %", "argmax agreement %", "r median", "gate", "file"), rows),
                   note(f"the gate's criterion (bounds of {bounds.label}): r = ||engine - fake-quant|| / ||fake-quant - FP32|| per image"), criterion,
                   distribution)


def _ratio(value: float, reference: float | None) -> float | None:
    return value / reference if reference else None


def _benchmark_rows(source: Source) -> list[dict[str, Any]]:
    """One row per runtime and batch of a benchmark file, with its ratios to torch FP32 and to the best
    FP32 peer (onnxruntime / OpenVINO FP32) measured in the same run."""
    data = source.data["images_per_s"]
    peers = source.data.get("fp32_peers") or [name for name in ("onnxruntime FP32", "OpenVINO FP32") if name in data]
    rows = []
    for runtime, by_batch in data.items():
        for batch, value in by_batch.items():
            best_peer = max((data[p][batch] for p in peers if batch in data.get(p, {})), default=None)
            rows.append({"runtime": runtime, "batch": int(batch), "images_per_s": value, "key": f"images_per_s/{runtime}/{batch}",
                         "vs_torch": _ratio(value, data.get("torch FP32", {}).get(batch)), "vs_peer": _ratio(value, best_peer), "source": source.label})
    return rows


def _sweep_rows(source: Source) -> list[dict[str, Any]]:
    return [{"runtime": f"engine ({source.label})", "batch": point["batch"], "images_per_s": point["images_per_s"], "key": f"sweep/{index}/images_per_s",
             "vs_torch": None, "vs_peer": None, "source": source.label} for index, point in enumerate(source.data.get("sweep") or [])]


def _throughput(sources: Sources, folder: Path, stem: str) -> str:
    """This workdir's own engine timings (``bench --sweep``) first, grouped by the machine they ran
    on; then each committed benchmark file, labelled with its machine. One figure per group, so no
    bar series ever mixes two kinds of machine."""
    groups: list[tuple[str, str, list[dict[str, Any]]]] = []
    own: dict[str, list[dict[str, Any]]] = {}
    for source in sources.by_kind["bench"]:
        if source.data.get("sweep"):
            own.setdefault(machine_label(source.data), []).extend(_sweep_rows(source))
    groups += [(machine, "this workdir's engines (bench --sweep)", rows) for machine, rows in own.items()]
    groups += [(machine_label(source.data), f"committed results: {source.label} ({source.data.get('model', 'model not recorded')})", _benchmark_rows(source))
               for source in sources.benchmarks]
    if not groups:
        return ""
    parts = []
    for index, (machine, title, rows) in enumerate(groups):
        png = plots.throughput_bars(rows, folder / f"{stem}_throughput{index}.png", f"{title}\n{machine}")
        table_rows = [[row["runtime"], row["batch"], Cell(row["images_per_s"], row["source"], row["key"], ".1f"), Cell(row["vs_torch"], fmt=".2f"),
                       Cell(row["vs_peer"], fmt=".2f"), row["source"]] for row in rows]
        parts.append(group(machine, f"<h3>{escape(title)}: {escape(machine)}</h3>", figure(png, f"images/s per runtime and batch on {machine}"),
                           table(("runtime", "batch", "images/s", "x torch FP32", "x best FP32 peer", "file"), table_rows)))
    return section("Throughput (images/s per runtime and batch, by machine)", *parts)


def _sensitivity(sources: Sources, folder: Path, stem: str) -> str:
    parts = []
    for index, source in enumerate(sources.by_kind["sensitivity"]):
        data = source.data
        png = plots.sensitivity_plot(data, folder / f"{stem}_sensitivity{index}.png")
        rows = [[rank, name, Cell(data[name]["quantizers"], source.label, f"{name}/quantizers"),
                 Cell(data[name]["disabled_top1"], source.label, f"{name}/disabled_top1"), Cell(data[name]["disabled_kl"], source.label, f"{name}/disabled_kl", ".4f"),
                 Cell(data[name]["enabled_top1"], source.label, f"{name}/enabled_top1"), Cell(data[name]["enabled_kl"], source.label, f"{name}/enabled_kl", ".4f")]
                for rank, name in enumerate(data["ranking"][:SENSITIVITY_ROWS], 1)]
        parts += [f"<h3>{source.label}</h3>",
                  table(("FP32 top-1 %", "quantized top-1 %", "quantized KL", "images"),
                        [[_cell(source, "fp32_top1"), _cell(source, "quant_top1"), _cell(source, "quant_kl", ".4f"), _cell(source, "images")]]),
                  figure(png, f"sensitivity per {data['granularity']} group"),
                  table(("rank", "group", "quantizers", "top-1 % alone disabled", "KL alone disabled", "top-1 % alone enabled", "KL alone enabled"), rows)]
    return section("Sensitivity (docs/sensitivity.md)", *parts) if parts else ""


def _amax(sources: Sources, workdir: Path, folder: Path, stem: str) -> str:
    parts = []
    for index, source in enumerate(sources.by_kind["calibrate"]):
        data = source.data
        checkpoint = find_checkpoint(str(data.get("checkpoint", "")), workdir)
        if data.get("calibrator") == "max" or checkpoint is None:
            continue  # max calibration takes the observed max itself: nothing is clipped
        rows = amax_against_observed(checkpoint)
        if not rows:
            continue
        label = checkpoint.relative_to(workdir).as_posix() if checkpoint.is_relative_to(workdir) else str(checkpoint)
        png = plots.amax_plot(rows, folder / f"{stem}_amax{index}.png")
        clipped = [row for row in rows if row["amax"] < row["observed_max"]]
        table_rows = [[row["quantizer"], Cell(row["amax"], label, f"{row['quantizer']}/amax", ".4f"),
                       Cell(row["observed_max"], label, f"{row['quantizer']}/observed_max", ".4f"), Cell(row["amax"] / row["observed_max"], fmt=".3f")]
                      for row in rows]
        parts += [f"<h3>{data.get('calibrator')} calibration, int8 mode {data.get('int8_mode')}, {_precision(data)}: {label}</h3>",
                  note(f"{len(clipped)} of {len(rows)} activation quantizers clipped (amax below the largest value seen)"),
                  figure(png, "amax / observed max per activation quantizer"),
                  table(("quantizer", "amax", "observed max", "ratio"), table_rows)]
    return section("Calibrated amax against the observed max", *parts) if parts else ""
