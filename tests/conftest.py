"""Shared fixtures: the digits dataset and one trained swin_micro per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def trained_micro(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """swin_micro trained with TEST_RECIPE, once for the whole session.

    SWIN_TRT_TEST_CACHE=DIR keeps the trained model between local runs (reused only when config,
    recipe and data match); CI leaves it unset and trains from scratch.
    """
    from swin_trt.distributed import DistContext
    from swin_trt.pipelines.train import reuse_or_train

    output = os.environ.get("SWIN_TRT_TEST_CACHE") or tmp_path_factory.mktemp("micro")
    outcome, _ = reuse_or_train("swin_micro", digits_dir, output, TEST_RECIPE, DistContext())
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
