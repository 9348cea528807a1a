"""The bundled dataset: scikit-learn's handwritten digits written in both ImageNet layouts.

1,797 real 8x8 scans (17 grey levels, 10 classes) ship inside scikit-learn, so tests and the
demo run on real images without any download. The split is fixed: a stratified 80/20 split with
``random_state=0`` (1,437 train / 360 val images), so every machine sees the same validation set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from swin_trt.data.layouts import Sample, grey_png, write_layouts
from swin_trt.errors import DataError

SPLIT_SEED = 0
VAL_FRACTION = 0.2
MANIFEST = "digits.json"


def digits_split() -> dict[str, list[tuple[int, np.ndarray, int]]]:
    """``{"train": [(index, image8x8, label), ...], "val": [...]}`` with the fixed split."""
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, val = train_test_split(indices, test_size=VAL_FRACTION, stratify=digits.target, random_state=SPLIT_SEED)
    return {
        split: [(int(i), digits.images[i], int(digits.target[i])) for i in sorted(chosen)]
        for split, chosen in (("train", train), ("val", val))
    }


def _digit_png(image8: np.ndarray, size: int) -> bytes:
    """Scale 0..16 grey levels to 0..255, then upsample bicubically to ``size`` x ``size``."""
    return grey_png(np.clip(np.rint(image8 * (255.0 / 16.0)), 0, 255).astype(np.uint8), size)


def is_digits_dataset(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def write_digits(output: str | Path, size: int = 32, overwrite: bool = False) -> dict[str, int | str]:
    """Write the digits to ``output`` in both layouts (:func:`swin_trt.data.layouts.write_layouts`):
    ``output/train/<digit>/digit_XXXX.png`` ... and ``output/{train,val}.zip`` with map files.
    Returns ``{"train", "val", "root"}``."""
    if size < 8:
        raise DataError(f"--size {size} is smaller than the 8x8 source images")
    split = digits_split()
    samples = {
        name: (Sample(f"digit_{index:04d}.png", label, _digit_png(image8, size)) for index, image8, label in chosen)
        for name, chosen in split.items()
    }
    manifest = {"size": size, "split_seed": SPLIT_SEED}
    return write_layouts(output, samples, [str(label) for label in range(10)], MANIFEST, manifest, overwrite,
                         counts={name: len(chosen) for name, chosen in split.items()})
