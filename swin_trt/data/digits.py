"""The bundled dataset: scikit-learn's handwritten digits written in both ImageNet layouts.

1,797 real 8x8 scans (17 grey levels, 10 classes) ship inside scikit-learn, so tests and the
demo run on real images without any download. The split is fixed: a stratified 80/20 split with
``random_state=0`` (1,437 train / 360 val images), so every machine sees the same validation set.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from swin_trt.errors import DataError
from swin_trt.io import atomic_path

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


def _to_png(image8: np.ndarray, size: int) -> bytes:
    """Scale 0..16 grey levels to 0..255 and upsample bicubically to ``size`` x ``size``."""
    pixels = np.clip(np.rint(image8 * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def is_digits_dataset(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def write_digits(output: str | Path, size: int = 32, overwrite: bool = False) -> dict[str, int | str]:
    """Write the digits to ``output`` in both layouts; returns ``{"train", "val", "root"}``.

    ``output/train/<digit>/digit_XXXX.png`` and ``output/val/...`` form the ImageFolder layout;
    ``output/{train,val}.zip`` with ``{train,val}_map.txt`` form the zipped one (train members
    keep class folders like ImageNet's train_map, val members are flat like its val_map).
    """
    output = Path(output)
    if size < 8:
        raise DataError(f"--size {size} is smaller than the 8x8 source images")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise DataError(f"{output} already exists and is not empty (choose another --output or pass --overwrite)")
    split = digits_split()
    with atomic_path(output, directory=True) as tmp:
        for name, samples in split.items():
            with zipfile.ZipFile(tmp / f"{name}.zip", "w", compression=zipfile.ZIP_STORED) as archive:
                lines = []
                for index, image8, label in samples:
                    png = _to_png(image8, size)
                    folder = tmp / name / str(label)
                    folder.mkdir(parents=True, exist_ok=True)
                    file_name = f"digit_{index:04d}.png"
                    (folder / file_name).write_bytes(png)
                    member = f"{label}/{file_name}" if name == "train" else file_name
                    archive.writestr(member, png)
                    lines.append(f"{member}\t{label}\n")
            (tmp / f"{name}_map.txt").write_text("".join(lines))
        summary = {"train": len(split["train"]), "val": len(split["val"]), "size": size, "split_seed": SPLIT_SEED}
        (tmp / MANIFEST).write_text(json.dumps(summary, indent=2) + "\n")
    return {"train": summary["train"], "val": summary["val"], "root": str(output)}
