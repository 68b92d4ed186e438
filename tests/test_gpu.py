"""The GPU paths: data on the device, chunked steps, precision, resume, the divergence
guard. Run where CUDA is visible (`pytest -m gpu`); skipped, with the reason, elsewhere."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from tests.test_train import result_of

pytestmark = pytest.mark.gpu
GPU = [
    "trainer=gpu",
    "trainer.max_epochs=3",
    "data.subset=500",
    "trainer.enable_progress_bar=false",
]


def test_a_chunked_gpu_run_matches_the_plain_one(aesweep, tmp_path) -> None:
    for k in (1, 4):
        assert (
            aesweep("train", "dim_z=8", *GPU, f"steps_per_call={k}", f"hydra.run.dir=k{k}").code
            == 0
        )
    one, four = result_of(tmp_path / "k1"), result_of(tmp_path / "k4")
    assert one["steps"] == four["steps"] == 3 * 4
    assert four["test_sse"] == pytest.approx(one["test_sse"], rel=1e-4)  # cuBLAS may reorder sums


@pytest.mark.parametrize(
    "recipe",
    [[], ["model=mlp", "recipe=lecture", "model.hidden=[64]"], ["trainer.precision=64-true"]],
)
def test_the_cuda_graph_replays_exactly_the_eager_steps(aesweep, tmp_path, monkeypatch, recipe):
    """The default model draws input noise each step: the graph must see the same noise."""
    from aesweep.model import CapturedStep

    replays = []
    run = CapturedStep.run
    monkeypatch.setattr(CapturedStep, "run", lambda self, x: replays.append(1) or run(self, x))
    for name, graph in (("graphed", "true"), ("eager", "false")):
        args = ("train", "dim_z=8", *GPU, *recipe, "steps_per_call=4", f"cuda_graph={graph}")
        assert aesweep(*args, f"hydra.run.dir={name}").code == 0
    assert len(replays) == 3 * 3  # 3 full batches of 128 an epoch (the tail of 116 runs eagerly)
    graphed, eager = result_of(tmp_path / "graphed"), result_of(tmp_path / "eager")
    assert graphed["steps"] == eager["steps"] == 3 * 4
    for metric in ("train_sse", "val_sse", "test_sse"):
        assert graphed[metric] == pytest.approx(eager[metric], rel=1e-5), metric


def test_a_gpu_run_chunks_its_steps_by_default(aesweep, tmp_path) -> None:
    assert aesweep("train", "dim_z=8", *GPU, "hydra.run.dir=run").code == 0
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["steps_per_call"] == 32


def test_the_splits_live_on_the_gpu(tmp_path) -> None:
    import pytorch_lightning as pl

    from aesweep.data import Splits, TensorDataModule

    x, y = torch.rand(64, 4), torch.zeros(64, dtype=torch.long)
    module = TensorDataModule(Splits(x, y, x, y, x, y, (1, 2, 2)), batch_size=16)
    module.trainer = pl.Trainer(accelerator="gpu", devices=1, logger=False)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert module.train_x.is_cuda and batch.is_cuda


def test_a_sweep_on_the_gpu_writes_its_report(aesweep, tmp_path) -> None:
    assert (
        aesweep("sweep", "sweep.dims=[8,2]", *GPU, "steps_per_call=4", "hydra.sweep.dir=sw").code
        == 0
    )
    table = pd.read_csv(tmp_path / "sw" / "loss_vs_dim.csv")
    assert table["status"].tolist() == ["ok", "ok"]


def test_a_gpu_run_resumed_mid_epoch_matches_one_never_interrupted(aesweep, tmp_path, monkeypatch):
    from aesweep.model import AutoEncoder

    args = ("train", "dim_z=8", *GPU, "steps_per_call=2")
    assert aesweep(*args, "hydra.run.dir=whole").code == 0
    train_step = AutoEncoder.training_step

    def ctrl_c_at_step_6(self, batch, batch_idx):
        if self.global_step == 6:
            raise KeyboardInterrupt
        return train_step(self, batch, batch_idx)

    monkeypatch.setattr(AutoEncoder, "training_step", ctrl_c_at_step_6)
    assert aesweep(*args, "hydra.run.dir=split").code == 130
    monkeypatch.setattr(AutoEncoder, "training_step", train_step)
    assert aesweep("train", "resume=split").code == 0
    whole, split = result_of(tmp_path / "whole"), result_of(tmp_path / "split")
    assert whole["steps"] == split["steps"] == 12
    assert split["test_sse"] == pytest.approx(whole["test_sse"], rel=1e-4)


def test_divergence_on_the_gpu_names_the_step_and_keeps_a_finite_checkpoint(aesweep, tmp_path):
    explode = "scheduler={_target_:torch.optim.lr_scheduler.ExponentialLR,_partial_:true,gamma:1e4}"
    outcome = aesweep("train", "dim_z=4", *GPU, "trainer.max_epochs=5", "steps_per_call=4",
                      "model=mlp", "recipe=lecture", "model.output=identity", "optimizer=sgd",
                      "optimizer.lr=1e-3", explode, "hydra.run.dir=run")  # fmt: skip
    assert outcome.code == 1
    error = result_of(tmp_path / "run")["error"]
    assert re.search(r"became (nan|inf) at epoch \d+, step \d+", error), error
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    assert all(torch.isfinite(w).all() for w in ckpt["state_dict"].values())


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "bf16-true"])
def test_gpu_precisions_train_and_are_scored_in_float32(aesweep, tmp_path, precision) -> None:
    from omegaconf import OmegaConf

    from aesweep.data import load_splits
    from aesweep.model import AutoEncoder

    args = ("train", "dim_z=8", *GPU, f"trainer.precision={precision}", "matmul_precision=high")
    assert aesweep(*args, "hydra.run.dir=run").code == 0
    result = result_of(tmp_path / "run")
    ckpt = tmp_path / "run/checkpoints/last.ckpt"
    model = AutoEncoder.load_from_checkpoint(ckpt, map_location="cpu").float()
    test_x = load_splits(OmegaConf.load(tmp_path / "run/.hydra/config.yaml").data).test_x
    torch.set_float32_matmul_precision("highest")
    with torch.no_grad():
        expected = (model(test_x) - test_x).pow(2).sum(1).mean().item()
    assert result["test_sse"] == pytest.approx(expected, rel=1e-5)
