"""The seed's two ImageNet layouts.

- ImageFolder: ``<root>/train/<class>/<image>``, ``<root>/val/<class>/<image>``; labels are the
  sorted class-folder names' indices (the standard ImageNet order for synset folders).
- Zipped: ``<root>/{train,val}.zip`` and ``<root>/{train,val}_map.txt`` with lines
  ``<path inside the zip>\\t<label>``.

Both check everything that can be checked without decoding every image up front, and name the
file (and line) at fault.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Callable

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from swin_trt.errors import DataError

SPLITS = ("train", "val")


def decode_rgb(source: str | Path | io.BytesIO, name: str | Path) -> Image.Image:
    """Decode an image to RGB, or raise a one-line :class:`DataError` naming it."""
    try:
        with Image.open(source) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{name}: cannot decode image ({error})") from None


def _decode_file(path: str) -> Image.Image:
    return decode_rgb(path, path)


class FolderDataset(ImageFolder):
    """torchvision's ImageFolder with a decoder that reports the failing file."""

    def __init__(self, split_dir: Path, transform: Callable | None = None):
        try:
            super().__init__(str(split_dir), transform=transform, loader=_decode_file)
        except FileNotFoundError as error:
            raise DataError(f"{split_dir}: {error}") from None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_map(map_path: Path) -> list[tuple[str, int]]:
    """Parse a ``<member>\\t<label>`` map file; errors name the file and line."""
    entries = []
    with open(map_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0]:
                raise DataError(f"{map_path}:{number}: expected '<path in zip><TAB><label>', got {line[:80]!r}")
            try:
                label = int(fields[1])
            except ValueError:
                raise DataError(f"{map_path}:{number}: label {fields[1]!r} is not an integer") from None
            if label < 0:
                raise DataError(f"{map_path}:{number}: label {label} is negative")
            entries.append((fields[0], label))
    if not entries:
        raise DataError(f"{map_path}: no entries")
    return entries


class ZipDataset(Dataset):
    """Images read straight from a zip archive, as listed by its map file.

    The archive is opened lazily once per process: ``ZipFile`` handles cannot cross the fork into
    DataLoader workers.
    """

    def __init__(self, zip_path: Path, map_path: Path, transform: Callable | None = None):
        self.zip_path = zip_path
        self.map_path = map_path
        self.transform = transform
        self.samples = read_map(map_path)
        self.targets = [label for _, label in self.samples]
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(f"{zip_path}: not a readable zip file ({error})") from None
        for number, (member, _) in enumerate(self.samples, start=1):
            if member not in members:
                raise DataError(f"{map_path}:{number}: {member!r} is not in {zip_path.name}")
        self._archive: zipfile.ZipFile | None = None
        self._pid = -1

    @property
    def num_classes(self) -> int:
        return max(self.targets) + 1

    def __len__(self) -> int:
        return len(self.samples)

    def _open(self) -> zipfile.ZipFile:
        if self._archive is None or self._pid != os.getpid():
            self._archive = zipfile.ZipFile(self.zip_path)
            self._pid = os.getpid()
        return self._archive

    def __getitem__(self, index: int):
        member, label = self.samples[index]
        image = decode_rgb(io.BytesIO(self._open().read(member)), f"{self.zip_path}:{member}")
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_archive"] = None
        return state


def build_dataset(
    data_path: str | Path,
    split: str,
    transform: Callable | None,
    use_zip: bool = False,
    num_classes: int | None = None,
) -> FolderDataset | ZipDataset:
    """The ``split`` of the dataset at ``data_path`` in either layout.

    With ``num_classes`` (the model's), a label the model cannot predict is an error rather than
    a silent 0 % for that class.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    root = Path(data_path)
    if not root.is_dir():
        raise DataError(f"data path not found: {root} (expected {split}/ class folders, or {split}.zip + {split}_map.txt with --zip)")
    if use_zip:
        zip_path, map_path = root / f"{split}.zip", root / f"{split}_map.txt"
        for needed in (zip_path, map_path):
            if not needed.is_file():
                raise DataError(f"{needed} not found: the zipped layout (--zip) needs {split}.zip and {split}_map.txt in {root}")
        dataset: FolderDataset | ZipDataset = ZipDataset(zip_path, map_path, transform)
        if num_classes is not None and dataset.num_classes > num_classes:
            number, (member, label) = next((i, s) for i, s in enumerate(dataset.samples, 1) if s[1] >= num_classes)
            raise DataError(f"{map_path}:{number}: label {label} is out of range for a model with {num_classes} classes (pick the matching --cfg/--model)")
        return dataset
    split_dir = root / split
    if not split_dir.is_dir():
        hint = " (this looks like the zipped layout: add --zip)" if (root / f"{split}.zip").is_file() else ""
        raise DataError(f"{split_dir} not found: --data-path must hold {split}/<class>/<image> folders{hint}")
    dataset = FolderDataset(split_dir, transform)
    if num_classes is not None and dataset.num_classes > num_classes:
        raise DataError(f"{split_dir} has {dataset.num_classes} class folders, more than the model's {num_classes} classes (pick the matching --cfg/--model)")
    return dataset


def fingerprint(dataset: FolderDataset | ZipDataset) -> str:
    """A short hash of the image list and labels (paths relative to the split), stored in
    checkpoints so a result can be traced to the exact data it came from."""
    digest = hashlib.sha256()
    if isinstance(dataset, ZipDataset):
        rows = dataset.samples
    else:
        rows = [(str(Path(path).relative_to(dataset.root)), label) for path, label in dataset.samples]
    for member, label in rows:
        digest.update(f"{member}\t{label}\n".encode())
    return digest.hexdigest()[:16]
