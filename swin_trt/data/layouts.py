"""Write an image-classification dataset in both of the seed's ImageNet layouts at once.

Shared by the bundled datasets (digits, Fashion-MNIST): each yields its images as encoded PNGs and
this module writes ``<root>/{train,val}/<class folder>/<file>`` (the folder layout) and
``<root>/{train,val}.zip`` with ``{train,val}_map.txt`` (the zipped layout: train members keep
their class folder as ImageNet's train_map does, val members are flat as in its val_map), plus a
manifest JSON. The whole tree is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from swin_trt.console import progress
from swin_trt.errors import DataError
from swin_trt.io import atomic_path


@dataclass(frozen=True)
class Sample:
    """One encoded image: its file name (unique within a split), label and PNG bytes."""

    file_name: str
    label: int
    png: bytes


def grey_png(pixels: np.ndarray, size: int) -> bytes:
    """A uint8 grey image resized bicubically to ``size`` x ``size``, as PNG bytes.

    Stored grey (one channel): the loaders decode every image to RGB, so a grey PNG reads as the
    grey value in all three channels, at a third of the bytes and ~20 % less encoding time.
    """
    picture = Image.fromarray(pixels, mode="L")
    if picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``output`` unless ``overwrite`` (checked before any work is done)."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise DataError(f"{output} already exists and is not empty (choose another --output or pass --overwrite)")


def write_layouts(
    output: str | Path,
    splits: Mapping[str, Iterable[Sample]],
    class_folders: Sequence[str],
    manifest_name: str,
    manifest: Mapping[str, Any],
    overwrite: bool = False,
    counts: Mapping[str, int] | None = None,
) -> dict[str, int | str]:
    """Write ``splits`` (``{"train": samples, "val": samples}``) in both layouts under ``output``.

    ``class_folders[label]`` names the folder of each label; they must sort in label order, since
    the folder layout's labels are the sorted folder names' indices. ``manifest`` is stored as
    ``<output>/<manifest_name>`` together with the image counts. ``counts`` (images per split)
    only sizes the progress bars. Returns ``{"train", "val", "root"}``.
    """
    output = Path(output)
    if list(class_folders) != sorted(class_folders):
        raise ValueError(f"class folders must sort in label order, got {list(class_folders)}")
    check_output(output, overwrite)
    written: dict[str, int] = {}
    with atomic_path(output, directory=True) as tmp:
        for split, samples in splits.items():
            for folder in class_folders:
                (tmp / split / folder).mkdir(parents=True)
            lines = []
            with zipfile.ZipFile(tmp / f"{split}.zip", "w", compression=zipfile.ZIP_STORED) as archive:
                total = (counts or {}).get(split)
                for sample in progress(samples, total=total, desc=f"write {split}", unit="image"):
                    folder = class_folders[sample.label]
                    (tmp / split / folder / sample.file_name).write_bytes(sample.png)
                    member = f"{folder}/{sample.file_name}" if split == "train" else sample.file_name
                    archive.writestr(member, sample.png)
                    lines.append(f"{member}\t{sample.label}\n")
            (tmp / f"{split}_map.txt").write_text("".join(lines))
            written[split] = len(lines)
        (tmp / manifest_name).write_text(json.dumps({**written, **manifest}, indent=2) + "\n")
    return {"train": written.get("train", 0), "val": written.get("val", 0), "root": str(output)}
