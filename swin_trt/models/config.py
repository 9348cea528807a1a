"""Model configurations as data.

A :class:`ModelConfig` holds everything needed to build a Swin classifier and to feed it: the
architecture (as in the original release's YAML ``MODEL.SWIN`` section) and the input pipeline
(``DATA`` / ``TEST`` sections). The zoo is a table of these; ``--cfg FILE`` parses the original
repository's YAML files into the same structure, so both routes build the same model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swin_trt.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrainAugment:
    """Training-time augmentation (used by FP32 training, calibration and QAT).

    Defaults are the original Swin recipe: RandomResizedCrop, horizontal flip, RandAugment
    ``rand-m9-mstd0.5-inc1`` and random erasing with probability 0.25; then, on whole batches,
    mixup (alpha 0.8) or cutmix (alpha 1.0), switching with probability 0.5, with label
    smoothing 0.1 on the mixed targets (the original ``AUG.MIXUP*`` / ``AUG.CUTMIX*`` and
    ``MODEL.LABEL_SMOOTHING``; the batch-level part is used by QAT, as in the reference).
    """

    scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    reprob: float = 0.25
    mixup: float = 0.8
    cutmix: float = 1.0
    cutmix_minmax: tuple[float, float] | None = None
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    label_smoothing: float = 0.1

    @property
    def mixup_active(self) -> bool:
        """The original's test for building timm's ``Mixup``."""
        return self.mixup > 0 or self.cutmix > 0 or self.cutmix_minmax is not None


@dataclass(frozen=True)
class DataConfig:
    """How images reach the model (the original ``DATA`` and ``TEST`` sections)."""

    img_size: int = 224
    interpolation: str = "bicubic"
    # TEST.CROP: resize to int(256/224*S) then centre-crop S; otherwise resize straight to SxS.
    # The 384 configs of the release evaluate without the crop.
    crop: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    train: TrainAugment = field(default_factory=TrainAugment)


@dataclass(frozen=True)
class ModelConfig:
    """A Swin Transformer (v1) classifier: the fields of the original ``MODEL.SWIN`` section."""

    name: str
    num_classes: int = 1000
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    data: DataConfig = field(default_factory=DataConfig)

    @property
    def img_size(self) -> int:
        return self.data.img_size

    def architecture(self) -> dict[str, Any]:
        """The fields that decide the weights' shapes (what a checkpoint must agree with)."""
        return {
            "num_classes": self.num_classes,
            "img_size": self.img_size,
            "patch_size": self.patch_size,
            "in_chans": self.in_chans,
            "embed_dim": self.embed_dim,
            "depths": list(self.depths),
            "num_heads": list(self.num_heads),
            "window_size": self.window_size,
            "mlp_ratio": self.mlp_ratio,
            "qkv_bias": self.qkv_bias,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict` (how checkpoints carry the config they were trained with)."""
        values = dict(values)
        data = dict(values.pop("data", {}))
        train = dict(data.pop("train", {}))
        for key in ("scale", "cutmix_minmax"):
            if train.get(key) is not None:
                train[key] = tuple(train[key])
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        for key in ("depths", "num_heads"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values, data=DataConfig(**data, train=TrainAugment(**train)))


# Keys of the original YAML files that we read. Everything else in those files (TRAIN.*, ...)
# configures the original training script and is ignored; unknown keys inside MODEL.SWIN
# are rejected because a typo there silently builds a different network.
_SWIN_KEYS = {
    "PATCH_SIZE": "patch_size",
    "IN_CHANS": "in_chans",
    "EMBED_DIM": "embed_dim",
    "DEPTHS": "depths",
    "NUM_HEADS": "num_heads",
    "WINDOW_SIZE": "window_size",
    "MLP_RATIO": "mlp_ratio",
    "QKV_BIAS": "qkv_bias",
}
_SWIN_UNSUPPORTED = {"APE": False, "QK_SCALE": None, "PATCH_NORM": True}


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one YAML file, merging the files named in its ``BASE`` list first (as yacs does)."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass a Swin YAML such as configs/swin_tiny_patch4_window7_224.yaml)")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: BASE includes itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (MODEL:, DATA:, ...), got {type(raw).__name__}")
    merged: dict[str, Any] = {}
    for base in raw.pop("BASE", None) or []:
        if base:
            _deep_update(merged, _read_yaml(path.parent / base, seen + (path.resolve(),)))
    _deep_update(merged, raw)
    return merged


def _deep_update(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _section(tree: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = tree.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {name} must be a mapping")
    return value


def config_from_yaml(path: str | Path) -> ModelConfig:
    """Parse an original Swin repository YAML config (``--cfg``) into a :class:`ModelConfig`."""
    path = Path(path)
    tree = _read_yaml(path)
    model = _section(tree, "MODEL", path)
    swin = _section(model, "SWIN", path)
    data = _section(tree, "DATA", path)
    test = _section(tree, "TEST", path)
    aug = _section(tree, "AUG", path)

    model_type = str(model.get("TYPE", "swin")).lower()
    if model_type != "swin":
        raise ConfigError(f"{path}: MODEL.TYPE {model_type!r} is not supported (swin-trt handles Swin Transformer v1, TYPE: swin)")
    unknown = sorted(set(swin) - set(_SWIN_KEYS) - set(_SWIN_UNSUPPORTED))
    if unknown:
        raise ConfigError(f"{path}: unknown MODEL.SWIN keys {unknown} (known: {sorted(_SWIN_KEYS)})")
    for key, supported in _SWIN_UNSUPPORTED.items():
        if key in swin and swin[key] != supported:
            raise ConfigError(f"{path}: MODEL.SWIN.{key}={swin[key]!r} is not supported (the released models use {supported!r})")

    fields: dict[str, Any] = {"name": str(model.get("NAME") or path.stem)}
    for yaml_key, attr in _SWIN_KEYS.items():
        if yaml_key in swin:
            value = swin[yaml_key]
            fields[attr] = tuple(int(v) for v in value) if attr in ("depths", "num_heads") else value
    for yaml_key, attr in (("NUM_CLASSES", "num_classes"), ("DROP_RATE", "drop_rate"), ("DROP_PATH_RATE", "drop_path_rate")):
        if yaml_key in model:
            fields[attr] = model[yaml_key]

    img_size = int(data.get("IMG_SIZE", 224))
    data_fields: dict[str, Any] = {"img_size": img_size, "crop": bool(test.get("CROP", img_size < 384))}
    if "INTERPOLATION" in data:
        data_fields["interpolation"] = str(data["INTERPOLATION"])
    data_fields["train"] = _train_augment(aug, model, path)
    try:
        config = ModelConfig(**fields, data=DataConfig(**data_fields))
    except TypeError as error:
        raise ConfigError(f"{path}: {error}") from None
    validate(config, source=str(path))
    return config


_MIXUP_KEYS = {
    "MIXUP": ("mixup", float),
    "CUTMIX": ("cutmix", float),
    "MIXUP_PROB": ("mixup_prob", float),
    "MIXUP_SWITCH_PROB": ("mixup_switch_prob", float),
    "MIXUP_MODE": ("mixup_mode", str),
}
_MIXUP_MODES = ("batch", "pair", "elem")


def _train_augment(aug: dict[str, Any], model: dict[str, Any], path: Path) -> TrainAugment:
    """AUG.COLOR_JITTER / AUTO_AUGMENT / REPROB, the AUG.MIXUP* / CUTMIX* keys and
    MODEL.LABEL_SMOOTHING as in the original; AUG.HFLIP and AUG.SCALE are swin-trt additions
    (the original hard-codes them), needed for data such as digits where a mirrored or tightly
    cropped image changes its class."""
    fields: dict[str, Any] = {}
    for key, (attr, kind) in _MIXUP_KEYS.items():
        if key in aug:
            fields[attr] = kind(aug[key])
    if fields.get("mixup_mode", "batch") not in _MIXUP_MODES:
        raise ConfigError(f"{path}: AUG.MIXUP_MODE must be one of {', '.join(_MIXUP_MODES)}, got {fields['mixup_mode']!r}")
    if aug.get("CUTMIX_MINMAX") is not None:
        low, high = aug["CUTMIX_MINMAX"]
        fields["cutmix_minmax"] = (float(low), float(high))
    if "LABEL_SMOOTHING" in model:
        fields["label_smoothing"] = float(model["LABEL_SMOOTHING"])
    if "COLOR_JITTER" in aug:
        fields["color_jitter"] = float(aug["COLOR_JITTER"])
    if "AUTO_AUGMENT" in aug:
        policy = aug["AUTO_AUGMENT"]
        fields["auto_augment"] = None if policy in (None, "none", "") else str(policy)
    if "REPROB" in aug:
        fields["reprob"] = float(aug["REPROB"])
    if "HFLIP" in aug:
        fields["hflip"] = float(aug["HFLIP"])
    if "SCALE" in aug:
        low, high = aug["SCALE"]
        fields["scale"] = (float(low), float(high))
    return TrainAugment(**fields)


def validate(config: ModelConfig, source: str) -> None:
    """Reject configurations that cannot build a Swin model, before timm fails obscurely."""
    if len(config.depths) != len(config.num_heads):
        raise ConfigError(f"{source}: DEPTHS has {len(config.depths)} stages but NUM_HEADS has {len(config.num_heads)}")
    for stage, heads in enumerate(config.num_heads):
        dim = config.embed_dim * 2**stage
        if dim % heads:
            raise ConfigError(f"{source}: stage {stage} width {dim} is not divisible by {heads} heads")
    if config.img_size % config.patch_size:
        raise ConfigError(f"{source}: IMG_SIZE {config.img_size} is not a multiple of PATCH_SIZE {config.patch_size}")
    grid = config.img_size // config.patch_size
    if grid % 2 ** (len(config.depths) - 1):
        raise ConfigError(f"{source}: the {grid}x{grid} patch grid cannot be halved {len(config.depths) - 1} times by PatchMerging")
    if config.num_classes < 1:
        raise ConfigError(f"{source}: NUM_CLASSES must be positive, got {config.num_classes}")
