"""Things that must hold exactly or fail loudly: the straight-through estimator's clip, disabled
quantizers, unusable amax, a failing torchrun rank, and progress that reaches a log."""

from __future__ import annotations

import copy
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import swin_trt
from swin_trt.console import LineProgress, print_table, progress
from swin_trt.distributed import DistContext
from swin_trt.models.checkpoint import read_checkpoint
from swin_trt.quantization.calibrate import collect_statistics, load_calib_amax
from swin_trt.quantization.collect import HistogramCollector
from swin_trt.quantization.model import named_quantizers, quantize_model
from swin_trt.quantization.quantizer import CalibrationError, TensorQuantizer
from swin_trt.quantization.recipes import RECIPES, get_recipe

REPO = Path(__file__).resolve().parent.parent

def _around_the_ends(qmax: int) -> list[float]:
    """x / s at and around the ends of the integer range [qmin, qmax]: inside, in (qmax, qmax + 0.5]
    beyond the clip but still rounding to qmax, in [qmin - 0.5, qmin) which rounds to qmin (in
    range), and beyond. For 8 bits: -130, -128.5, -128.4, -128, ..., 127.1, 127.3, 127.49, 127.5, 131."""
    qmin = -qmax - 1
    return [qmin - 2, qmin - 0.5, qmin - 0.4, qmin, qmin + 0.4, qmin + 0.8, qmin + 1.5, -3.3, 0.0, 0.4,
            qmax - 0.1, qmax + 0.1, qmax + 0.3, qmax + 0.49, qmax + 0.5, qmax + 4]


RATIOS = _around_the_ends(127)


def _expected_gradient(x: torch.Tensor, amax: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """pytorch-quantization's FakeTensorQuantFunction.backward: the gradient where |x| <= amax,
    zero elsewhere, whatever round(x / s) would be."""
    return torch.where(x.abs() <= amax, upstream, torch.zeros_like(upstream))


@pytest.mark.parametrize("bits", [8, 4])
def test_ste_per_tensor_clips_exactly_at_amax(bits):
    qmax = 2 ** (bits - 1) - 1
    amax = torch.tensor(3.0)  # scale 3/qmax: not a power of two
    scale = amax / qmax
    ratios = torch.tensor(_around_the_ends(qmax))
    x = torch.cat([ratios * scale, amax.reshape(1), -amax.reshape(1), torch.nextafter(amax, torch.tensor(9.0)).reshape(1)])
    x.requires_grad_(True)
    quantizer = TensorQuantizer(num_bits=bits)
    quantizer.set_amax(amax)
    quantizer.enabled = True
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    quantizer(x).backward(upstream)
    assert torch.equal(x.grad, _expected_gradient(x.detach(), amax, upstream))
    outside = x.detach().abs() > amax
    assert outside.sum() >= 8 and (x.grad[outside] == 0).all()
    assert torch.equal(x.grad[~outside], upstream[~outside])
    # the forward pass still rounds the values in (qmax, qmax + 0.5) and [qmin - 0.5, qmin) into range
    with torch.no_grad():
        levels = torch.round(quantizer(x) / scale)
    assert levels.max() == qmax and levels.min() == -qmax - 1


def test_ste_per_channel_clips_each_channel_at_its_amax():
    amax = torch.tensor([1.0, 0.37, 2.5])
    scale = amax / 127
    ratios = torch.tensor(RATIOS)
    x = (scale[:, None] * ratios[None, :]).clone().requires_grad_(True)
    quantizer = TensorQuantizer(channels=3, axis=0)
    quantizer.set_amax(amax)
    quantizer.enabled = True
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    quantizer(x).backward(upstream)
    expected = _expected_gradient(x.detach(), amax[:, None], upstream)
    assert torch.equal(x.grad, expected)
    # (127, 127.5] and [-128.5, -127) get no gradient in any channel, 126.9 passes it
    for ratio in (127.1, 127.3, 127.49, 127.5, -128.5, -128.4, -128.0, -127.6, -127.2):
        column = RATIOS.index(ratio)
        assert (x.grad[:, column] == 0).all(), ratio
    assert (x.grad[:, RATIOS.index(126.9)] == upstream[:, RATIOS.index(126.9)]).all()


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_disabled_quantizers_equal_the_fp_model_bit_for_bit(trained_micro, recipe):
    """Every quantized module with its quantizers off computes exactly what timm's module does:
    logits and every parameter's gradient are bitwise equal."""
    fp = swin_trt.load_model(checkpoint=trained_micro.checkpoint).eval()
    quantized = quantize_model(copy.deepcopy(fp), get_recipe(recipe)).eval()
    for _, quantizer in named_quantizers(quantized):
        quantizer.set_amax(torch.full_like(quantizer.amax, 0.01))  # a coarse amax that would change every value if used
        quantizer.enabled = False
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    fp_logits, q_logits = fp(x), quantized(x)
    assert torch.equal(fp_logits, q_logits)
    fp_logits.square().sum().backward()
    q_logits.square().sum().backward()
    q_params = dict(quantized.named_parameters())
    for name, parameter in fp.named_parameters():
        assert torch.equal(parameter.grad, q_params[name].grad), name


# --- amax that cannot be used -------------------------------------------------------------------

def _damaged_checkpoint(source: Path, target: Path, key: str, index: tuple, value: float) -> Path:
    state, meta = read_checkpoint(source)
    state[key][index] = value
    torch.save({"model": state, "meta": meta}, target)
    return target


@pytest.mark.parametrize("key, index, value, message", [
    ("layers.1.blocks.0.mlp.fc1.weight", (3, 5), float("nan"),
     "error: quantizer layers.1.blocks.0.mlp.fc1.weight_quantizer: the weight has 1 non-finite values (NaN or inf)"),
    ("patch_embed.proj.weight", (0, 0, 0, 0), float("inf"),
     "error: quantizer layers.0.blocks.0.attn.qkv.input_quantizer saw a non-finite value (nan) during calibration"),
])
def test_non_finite_weights_fail_calibration_naming_the_quantizer(run_cli, trained_micro, digits_dir, tmp_path, key, index, value, message):
    damaged = _damaged_checkpoint(trained_micro.checkpoint, tmp_path / "damaged.pth", key, index, value)
    code, _, err = run_cli("calibrate", "--resume", damaged, "--data-path", digits_dir, "--num-calib-batch", "2", "--calib-batchsz", "8",
                           "--workers", "0", "--calib-output-path", tmp_path / "calib")
    assert code == 2 and "Traceback" not in err
    assert message in err.strip().splitlines()[-1], err
    assert not (tmp_path / "calib").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_set_amax_refuses_non_finite_values(value):
    quantizer = TensorQuantizer(channels=4, axis=0)
    quantizer.qualified_name = "layers.0.blocks.0.attn.qkv.weight_quantizer"
    with pytest.raises(CalibrationError, match=r"quantizer layers\.0\.blocks\.0\.attn\.qkv\.weight_quantizer: calibration gave amax .* \(not finite\)"):
        quantizer.set_amax(torch.tensor([1.0, value, 2.0, 3.0]))
    assert not quantizer.calibrated  # nothing was half-set


def test_quantizer_that_never_sees_data_fails_calibration(trained_micro, digits_dir):
    """A module that skips its quantizers (here fc2 of the last block, as a custom forward might)
    leaves them without statistics: calibration names them instead of inventing a scale."""
    from swin_trt.data.datasets import build_dataset
    from swin_trt.data.loader import build_loader
    from swin_trt.data.transforms import eval_transform

    model = quantize_model(swin_trt.load_model(checkpoint=trained_micro.checkpoint), get_recipe("1"))
    fc2 = model.layers[2].blocks[1].mlp.fc2
    fc2.forward = lambda x: F.linear(x, fc2.weight, fc2.bias)
    dataset = build_dataset(digits_dir, "train", eval_transform(model.swin_trt_config.data))
    histograms, images = collect_statistics(model, build_loader(dataset, 8, DistContext(), workers=0), 2, DistContext())
    assert images == 16
    with pytest.raises(CalibrationError, match=r"quantizer layers\.2\.blocks\.1\.mlp\.fc2\.input_quantizer saw no values during calibration"):
        load_calib_amax(model, histograms, "percentile")


def test_quantizer_that_sees_only_zeros_fails_calibration():
    model = quantize_model(swin_trt.build_model(swin_trt.get_config("swin_micro")), get_recipe("trt"))
    name = "layers.0.blocks.0.attn.q_quantizer"
    collector = HistogramCollector(name=name)
    collector.collect(torch.zeros(4, 16))
    histograms = {name: collector.histogram()}
    with pytest.raises(CalibrationError, match=rf"quantizer {re.escape(name)} saw only zeros during calibration"):
        load_calib_amax(model, histograms, "max")


# --- torchrun: one failing rank ends the run ----------------------------------------------------

def _torchrun_failing(*args, limit_file_size: bool = False) -> tuple[int, str, float]:
    """Run 2 ranks; returns (exit status, stderr, seconds from the first error line to the end of
    the run). Timed from the failure, not the start, so that a loaded machine's slow start-up
    cannot pass for a hang (nor the reverse)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "swin_trt", *map(str, args)]
    limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))) if limit_file_size else None
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, preexec_fn=limit)
    lines, failed_at = [], None
    for line in process.stderr:
        lines.append(line)
        if failed_at is None and ": error: " in line:
            failed_at = time.perf_counter()
    code = process.wait(timeout=600)
    assert failed_at is not None, "".join(lines)[-3000:]
    return code, "".join(lines), time.perf_counter() - failed_at


def _assert_no_worker_traceback(stderr: str) -> None:
    """Our processes print one line each; only torchrun's own agent reports its failed child."""
    assert not re.search(r"^\[rank\d+\]:", stderr, re.MULTILINE), stderr[-3000:]


@pytest.mark.slow  # a subprocess / torchrun run: make test-slow
def test_rank_1_failing_ends_both_ranks_within_seconds(trained_micro, digits_dir, tmp_path):
    """Rank 1's shard holds an image that cannot be decoded (the eval shard of rank r is images
    r, r+2, ...): rank 0 would wait in the final all-reduce for the 30-minute gloo timeout if
    rank 1 lingered. Both must be gone within seconds of the error."""
    data = tmp_path / "data"
    shutil.copytree(digits_dir / "val", data / "val")
    first_class = sorted((data / "val").iterdir())[0]
    broken = sorted(first_class.iterdir())[1]  # dataset index 1: rank 1's first image
    broken.write_bytes(b"not a png")
    code, stderr, seconds = _torchrun_failing("eval", "--resume", trained_micro.checkpoint, "--data-path", data, "--batch-size", "16", "--workers", "0")
    assert code != 0
    assert f"swin-trt eval: error: rank 1: {broken}: cannot decode image" in stderr, stderr[-3000:]
    _assert_no_worker_traceback(stderr)
    assert seconds < 30, seconds


@pytest.mark.slow  # a subprocess / torchrun run: make test-slow
def test_rank_0_failing_to_save_ends_both_ranks(digits_dir, tmp_path):
    """Rank 0 saves the checkpoint while rank 1 waits in the barrier after it; the save fails
    (a 1 MB file-size limit, as a full disk would): both end at once, each with one line."""
    data = tmp_path / "data"
    for split in ("train", "val"):
        for label in ("0", "1"):
            shutil.copytree(digits_dir / split / label, data / split / label)
    out = tmp_path / "out"
    code, stderr, seconds = _torchrun_failing("train", "--model", "swin_micro", "--data-path", data, "--epochs", "1", "--batch-size", "32",
                                              "--workers", "0", "--output", out, limit_file_size=True)
    assert code != 0
    assert f"swin-trt train: error: rank 0: cannot write {out / 'swin_micro.pth'}: file too large; choose another --output" in stderr, stderr[-3000:]
    _assert_no_worker_traceback(stderr)
    assert seconds < 30, seconds
    assert not out.exists()


# --- progress when stderr is not a terminal -----------------------------------------------------

def _batches(count: int, size: int = 4):
    return [(torch.zeros(size, 3), torch.zeros(size)) for _ in range(count)]


def test_line_progress_logs_status_lines_and_a_closing_line(capsys):
    bar = LineProgress(_batches(3), total=3, desc="calibrate", interval=0.0)
    for _ in bar:
        bar.set_postfix(loss="0.500")
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4, lines
    assert re.fullmatch(r"calibrate: 1/3 batches, 4 images, [\d.]+ images/s, ETA [\d.]+ s, loss 0\.500", lines[0]), lines[0]
    assert lines[2].startswith("calibrate: 3/3 batches, 12 images")
    assert re.fullmatch(r"calibrate: 3 batches in [\d.]+ s, 12 images, [\d.]+ images/s, loss 0\.500", lines[3]), lines[3]


def test_line_progress_is_quiet_between_intervals(capsys):
    bar = progress(_batches(5), total=5, desc="eval")  # stderr is captured: not a terminal
    assert isinstance(bar, LineProgress)
    for _ in bar:
        pass
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval: 5 batches in "), lines


def test_terminal_gets_a_bar_and_other_ranks_nothing(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress(_batches(1))
    assert not isinstance(bar, LineProgress)
    bar.close()
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    silent = progress(_batches(2), show=False)
    assert not isinstance(silent, LineProgress)
    assert len(list(silent)) == 2
    silent.close()
    assert capsys.readouterr().err == ""


def test_commands_log_when_stderr_is_not_a_terminal(run_cli, trained_micro, digits_dir, tmp_path):
    """train: one line per epoch (loss, lr, images/s, ETA); calibrate and eval: a closing line."""
    data = tmp_path / "data"
    for split in ("train", "val"):
        for label in ("0", "1"):
            shutil.copytree(digits_dir / split / label, data / split / label)
    code, _, err = run_cli("train", "--model", "swin_micro", "--data-path", data, "--epochs", "2", "--batch-size", "32", "--workers", "0",
                           "--output", tmp_path / "out")
    assert code == 0, err
    epochs = [line for line in err.splitlines() if re.match(r"epoch \d+/\d+: ", line)]  # besides any 30-second status lines
    assert len(epochs) == 2, err
    duration = r"(?:[\d.]+ s|\d+(?::\d\d)+)"  # 7.3 s, 1:49, 1:02:03
    assert re.fullmatch(rf"epoch 1/2: loss [\d.]+, lr [\d.e+-]+, \d+ images in {duration} \([\d.]+ images/s\), ETA {duration}", epochs[0]), epochs[0]
    assert epochs[1].startswith("epoch 2/2: ") and "ETA" not in epochs[1]

    code, _, err = run_cli("calibrate", "--resume", trained_micro.checkpoint, "--data-path", digits_dir, "--num-calib-batch", "3", "--calib-batchsz", "8",
                           "--workers", "0", "--calib-output-path", tmp_path / "calib")
    assert code == 0, err
    assert re.search(rf"^calibrate: 3 batches in {duration}, 24 images, [\d.]+ images/s$", err, re.MULTILINE), err
    assert re.search(rf"^swin_micro: 3 batches in {duration}, 360 images, [\d.]+ images/s$", err, re.MULTILINE), err  # the eval that follows


def test_a_table_in_a_log_keeps_every_cell_whole(capsys):
    """stdout redirected (capsys is not a terminal): no cell folded across lines, however long,
    unlike rich's 80-column default that printed the demo's "passe d" and split checkpoint paths."""
    path = "/a/workdir/far/down/" + "nested/" * 12 + "swin_micro_calib.pth"
    print_table("calibrate swin_micro", ("checkpoint", "int8 mode", "gate"), [(path, "trt", "passed")])
    out = capsys.readouterr().out
    assert path in out and "passed" in out
    assert sum(path in line for line in out.splitlines()) == 1
