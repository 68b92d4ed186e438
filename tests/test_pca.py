"""Closed-form PCA: agrees with numpy, falls monotonically in k, reaches zero at k = d, and
is computed once per data configuration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aesweep.pca import cached_pca, fit_pca
from tests.conftest import composed, result_of


def brute_force_sse(train: np.ndarray, test: np.ndarray, k: int) -> float:
    """Per-image test SSE of the rank-k PCA reconstruction, via numpy.linalg.svd."""
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=True)
    basis = vt[:k].T
    recon = (test - mean) @ basis @ basis.T + mean
    return float(((recon - test) ** 2).sum(axis=1).mean())


@pytest.mark.parametrize("n_train", [200, 12])  # more and fewer images than pixels
def test_pca_error_matches_numpy_svd_for_every_k(n_train: int) -> None:
    rng = np.random.default_rng(0)
    train, test = rng.random((n_train, 30)), rng.random((50, 30))
    fit = fit_pca(torch.from_numpy(train).float(), torch.from_numpy(test).float())
    rank = min(n_train - 1, 30)  # beyond the rank, PCA directions are arbitrary
    for k in sorted({0, 1, 5, rank, 30}):
        assert float(fit.test_sse[k]) == pytest.approx(
            brute_force_sse(train, test, k), rel=1e-4, abs=1e-6
        )
    assert fit.test_mse(5) == pytest.approx(float(fit.test_sse[5]) / 30)


def test_pca_error_falls_monotonically_and_reaches_zero_at_the_input_dimension() -> None:
    gen = torch.Generator().manual_seed(1)
    train, test = torch.rand(300, 64, generator=gen), torch.rand(40, 64, generator=gen)
    sse = fit_pca(train, test).test_sse
    assert torch.all(sse[1:] <= sse[:-1] + 1e-9)
    assert float(sse[-1]) == pytest.approx(0.0, abs=1e-9) and float(sse[0]) > 1


def test_pca_is_cached_per_data_and_other_data_get_their_own(tmp_path, monkeypatch) -> None:
    gen = torch.Generator().manual_seed(0)
    train, test = torch.rand(100, 16, generator=gen), torch.rand(20, 16, generator=gen)
    first = cached_pca(tmp_path, train, test)
    assert len(list(tmp_path.glob("pca-*.pt"))) == 1
    from aesweep import pca

    pca._memory.clear()  # a new process: read from disk, not recomputed
    monkeypatch.setattr("aesweep.pca.fit_pca", lambda *a: pytest.fail("recomputed"))
    again = cached_pca(tmp_path, train, test)
    assert torch.equal(again.test_sse, first.test_sse)
    monkeypatch.setattr("aesweep.pca.fit_pca", fit_pca)
    other = cached_pca(tmp_path, train.flip(0)[:90], test)  # other images, same cache folder
    assert len(list(tmp_path.glob("pca-*.pt"))) == 2
    assert not torch.equal(other.test_sse, first.test_sse)


def synthetic_splits(variances: list[float], d: int = 20, n: int = 2000, seed: int = 0):
    """Gaussian data in [0, 1]-ish with a known spectrum along a random orthonormal basis."""
    from aesweep.data import Splits

    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    scales = torch.tensor(variances + [0.01] * (d - len(variances))).sqrt()
    x = 0.5 + 0.15 * (torch.randn(n + 500, d, generator=gen) * scales) @ basis.T
    y = torch.zeros(len(x), dtype=torch.long)
    return Splits(
        x[:n], y[:n], x[n : n + 250], y[n : n + 250], x[n + 250 :], y[n + 250 :], (1, 1, d)
    )


def train_linear_ae(splits, k: int, epochs: int = 60):
    """aesweep's own linear AE, trained by a Lightning Trainer with recipe=linear."""
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    from aesweep.datamodule import TensorDataModule
    from aesweep.model import AutoEncoder

    cfg = composed("model=linear", "recipe=linear", f"trainer.max_epochs={epochs}")
    parts = ("model", "optimizer", "scheduler")
    recipe = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in parts}
    pl.seed_everything(0, verbose=False)
    m = recipe["model"]
    model = AutoEncoder(
        splits.input_dim,
        k,
        m["hidden"],
        m["activation"],
        m["output"],
        "mse",
        recipe["optimizer"],
        recipe["scheduler"],
        center=m["center"],
    )
    model.mean.copy_(splits.train_x.mean(dim=0))
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=TensorDataModule(splits, batch_size=100))
    return model


def test_linear_ae_reaches_the_pca_error() -> None:
    splits = synthetic_splits([4.0, 3.0, 2.0, 1.5, 1.0, 0.5])
    model = train_linear_ae(splits, k=4)
    with torch.no_grad():
        sse = (model(splits.test_x) - splits.test_x).pow(2).sum(dim=1).mean()
    pca_sse = fit_pca(splits.train_x, splits.test_x).test_sse[4]
    assert float(sse) <= 1.02 * float(pca_sse)
    assert float(sse) >= 0.95 * float(pca_sse)  # a linear map cannot beat PCA by much


def test_linear_ae_subspace_and_directions_match_pca_with_an_eigengap() -> None:
    from aesweep.pca import compare_subspaces

    splits = synthetic_splits([10.0, 6.0, 3.0])
    model = train_linear_ae(splits, k=3)
    fit = fit_pca(splits.train_x, splits.test_x)
    decoder = model.decoder[-1].weight.detach()
    comparison, recovered = compare_subspaces(decoder, fit, splits.train_x - fit.mean)
    assert comparison.max_angle_deg < 2.0
    assert comparison.mean_sq_cos > 0.999
    assert min(comparison.component_cos) > 0.99
    assert recovered.shape == (3, 20)
    # signed like PCA's components, so they can be drawn side by side
    assert torch.all((recovered * fit.components[:3]).sum(dim=1) > 0.99)


def test_principal_angles_of_known_subspaces() -> None:
    from aesweep.pca import principal_angles

    e = torch.eye(4)
    tilted = torch.stack(
        [e[0], torch.cos(torch.tensor(0.3)) * e[1] + torch.sin(torch.tensor(0.3)) * e[2]], 1
    )
    angles = principal_angles(e[:, :2], tilted)
    assert torch.allclose(angles, torch.tensor([0.0, 0.3], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(
        principal_angles(e[:, :2], e[:, :2] @ torch.tensor([[2.0, 1.0], [0.0, 3.0]])),
        torch.zeros(2, dtype=torch.float64),
        atol=1e-6,
    )


def test_pca_command_writes_the_curve(aesweep, tmp_path) -> None:
    import pandas as pd

    outcome = aesweep("pca", "data.subset=1000", "hydra.run.dir=pca")
    assert outcome.code == 0, outcome.err
    table = pd.read_csv(tmp_path / "pca" / "pca_vs_dim.csv")
    assert list(table.columns) == [
        "k",
        "pca_test_mse",
        "pca_test_sse",
        "explained_variance_ratio",
        "cumulative_explained_variance",
    ]
    assert table["k"].tolist() == list(range(785))
    assert table["pca_test_sse"].is_monotonic_decreasing and table["pca_test_sse"].iloc[-1] < 1e-6
    assert table["cumulative_explained_variance"].iloc[-1] == pytest.approx(1.0)
    assert table["pca_test_sse"].iloc[32] == pytest.approx(784 * table["pca_test_mse"].iloc[32])
    assert "written:" in outcome.out


def test_a_linear_run_reports_its_subspace_and_draws_its_components(aesweep, tmp_path) -> None:
    import matplotlib.image

    outcome = aesweep(
        "train",
        "model=linear",
        "recipe=linear",
        "dim_z=20",
        "trainer=smoke",
        "trainer.max_epochs=2",
        "data.subset=500",
        "hydra.run.dir=run",
    )
    assert outcome.code == 0, outcome.err
    result = result_of(tmp_path / "run")
    # Recompute the reported angles independently: numpy's SVD of the run's own training
    # images against the decoder in its checkpoint.
    from omegaconf import OmegaConf

    from aesweep.data import load_splits

    train = load_splits(OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml").data).train_x
    centred = (train - train.mean(0)).double().numpy()
    top = np.linalg.svd(centred, full_matrices=False)[2][:20].T  # (784, 20)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    decoder = ckpt["state_dict"]["decoder.0.weight"].double().numpy()  # (784, 20)
    q = np.linalg.qr(decoder)[0]
    cosines = np.linalg.svd(q.T @ top, compute_uv=False).clip(-1, 1)
    assert result["max_principal_angle_deg"] == pytest.approx(
        np.degrees(np.arccos(cosines.min())), abs=1e-3
    )
    assert result["mean_sq_cos"] == pytest.approx(float((cosines**2).mean()), abs=1e-6)
    assert len(result["component_abs_cos"]) == 20
    height, width = matplotlib.image.imread(tmp_path / "run" / "pca_components.png").shape[:2]
    assert (height, width) == (3 * (2 * 30 + 2), 130 + 3 * (16 * 30 + 2))  # 2 rows x 16
