"""``swin-trt report``: the page, opened in a real headless browser, shows every figure and only
numbers that match the JSON files (and checkpoints) they came from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from swin_trt.cpu import read_cpu
from swin_trt.report import write_report

REPO = Path(__file__).resolve().parents[1]
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


class Dom(HTMLParser):
    """The traced table cells (source, key, text) and the images' attributes of a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str, str]] = []
        self.images: list[dict[str, str]] = []
        self.body: dict[str, str] = {}
        self.machine_of_cell: list[str | None] = []  # per cell: the data-machine of the group it sits in
        self._open: tuple[str, str] | None = None
        self._text = ""
        self._divs: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        if tag == "td" and "data-source" in attributes:
            self._open, self._text = (attributes["data-source"], attributes["data-key"]), ""
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "body":
            self.body = attributes
        elif tag == "div":
            self._divs.append(attributes.get("data-machine", self._divs[-1] if self._divs else None))

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            self.cells.append((*self._open, self._text.strip()))
            self.machine_of_cell.append(self._divs[-1] if self._divs else None)
            self._open = None
        elif tag == "div":
            self._divs.pop()

    def handle_data(self, data):
        if self._open is not None:
            self._text += data



def browser(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={user_data}"]
    return subprocess.run([BROWSER, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def lookup(data, key: str):
    for part in key.split("/"):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def matches(text: str, value) -> bool:
    """The displayed text is ``value`` rounded to the digits shown."""
    if isinstance(value, bool):
        return text == ("passed" if value else "FAILED")
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - float(value)) <= 0.5 * 10.0 ** -decimals + 1e-9


def machine_of(data: dict) -> tuple[str, tuple[str, ...]] | None:
    """(CPU model, ISA flags) a result file's speed figures were measured on, read here from the file's own keys."""
    cpu = (data.get("machine") or {}).get("cpu") or data.get("cpu")
    return (cpu["model"], tuple(cpu["flags"])) if cpu else None


@pytest.fixture(scope="module")
def workdir(trained_micro, digits_dir, tmp_path_factory):
    """A workdir as a pipeline leaves it: train, calibrate (percentile: clipped amax), sensitivity and bench --json files
    (one engine gated and timed at two batch sizes on this machine), and two committed throughput results of other machines
    (the first committed file of another kind than this machine, and one that records no machine)."""
    from swin_trt.cli import main
    from swin_trt.pipelines.export import export_checkpoint
    from swin_trt.runtimes.onnxruntime import build

    root = tmp_path_factory.mktemp("workdir")
    (root / "train.json").write_text(json.dumps({"checkpoint": str(trained_micro.checkpoint), "top1": trained_micro.result.top1}))
    common = ["--resume", str(trained_micro.checkpoint), "--data-path", str(digits_dir), "--workers", "0"]
    assert main(["calibrate", *common, "--wprec", "4", "--aprec", "4", "--calib-output-path", str(root / "calib"),
                 "--json", str(root / "calibrate_w4a4.json")]) == 0
    checkpoint = json.loads((root / "calibrate_w4a4.json").read_text())["checkpoint"]
    assert main(["sensitivity", "--resume", checkpoint, "--data-path", str(digits_dir), "--workers", "0", "--granularity", "block",
                 "--max-batches", "1", "--batch-size", "64", "--json", str(root / "sensitivity_block.json")]) == 0
    graph = export_checkpoint(checkpoint, root / "engines" / "w4a4.onnx")["onnx"]
    engine = build(graph, root / "engines" / "w4a4.exact.onnx", "exact")["engine"]
    assert main(["bench", "--reference", checkpoint, "--engine", engine, "--data-path", str(digits_dir), "--workers", "0", "--max-batches", "2",
                 "--sweep", "1", "4", "--json", str(root / "bench_w4a4.json")]) == 0
    benchmarks = root / "benchmarks"
    benchmarks.mkdir()
    committed = REPO / "benchmarks" / "results" / "cpu_throughput"  # measured on other machines: images_per_s per runtime and batch
    here = machine_of({"cpu": read_cpu().as_json()})  # a file of this machine's own kind would join the workdir's group
    other = next(path for path in sorted(committed.glob("*.json")) if machine_of(json.loads(path.read_text())) not in (None, here))
    shutil.copy(other, benchmarks / "cpu_throughput.json")
    shutil.copy(committed / "cpu-not-recorded.json", benchmarks / "cpu_throughput_old.json")
    return root, benchmarks


def test_report_holds_the_json_numbers(workdir):
    root, benchmarks = workdir
    page = write_report(root, benchmarks=benchmarks)
    html = page.read_text()
    for name in ("calibrate_w4a4.json", "sensitivity_block.json", "cpu_throughput.json", "cpu_throughput_old.json", "train.json", "bench_w4a4.json"):
        assert f'data-source="{name}"' in html
    assert sorted(p.name for p in root.glob("report_*.png")) == ["report_amax0.png", "report_gate.png", "report_sensitivity0.png", "report_throughput0.png",
                                                                  "report_throughput1.png", "report_throughput2.png"]
    assert html.count("<img ") == 6
    bench = json.loads((root / "bench_w4a4.json").read_text())  # the r distribution and the machine the gate plot and speed groups read
    r = bench["rel_error_percentiles"]
    assert len(r) == 101 and r == sorted(r) and (r[50], r[95]) == (bench["rel_error_median"], bench["rel_error_p95"])
    cpu_model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    assert bench["machine"]["cpu"]["model"] == cpu_model and bench["machine"]["gpu"] is None
    assert html.split("</title>")[0].endswith(f"swin-trt report: {root.name}")  # not the local absolute path


def test_report_in_a_headless_browser(workdir, tmp_path):
    if BROWSER is None:
        message = "no chromium: `apt-get install chromium` (`make test` does where apt is available)"
        if os.environ.get("CI"):  # CI promises this test: a missing browser is a broken set-up, not a reason to skip
            pytest.fail(f"CI is set and {message}")
        pytest.skip(message)
    root, benchmarks = workdir
    page = write_report(root, tmp_path / "page" / "report.html", benchmarks=benchmarks)
    dump = browser("--dump-dom", page.as_uri(), user_data=tmp_path / "profile").stdout
    dom = Dom()
    dom.feed(dump)
    assert dom.body.get("data-loaded") == "yes"  # the load event ran: every image was fetched and decoded (or failed)
    assert len(dom.images) == 6 and all(int(image["data-natural-width"]) > 0 for image in dom.images)

    sources = {path.name: json.loads(path.read_text()) for path in (*root.glob("*.json"), *benchmarks.glob("*.json"))}
    checked = 0
    for source, key, text in dom.cells:
        if source.endswith(".pth"):
            state = torch.load(root / source, weights_only=True)
            quantizer, field = key.rsplit("/", 1)
            value = float(state["model"][quantizer + ".amax"]) if field == "amax" else state["meta"]["quantization"]["observed_amax"][quantizer]
        else:
            value = lookup(sources[source], key)
        assert matches(text, value), f"{source} {key}: page shows {text}, the file holds {value}"
        checked += 1
    sensitivity = sources["sensitivity_block.json"]
    assert checked >= 4 * len(sensitivity["ranking"]) + 8 + 20  # sensitivity table, throughput rows, amax rows ...
    assert {source for source, _, _ in dom.cells} >= {"train.json", "calibrate_w4a4.json", "sensitivity_block.json", "cpu_throughput.json", "bench_w4a4.json"}

    # throughput: every figure's group holds the figures of one kind of machine, named in its data-machine, and this workdir's own come first
    speed = [(group, source) for (source, key, _), group in zip(dom.cells, dom.machine_of_cell) if key.startswith(("images_per_s/", "sweep/"))]
    groups = list(dict.fromkeys(group for group, _ in speed))
    assert len(groups) == 3 and None not in groups and speed[0][1] == "bench_w4a4.json"
    for group in groups:
        machines = {machine_of(sources[source]) for g, source in speed if g == group}
        assert len(machines) == 1, f"one series spans machines {machines}"
        machine = machines.pop()
        assert ("not recorded" in group) if machine is None else (machine[0] in group and all(flag in group for flag in machine[1]))

    shot = tmp_path / "shot.png"
    browser(f"--screenshot={shot}", "--window-size=1280,1800", page.as_uri(), user_data=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_refuses_a_missing_workdir(run_cli, tmp_path):
    code, _, err = run_cli("report", "--workdir", tmp_path / "missing")
    assert code == 2 and "is not a folder" in err
