"""Serving Splits to a Lightning Trainer from the training device.

Apart from data.py so that reading data (aesweep.load, encode) never imports Lightning.
"""

from __future__ import annotations

import pytorch_lightning as pl

from aesweep.data import Splits, TensorBatches


class TensorDataModule(pl.LightningDataModule):
    """Serves Splits to a Trainer from the training device: the splits move there once, and
    every batch is a slice there. Under DDP each rank trains on an equal shard."""

    def __init__(
        self,
        splits: Splits,
        batch_size: int,
        seed: int = 0,
        steps_per_call: int = 1,
        eval_batch_size: int = 1000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters("batch_size")  # in checkpoints: resume checks it
        self.splits, self.batch_size, self.seed = splits, batch_size, seed
        self.steps_per_call, self.eval_batch_size = steps_per_call, eval_batch_size

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        self.train_x = self.splits.train_x.to(device)
        self.val_x = self.splits.val_x.to(device)

    def _position(self) -> tuple[int, int]:
        """(epoch, batches done in it), as Lightning's loops count them (restored on resume)."""
        return (
            self.trainer.current_epoch,
            self.trainer.fit_loop.epoch_loop.batch_progress.current.ready,
        )

    def train_dataloader(self) -> TensorBatches:
        x, world = self.train_x, self.trainer.world_size
        if world > 1:  # equal shards, or ranks would disagree on the number of steps
            per_rank = len(x) // world
            x = x[self.trainer.global_rank * per_rank : (self.trainer.global_rank + 1) * per_rank]
        return TensorBatches(
            x, self.batch_size, True, self.seed, self._position, chunk=self.steps_per_call
        )

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.val_x, self.eval_batch_size, shuffle=False)
