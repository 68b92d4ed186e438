"""The experiments beyond one run: capacity curves, latent plots, report.md, hinton2006."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aesweep.plots import draw_latent
from aesweep.report import collect, draw_loss_vs_dim
from tests.conftest import SMOKE, result_of
from tests.test_data import write_idx


def test_capacity_draws_one_curve_and_one_montage_per_architecture(aesweep, tmp_path) -> None:
    outcome = aesweep("sweep", "experiment=capacity", "sweep.dims=[4,2]", *SMOKE,
                      "trainer.max_epochs=2", "data.subset=200", "hydra.sweep.dir=sw")  # fmt: skip
    assert outcome.code == 0, outcome.err
    sweep = tmp_path / "sw"
    table = pd.read_csv(sweep / "loss_vs_dim.csv", dtype={"model.hidden": str})
    assert sorted(set(table["model.hidden"])) == ["[1000,500,250]", "[256,64]", "[]"]
    assert len(table) == 6 and (table["status"] == "ok").all()
    labels = sorted(line.get_label() for line in draw_loss_vs_dim(collect(sweep)).axes[0].lines)
    assert labels == ["AE model.hidden=[1000,500,250]", "AE model.hidden=[256,64]",
                      "AE model.hidden=[]", "PCA (closed form)"]  # fmt: skip
    montages = sorted(p.name for p in sweep.glob("reconstructions_*.png"))
    assert montages == ["reconstructions_model.hidden=1000-500-250.png",
                        "reconstructions_model.hidden=256-64.png",
                        "reconstructions_model.hidden=none.png"]  # fmt: skip
    deep = result_of(sweep / "dim_z=2,model.hidden=[1000,500,250]")
    assert deep["n_params"] > 2 * 784 * 1000


def test_latent_plot_has_one_colour_per_label_present() -> None:
    codes = np.random.default_rng(0).normal(size=(60, 2))
    labels = np.repeat([1, 3, 7], 20)
    ax = draw_latent(codes, labels).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1", "3", "7"]
    colours = {tuple(np.round(c.get_facecolor()[0], 3)) for c in ax.collections}
    assert len(ax.collections) == 3 and len(colours) == 3
    strip = draw_latent(codes[:, :1], labels).axes[0]
    assert strip.get_ylabel() == "digit label" and len(strip.collections) == 3


def test_runs_with_one_or_two_code_units_draw_their_latent_space(aesweep, tmp_path) -> None:
    assert aesweep("sweep", "sweep.dims=[4,2,1]", *SMOKE, "hydra.sweep.dir=sw").code == 0
    sweep = tmp_path / "sw"
    assert (sweep / "dim_z=2" / "latent.png").is_file()
    assert (sweep / "dim_z=1" / "latent.png").is_file()
    assert not (sweep / "dim_z=4" / "latent.png").exists()
    report = (sweep / "report.md").read_text()
    assert "[latent.png](dim_z=2/latent.png)" in report
    assert "[latent.png](dim_z=1/latent.png)" in report


def test_report_md_tells_the_whole_sweep(aesweep, tmp_path: Path) -> None:
    assert aesweep("sweep", "sweep.dims=[8,2]", *SMOKE, "hydra.sweep.dir=sw").code == 0
    sweep = tmp_path / "sw"
    report = (sweep / "report.md").read_text()
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert "```bash\naesweep train -m trainer=smoke data.subset=300 dim_z=8,2\n```" in report
    assert "![test error vs dim(z)](loss_vs_dim.png)" in report
    assert "![reconstructions](reconstructions.png)" in report
    assert "## Against PCA" in report
    for _, row in table.iterrows():
        assert f"| {row['dim_z']} | {row['test_sse']:.4g} | {row['pca_test_sse']:.4g} |" in report
        assert f"- [dim_z={row['dim_z']}](dim_z={row['dim_z']}/) (ok)" in report
    for link in ("loss_vs_dim.png", "reconstructions.png", "dim_z=8/result.json"):
        assert (sweep / link).is_file()


def test_the_hinton2006_recipe_runs_offline_on_a_tiny_idx_subset(aesweep, tmp_path) -> None:
    write_idx(tmp_path / "idx" / "MNIST" / "raw", n_train=80, n_test=20)
    outcome = aesweep("train", "experiment=hinton2006", "data.root=idx", "data.n_val=10",
                      "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                      "hydra.run.dir=run")  # fmt: skip
    assert outcome.code == 0, outcome.err
    result = result_of(tmp_path / "run")
    assert (result["dim_z"], result["hidden"], result["kind"]) == (30, [1000, 500, 250], "residual")
    assert (result["data"], result["n_train"], result["n_test"]) == ("mnist", 70, 20)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["lr_schedulers"][0]["T_max"] == 1  # cosine over every step: 70 images, 1 batch
