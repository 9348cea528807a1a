"""Fashion-MNIST (Zalando, 70,000 28x28 grey images of 10 clothing classes) in both ImageNet layouts.

Read from the original idx files that Debian's ``dataset-fashion-mnist`` package installs under
``/usr/share/datasets/fashion-mnist/`` (nothing is downloaded). A harder second real dataset than
digits: a micro Swin trained from scratch lands in the 80s, not the high 90s, so quantization
errors show in its top-1.

val is the 10,000 official test images; train is the 60,000 train images or, with
``train_images``, a fixed stratified subset of them (``random_state=0``), so every machine trains
and calibrates on the same images.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from swin_trt.data.layouts import Sample, grey_png, write_layouts
from swin_trt.errors import DataError

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
PACKAGE = "dataset-fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000
CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
# "<label>_<name>": readable, and sorted in label order (what the folder layout's labels rely on)
CLASS_FOLDERS = tuple(f"{label}_{name}" for label, name in enumerate(CLASSES))
SUBSET_SEED = 0
MANIFEST = "fashion-mnist.json"
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx array (big-endian header: magic, then one uint32 per dimension; uint8 data)."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read gzip'ed idx file ({error}); reinstall with `apt-get install --reinstall {PACKAGE}`") from None
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path}: not an idx file with magic {magic}; reinstall with `apt-get install --reinstall {PACKAGE}`")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"{path}: {len(raw) - header} data bytes for shape {shape}; reinstall with `apt-get install --reinstall {PACKAGE}`")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_split(source: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] uint8, labels [N] uint8) of ``split`` ("train" or "val" = t10k)."""
    source = Path(source)
    missing = [name for names in FILES.values() for name in names if not (source / name).is_file()]
    if missing:
        raise DataError(f"Fashion-MNIST files not found in {source} (missing {', '.join(missing)}): "
                        f"install them with `apt-get install {PACKAGE}`, or pass --source DIR")
    image_file, label_file = FILES[split]
    images, labels = _read_idx(source / image_file, _IMAGE_MAGIC), _read_idx(source / label_file, _LABEL_MAGIC)
    if len(images) != len(labels) or images.shape[1:] != (28, 28) or int(labels.max(initial=0)) >= len(CLASSES):
        raise DataError(f"{source}: {image_file} {images.shape} and {label_file} ({len(labels)} labels up to {labels.max(initial=0)}) "
                        f"do not form a 28x28, 10-class split; reinstall with `apt-get install --reinstall {PACKAGE}`")
    return images, labels


def train_subset(labels: np.ndarray, count: int | None) -> np.ndarray:
    """Sorted indices of a fixed stratified subset of ``count`` train images (all without ``count``)."""
    if count is None or count >= len(labels):
        return np.arange(len(labels))
    if count < len(CLASSES):
        raise DataError(f"--train-images {count} is too few: a stratified subset needs at least one image per class ({len(CLASSES)})")
    chosen, _ = train_test_split(np.arange(len(labels)), train_size=count, stratify=labels, random_state=SUBSET_SEED)
    return np.sort(chosen)


def _samples(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, prefix: str, size: int) -> Iterator[Sample]:
    for index in indices:
        yield Sample(f"{prefix}_{int(index):05d}.png", int(labels[index]), grey_png(images[index], size))


def write_fashion_mnist(
    output: str | Path,
    size: int = 32,
    train_images: int | None = None,
    source: str | Path = DEFAULT_SOURCE,
    overwrite: bool = False,
) -> dict[str, int | str]:
    """Write Fashion-MNIST to ``output`` in both layouts; returns ``{"train", "val", "root"}``.

    File names keep the index in the original file (``train_01234.png``, ``t10k_00042.png``), so
    a subset can be traced back to the source images.
    """
    if size < 8:
        raise DataError(f"--size {size} is too small (at least 8; the source images are 28x28)")
    if train_images is not None and train_images < 1:
        raise DataError(f"--train-images must be positive, got {train_images}")
    train_x, train_y = read_split(source, "train")
    val_x, val_y = read_split(source, "val")
    chosen = train_subset(train_y, train_images)
    samples = {
        "train": _samples(train_x, train_y, chosen, "train", size),
        "val": _samples(val_x, val_y, np.arange(len(val_y)), "t10k", size),
    }
    manifest = {"size": size, "train_subset_seed": SUBSET_SEED if len(chosen) < len(train_y) else None,
                "source": str(source), "classes": list(CLASSES)}
    return write_layouts(output, samples, CLASS_FOLDERS, MANIFEST, manifest, overwrite, counts={"train": len(chosen), "val": len(val_y)})
