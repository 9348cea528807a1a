"""Shared fixtures: the digits dataset and one trained swin_micro per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from swin_trt.cli import main as cli_main
from swin_trt.settings import TrainRecipe

# The session's model: the demo's recipe (TrainRecipe(): 40 epochs, 98 % val top-1) cut to 12 epochs. No test of the
# fast suite is about the last points of accuracy; the demo's own recipe and its accuracy are tested by the slow
# tests/test_demo.py. Measured on digits: 88.3 % val top-1 after 12 epochs (1 thread, 24 min on this loaded machine).
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
    """swin_micro trained with TEST_RECIPE, once for the whole run: under pytest-xdist the first worker
    to ask trains it in the run's shared temporary folder and the others wait for it (a file lock) and
    reuse it (the same config, recipe and data fingerprint).

    SWIN_TRT_TEST_CACHE=DIR keeps the trained model between local runs (reused only when config,
    recipe and data match); .ci/run points it at a fresh folder, so CI trains from scratch.
    """
    from filelock import FileLock

    from swin_trt.distributed import DistContext
    from swin_trt.pipelines.train import reuse_or_train

    if os.environ.get("SWIN_TRT_TEST_CACHE"):
        output = Path(os.environ["SWIN_TRT_TEST_CACHE"])
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        output = tmp_path_factory.getbasetemp().parent / "micro"  # the run's folder, above each worker's own
    else:
        output = tmp_path_factory.mktemp("micro")
    output.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    with FileLock(output / "swin_micro.lock"):
        # every core for the training: the other workers mostly wait for it, and the model is then the one a
        # single-process run trains (the same thread count, so the same float sums)
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        try:
            outcome, _ = reuse_or_train("swin_micro", digits_dir, output, TEST_RECIPE, DistContext())
        finally:
            torch.set_num_threads(threads)
    return outcome


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
