"""What a run leaves to look at besides its numbers: the reconstruction grid and the images
behind it (vectors: the test error per feature), latent and manifold plots at small codes,
and for a linear AE its subspace against PCA's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from aesweep.config import FEATURE_ERRORS
from aesweep.data import Splits
from aesweep.io import save_figure, write_text
from aesweep.nets import AutoEncoderNet
from aesweep.pca import PCAFit, compare_subspaces
from aesweep.plots import draw_components, draw_latent, draw_manifold, draw_montage
from aesweep.probe import code_plane


@torch.no_grad()
def write_artefacts(
    model: AutoEncoderNet, splits: Splits, pca: PCAFit, cfg: DictConfig, run_dir: Path
) -> dict[str, Any]:
    """Reconstruction grid and the images behind it (vectors: the test error per feature),
    and the plots that depend on dim_z or on the model being linear; returns the extra
    metrics they produce, and `notes` on what was skipped and why."""
    model = model.cpu()
    extra: dict[str, Any] = {"notes": []}
    if splits.image_shape is None:
        table = feature_errors(model, splits, pca, cfg.dim_z)
        write_text(table.to_csv(index=False), run_dir / FEATURE_ERRORS)
    else:
        shown = splits.display_indices()
        originals = splits.test_x[shown]
        recon = model(originals)
        np.savez_compressed(
            run_dir / "samples.npz",
            originals=originals.numpy(),
            reconstructions=recon.numpy(),
            image_shape=np.array(splits.image_shape),
            **({} if splits.test_y is None else {"labels": splits.test_y[shown].numpy()}),
        )
        fig = draw_montage(originals, [(f"dim(z) = {cfg.dim_z}", recon)], splits.image_shape)
        save_figure(fig, run_dir / "reconstructions.png")

    if cfg.dim_z <= 2 and splits.test_y is None:
        extra["notes"].append("latent.png (codes coloured by label): skipped, no labels")
    elif cfg.dim_z <= 2:
        codes = model.encode(splits.test_x)
        save_figure(draw_latent(codes, splits.test_y), run_dir / "latent.png")
    if cfg.dim_z == 2 and splits.image_shape:  # labels or not; vectors draw no images
        plane = code_plane(model.decode, model.encode(splits.test_x))
        save_figure(draw_manifold(*plane, splits.image_shape), run_dir / "manifold.png")
    if is_linear(cfg):
        decoder = model.decoder[-1].weight  # (d, k): its columns span the decoded subspace
        comparison, recovered = compare_subspaces(decoder, pca, splits.train_x - pca.mean)
        extra.update(comparison.as_dict())
        n = min(16, cfg.dim_z)
        if splits.image_shape is not None:
            fig = draw_components(recovered[:n], pca.components[:n], splits.image_shape)
            save_figure(fig, run_dir / "pca_components.png")
    return extra


def feature_errors(model: AutoEncoderNet, splits: Splits, pca: PCAFit, k: int) -> pd.DataFrame:
    """Mean squared test error of each feature, the AE's beside PCA's with the same k: what
    a vector without an image shows instead of a montage."""
    x = splits.test_x
    top = pca.components[:k]
    pca_x = (x - pca.mean) @ top.T @ top + pca.mean
    names = splits.feature_names or [str(i) for i in range(x.shape[1])]
    return pd.DataFrame({
        "feature": names,
        "test_mse": (model(x) - x).pow(2).mean(0).numpy(),
        "pca_test_mse": (pca_x - x).pow(2).mean(0).numpy(),
    })  # fmt: skip


def is_linear(cfg: DictConfig) -> bool:
    """A linear AE: no nonlinearity anywhere, so its decoder is one linear map."""
    m = cfg.model
    return m.activation == "identity" and m.output == "identity" and len(m.hidden) == 0
