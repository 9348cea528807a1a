"""Every bad input: one line on stderr, a non-zero exit, no traceback, no partial output."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch


def _assert_one_line_error(code, out, err, fragment):
    """One error line, last on stderr; lines before it can only be progress logs of the work done
    before the failure (stderr is not a terminal here)."""
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "Traceback" not in err, err
    assert [line for line in lines if ": error: " in line] == lines[-1:], err
    assert fragment in lines[-1], lines[-1]


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
    code, out, err = run_cli("eval", "--model", "swin_tiny_patch4_window7_224", "--random-init", "--data-path", digits_dir, "--zip", "--max-batches", "1",
                             "--batch-size", "4")
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


# --- output paths: every flag that names something swin-trt writes -------------------------------

UNWRITABLE_KINDS = ("parent-is-file", "read-only-folder", "proc", "device")


def _writers(tmp_path) -> dict[str, tuple[list, str]]:
    """Each command line with the output flag under test (value ``T``). Inputs are missing on
    purpose: the output check must come first, so a run that got past it would fail differently
    (and quickly) instead of calibrating or training."""
    ckpt, data, onnx = tmp_path / "missing.pth", tmp_path / "nodata", tmp_path / "missing.onnx"
    return {
        "data --output": (["data", "digits", "--output", "T"], "--output"),
        "data --json": (["data", "digits", "--output", tmp_path / "d", "--json", "T"], "--json"),
        "train --output": (["train", "--model", "swin_micro", "--data-path", data, "--output", "T"], "--output"),
        "train --json": (["train", "--model", "swin_micro", "--data-path", data, "--output", tmp_path / "t", "--json", "T"], "--json"),
        "calibrate --calib-output-path": (["calibrate", "--resume", ckpt, "--data-path", data, "--calib-output-path", "T"], "--calib-output-path"),
        "calibrate --json": (["calibrate", "--resume", ckpt, "--data-path", data, "--json", "T"], "--json"),
        "eval --json": (["eval", "--resume", ckpt, "--data-path", data, "--json", "T"], "--json"),
        "quant-summary --json": (["quant-summary", "--resume", ckpt, "--json", "T"], "--json"),
        "export --output": (["export", "--resume", ckpt, "--output", "T"], "--output"),
        "export --json": (["export", "--resume", ckpt, "--json", "T"], "--json"),
        "inspect --json": (["inspect", onnx, "--json", "T"], "--json"),
        "build --output": (["build", "--onnx", onnx, "--output", "T"], "--output"),
        "build --json": (["build", "--onnx", onnx, "--json", "T"], "--json"),
        "bench --json": (["bench", "--reference", ckpt, "--engine", onnx, "--data-path", data, "--json", "T"], "--json"),
        "demo --workdir": (["demo", "--workdir", "T"], "--workdir"),
        "demo --json": (["demo", "--workdir", tmp_path / "w", "--json", "T"], "--json"),
    }


@pytest.fixture
def unwritable(request, tmp_path):
    """Make a destination of the kind ``request.param`` that cannot be written, as root too."""
    kind = request.param
    if kind == "parent-is-file":
        (tmp_path / "afile").write_text("mine")
        yield kind, tmp_path / "afile" / "out"
    elif kind == "read-only-folder":
        folder = tmp_path / "ro"
        folder.mkdir()
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0 if shutil.which("chattr") else False
        if not immutable:
            folder.chmod(0o555)  # enough for a non-root user; root writes through it
        try:
            (folder / "probe").touch()
            (folder / "probe").unlink()
            pytest.skip("cannot make a folder that this user cannot write (root without chattr)")
        except OSError:
            pass
        yield kind, folder / "out"
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)
    elif kind == "proc":
        yield kind, Path("/proc/swin-trt-test/out")
    else:
        yield kind, _full_device(tmp_path)


def _full_device(tmp_path) -> Path:
    """A device whose writes fail with ENOSPC: a private copy of /dev/full when root can make one,
    so that a broken rename could never replace the machine's own /dev/full."""
    if os.geteuid() != 0:
        return Path("/dev/full")
    device = tmp_path / "full"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except OSError:
        pytest.skip("cannot create a device node here")
    return device


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --json accepts a device (it writes /dev/stdout in place): see test_json_to_a_full_device
CASES = [(case, kind) for case, (_, flag) in sorted(_writers(Path("/tmp")).items()) for kind in UNWRITABLE_KINDS if not (kind == "device" and flag == "--json")]


@pytest.mark.parametrize("case, unwritable", CASES, indirect=["unwritable"])
def test_unwritable_output_is_one_line_before_any_work(run_cli, tmp_path, unwritable, case):
    kind, target = unwritable
    argv, flag = _writers(tmp_path)[case]
    before = _tree(tmp_path)
    code, out, err = run_cli(*[target if a == "T" else a for a in argv])
    _assert_one_line_error(code, out, err, f"cannot write {target}: ")
    assert code == 2
    assert err.strip().endswith(f"; choose another {flag}"), err
    assert _tree(tmp_path) == before  # nothing created, nothing half-written


def test_json_to_a_full_device(run_cli, tmp_path):
    """Written in place (so --json /dev/stdout works), and ENOSPC at write time is one line."""
    full = _full_device(tmp_path)
    code, out, err = run_cli("data", "digits", "--output", tmp_path / "d", "--json", full)
    _assert_one_line_error(code, out, err, f"cannot write {full}: no space left on device; choose another --json")
    assert stat.S_ISCHR(os.stat(full).st_mode)
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]


def test_json_to_stdout(tmp_path):
    result = subprocess.run([sys.executable, "-m", "swin_trt", "data", "digits", "--output", str(tmp_path / "d"), "--json", "/dev/stdout"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert '"train": 1437' in result.stdout and os.path.islink("/dev/stdout")


def _limit_file_size():
    """A 1 MB file-size limit: writes beyond it fail with EFBIG (Python ignores SIGXFSZ), as on a
    full disk, for any file, without needing a small file system."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.mark.slow  # a subprocess each, the export one tracing the model (about 20 s): make test-slow
@pytest.mark.parametrize("command", ["calibrate", "export"])
def test_write_failing_midway_is_one_line_and_leaves_nothing(trained_micro, digits_dir, tmp_path, command):
    """The check passes, the write fails when the file grows past the limit (a checkpoint or ONNX
    of 2.3 MB): one line naming the file and flag, and no temporary or new folder left."""
    out = tmp_path / "out"
    if command == "calibrate":
        args = ["calibrate", "--resume", trained_micro.checkpoint, "--data-path", digits_dir, "--num-calib-batch", "1", "--calib-batchsz", "8",
                "--skip-eval", "--workers", "0", "--calib-output-path", out]
        expected = f"cannot write {out / 'swin_micro_calib.pth'}: file too large; choose another --calib-output-path"
    else:
        args = ["export", "--resume", trained_micro.checkpoint, "--output", out / "micro.onnx"]
        expected = f"cannot write {out / 'micro.onnx'}: file too large; choose another --output"
    result = subprocess.run([sys.executable, "-m", "swin_trt", *map(str, args)], capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=600)
    assert result.returncode == 2
    _assert_one_line_error(result.returncode, result.stdout, result.stderr, expected)
    assert not out.exists()


def test_atomic_path_refuses_a_device_and_keeps_foreign_errors(tmp_path):
    from swin_trt.io import OutputError, atomic_path

    full = _full_device(tmp_path)
    with pytest.raises(OutputError, match="it is a character device, not a file"):
        with atomic_path(full):
            pass
    assert stat.S_ISCHR(os.stat(full).st_mode)
    with pytest.raises(FileNotFoundError):  # about another file: a bug or an input problem, not this output
        with atomic_path(tmp_path / "new" / "deeper" / "x.json"):
            open(tmp_path / "not-there")
    assert not (tmp_path / "new").exists()


# --- argparse usage errors ----------------------------------------------------------------------

@pytest.mark.parametrize("argv, usage, error", [
    (["calibrate", "--resume", "x"], "usage: swin-trt calibrate --data-path DIR [options]", "swin-trt calibrate: error: the following arguments are required: --data-path"),
    (["calibrate", "--data-path", "d", "--int8-mode", "3"], "usage: swin-trt calibrate --data-path DIR [options]", "argument --int8-mode: invalid choice: '3'"),
    (["train", "--data-path", "d", "--output", "o", "--epochs", "0"], "usage: swin-trt train --data-path DIR --output DIR [options]", "argument --epochs: must be >= 1, got 0"),
    (["inspect"], "usage: swin-trt inspect [options] FILE", "the following arguments are required: FILE"),
    (["qat", "--data-path", "d", "--resume", "c", "--select-alpha", "0"], "usage: swin-trt qat --data-path DIR [options]", "argument --select-alpha: must be above 0 and at most 1, got 0"),
    (["calibrat"], "usage: swin-trt [options] COMMAND", "swin-trt: error: argument COMMAND: invalid choice: 'calibrat'"),
])
def test_usage_error_is_the_usage_line_and_the_error(run_cli, argv, usage, error):
    code, out, err = run_cli(*argv)
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 2, err
    assert lines[0].startswith(usage + "  ("), lines[0]
    assert error in lines[1], lines[1]
