"""Closed-form PCA: agrees with numpy, falls monotonically in k, reaches zero at k = d, and
is computed once per data configuration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aesweep.pca import cached_pca, fit_pca


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
    rng = np.random.default_rng(1)
    train, test = torch.rand(300, 64), torch.rand(40, 64)
    del rng
    sse = fit_pca(train, test).test_sse
    assert torch.all(sse[1:] <= sse[:-1] + 1e-9)
    assert float(sse[-1]) == pytest.approx(0.0, abs=1e-9) and float(sse[0]) > 1


def test_pca_is_cached_per_data_configuration(tmp_path, monkeypatch) -> None:
    train, test = torch.rand(100, 16), torch.rand(20, 16)
    cfg = {"name": "toy", "subset": None, "batch_size": 8}
    first = cached_pca(cfg, tmp_path, train, test)
    assert len(list(tmp_path.glob("pca-*.pt"))) == 1
    monkeypatch.setattr("aesweep.pca.fit_pca", lambda *a: pytest.fail("recomputed"))
    assert cached_pca({**cfg, "batch_size": 64}, tmp_path, train, test) is first
    from aesweep import pca

    pca._memory.clear()  # a new process: read from disk
    again = cached_pca(cfg, tmp_path, train, test)
    assert torch.equal(again.test_sse, first.test_sse)
