"""Both dataset layouts, the digits writer, transforms and their errors."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from swin_trt.data.datasets import build_dataset, fingerprint
from swin_trt.data.digits import write_digits
from swin_trt.data.transforms import eval_transform, train_transform
from swin_trt.errors import DataError
from swin_trt.models.zoo import MICRO, get_config


def test_digits_written_in_both_layouts(digits_dir):
    manifest = json.loads((digits_dir / "digits.json").read_text())
    assert (manifest["train"], manifest["val"]) == (1437, 360)
    for split, count in (("train", 1437), ("val", 360)):
        folder = build_dataset(digits_dir, split, None)
        zipped = build_dataset(digits_dir, split, None, use_zip=True)
        assert len(folder) == len(zipped) == count
        assert folder.num_classes == zipped.num_classes == 10
        assert sorted(folder.targets) == sorted(zipped.targets)
        assert fingerprint(folder) != fingerprint(zipped)  # paths differ, labels agree
        image, label = folder[0]
        assert image.size == (32, 32) and image.mode == "RGB"
        member = zipped.samples[[s[0].rsplit("/", 1)[-1] for s in zipped.samples].index(folder.samples[0][0].rsplit("/", 1)[-1])]
        assert member[1] == label


def test_digits_split_is_fixed(tmp_path, digits_dir):
    again = write_digits(tmp_path / "again")
    assert again["val"] == 360
    assert (tmp_path / "again" / "val_map.txt").read_text() == (digits_dir / "val_map.txt").read_text()


def test_digits_refuses_to_overwrite(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        write_digits(tmp_path / "taken")


def test_eval_transform_crop_and_resize():
    tiny, big = get_config("swin_tiny_patch4_window7_224").data, get_config("swin_base_patch4_window12_384").data
    names = [type(t).__name__ for t in eval_transform(tiny).transforms]
    assert names[:2] == ["Resize", "CenterCrop"] and eval_transform(tiny).transforms[0].size == 256
    assert [type(t).__name__ for t in eval_transform(big).transforms][:2] == ["Resize", "ToTensor"]
    assert eval_transform(big).transforms[0].size == (384, 384)
    from PIL import Image

    picture = Image.new("RGB", (500, 375))
    assert eval_transform(tiny)(picture).shape == (3, 224, 224)
    assert eval_transform(big)(picture).shape == (3, 384, 384)
    assert train_transform(tiny)(picture).shape == (3, 224, 224)
    assert train_transform(MICRO.data)(Image.new("RGB", (32, 32))).shape == (3, 32, 32)


def _copy_zip_layout(source, target, map_text=None, members=None):
    target.mkdir()
    (target / "val_map.txt").write_text(map_text if map_text is not None else (source / "val_map.txt").read_text())
    with zipfile.ZipFile(source / "val.zip") as src, zipfile.ZipFile(target / "val.zip", "w") as dst:
        for name in src.namelist() if members is None else members:
            dst.writestr(name, src.read(name))


def test_zip_layout_errors(tmp_path, digits_dir):
    first = (digits_dir / "val_map.txt").read_text().splitlines()[0]
    member = first.split("\t")[0]
    cases = {
        "malformed": (f"{first}\n{member} 3\n", r"malformed/val_map.txt:2: expected '<path in zip><TAB><label>'"),
        "notint": (f"{member}\tthree\n", r"notint/val_map.txt:1: label 'three' is not an integer"),
        "range": (f"{first}\n{member}\t12\n", r"range/val_map.txt:2: label 12 is out of range for a model with 10 classes"),
        "absent": (f"{first}\nnot/there.png\t1\n", r"absent/val_map.txt:2: 'not/there.png' is not in val.zip"),
    }
    for name, (text, message) in cases.items():
        _copy_zip_layout(digits_dir, tmp_path / name, text, members=[member])
        with pytest.raises(DataError, match=message):
            build_dataset(tmp_path / name, "val", None, use_zip=True, num_classes=10)


def test_missing_layouts_name_the_fix(tmp_path, digits_dir):
    with pytest.raises(DataError, match="data path not found"):
        build_dataset(tmp_path / "nowhere", "val", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"val.zip not found: the zipped layout \(--zip\) needs"):
        build_dataset(tmp_path / "empty", "val", None, use_zip=True)
    _copy_zip_layout(digits_dir, tmp_path / "zipped")
    with pytest.raises(DataError, match=r"this looks like the zipped layout: add --zip"):
        build_dataset(tmp_path / "zipped", "val", None)


def test_folder_with_more_classes_than_model(tmp_path, digits_dir):
    with pytest.raises(DataError, match="has 10 class folders, more than the model's 5 classes"):
        build_dataset(digits_dir, "val", None, num_classes=5)


def test_undecodable_image_names_the_file(tmp_path):
    (tmp_path / "val" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    dataset = build_dataset(tmp_path, "val", None)
    with pytest.raises(DataError, match=r"broken.png: cannot decode image"):
        dataset[0]


def test_zip_dataset_survives_pickling_for_workers(digits_dir):
    import pickle

    dataset = build_dataset(digits_dir, "val", eval_transform(MICRO.data), use_zip=True)
    dataset[0]  # opens the archive in this process
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[5][0], dataset[5][0])
