"""One run end to end: artefacts, the metrics contract, reproducibility and divergence."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from aesweep.data import load_splits
from tests.conftest import SMOKE, result_of, run_subprocess

CONTRACT = [
    "test_mse",
    "test_sse",
    "pca_test_mse",
    "pca_test_sse",
    "val_mse",
    "val_sse",
    "train_mse",
    "train_sse",
    "n_train",
    "n_val",
    "n_test",
    "epochs",
    "seconds",
    "n_params",
    "status",
    "error",
]


def test_smoke_run_writes_every_artefact_of_the_contract(aesweep, tmp_path: Path) -> None:
    outcome = aesweep("train", "dim_z=8", *SMOKE, "hydra.run.dir=run")
    assert outcome.code == 0, outcome.err
    run = tmp_path / "run"
    for name in [
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "metrics.csv",
        "checkpoints/last.ckpt",
        "reconstructions.png",
        "result.json",
    ]:
        assert (run / name).is_file(), name

    result = result_of(run)
    assert set(CONTRACT) <= set(result)
    assert result["status"] == "ok" and result["error"] is None
    assert (result["model"], result["recipe"], result["optimizer"]) == (
        "residual",
        "default",
        "adamw",
    )
    numbers = {k: v for k, v in result.items() if k in CONTRACT and k not in ("status", "error")}
    assert all(math.isfinite(v) for v in numbers.values())
    d = result["input_dim"]
    assert d == 784
    for split in ("test", "val", "train"):
        assert result[f"{split}_sse"] == pytest.approx(d * result[f"{split}_mse"], rel=1e-5)
    # PCA recomputed independently (numpy SVD) on the same split, scored on the same images
    splits = load_splits(OmegaConf.load(run / ".hydra" / "config.yaml").data)
    train, test = splits.train_x.double().numpy(), splits.test_x.double().numpy()
    mean = train.mean(0)
    top = np.linalg.svd(train - mean, full_matrices=False)[2][:8]
    recon = (test - mean) @ top.T @ top + mean
    assert result["pca_test_sse"] == pytest.approx(((recon - test) ** 2).sum(1).mean(), rel=1e-5)
    assert result["pca_test_mse"] == pytest.approx(result["pca_test_sse"] / d, rel=1e-9)
    assert 0 < result["pca_test_mse"] < 0.25 and 0 < result["test_mse"] < 1
    assert (result["n_train"], result["n_val"], result["n_test"]) == (300, 500, 500)
    assert result["epochs"] == 2 and result["seconds"] > 0
    widths = [784, 256, 256, 256, 8]  # model=residual: branch g, its mirror h, the PCA path
    branch = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    mirror = sum(a * b + b for a, b in zip(widths[:0:-1], widths[-2::-1], strict=True))
    assert result["n_params"] == branch + mirror + (784 * 8 + 8) + (8 * 784 + 784)

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == result["steps"] == 2 * 5  # 300 images in batches of 64
    assert ckpt["hyper_parameters"]["dim_z"] == 8
    metrics = pd.read_csv(run / "metrics.csv")
    assert {"train_loss", "val_loss", "test_mse", "test_sse"} <= set(metrics.columns)
    assert metrics["test_mse"].dropna().iloc[-1] == pytest.approx(result["test_mse"], rel=1e-6)

    height, width = matplotlib.image.imread(run / "reconstructions.png").shape[:2]
    assert (height, width) == (3 * (2 * 30 + 2), 130 + 3 * (10 * 30 + 2))  # 2 rows x 10 digits

    last_lines = outcome.out.strip().splitlines()[-2:]
    assert last_lines[0] == f"run folder: {run}"
    assert last_lines[1].startswith("dim_z=8: test_sse=") and "PCA at k=8" in last_lines[1]


def test_same_seed_gives_identical_metrics_and_another_seed_differs(aesweep, tmp_path) -> None:
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        assert (
            aesweep("train", "dim_z=4", f"seed={seed}", *SMOKE, f"hydra.run.dir={name}").code == 0
        )
    a, b, c = (result_of(tmp_path / n) for n in "abc")
    metrics = ["test_mse", "test_sse", "val_mse", "train_mse"]
    assert [a[m] for m in metrics] == [b[m] for m in metrics]
    assert a["test_mse"] != c["test_mse"]


@pytest.mark.parametrize("steps_per_call", [1, 2])
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(
    aesweep, tmp_path, steps_per_call
) -> None:
    explode = "scheduler={_target_:torch.optim.lr_scheduler.ExponentialLR,_partial_:true,gamma:1e4}"
    outcome = aesweep(
        "train",
        "dim_z=4",
        "model=mlp",
        "recipe=lecture",  # its scheduler slot is free
        *SMOKE,
        f"steps_per_call={steps_per_call}",
        "trainer.max_epochs=5",
        "model.output=identity",
        "optimizer=sgd",
        "optimizer.lr=1e-3",
        explode,
        "hydra.run.dir=run",
    )
    assert outcome.code == 1
    result = result_of(tmp_path / "run")
    assert result["status"] == "failed"
    where = re.search(r"became (nan|inf) at epoch (\d+), step (\d+)", result["error"])
    assert where and "try a lower optimizer.lr" in result["error"], result["error"]
    epoch = int(where.group(2))
    assert 1 <= epoch < 5  # stopped at once, not at the end of training
    assert outcome.lines[-1] == f"aesweep: error: {result['error']}"
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["epoch"] < epoch  # saved at the end of an earlier epoch, with finite weights
    assert all(torch.isfinite(w).all() for w in ckpt["state_dict"].values())


def test_the_first_non_finite_step_is_the_one_named(aesweep, tmp_path, monkeypatch) -> None:
    """The step losses of an epoch sit in one device buffer, read every log_every_n_steps
    steps: the error names the step whose loss first stopped being finite."""
    from aesweep.model import AutoEncoder

    loss_of = AutoEncoder._training_loss

    def nan_from_step_7(self, x):
        loss = loss_of(self, x)
        return loss * float("nan") if self.global_step >= 7 else loss

    monkeypatch.setattr(AutoEncoder, "_training_loss", nan_from_step_7)
    args = ("dim_z=4", *SMOKE, "trainer.max_epochs=4", "trainer.log_every_n_steps=3")
    assert aesweep("train", *args, "hydra.run.dir=run").code == 1
    error = result_of(tmp_path / "run")["error"]
    assert error.startswith("training loss became nan at epoch 1, step 7; "), error


def test_ddp_relaunches_its_workers_through_the_cli_and_rank_0_records_the_run(tmp_path) -> None:
    """Lightning re-launches sys.argv[0] for rank 1 without the `train` subcommand."""
    run = tmp_path / "run"
    done = run_subprocess("train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                          "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "dim_z=4",
                          "data.subset=600", f"hydra.run.dir={run}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = result_of(run)
    assert result["status"] == "ok" and result["n_train"] == 600
    assert result["steps"] == 2 * 5  # each rank trains on its 300 images in batches of 64
    assert (run / "train_ddp_process_1.log").is_file()


@pytest.mark.parametrize("precision", ["64-true", "bf16-mixed", "bf16-true", "16-mixed"])
def test_every_precision_trains_and_is_scored_in_float32(aesweep, tmp_path, precision) -> None:
    from aesweep.model import AutoEncoder

    args = ("train", "dim_z=8", *SMOKE, f"trainer.precision={precision}", "hydra.run.dir=run")
    assert aesweep(*args).code == 0
    result = result_of(tmp_path / "run")
    assert result["status"] == "ok"
    model = AutoEncoder.load_from_checkpoint(tmp_path / "run/checkpoints/best.ckpt").float()
    test_x = load_splits(OmegaConf.load(tmp_path / "run/.hydra/config.yaml").data).test_x
    with torch.no_grad():
        expected = (model(test_x) - test_x).pow(2).sum(1).mean().item()
    assert result["test_sse"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "recipe", [[], ["model=linear", "recipe=linear"]]
)  # no scheduler; cosine per epoch
def test_several_steps_per_call_make_exactly_the_same_run(aesweep, tmp_path, recipe) -> None:
    args = (
        "train",
        "dim_z=8",
        *recipe,
        "trainer=smoke",
        "data.subset=1000",
        "data.batch_size=128",
        "trainer.max_epochs=3",
    )
    for k in (1, 3):  # 8 batches an epoch: chunks of 3, 3 and 2
        assert aesweep(*args, f"steps_per_call={k}", f"hydra.run.dir=k{k}").code == 0
    one, three = result_of(tmp_path / "k1"), result_of(tmp_path / "k3")
    assert one["steps"] == three["steps"] == 3 * 8
    for metric in ("train_sse", "val_sse", "test_sse"):
        assert one[metric] == three[metric], metric
    a, b = (
        torch.load(tmp_path / f"k{k}/checkpoints/last.ckpt", weights_only=False) for k in (1, 3)
    )
    assert all(torch.equal(a["state_dict"][n], b["state_dict"][n]) for n in a["state_dict"])
    assert a["lr_schedulers"] == b["lr_schedulers"]
    metrics = [pd.read_csv(tmp_path / f"k{k}/metrics.csv") for k in (1, 3)]
    curves = [m["train_loss"].dropna() for m in metrics]
    assert curves[0].tolist() == curves[1].tolist() and len(curves[0]) == 3
    logged = [m.dropna(subset="train_loss_step")[["step", "train_loss_step"]] for m in metrics]
    assert logged[0].values.tolist() == logged[1].values.tolist() and len(logged[0]) == 3 * 8


@pytest.mark.parametrize(
    ("trainer", "asked", "expected"),
    [
        ({"accelerator": "gpu", "devices": 1}, None, 32),  # Lightning's per-step cost matters
        ({"accelerator": "gpu", "devices": [1]}, None, 32),
        ({"accelerator": "gpu", "devices": 2}, None, 1),  # DDP: Lightning's own loop
        ({"accelerator": "cpu", "devices": 1}, None, 1),  # chunks gain ~5% on a CPU
        ({"accelerator": "cpu", "devices": 2}, None, 1),
        ({"accelerator": "gpu", "devices": 1, "gradient_clip_val": 0.5}, None, 1),  # silently
        ({"accelerator": "cpu", "devices": 1, "max_steps": 10}, None, 1),
        ({"accelerator": "cpu", "devices": 1}, 4, 4),
    ],
)
def test_steps_per_call_null_is_32_on_one_gpu_and_1_elsewhere(trainer, asked, expected, capsys):
    from aesweep.train import steps_per_call

    cfg = OmegaConf.create({"trainer": trainer, "steps_per_call": asked})
    assert steps_per_call(cfg) == expected
    assert capsys.readouterr().err == ""


def test_a_setting_the_chunked_loop_cannot_honour_runs_plain_with_a_notice(aesweep) -> None:
    outcome = aesweep("train", "dim_z=4", *SMOKE, "steps_per_call=4",
                      "trainer.gradient_clip_val=0.5", "hydra.run.dir=run")  # fmt: skip
    assert outcome.code == 0, outcome.err
    assert (
        "aesweep: steps_per_call=4 runs as 1: trainer.gradient_clip_val=0.5 needs Lightning's "
        "optimizer loop"
    ) in outcome.err.splitlines()
