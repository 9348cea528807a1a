"""QAT: the loss, learned scales, schedules, resumable data, and `swin-trt qat` end to end
(refusals, result format, kill-and-resume, 2 ranks vs 1, the seed's launch lines)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

import swin_trt
from swin_trt.data.resumable import ResumableSampler, SeededDataset
from swin_trt.distributed import DistContext
from swin_trt.loops.distillation import DistillationLoss
from swin_trt.loops.qat import lr_factor, make_criterion, make_optimizer
from swin_trt.models.config import ModelConfig, TrainAugment, config_from_yaml
from swin_trt.models.zoo import get_config
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.quantization.model import learn_amax, quantize_model, use_compiled_kernel
from swin_trt.quantization.quantizer import TensorQuantizer
from swin_trt.quantization.recipes import get_recipe
from swin_trt.settings import CalibrationRequest, QatRecipe

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _swin_trt(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "swin_trt", *map(str, args)], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=900)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def tiny_digits(digits_dir, tmp_path_factory) -> Path:
    """24 train and 8 val images per class from the digits set: QAT runs of a few steps."""
    root = tmp_path_factory.mktemp("tiny") / "digits"
    for split, count in (("train", 24), ("val", 8)):
        for class_dir in sorted((digits_dir / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for image in sorted(class_dir.iterdir())[:count]:
                shutil.copy(image, target / image.name)
    return root


@pytest.fixture(scope="module")
def calibrated(trained_micro, digits_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("calib")
    return calibrate_checkpoint(None, None, trained_micro.checkpoint, digits_dir, False, CalibrationRequest(int8_mode="1"), out, DistContext(), workers=0).checkpoint


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return swin_trt.read_checkpoint(path)[0]


# ---- pieces -------------------------------------------------------------------------------------


def test_distillation_loss_is_the_references_exactly():
    """The reference: scale * KLDivLoss()(log_softmax(s/T), softmax(t/T)), element mean (1000 classes)."""
    torch.manual_seed(0)
    student, teacher = torch.randn(16, 1000) * 3, torch.randn(16, 1000) * 3
    with pytest.warns(UserWarning, match="reduction: 'mean'"):
        reference = 10000 * torch.nn.KLDivLoss(reduction="mean")(F.log_softmax(student / 3, dim=1), F.softmax(teacher / 3, dim=1))
    ours = DistillationLoss(10000.0, 3.0, num_classes=1000)(student, teacher)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    batch_mean_kl = F.kl_div(F.log_softmax(student / 3, dim=1), F.softmax(teacher / 3, dim=1), reduction="batchmean")
    assert ours.item() == pytest.approx(10 * batch_mean_kl.item(), rel=1e-5)  # 10000 / 1000 classes
    assert DistillationLoss(10000.0, 3.0, 1000)(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_learned_amax_keeps_forward_and_format_and_lowers_error():
    torch.manual_seed(0)
    x = torch.randn(4096, 8)
    fixed = TensorQuantizer(8, axis=1)
    fixed.enabled = True
    fixed.set_amax(torch.full((8,), 0.5))  # far too narrow: clipping dominates the error
    learned = TensorQuantizer(8, axis=1)
    learned.enabled = True
    learned.load_state_dict(fixed.state_dict())
    learned.set_learn_amax(True)
    assert set(learned.state_dict()) == set(fixed.state_dict()) == {"amax"}
    assert [name for name, _ in learned.named_parameters()] == ["amax"]
    assert torch.equal(learned(x), fixed(x))  # the same forward, bit for bit
    x_grad = x.clone().requires_grad_()
    learned(x_grad).sum().backward()
    assert torch.equal(x_grad.grad, (x.abs() <= 0.5).float())  # STE clipped at amax, unchanged

    optimizer = torch.optim.Adam(learned.parameters(), lr=0.05)
    before = F.mse_loss(fixed(x), x).item()
    for _ in range(60):
        optimizer.zero_grad()
        F.mse_loss(learned(x), x).backward()
        optimizer.step()
    with torch.no_grad():
        after = F.mse_loss(learned(x), x).item()
    assert after < 0.2 * before and (learned.amax > 1.0).all()
    learned.set_learn_amax(False)
    assert "amax" in dict(learned.named_buffers()) and not list(learned.parameters())


def test_half_batch_gradients_average_to_the_global_batch_gradient(calibrated, digits_dir):
    """What DDP relies on (it averages each rank's gradient): the QAT loss's gradient on a batch of
    32, learned amax and distillation included, is the mean of the gradients on its two halves.
    A per-batch factor in any term (the LSQ scale counting examples wrong, a sum instead of a mean)
    scales the halves' gradients and breaks it. Tolerance: float32 reassociation of a 32-term mean
    against two 16-term ones (relative ~1e-7; measured 5.7e-7 over all 0.57 M gradients)."""
    from swin_trt.data.datasets import build_dataset
    from swin_trt.data.transforms import eval_transform

    student = swin_trt.load_model(checkpoint=calibrated).train()
    for module in student.modules():
        if hasattr(module, "drop_prob"):
            module.drop_prob = 0.0  # per-image random depth would differ between the passes
    assert learn_amax(student, True)
    dataset = build_dataset(digits_dir, "train", eval_transform(get_config("swin_micro").data))
    images = torch.stack([dataset[i][0] for i in range(32)])
    targets = torch.tensor([dataset[i][1] for i in range(32)])
    criterion, _ = make_criterion(get_config("swin_micro").data.train, 10, use_mixup=False)
    distillation = DistillationLoss(10000.0, 1.0, 10)
    with torch.no_grad():
        teacher_logits = swin_trt.load_model(checkpoint=calibrated).eval()(images)  # any fixed teacher: the point is the batch reduction

    def gradient(part: slice) -> dict[str, torch.Tensor]:
        """The weights' and the learned amax' gradients, apart: the amax' are a tiny share of the norm."""
        student.zero_grad()
        logits = student(images[part])
        (criterion(logits, targets[part]) + distillation(logits, teacher_logits[part])).backward()
        grads = {n: p.grad.flatten() for n, p in sorted(student.named_parameters()) if p.grad is not None}
        return {kind: torch.cat([g for n, g in grads.items() if n.endswith("amax") == (kind == "amax")]) for kind in ("weights", "amax")}

    whole, first, second = gradient(slice(0, 32)), gradient(slice(0, 16)), gradient(slice(16, 32))
    assert whole["amax"].abs().sum() > 0  # the learned amax do get gradients here
    for kind in ("weights", "amax"):
        halves = (first[kind] + second[kind]) / 2
        assert (whole[kind] - halves).norm() <= 1e-5 * whole[kind].norm(), (kind, ((whole[kind] - halves).norm() / whole[kind].norm()).item())


def test_quantizer_rounds_in_float32_under_autocast():
    quantizer = TensorQuantizer()
    quantizer.enabled = True
    quantizer.set_amax(3.0)
    x = torch.randn(256, 64).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = quantizer(x)
    assert y.dtype == torch.bfloat16 and torch.equal(y, quantizer(x.float()).bfloat16())


@pytest.mark.parametrize("learned", [False, True], ids=["fixed-amax", "learned-amax"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_straight_through_gradient_passes_exactly_where_x_is_within_amax(learned, per_channel):
    """The gradient is the upstream one where |x| <= amax (amax itself included: a max-calibrated
    weight's largest element trains) and 0 outside, also just past -amax where the rounded level
    still fits the integer range (-127.6 s rounds to -128). Expected values are written per element
    in Python, independent of the mask's dtype (float on the CPU, for speed)."""
    amax = [0.5, 2.0] if per_channel else [0.5]
    quantizer = TensorQuantizer(2, axis=0) if per_channel else TensorQuantizer()
    quantizer.enabled = True
    quantizer.set_amax(torch.tensor(amax if per_channel else amax[0]))
    quantizer.set_learn_amax(learned)
    steps = [-130.0, -127.6, -127.4, -127.0, -3.5, 0.0, 0.4, 126.6, 127.0, 127.2, 127.6, 200.0]
    x = torch.tensor([[s * a / 127 for s in steps] for a in amax])
    upstream = torch.arange(1.0, x.numel() + 1).reshape(x.shape)
    leaf = x.clone().requires_grad_()
    quantizer(leaf).backward(upstream)
    expected = [[g if abs(v) <= a else 0.0 for v, g in zip(row, grads)]
                for row, grads, a in zip(x.tolist(), upstream.tolist(), amax)]
    assert leaf.grad.tolist() == expected
    assert leaf.grad.dtype == torch.float32


def test_a_per_tensor_quantizer_on_the_cpu_saves_its_input_and_clips_at_amax_exactly():
    """QAT's CPU speed: the backward reads the quantizer's input (one fused pass) instead of a mask
    the forward made, and still passes the gradient at +-amax itself and not one float past it.
    amax = float32(0.3) is not a round number, so a bound off by one float would show."""
    quantizer = TensorQuantizer()
    quantizer.enabled = True
    quantizer.set_amax(0.3)
    amax = quantizer.amax.clone()
    past, short = torch.nextafter(amax, torch.tensor(1.0)), torch.nextafter(amax, torch.tensor(0.0))
    leaf = torch.stack([amax, -amax, past, -past, short, -short, torch.tensor(0.0)]).requires_grad_()
    y = quantizer(leaf)
    (saved,) = y.grad_fn.saved_tensors
    assert saved.data_ptr() == leaf.data_ptr()
    y.backward(torch.full_like(y, 2.0))
    assert leaf.grad.tolist() == [2.0, 2.0, 0.0, 0.0, 2.0, 2.0, 2.0]


def test_compiled_kernel_trains_on_the_same_values_and_mask():
    model = quantize_model(swin_trt.build_model(get_config("swin_micro")), get_recipe("trt"))
    unusable = use_compiled_kernel(model)
    if unusable:
        pytest.skip(unusable)
    eager, fused = TensorQuantizer(), TensorQuantizer(6, axis=0)
    for quantizer, amax in ((eager, 0.5), (fused, torch.linspace(0.2, 0.7, 6))):
        quantizer.enabled = True
        quantizer.set_amax(amax)
    scale = torch.tensor(0.5) / 127
    ties = (torch.arange(-140, 140) + 0.5) * scale  # exact halves of a step, and past +-amax
    for quantizer, x in ((eager, ties), (eager, torch.randn(6, 5, 7).transpose(0, 2)), (fused, torch.randn(6, 33))):
        outputs = []
        for quantizer.fused in (False, True):
            leaf = x.clone().requires_grad_()
            y = quantizer(leaf)
            y.backward(torch.ones_like(y))
            outputs.append((y.detach(), leaf.grad))
        quantizer.fused = False
        assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


def test_learn_amax_only_for_enabled_quantizers():
    model = quantize_model(swin_trt.build_model(get_config("swin_micro")), get_recipe("2"))
    names = learn_amax(model, True)
    assert names and all(model.get_submodule(n).enabled for n in names)
    assert not any(n.endswith("fc2.output_quantizer") for n in names)  # disabled in mode 2: stays a buffer
    assert sorted(learn_amax(model, False)) == sorted(names)


def test_lr_schedules():
    recipe = QatRecipe(qat_lr=1e-5, batch_size=128, lr_schedule="constant")
    model = torch.nn.Linear(4, 4)
    optimizer, scheduler = make_optimizer(model, recipe, world_size=4, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [pytest.approx(1e-5)] * 10  # the reference: qat-lr x 128 x 4 / 512
    factor = lr_factor(QatRecipe(lr_schedule="cosine", warmup_fraction=0.1, min_lr_ratio=0.01), 100)
    values = [factor(step) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0) and max(values) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:])) and values[-1] < 0.02


def test_mixup_config_fields(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text((REPO / "configs" / "swin_micro.yaml").read_text().replace("AUG:\n", "AUG:\n  MIXUP: 0.0\n  CUTMIX: 0.0\n  CUTMIX_MINMAX: [0.2, 0.8]\n")
                    .replace("MODEL:\n", "MODEL:\n  LABEL_SMOOTHING: 0.2\n"))
    augment = config_from_yaml(path).data.train
    assert (augment.mixup, augment.cutmix, augment.cutmix_minmax, augment.label_smoothing) == (0.0, 0.0, (0.2, 0.8), 0.2)
    assert augment.mixup_active  # CUTMIX_MINMAX alone turns it on, as in the original
    config = get_config("swin_micro")
    assert ModelConfig.from_dict(config.to_dict()) == config and config.data.train.mixup == 0.8  # the original's defaults
    criterion, mixup = make_criterion(TrainAugment(), 10, use_mixup=True)
    assert isinstance(criterion, SoftTargetCrossEntropy) and mixup is not None
    criterion, mixup = make_criterion(TrainAugment(), 10, use_mixup=False)
    assert isinstance(criterion, LabelSmoothingCrossEntropy) and mixup is None
    criterion, _ = make_criterion(TrainAugment(label_smoothing=0.0, mixup=0.0, cutmix=0.0), 10, use_mixup=True)
    assert type(criterion) is torch.nn.CrossEntropyLoss
    bad = tmp_path / "bad.yaml"
    bad.write_text("AUG:\n  MIXUP_MODE: rows\n")
    with pytest.raises(swin_trt.SwinTrtError, match="MIXUP_MODE"):
        config_from_yaml(bad)


def test_resumable_sampler_orders_and_shards():
    data = list(range(103))
    one = ResumableSampler(data, DistContext(), seed=5)
    one.set_epoch(2)
    order = [index for _, index in one]
    assert sorted(order) == data and {epoch for epoch, _ in one} == {2}
    one.set_epoch(2, skip=40)
    assert [index for _, index in one] == order[40:] and len(one) == 63
    one.set_epoch(3)
    assert [index for _, index in one] != order
    shards = []
    for rank in range(2):
        sampler = ResumableSampler(data, DistContext(rank=rank, world_size=2), seed=5)
        sampler.set_epoch(2)
        shards.append([index for _, index in sampler])
    # step i of 2 ranks with batch 8 each holds the images of step i of one process with batch 16
    for step in range(6):
        assert sorted(shards[0][8 * step:8 * step + 8] + shards[1][8 * step:8 * step + 8]) == sorted(order[16 * step:16 * step + 16])


class _RandomDraws(torch.utils.data.Dataset):
    """Each item is a fresh draw from torch's generator, as an augmentation would make."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3)


def test_seeded_augmentation_depends_only_on_seed_epoch_index():
    draws = SeededDataset(_RandomDraws(), seed=1)
    first = draws[(0, 7)]
    draws[(0, 3)], draws[(1, 7)]  # other items in between change nothing
    assert torch.equal(draws[(0, 7)], first)
    assert not torch.equal(draws[(1, 7)], first) and not torch.equal(draws[(0, 6)], first)


# ---- the command ------------------------------------------------------------------------------


def test_uncalibrated_checkpoint_is_refused(run_cli, trained_micro, tiny_digits, tmp_path):
    code, _, err = run_cli("qat", "--resume", trained_micro.checkpoint, "--data-path", tiny_digits, "--output", tmp_path / "out", "--workers", "0")
    assert code == 2
    assert err.count("\n") == 1 and "is not a calibrated checkpoint" in err and "swin-trt calibrate" in err
    assert not (tmp_path / "out").exists()


def test_result_is_a_calibrated_checkpoint_that_evaluates_and_exports(run_cli, calibrated, trained_micro, tiny_digits, tmp_path):
    out = tmp_path / "qat"
    code, stdout, err = run_cli("qat", "--resume", calibrated, "--teacher", trained_micro.checkpoint, "--distill", "--num-epochs", "1",
                                "--batch-size", "32", "--qat-lr", "1e-4", "--data-path", tiny_digits, "--output", out, "--workers", "0",
                                "--select-images", "0", "--json", tmp_path / "qat.json")
    assert code == 0, err
    result = json.loads((tmp_path / "qat.json").read_text())
    assert set(result) == {"checkpoint", "top1", "ptq_top1", "fp_top1", "selected_epoch", "held_out_top1", "held_out_p"}
    assert result["selected_epoch"] is None  # --select-images 0: the last epoch, as before
    assert "FP32 / PTQ / QAT" in stdout
    _, meta = swin_trt.read_checkpoint(result["checkpoint"])
    qat = meta["quantization"]["qat"]
    assert meta["quantization"]["int8_mode"] == "1" and meta["quantization"]["weight_bits"] == 8
    assert qat["teacher"] == str(trained_micro.checkpoint) and len(qat["teacher_sha256"]) == 64
    assert qat["teacher_runtime"] == "onnxruntime" and "the teacher runs in onnxruntime" in stdout  # auto, on the CPU
    assert qat["settings"]["distill"] and qat["epochs_done"] == 1 and len(qat["losses"]) == 1
    assert qat["steps_per_epoch"] == 240 // 32 and qat["peak_lr"] == pytest.approx(1e-4 * 32 / 512)
    assert not torch.equal(_weights(result["checkpoint"])["layers.0.blocks.0.mlp.fc1.weight"], _weights(calibrated)["layers.0.blocks.0.mlp.fc1.weight"])

    code, _, err = run_cli("eval", "--resume", result["checkpoint"], "--data-path", tiny_digits, "--workers", "0", "--json", tmp_path / "eval.json")
    assert code == 0, err
    assert json.loads((tmp_path / "eval.json").read_text())["top1"] == pytest.approx(result["top1"])
    code, _, err = run_cli("export", "--resume", result["checkpoint"], "--output", tmp_path / "qat.onnx", "--json", tmp_path / "export.json")
    assert code == 0, err
    assert json.loads((tmp_path / "export.json").read_text())["q_nodes"] > 0

    # the same command again: already complete, nothing retrained (and no teacher exported for it); other settings: refused
    code, stdout, err = run_cli("qat", "--resume", calibrated, "--teacher", trained_micro.checkpoint, "--distill", "--num-epochs", "1",
                                "--batch-size", "32", "--qat-lr", "1e-4", "--data-path", tiny_digits, "--output", out, "--workers", "0", "--select-images", "0")
    assert code == 0, err
    assert "the teacher runs in onnxruntime" not in stdout and "epoch 1/1" not in stdout
    code, _, err = run_cli("qat", "--resume", calibrated, "--teacher", trained_micro.checkpoint, "--distill", "--num-epochs", "1",
                           "--batch-size", "32", "--qat-lr", "2e-4", "--data-path", tiny_digits, "--output", out, "--workers", "0", "--select-images", "0")
    assert code == 2 and "other settings" in err and "qat_lr" in err and "--restart" in err


def test_sign_test_p_is_the_one_sided_binomial_tail():
    from swin_trt.pipelines.qat import sign_test_p

    # P(X >= wins) for X ~ binomial(wins + losses, 1/2), written out
    assert sign_test_p(5, 0) == 1 / 32
    assert sign_test_p(4, 0) == 1 / 16
    assert sign_test_p(9, 1) == (1 + 10) / 1024
    assert sign_test_p(3, 3) == (20 + 15 + 6 + 1) / 64
    assert sign_test_p(0, 0) == 1.0


def test_an_epoch_replaces_the_kept_model_only_when_better_beyond_chance():
    """1,000 held-out images, 700 right in the kept model: 5 gained and 2 lost is 3 images of noise
    (p = 29/128); 12 gained and 2 lost is not (p = 106/16384); more losses than gains never replace."""
    from swin_trt.pipelines.qat import better_than_kept

    kept = torch.zeros(1000, dtype=torch.bool)
    kept[:700] = True

    def moved(gained: int, lost: int) -> torch.Tensor:
        correct = kept.clone()
        correct[700:700 + gained] = True
        correct[:lost] = False
        return correct

    assert better_than_kept(moved(5, 2), kept, 0.05) == (False, 29 / 128)
    assert better_than_kept(moved(12, 2), kept, 0.05) == (True, 106 / 16384)
    assert better_than_kept(moved(12, 2), kept, 0.005) == (False, 106 / 16384)
    assert better_than_kept(moved(5, 2), kept, 1.0)[0]  # --select-alpha 1: any gain
    assert not better_than_kept(moved(2, 5), kept, 1.0)[0]
    assert not better_than_kept(kept, kept, 1.0)[0]


def test_qat_never_ends_below_where_it_started(run_cli, calibrated, tiny_digits, tmp_path):
    """A learning rate that wrecks the model: the held-out images see it, and the calibrated model
    (epoch 0) is what is kept, weights and all; the held-out images are the calibration's next ones."""
    code, stdout, err = run_cli("qat", "--resume", calibrated, "--num-epochs", "2", "--batch-size", "32", "--qat-lr", "20", "--lr-schedule", "constant",
                                "--data-path", tiny_digits, "--output", tmp_path / "out", "--workers", "0", "--select-images", "100",
                                "--json", tmp_path / "qat.json")
    assert code == 0, err
    result = json.loads((tmp_path / "qat.json").read_text())
    first, *epochs = result["held_out_top1"]
    assert len(epochs) == 2 and max(epochs) < first - 5  # training did wreck it
    assert result["selected_epoch"] == 0 and result["top1"] == result["ptq_top1"] and "kept epoch 0 of 2" in stdout
    saved, start = _weights(result["checkpoint"]), _weights(calibrated)
    assert all(torch.equal(saved[k], start[k]) or not torch.isfinite(start[k]).all() for k in start)
    qat = swin_trt.read_checkpoint(result["checkpoint"])[1]["quantization"]["qat"]
    assert qat["selected_epoch"] == 0 and qat["held_out_images"] == 100
    # the 100 held-out images are not trained on: 240 - 100 = 140 images, 4 full batches of 32 (7 with them)
    assert qat["train_images"] == 140 and qat["steps_per_epoch"] == 4


@pytest.mark.slow  # a subprocess / torchrun run: make test-slow
def test_kill_and_resume_is_bit_identical(calibrated, tiny_digits, tmp_path):
    """SIGKILL after epoch 1, and SIGTERM inside epoch 2, each resumed: the same weights as one run."""
    common = ("qat", "--resume", calibrated, "--distill", "--num-epochs", "3", "--batch-size", "32", "--qat-lr", "2e-4",
              "--data-path", tiny_digits, "--workers", "0")
    code, _, err = _finish(_swin_trt(*common, "--output", tmp_path / "whole"))
    assert code == 0, err[-2000:]
    reference = _weights(tmp_path / "whole" / "swin_micro_qat.pth")

    for signum, name in ((signal.SIGKILL, "killed"), (signal.SIGTERM, "terminated")):
        process = _swin_trt(*common, "--output", tmp_path / name)
        for line in process.stdout:
            if line.startswith("epoch 1/3"):
                process.send_signal(signum)
                break
        code, _, err = _finish(process)
        state = torch.load(tmp_path / name / "swin_micro_qat_last.pth", weights_only=True)
        if signum == signal.SIGTERM:
            assert code == 143 and "stopped by SIGTERM" in err
            assert state["progress"]["epoch"] == 1 and state["progress"]["step"] >= 1  # saved inside epoch 2
        else:
            assert code == -signal.SIGKILL and state["progress"] == {**state["progress"], "epoch": 1, "step": 0}
        assert not (tmp_path / name / "swin_micro_qat.pth").exists()
        code, out, err = _finish(_swin_trt(*common, "--output", tmp_path / name))
        assert code == 0 and "resuming from" in out, err[-2000:]
        resumed = _weights(tmp_path / name / "swin_micro_qat.pth")
        assert resumed.keys() == reference.keys()
        for key, value in reference.items():  # bit for bit (disabled quantizers hold NaN amax: equal_nan)
            torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, equal_nan=True, msg=f"{name}: {key}")


@pytest.mark.slow  # a subprocess / torchrun run: make test-slow
def test_two_ranks_equal_one_rank_on_the_same_global_batch(calibrated, tiny_digits, tmp_path):
    """One optimizer step on all 240 train images: 2 ranks x 120 under torchrun, 1 rank x 240.

    Tolerance, from float reassociation (not a guess): the ranks' gradients average to the global
    batch's within ~1e-6 relative (test_half_batch_gradients_average_to_the_global_batch_gradient).
    AdamW's first step moves each element by lr * g / (|g| + eps): a relative change d of g moves
    it by at most lr * d / 4 where its sign holds, 2 lr where the sign flips (|g| at noise level),
    so the updates agree within ~1e-5 relative (1.2e-5 measured in one process). Over several
    steps the fake-quant rounding makes such differences grow chaotically (1 % after 7 steps
    measured), so one step is what can be bounded: 1e-3 leaves room for a few sign flips, and a
    rank training on other images, or on a gradient not averaged, is far outside it."""
    cfg = yaml.safe_load((REPO / "configs" / "swin_micro.yaml").read_text())
    cfg["MODEL"]["DROP_PATH_RATE"] = 0.0  # per-image random depth would differ between the runs
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(cfg))
    common = ("--resume", calibrated, "--cfg", tmp_path / "micro.yaml", "--num-epochs", "1", "--no-mixup", "--distill", "--learn-amax",
              "--qat-lr", "2e-4", "--data-path", tiny_digits, "--workers", "0", "--select-images", "0")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "swin_trt", "qat",
                          *map(str, common), "--batch-size", "120", "--output", tmp_path / "two"], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    code, _, err = _finish(_swin_trt("qat", *common, "--batch-size", "240", "--output", tmp_path / "one"))
    assert code == 0, err[-2000:]
    two, one = (swin_trt.read_checkpoint(tmp_path / d / "swin_micro_qat.pth") for d in ("two", "one"))
    assert two[1]["quantization"]["qat"]["steps_per_epoch"] == one[1]["quantization"]["qat"]["steps_per_epoch"] == 1
    assert two[1]["quantization"]["qat"]["world_size"] == 2
    start = _weights(calibrated)
    trained = [k for k in start if torch.isfinite(start[k]).all()]  # weights and the amax of enabled quantizers (disabled: NaN)
    assert any(not torch.equal(one[0][k], start[k]) for k in trained if k.endswith("amax"))  # --learn-amax trained the scales
    update_one, update_two = (torch.cat([(run[0][k] - start[k]).flatten() for k in trained]) for run in (one, two))
    assert update_one.abs().max() > 1e-6
    assert (update_one - update_two).norm() <= 1e-3 * update_one.norm(), ((update_one - update_two).norm() / update_one.norm()).item()
    assert two[1]["quantization"]["qat"]["losses"] == pytest.approx(one[1]["quantization"]["qat"]["losses"], rel=1e-5)


@pytest.mark.slow  # a subprocess / torchrun run: make test-slow
def test_seed_launch_lines(trained_micro, tiny_digits, tmp_path):
    """The seed README's calibrate, evaluate and QAT lines, through main.py, with the micro YAML."""
    launch = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node", "1", "--master_port", "29541", "main.py"]
    cfg = ("--cfg", "configs/swin_micro.yaml", "--data-path", str(tiny_digits))
    calib = tmp_path / "calib-checkpoint"
    lines = [
        ["--calib", *cfg, "--resume", str(trained_micro.checkpoint), "--num-calib-batch", "4", "--calib-batchsz", "8", "--int8-mode", "1",
         "--calib-output-path", str(calib)],
        ["--eval", *cfg, "--resume", str(calib / "swin_micro_calib.pth"), "--int8-mode", "1", "--batch-size", "128"],
        ["--train", *cfg, "--resume", str(calib / "swin_micro_calib.pth"), "--quant-mode", "ft2", "--teacher", str(trained_micro.checkpoint),
         "--output", str(tmp_path / "qat-output"), "--distill", "--int8-mode", "1", "--batch-size", "32", "--num-epochs", "1", "--qat-lr", "1e-5",
         "--distillation_loss_scale", "10000", "--json", str(tmp_path / "qat.json")],
    ]
    for line in lines:
        run = subprocess.run(launch + line, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=900)
        assert run.returncode == 0, (line[0], run.stderr[-2000:])
    assert "--quant-mode ft2 is ignored" in run.stdout
    result = json.loads((tmp_path / "qat.json").read_text())
    assert Path(result["checkpoint"]) == tmp_path / "qat-output" / "swin_micro_qat.pth"
    assert swin_trt.read_checkpoint(result["checkpoint"])[1]["quantization"]["qat"]["settings"]["distillation_loss_scale"] == 10000
