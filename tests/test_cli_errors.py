"""Every bad input: one line on stderr, a non-zero exit, no traceback, no partial output."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
import torch


def _assert_one_line_error(code, out, err, fragment):
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]


@pytest.fixture
def broken_zip(tmp_path, digits_dir):
    root = tmp_path / "brokenzip"
    root.mkdir()
    with zipfile.ZipFile(root / "val.zip", "w") as archive:
        archive.writestr("a.png", b"garbage")
    (root / "val_map.txt").write_text("a.png\t1\n")
    return root


def test_missing_data_folder(run_cli, tmp_path):
    _assert_one_line_error(*run_cli("eval", "--model", "swin_micro", "--random-init", "--data-path", tmp_path / "nope"), "data path not found")


def test_missing_val_folder_suggests_zip(run_cli, tmp_path, digits_dir):
    root = tmp_path / "ziponly"
    root.mkdir()
    for name in ("val.zip", "val_map.txt"):
        shutil.copy(digits_dir / name, root / name)
    _assert_one_line_error(*run_cli("eval", "--model", "swin_micro", "--random-init", "--data-path", root), "add --zip")


def test_missing_zip_file(run_cli, tmp_path):
    (tmp_path / "d").mkdir()
    _assert_one_line_error(*run_cli("eval", "--model", "swin_micro", "--random-init", "--data-path", tmp_path / "d", "--zip"), "val.zip not found")


def test_malformed_map_line(run_cli, tmp_path, digits_dir):
    root = tmp_path / "m"
    root.mkdir()
    shutil.copy(digits_dir / "val.zip", root / "val.zip")
    (root / "val_map.txt").write_text("digit_0021.png\t1\ndigit_0024.png,4\n")
    _assert_one_line_error(*run_cli("eval", "--model", "swin_micro", "--random-init", "--data-path", root, "--zip"), "val_map.txt:2: expected")


def test_label_out_of_range(run_cli, digits_dir):
    code, out, err = run_cli("eval", "--model", "swin_tiny_patch4_window7_224", "--random-init", "--data-path", digits_dir, "--zip", "--max-batches", "1")
    assert code == 0  # 10 digit classes fit in 1000
    _assert_one_line_error(*run_cli("eval", "--cfg", _yaml_with_classes(digits_dir.parent, 5), "--random-init", "--data-path", digits_dir, "--zip"), "out of range for a model with 5 classes")


def _yaml_with_classes(folder, classes):
    path = folder / f"micro{classes}.yaml"
    text = (__import__("pathlib").Path(__file__).resolve().parent.parent / "configs" / "swin_micro.yaml").read_text()
    path.write_text(text.replace("NUM_CLASSES: 10", f"NUM_CLASSES: {classes}"))
    return path


def test_zip_member_missing(run_cli, tmp_path, digits_dir):
    root = tmp_path / "z"
    root.mkdir()
    shutil.copy(digits_dir / "val.zip", root / "val.zip")
    (root / "val_map.txt").write_text("digit_9999.png\t1\n")
    _assert_one_line_error(*run_cli("eval", "--model", "swin_micro", "--random-init", "--data-path", root, "--zip"), "'digit_9999.png' is not in val.zip")


def test_undecodable_image_in_worker(run_cli, broken_zip):
    """Raised inside a DataLoader worker process, still shown as the one line."""
    _assert_one_line_error(*run_cli("eval", "--model", "swin_micro", "--random-init", "--data-path", broken_zip, "--zip", "--workers", "2"), "a.png: cannot decode image")


def test_unknown_model(run_cli, digits_dir):
    _assert_one_line_error(*run_cli("eval", "--model", "swin_huge", "--random-init", "--data-path", digits_dir), "unknown model 'swin_huge'")


def test_missing_config_file(run_cli, digits_dir):
    _assert_one_line_error(*run_cli("eval", "--cfg", "nope.yaml", "--random-init", "--data-path", digits_dir), "config file not found: nope.yaml")


def test_missing_checkpoint(run_cli, digits_dir):
    _assert_one_line_error(*run_cli("eval", "--model", "swin_micro", "--resume", "gone.pth", "--data-path", digits_dir), "checkpoint not found: gone.pth")


def test_mismatched_checkpoint(run_cli, tmp_path, digits_dir):
    from swin_trt.models.swin import build_model
    from swin_trt.models.zoo import MICRO

    torch.save(build_model(MICRO.replace(num_classes=7)).state_dict(), tmp_path / "seven.pth")
    _assert_one_line_error(*run_cli("eval", "--model", "swin_micro", "--resume", tmp_path / "seven.pth", "--data-path", digits_dir), "checkpoint has 7 classes, the model 10")


def test_no_weights_refused(run_cli, digits_dir):
    _assert_one_line_error(*run_cli("eval", "--model", "swin_micro", "--data-path", digits_dir), "no weights to evaluate")


def test_digits_output_taken_leaves_no_partial(run_cli, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    _assert_one_line_error(*run_cli("data", "digits", "--output", tmp_path / "out"), "already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep"]


def test_train_failure_leaves_no_checkpoint(run_cli, tmp_path, digits_dir):
    """Training runs, then the val set turns out broken: no checkpoint may be left behind."""
    root = tmp_path / "d"
    shutil.copytree(digits_dir / "train" / "3", root / "train" / "3")
    (root / "val" / "3").mkdir(parents=True)
    (root / "val" / "3" / "bad.png").write_bytes(b"nope")
    args = ("train", "--model", "swin_micro", "--data-path", root, "--output", tmp_path / "out", "--epochs", "1", "--batch-size", "32", "--workers", "0")
    _assert_one_line_error(*run_cli(*args), "bad.png: cannot decode image")
    assert not (tmp_path / "out").exists()


def test_console_script_error_has_no_traceback(digits_dir):
    """The real process: exit status 2 and a single stderr line."""
    result = subprocess.run(
        [sys.executable, "-m", "swin_trt", "eval", "--model", "swin_micro", "--resume", "missing.pth", "--data-path", str(digits_dir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "swin-trt eval: error: checkpoint not found: missing.pth"
