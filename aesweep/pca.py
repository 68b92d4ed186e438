"""Closed-form PCA for every k from one SVD, and a linear decoder's subspace against PCA's.
Units as in the metrics contract: `*_mse` per pixel, `*_sse` summed per image."""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aesweep.config import UNITS, default_dims
from aesweep.data import Splits, data_root, load_splits
from aesweep.io import save_torch, write_text


@dataclass(frozen=True)
class PCAFit:
    """PCA of a training split, scored on a test split, for every k = 0..d at once.
    mean: (d,). components: (d, d), orthonormal rows by decreasing training variance (beyond
    the data's rank they complete the basis). variances: (d,) along each component.
    test_sse: (d + 1,), entry k the mean per-image test error with the top k components."""

    mean: Tensor
    components: Tensor
    variances: Tensor
    test_sse: Tensor

    @property
    def input_dim(self) -> int:
        return self.mean.numel()

    def test_mse(self, k: int) -> float:
        return float(self.test_sse[k]) / self.input_dim


def fit_pca(train_x: Tensor, test_x: Tensor) -> PCAFit:
    """One SVD of the centred training data (float64); the test error for every k follows
    from the test images' coordinates in the principal basis, since the residual of a
    projection onto k orthonormal directions is ||x||^2 - sum of the k squared coordinates."""
    if train_x.numel() > LARGE:
        mean, squares, vh = tall_pca(train_x)
    else:
        train = train_x.double()
        mean = train.mean(dim=0)
        _, s, vh = torch.linalg.svd(train - mean, full_matrices=False)
        squares = s.pow(2)
    d = train_x.shape[1]
    if vh.shape[0] < d:  # fewer images than pixels: complete the basis with the null space
        q, _ = torch.linalg.qr(vh.T, mode="complete")
        vh = torch.cat([vh, q[:, vh.shape[0] :].T])
        squares = torch.cat([squares, squares.new_zeros(d - len(squares))])
    coords = (test_x.double() - mean) @ vh.T
    total = coords.pow(2).sum(dim=1, keepdim=True)
    residual = total - torch.cat([coords.new_zeros(len(coords), 1), coords.pow(2).cumsum(1)], 1)
    test_sse = residual.clamp_min(0).mean(dim=0)
    variances = squares / max(len(train_x) - 1, 1)
    return PCAFit(mean.float(), vh.float(), variances.float(), test_sse)


LARGE = 2**26  # values; above, PCA reads the training rows in chunks (full MNIST: below)


def tall_pca(train_x: Tensor, rows: int = 65536) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, squared singular values and principal axes (d, d) from the d x d scatter matrix,
    summed over chunks of rows in float64: a float64 copy of a large training split (and
    the SVD's n x d factor) would each take twice the data's memory."""
    mean = sum(c.double().sum(dim=0) for c in train_x.split(rows)) / len(train_x)
    scatter = sum((c.double() - mean).T @ (c.double() - mean) for c in train_x.split(rows))
    squares, axes = torch.linalg.eigh(scatter)  # ascending
    return mean, squares.flip(0).clamp_min(0), axes.flip(1).T


def cache_key(train_x: Tensor, test_x: Tensor) -> str:
    """The PCA cache's key: a hash of the training and test images themselves, so other data
    under the same data.root never reuse a stale PCA. ~0.1 s for full MNIST."""
    digest = hashlib.blake2b(digest_size=12)
    for x in (train_x, test_x):
        digest.update(str((tuple(x.shape), x.dtype)).encode())
        digest.update(x.contiguous().cpu().numpy())  # the buffer itself: no copy
    return digest.hexdigest()


_memory: dict[str, PCAFit] = {}


def cached_pca(cache_dir: Path, train_x: Tensor, test_x: Tensor) -> PCAFit:
    """fit_pca once per data: in memory within a process, on disk across the processes of
    a parallel sweep. A damaged cache file is recomputed, never trusted."""
    key = cache_key(train_x, test_x)
    if key in _memory:
        return _memory[key]
    path, fit = cache_dir / f"pca-{key}.pt", None
    with contextlib.suppress(Exception):  # missing or damaged: computed below
        fit = PCAFit(**torch.load(path, weights_only=True))
    if fit is None or fit.input_dim != train_x.shape[1]:
        fit = fit_pca(train_x, test_x)
        save_torch(fit.__dict__, path)
    _memory[key] = fit
    return fit


def pca_of(data: Any, splits: Splits) -> PCAFit:
    """cached_pca for a `data` config's Splits (cache under data.root)."""
    return cached_pca(data_root(data), splits.train_x, splits.test_x)


def principal_angles(a: Tensor, b: Tensor) -> Tensor:
    """Principal angles (radians, ascending) between the column spaces of a (d, k) and b (d, k)."""
    qa, _ = torch.linalg.qr(a.double())
    qb, _ = torch.linalg.qr(b.double())
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    return torch.arccos(cosines)  # svdvals are descending, so the angles ascend


def recovered_directions(decoder_weight: Tensor, centred_train: Tensor) -> Tensor:
    """Principal directions (k, d) recovered from a linear decoder (Plaut 2018; Kunin et al.
    2019): its orthonormalised columns rotated by the eigenvectors of the training covariance
    in that subspace; rows by decreasing variance, each row's sign arbitrary."""
    q, _ = torch.linalg.qr(decoder_weight.double())
    coords = centred_train.double() @ q
    _, eigvecs = torch.linalg.eigh(coords.T @ coords)
    return (q @ eigvecs.flip(1)).T.float()


@dataclass(frozen=True)
class SubspaceComparison:
    """How a linear decoder's subspace sits against PCA's top-k subspace."""

    max_angle_deg: float
    mean_sq_cos: float
    component_cos: list[float]  # |cos| of recovered direction i to PCA component i

    def as_dict(self) -> dict:
        return {
            "max_principal_angle_deg": self.max_angle_deg,
            "mean_sq_cos": self.mean_sq_cos,
            "component_abs_cos": self.component_cos,
        }


def compare_subspaces(
    decoder_weight: Tensor, fit: PCAFit, centred_train: Tensor
) -> tuple[SubspaceComparison, Tensor]:
    """Principal angles and matched components of a (d, k) decoder against PCA's top k;
    also returns the recovered directions (k, d), signed like PCA's for side-by-side plots."""
    k = decoder_weight.shape[1]
    top = fit.components[:k]
    angles = principal_angles(decoder_weight, top.T)
    recovered = recovered_directions(decoder_weight, centred_train)
    dots = (recovered.double() * top.double()).sum(dim=1)
    recovered = recovered * torch.where(dots < 0, -1.0, 1.0).float()[:, None]  # match PCA's signs
    comparison = SubspaceComparison(
        max_angle_deg=math.degrees(float(angles.max())),
        mean_sq_cos=float(torch.cos(angles).pow(2).mean()),
        component_cos=[round(float(c), 6) for c in dots.abs()],
    )
    return comparison, recovered


def pca_table(fit: PCAFit) -> Any:
    """The PCA curve as a table: k, test error per pixel and per image, explained variance."""
    import pandas as pd

    ratio = torch.cat([fit.variances.new_zeros(1), fit.variances / fit.variances.sum()])
    return pd.DataFrame(
        {
            "k": range(fit.input_dim + 1),
            "pca_test_mse": (fit.test_sse / fit.input_dim).numpy(),
            "pca_test_sse": fit.test_sse.numpy(),
            "explained_variance_ratio": ratio.double().numpy(),
            "cumulative_explained_variance": ratio.double().cumsum(0).numpy(),
        }
    )


def run_pca(cfg: Any) -> None:
    """Hydra task of `aesweep pca`: the closed-form curve for the configured data."""
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    splits = load_splits(cfg.data)
    fit = pca_of(cfg.data, splits)
    table = pca_table(fit)
    write_text(table.to_csv(index=False), out / "pca_vs_dim.csv")
    extra = {0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512}
    dims = sorted({*(cfg.sweep.dims or default_dims(fit.input_dim)), *extra})
    shown = table[table["k"].isin([k for k in dims if k <= fit.input_dim] + [fit.input_dim])]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(
        f"PCA of data={HydraConfig.get().runtime.choices.data}: {len(splits.train_x)} training, "
        f"{len(splits.test_x)} test rows; error per row = sum over {UNITS[splits.scaling.kind]}"
    )
    print(f"written: {out / 'pca_vs_dim.csv'}")
