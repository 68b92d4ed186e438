"""The default model contains PCA, is chosen on validation alone, and sweeps over seeds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from aesweep.data import Splits
from aesweep.pca import fit_pca
from aesweep.report import accuracy_figure, collect, draw_loss_vs_dim
from aesweep.train import build_model
from tests.conftest import SMOKE, composed, result_of


@pytest.mark.parametrize("k", [1, 7, 20])
def test_the_untrained_residual_model_is_pca(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    x = torch.rand(300, 20, generator=gen).pow(3)  # in [0, 1], skewed
    splits = Splits(x[:200], x[:200, 0], x[200:250], x[:50, 0], x[250:], x[:50, 0], (1, 4, 5))
    fit = fit_pca(splits.train_x, splits.test_x)
    cfg = composed(f"dim_z={k}", "model.output=identity", "data.image_shape=[1,4,5]")
    model = build_model(cfg, splits, fit).eval()
    with torch.no_grad():
        sse = (model(splits.test_x) - splits.test_x).pow(2).sum(1).mean()
    assert float(sse) == pytest.approx(float(fit.test_sse[k]), rel=1e-4, abs=1e-6)
    clamped = build_model(composed(f"dim_z={k}", "data.image_shape=[1,4,5]"), splits, fit)
    with torch.no_grad():  # clipping to [0, 1] can only bring pixels in [0, 1] closer
        clipped = (clamped.eval()(splits.test_x) - splits.test_x).pow(2).sum(1).mean()
    assert float(clipped) <= float(sse) + 1e-6


def test_weight_decay_acts_on_the_branch_weights_only() -> None:
    cfg = composed("optimizer.weight_decay=0.1", "scheduler=null")  # AdamW: the default
    model = build_model(cfg, Splits(*[torch.rand(20, 784), torch.zeros(20)] * 3, (1, 28, 28)),
                        fit_pca(torch.rand(20, 784), torch.rand(5, 784)))  # fmt: skip
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    weights, biases, pca_path = optimizer.param_groups
    decay = [g["weight_decay"] for g in (weights, biases, pca_path)]
    assert decay == [0.1, 0.0, 0.0]
    branches = [*model.encoder.named_parameters(), *model.decoder.named_parameters()]
    assert {id(p) for p in weights["params"]} == {id(p) for n, p in branches if "weight" in n}
    assert {id(p) for p in biases["params"]} == {id(p) for n, p in branches if "bias" in n}
    assert {id(p) for p in pca_path["params"]} == {
        id(p) for p in [*model.linear_encoder.parameters(), *model.linear_decoder.parameters()]
    }
    assert pca_path["lr"] == pytest.approx(weights["lr"] * 0.1) == biases["lr"] * 0.1


def test_select_best_keeps_the_best_validation_and_scores_test_once(aesweep, tmp_path) -> None:
    args = ("train", "dim_z=4", *SMOKE, "trainer.max_epochs=4", "hydra.run.dir=run")
    assert aesweep(*args).code == 0
    result = result_of(tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    val = metrics.loc[metrics["test_mse"].isna(), "val_mse"].dropna().tolist()
    assert len(val) == 4  # one validation an epoch; the test split is scored after, once
    best = min(range(len(val)), key=val.__getitem__)
    assert result["best_epoch"] == best + 1 and result["epochs"] == 4
    assert result["val_mse"] == pytest.approx(val[best], rel=1e-5)  # the kept weights' score


def test_patience_stops_a_run_that_stops_improving(aesweep, tmp_path) -> None:
    # lr 0 never improves on the start (PCA): the run stops after `patience` validations
    args = ("train", "dim_z=4", *SMOKE, "trainer.max_epochs=20", "patience=3", "optimizer.lr=1e-12")
    assert aesweep(*args, "hydra.run.dir=run").code == 0
    result = result_of(tmp_path / "run")
    assert (result["epochs"], result["best_epoch"]) == (3, 0)  # epoch 0: the untrained PCA
    assert result["test_sse"] <= result["pca_test_sse"] + 1e-4


def test_a_sweep_over_seeds_reports_mean_and_spread(aesweep, tmp_path: Path) -> None:
    args = ("sweep", "sweep.dims=[4,2]", "sweep.seeds=[0,1]", *SMOKE, "hydra.sweep.dir=sw")
    assert aesweep(*args).code == 0
    sweep = tmp_path / "sw"
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert sorted(zip(table["dim_z"], table["seed"], strict=True)) == [
        (2, 0),
        (2, 1),
        (4, 0),
        (4, 1),
    ]
    assert table.groupby("dim_z")["test_sse"].nunique().tolist() == [2, 2]  # seeds differ
    report = (sweep / "report.md").read_text()
    assert "every one of 2 seeds" in report and "| n_seeds |" in report
    ax = draw_loss_vs_dim(collect(sweep)).axes[0]
    assert [line.get_label() for line in ax.lines][0] == "AE (mean of 2 seeds, band: min-max)"
    assert len(ax.collections) == 1  # the band
    accuracy = accuracy_figure(collect(sweep)).axes[0]  # the probes: mean and spread too
    assert "mean of 2 seeds, band: min-max" in accuracy.get_title()
    assert len(accuracy.collections) == 2  # linear probe and 5-NN bands
    assert "| dim_z | n_seeds | probe_acc | probe_acc_min | probe_acc_max |" in report


def test_sweep_seeds_must_be_distinct(aesweep) -> None:
    outcome = aesweep("sweep", "sweep.seeds=[1,1]", *SMOKE)
    assert outcome.code == 2 and outcome.lines == [
        "aesweep: error: sweep.seeds=[1,1] is invalid: must be null or a list of distinct "
        "integers >= 0, e.g. [0,1,2]"
    ]
