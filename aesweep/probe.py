"""What a code keeps: how well the digit classes can be told apart from it (a linear probe and
5-NN, scikit-learn, the standard test of a representation), for the AE's codes and PCA's at
the same k; and the code plane a 2-number code's decoder draws."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache

import numpy as np
import torch
from torch import Tensor

from aesweep.data import Splits
from aesweep.pca import PCAFit

MAX_TRAIN = 10_000  # training codes a probe fits on; a seeded subsample beyond (its cost)
NEIGHBOURS = 5


def on_input_scale(
    train: np.ndarray, test: np.ndarray, input_spread: float
) -> tuple[np.ndarray, np.ndarray]:
    """Codes centred and scaled by one number so that their RMS spread per dimension is the
    input's: the probe's penalty means the same at any k, at k = d PCA's codes are the
    pixels rotated, and 5-NN sees the code's own geometry. Standardising each dimension
    would blow PCA's trailing noise up (k=784: 0.79 against 0.89 on the embedded digits)."""
    mean = train.mean(axis=0)
    spread = float(np.sqrt(train.var(axis=0).mean()))
    factor = input_spread / spread if spread > 0 else 1.0
    return (train - mean) * factor, (test - mean) * factor


def accuracies(
    train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray
) -> tuple[float, float]:
    """Test accuracy of a linear probe (logistic regression) and of 5-NN fit on `train`
    codes (n, k), each scored once on the test codes. One BLAS/OpenMP thread: on a busy
    2-core machine two spin against each other (up to 30x slower, docs/probes.md)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        linear = LogisticRegression(max_iter=1000).fit(train, train_y).score(test, test_y)
        knn = KNeighborsClassifier(NEIGHBOURS).fit(train, train_y).score(test, test_y)
    return float(linear), float(knn)


@torch.no_grad()
def probe_codes(
    encode: Callable[[Tensor], Tensor], splits: Splits, pca: PCAFit, k: int
) -> dict[str, float]:
    """probe_acc and knn_acc on the codes of `encode`, pca_probe_acc and pca_knn_acc on PCA's
    top-k coordinates; {} for data without labels (said once)."""
    if splits.train_y is None or splits.test_y is None:
        say_no_labels()
        return {}
    train_x, train_y = splits.train_x, splits.train_y
    if len(train_x) > MAX_TRAIN:
        keep = torch.from_numpy(np.random.default_rng(0).permutation(len(train_x))[:MAX_TRAIN])
        train_x, train_y = train_x[keep], train_y[keep]
    basis = pca.components[:k].T
    spread = float(train_x.var(dim=0).mean().sqrt())
    ys = train_y.numpy(), splits.test_y.numpy()
    result = {}
    for prefix, codes in (("", encode), ("pca_", lambda x: (x - pca.mean) @ basis)):
        train, test = on_input_scale(codes(train_x).numpy(), codes(splits.test_x).numpy(), spread)
        linear, knn = accuracies(train, ys[0], test, ys[1])
        result |= {f"{prefix}probe_acc": linear, f"{prefix}knn_acc": knn}
    return result


@cache
def say_no_labels() -> None:
    print("aesweep: the data have no labels: no probes (probe_acc, knn_acc)", file=sys.stderr)


@torch.no_grad()
def code_plane(
    decode: Callable[[Tensor], Tensor], codes: Tensor, n: int = 15
) -> tuple[Tensor, Tensor, Tensor]:
    """The decoder's images over an n x n grid spanning the 2-number codes' range: images
    (n * n, d) row by row, top row at the largest z[1]; and the grid's z[0], z[1] values."""
    low, high = codes.min(dim=0).values, codes.max(dim=0).values
    z0 = torch.linspace(float(low[0]), float(high[0]), n)
    z1 = torch.linspace(float(high[1]), float(low[1]), n)
    grid = torch.stack(torch.meshgrid(z1, z0, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
    return decode(grid), z0, z1
