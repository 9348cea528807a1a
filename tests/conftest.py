"""Shared fixtures: the digits dataset and one trained swin_micro per test session."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from swin_trt.cli import main as cli_main
from swin_trt.settings import TrainRecipe

REPO = Path(__file__).resolve().parent.parent
# The session's model: the demo's model as committed for the benchmarks (the demo's recipe, TrainRecipe(): 40 epochs,
# 98.9 % val top-1), used as it is whenever it is this code's swin_micro trained on this digits data, which the
# fixture checks. No test of the fast suite is about training to the last points of accuracy: tests/test_train_eval.py
# trains its own short run, the slow tests/test_demo.py the demo's whole recipe. Where the committed model no longer
# matches (a config changed), the fixture trains the demo's recipe cut to 12 epochs (88.3 % val top-1).
COMMITTED_MICRO = REPO / "benchmarks" / "models" / "swin_micro.pth"
TEST_RECIPE = TrainRecipe(epochs=12)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from swin_trt.data.digits import write_digits

    root = tmp_path_factory.mktemp("data") / "digits"
    write_digits(root)
    return root


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``) each worker gets its share of the cores for
    torch's intra-op threads: most of a test's time is single-threaded Python (the ONNX exporter,
    graph checks), so workers side by side are what fills the cores, and N workers x all-core thread
    pools would only fight over them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))


@pytest.fixture(scope="session")
def trained_micro(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """swin_micro trained on digits, once for the whole run (the committed demo model where it matches,
    else trained with TEST_RECIPE): under pytest-xdist the first worker to ask puts it in the run's
    shared temporary folder and the others wait for it (a file lock) and reuse it (the same config,
    recipe and data fingerprint).

    SWIN_TRT_TEST_CACHE=DIR keeps the model between local runs (reused only when config, recipe and
    data match); .ci/run points it at a fresh folder, so CI starts from the committed file.
    """
    from filelock import FileLock

    from swin_trt.distributed import DistContext
    from swin_trt.io import atomic_path
    from swin_trt.models.zoo import get_config
    from swin_trt.pipelines.train import reuse_or_train, trained_as

    output = Path(os.environ["SWIN_TRT_TEST_CACHE"]) if os.environ.get("SWIN_TRT_TEST_CACHE") else run_folder(tmp_path_factory, "micro")
    output.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    with FileLock(output / "swin_micro.lock"):
        recipe = TEST_RECIPE
        if trained_as(COMMITTED_MICRO, get_config("swin_micro"), TrainRecipe(), digits_dir):
            recipe = TrainRecipe()
            if not trained_as(output / "swin_micro.pth", get_config("swin_micro"), recipe, digits_dir):
                with atomic_path(output / "swin_micro.pth") as partial:
                    shutil.copyfile(COMMITTED_MICRO, partial)
        # every core for a training: the other workers mostly wait for it, and the model is then the one a
        # single-process run trains (the same thread count, so the same float sums)
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        try:
            outcome, _ = reuse_or_train("swin_micro", digits_dir, output, recipe, DistContext())
        finally:
            torch.set_num_threads(threads)
    return outcome


def run_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder every pytest-xdist worker of this run sees (above each worker's own temporary
    folder), or this process's own where the run is not distributed."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.getbasetemp().parent / name
    return tmp_path_factory.mktemp(name)


@dataclass(frozen=True)
class MicroTrt:
    checkpoint: Path  # trained_micro calibrated with --int8-mode trt, every other option at its default
    graph: dict  # the sidecar of its default export (FP32 graph, onnxruntime target)
    trt_graph: dict  # the sidecar of its --target tensorrt export (FP16, INT8-stored weights)


@pytest.fixture(scope="session")
def micro_trt(trained_micro, digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> MicroTrt:
    """The trt recipe's calibration of the session's model and its two exports, made once per run and
    shared by every worker (a file lock, as for trained_micro): a dozen test files start from exactly
    this, and each export traces the model for about 13 s. Read-only: a test that edits a graph or a
    sidecar writes its copy into its own folder."""
    from filelock import FileLock

    from swin_trt.distributed import DistContext
    from swin_trt.io import read_sidecar
    from swin_trt.pipelines.calibrate import calibrate_checkpoint
    from swin_trt.pipelines.export import export_checkpoint
    from swin_trt.settings import CalibrationRequest

    output = run_folder(tmp_path_factory, "micro_trt")
    output.mkdir(parents=True, exist_ok=True)
    graph, trt_graph = output / "micro_trt.onnx", output / "micro_trt.tensorrt.onnx"
    with FileLock(output / "micro_trt.lock"):
        checkpoint = next(output.glob("calib/*_calib.pth"), None)
        if checkpoint is None or not trt_graph.is_file():
            checkpoint = calibrate_checkpoint(None, None, trained_micro.checkpoint, digits_dir, False, CalibrationRequest(int8_mode="trt"),
                                              output / "calib", DistContext(), workers=0).checkpoint
            export_checkpoint(checkpoint, graph)
            export_checkpoint(checkpoint, trt_graph, target="tensorrt")
    return MicroTrt(Path(checkpoint), read_sidecar(graph), read_sidecar(trt_graph))


@pytest.fixture(scope="session")
def micro_fp32(trained_micro, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The sidecar of the session's model exported with every default (FP32 graph without Q/DQ), made
    once per run and shared by every worker as micro_trt is; read-only."""
    from filelock import FileLock

    from swin_trt.io import read_sidecar
    from swin_trt.pipelines.export import export_checkpoint

    output = run_folder(tmp_path_factory, "micro_fp32")
    output.mkdir(parents=True, exist_ok=True)
    graph = output / "micro_fp32.onnx"
    with FileLock(output / "micro_fp32.lock"):
        if not graph.is_file():
            export_checkpoint(trained_micro.checkpoint, graph)
    return read_sidecar(graph)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture):
    """Run ``swin-trt ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli_main([str(a) for a in args])
        except SystemExit as exit_:  # argparse errors
            code = exit_.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def tensorrt_unavailable() -> str | None:
    """Why the ``tensorrt`` tests cannot run here, or None when TensorRT and a GPU are present."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (it installs from NVIDIA's index or ships in the NGC container)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``tensorrt`` run only where TensorRT imports and a GPU is present."""
    marked = [item for item in items if item.get_closest_marker("tensorrt")]
    reason = tensorrt_unavailable() if marked else None
    for item in marked if reason else []:
        item.add_marker(pytest.mark.skip(reason=reason))
