"""PIL image datasets for ``task=image_cls``: an ImageFolder tree (torchvision), an HF ``datasets`` dataset
(hub name or ``save_to_disk`` folder), and ImageNet-1k (ImageFolder root with train/ and val/, else the HF hub
``ILSVRC/imagenet-1k``, which needs an accepted licence and a login). Transforms are timm's ``create_transform``.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

IMAGENET_HF = "ILSVRC/imagenet-1k"


class TransformedView(Dataset):
    """(PIL image, label) items of ``base`` (via ``get``) -> (transform(image), label)."""

    def __init__(self, base, get, mode: str, transform=None) -> None:
        self.base, self.get, self.mode, self.transform = base, get, mode, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, label = self.get(self.base, i)
        image = image.convert(self.mode)
        return (self.transform(image) if self.transform else image), int(label)

    def with_transform(self, transform) -> TransformedView:
        return TransformedView(self.base, self.get, self.mode, transform)


def _folder_get(base, i):
    return base[i]


def _imagefolder(root: Path, cfg, mode: str) -> tuple[TransformedView | None, TransformedView, str]:
    """(train, val) ImageFolder views; train is None when its folder is absent (evaluation needs only val/, e.g.
    the ImageNet validation set in class folders)."""
    from torchvision.datasets import ImageFolder

    if not (root / cfg.val_split).is_dir():
        raise FileNotFoundError(f"ImageFolder split folder {root / cfg.val_split} does not exist "
                                f"(set task.val_split)")
    val = TransformedView(ImageFolder(str(root / cfg.val_split)), _folder_get, mode)
    train = None
    if (root / cfg.train_split).is_dir():
        train = TransformedView(ImageFolder(str(root / cfg.train_split)), _folder_get, mode)
        if train.base.classes != val.base.classes:
            raise ValueError(f"ImageFolder {root}: {cfg.train_split}/ and {cfg.val_split}/ have different class "
                             f"folders ({len(train.base.classes)} vs {len(val.base.classes)}); labels would not match")
    return train, val, f"imagefolder:{root}"


def _hf_load(name: str, config: str | None, cache_dir: str | None):
    import datasets

    if Path(name).exists():
        return datasets.load_from_disk(name)
    return datasets.load_dataset(name, config, cache_dir=cache_dir)


def _hf(cfg, mode: str, name: str, val_split: str) -> tuple[TransformedView, TransformedView, str]:
    ds = _hf_load(name, cfg.hf_config, cfg.data_dir)
    for split in (cfg.train_split, val_split):
        if split not in ds:
            raise ValueError(f"HF dataset {name} has no split '{split}'; splits: {list(ds)}")
    get = lambda base, i: (base[i][cfg.image_key], base[i][cfg.label_key])  # noqa: E731
    return (TransformedView(ds[cfg.train_split], get, mode), TransformedView(ds[val_split], get, mode), f"hf:{name}")


def open_pil_dataset(cfg) -> tuple[TransformedView, TransformedView, str]:
    mode = "L" if (cfg.channels or 3) == 1 else "RGB"
    if cfg.dataset == "imagefolder":
        return _imagefolder(Path(cfg.data_path), cfg, mode)
    if cfg.dataset == "hf":
        return _hf(cfg, mode, cfg.hf_name, cfg.val_split)
    if cfg.data_path and (Path(cfg.data_path) / cfg.val_split).is_dir():  # imagenet-1k as a folder tree
        return _imagefolder(Path(cfg.data_path), cfg, mode)
    try:
        return _hf(cfg, mode, IMAGENET_HF, "validation")
    except Exception as err:  # noqa: BLE001 - the message names both ways of providing ImageNet
        raise FileNotFoundError(
            f"imagenet-1k: no ImageFolder tree at task.data_path={cfg.data_path} (needs {cfg.train_split}/ and "
            f"{cfg.val_split}/) and the HF hub dataset {IMAGENET_HF} could not be loaded into "
            f"task.data_dir={cfg.data_dir}: {err}") from err


def infer_num_classes(cfg) -> int:
    """Classes of a PIL dataset without reading its images (folder names or the HF ClassLabel feature)."""
    if cfg.num_classes:
        return int(cfg.num_classes)
    if cfg.dataset == "imagenet-1k":
        return 1000
    if cfg.dataset == "imagefolder":
        root = Path(cfg.data_path)
        split = root / (cfg.train_split if (root / cfg.train_split).is_dir() else cfg.val_split)
        return sum(1 for p in split.iterdir() if p.is_dir())
    feature = _hf_load(cfg.hf_name, cfg.hf_config, cfg.data_dir)[cfg.train_split].features[cfg.label_key]
    if not hasattr(feature, "num_classes"):
        raise ValueError(f"HF label column '{cfg.label_key}' is not a ClassLabel; set task.num_classes")
    return int(feature.num_classes)


def pil_transforms(cfg, mean, std):
    """(train transform, [eval transform per resolution]) from timm's ``create_transform``."""
    from timm.data import create_transform

    channels = len(mean)
    aug = cfg.aug
    train = create_transform((channels, cfg.train_resolution, cfg.train_resolution), is_training=True,
                             scale=tuple(aug.scale), ratio=tuple(aug.ratio), hflip=aug.hflip,
                             auto_augment=aug.auto_augment, color_jitter=aug.color_jitter, re_prob=aug.re_prob,
                             interpolation=cfg.interpolation, mean=mean, std=std)
    evals = [create_transform((channels, r, r), is_training=False, crop_pct=cfg.crop_pct,
                              interpolation=cfg.interpolation, mean=mean, std=std) for r in cfg.eval_resolutions]
    return train, evals
