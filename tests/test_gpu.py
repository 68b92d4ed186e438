"""The GPU paths: data on the device, chunked steps, precision, resume, the divergence
guard. Run where CUDA is visible (`pytest -m gpu`); skipped, with the reason, elsewhere.
Their expected step and replay counts come from the composed config, an arithmetic that a
CPU test checks against a real run."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch

from aesweep.data import load_splits
from aesweep.train import steps_per_call
from tests.conftest import composed, result_of

gpu = pytest.mark.gpu
GPU = [
    "trainer=gpu",
    "trainer.max_epochs=3",
    "data.subset=500",
    "trainer.enable_progress_bar=false",
]


def steps_and_replays(*overrides: str) -> tuple[int, int]:
    """(optimizer steps, CUDA-graph replays) of a run with these overrides that trains all
    its max_epochs: one step per mini-batch of the training split; with chunked steps and
    cuda_graph, one replay per full mini-batch (the shorter tail runs eagerly)."""
    cfg = composed(*overrides)
    n_train, batch = len(load_splits(cfg.data).train_x), cfg.data.batch_size
    graphed = steps_per_call(cfg) > 1 and cfg.cuda_graph
    per_epoch = (math.ceil(n_train / batch), n_train // batch if graphed else 0)
    return per_epoch[0] * cfg.trainer.max_epochs, per_epoch[1] * cfg.trainer.max_epochs


def test_the_step_and_replay_arithmetic_matches_a_real_run(aesweep, tmp_path, monkeypatch):
    """On the CPU, chunked steps take the path the GPU graphs replay: every full mini-batch
    would be one replay there."""
    from aesweep.fast import ChunkedAutoEncoder

    full_batches = []
    step = ChunkedAutoEncoder._forward_backward

    def counted(self, x, optimizer):
        full_batches.append(len(x) == self.trainer.datamodule.batch_size)
        return step(self, x, optimizer)

    monkeypatch.setattr(ChunkedAutoEncoder, "_forward_backward", counted)
    on_cpu = ("trainer.accelerator=cpu", *GPU[1:], "steps_per_call=4")
    assert aesweep("train", "dim_z=8", *on_cpu, "hydra.run.dir=run").code == 0
    steps, replays = steps_and_replays(*GPU, "steps_per_call=4")
    assert result_of(tmp_path / "run")["steps"] == len(full_batches) == steps
    assert sum(full_batches) == replays > 0
    assert steps_and_replays(*GPU, "steps_per_call=4", "cuda_graph=false")[1] == 0


@gpu
def test_a_chunked_gpu_run_matches_the_plain_one(aesweep, tmp_path) -> None:
    for k in (1, 4):
        assert (
            aesweep("train", "dim_z=8", *GPU, f"steps_per_call={k}", f"hydra.run.dir=k{k}").code
            == 0
        )
    one, four = result_of(tmp_path / "k1"), result_of(tmp_path / "k4")
    assert one["steps"] == four["steps"] == steps_and_replays(*GPU)[0]
    assert four["test_sse"] == pytest.approx(one["test_sse"], rel=1e-4)  # cuBLAS may reorder sums


@gpu
@pytest.mark.parametrize(
    "recipe",
    [[], ["model=mlp", "recipe=lecture", "model.hidden=[64]"], ["trainer.precision=64-true"]],
)
def test_the_cuda_graph_replays_exactly_the_eager_steps(aesweep, tmp_path, monkeypatch, recipe):
    """The default model draws input noise each step: the graph must see the same noise."""
    from aesweep.fast import CapturedStep

    replays = []
    run = CapturedStep.run
    monkeypatch.setattr(CapturedStep, "run", lambda self, x: replays.append(1) or run(self, x))
    for name, graph in (("graphed", "true"), ("eager", "false")):
        args = ("train", "dim_z=8", *GPU, *recipe, "steps_per_call=4", f"cuda_graph={graph}")
        assert aesweep(*args, f"hydra.run.dir={name}").code == 0
    steps, expected_replays = steps_and_replays(*GPU, *recipe, "steps_per_call=4")
    assert len(replays) == expected_replays
    graphed, eager = result_of(tmp_path / "graphed"), result_of(tmp_path / "eager")
    assert graphed["steps"] == eager["steps"] == steps
    for metric in ("train_sse", "val_sse", "test_sse"):
        assert graphed[metric] == pytest.approx(eager[metric], rel=1e-5), metric


@gpu
def test_a_gpu_run_chunks_its_steps_by_default(aesweep, tmp_path) -> None:
    assert aesweep("train", "dim_z=8", *GPU, "hydra.run.dir=run").code == 0
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["steps_per_call"] == 32


@gpu
def test_the_splits_live_on_the_gpu(tmp_path) -> None:
    import pytorch_lightning as pl

    from aesweep.data import Splits
    from aesweep.datamodule import TensorDataModule

    x, y = torch.rand(64, 4), torch.zeros(64, dtype=torch.long)
    module = TensorDataModule(Splits(x, y, x, y, x, y, (1, 2, 2)), batch_size=16)
    module.trainer = pl.Trainer(accelerator="gpu", devices=1, logger=False)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert module.train_x.is_cuda and batch.is_cuda


@gpu
def test_a_sweep_on_the_gpu_writes_its_report(aesweep, tmp_path) -> None:
    assert (
        aesweep("sweep", "sweep.dims=[8,2]", *GPU, "steps_per_call=4", "hydra.sweep.dir=sw").code
        == 0
    )
    table = pd.read_csv(tmp_path / "sw" / "loss_vs_dim.csv")
    assert table["status"].tolist() == ["ok", "ok"]


@gpu
def test_a_gpu_run_resumed_mid_epoch_matches_one_never_interrupted(aesweep, tmp_path, monkeypatch):
    from aesweep.fast import ChunkedAutoEncoder

    args = ("train", "dim_z=8", *GPU, "steps_per_call=2")
    assert aesweep(*args, "hydra.run.dir=whole").code == 0
    train_step = ChunkedAutoEncoder.training_step

    def ctrl_c_at_step_6(self, batch, batch_idx):
        if self.global_step == 6:
            raise KeyboardInterrupt
        return train_step(self, batch, batch_idx)

    monkeypatch.setattr(ChunkedAutoEncoder, "training_step", ctrl_c_at_step_6)
    assert aesweep(*args, "hydra.run.dir=split").code == 130
    monkeypatch.setattr(ChunkedAutoEncoder, "training_step", train_step)
    assert aesweep("train", "resume=split").code == 0
    whole, split = result_of(tmp_path / "whole"), result_of(tmp_path / "split")
    assert whole["steps"] == split["steps"] == steps_and_replays(*GPU)[0]
    assert split["test_sse"] == pytest.approx(whole["test_sse"], rel=1e-4)


@gpu
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


@gpu
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "bf16-true"])
def test_gpu_precisions_train_and_are_scored_in_float32(aesweep, tmp_path, precision) -> None:
    from omegaconf import OmegaConf

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
