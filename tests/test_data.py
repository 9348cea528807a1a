"""Both dataset layouts, the digits writer, transforms and their errors."""

from __future__ import annotations

import gzip
import json
import zipfile

import pytest
import torch

from swin_trt.data.datasets import build_dataset, fingerprint
from swin_trt.data.digits import write_digits
from swin_trt.data.fashion import CLASS_FOLDERS, DEFAULT_SOURCE, FILES, write_fashion_mnist
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


def _idx(path, array, magic):
    """An idx file as the Fashion-MNIST distribution has them: big-endian magic and sizes, then uint8 data."""
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype("uint8").tobytes())


def _fake_fashion(root, train=40, test=10):
    """Tiny idx files: image i is filled with the value i, labels cycle through the 10 classes."""
    import numpy as np

    root.mkdir()
    for split, count in (("train", train), ("val", test)):
        images, labels = FILES[split]
        _idx(root / images, np.arange(count).repeat(28 * 28).reshape(count, 28, 28), 2051)
        _idx(root / labels, np.arange(count) % 10, 2049)
    return root


def test_fashion_mnist_layouts_and_stratified_subset(tmp_path):
    source = _fake_fashion(tmp_path / "src")
    summary = write_fashion_mnist(tmp_path / "fm", train_images=20, source=source)
    assert summary == {"train": 20, "val": 10, "root": str(tmp_path / "fm")}
    for split, count in (("train", 20), ("val", 10)):
        folder, zipped = build_dataset(tmp_path / "fm", split, None), build_dataset(tmp_path / "fm", split, None, use_zip=True)
        assert len(folder) == len(zipped) == count and folder.classes == list(CLASS_FOLDERS)
        assert sorted(folder.targets) == sorted(zipped.targets) == sorted(list(range(10)) * (count // 10))  # 2 per class
    name, label = (tmp_path / "fm" / "train_map.txt").read_text().splitlines()[0].split("\t")
    index = int(name.split("_")[-1].removesuffix(".png"))
    assert name.startswith(f"{CLASS_FOLDERS[int(label)]}/train_") and int(label) == index % 10
    image = build_dataset(tmp_path / "fm", "train", None, use_zip=True)[0][0]  # the first line of train_map
    assert image.size == (32, 32) and image.mode == "RGB" and image.getpixel((16, 16)) == (index,) * 3  # grey, read as RGB
    manifest = json.loads((tmp_path / "fm" / "fashion-mnist.json").read_text())
    assert manifest["train_subset_seed"] == 0 and manifest["classes"][9] == "ankle_boot"
    again = write_fashion_mnist(tmp_path / "again", train_images=20, source=source)
    assert again["train"] == 20 and (tmp_path / "again" / "train_map.txt").read_text() == (tmp_path / "fm" / "train_map.txt").read_text()
    assert write_fashion_mnist(tmp_path / "all", source=source, size=28)["train"] == 40


def test_fashion_mnist_missing_or_broken_files(run_cli, tmp_path):
    code, _, err = run_cli("data", "fashion-mnist", "--output", tmp_path / "out", "--source", tmp_path / "nowhere")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Fashion-MNIST files not found" in err and "apt-get install dataset-fashion-mnist" in err and not (tmp_path / "out").exists()
    source = _fake_fashion(tmp_path / "src")
    (source / FILES["val"][1]).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(12)))  # an image header on a label file
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: not an idx file with magic 2049"):
        write_fashion_mnist(tmp_path / "broken", source=source)
    assert not (tmp_path / "broken").exists()
    with pytest.raises(DataError, match="needs at least one image per class"):
        write_fashion_mnist(tmp_path / "few", train_images=5, source=_fake_fashion(tmp_path / "src2"))


@pytest.mark.skipif(not (DEFAULT_SOURCE / FILES["train"][0]).is_file(), reason="apt-get install dataset-fashion-mnist (make install does it where apt is available)")
def test_fashion_mnist_from_the_debian_package(run_cli, tmp_path):
    code, _, err = run_cli("data", "fashion-mnist", "--output", tmp_path / "fm", "--train-images", "1000", "--json", tmp_path / "fm.json")
    assert code == 0, err
    assert json.loads((tmp_path / "fm.json").read_text()) == {"train": 1000, "val": 10000, "root": str(tmp_path / "fm")}
    val = build_dataset(tmp_path / "fm", "val", None, use_zip=True, num_classes=10)
    assert val.samples[0] == ("t10k_00000.png", 9)  # the first test image is an ankle boot
    assert sorted(build_dataset(tmp_path / "fm", "train", None).targets) == sorted(list(range(10)) * 100)
