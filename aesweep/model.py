"""The LightningModule that trains an AutoEncoderNet: loss, steps, logging, optimizer groups.

Lightning's own loop runs every step here; fast.py chunks steps (and replays CUDA graphs) on
a GPU, where that pays.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor

from aesweep.nets import AutoEncoderNet


class DivergenceError(RuntimeError):
    """The training loss stopped being finite."""


class AutoEncoder(AutoEncoderNet, pl.LightningModule):
    """An AutoEncoderNet and its training recipe; its state_dict is the net's, so a checkpoint
    loads into either. Training sees a leaky clamp (slope 0.01 outside [0, 1])."""

    steps_per_call = 1  # optimizer steps per training_step (fast.py: more)

    def __init__(
        self,
        input_dim: int,
        dim_z: int,
        hidden: list[int],
        activation: str = "relu",
        output: str = "sigmoid",
        loss: str = "mse",
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        center: bool = False,
        kind: str = "mlp",
        input_noise: float = 0.0,
        linear_lr_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(input_dim, dim_z, hidden, activation, output, center, kind)
        self.save_hyperparameters()

    def _training_loss(self, x: Tensor) -> Tensor:
        return self._loss_of(x, self._draw_noise(x))

    def _draw_noise(self, x: Tensor, out: Tensor | None = None) -> Tensor | None:
        """The step's input noise (None without), seeded by (seed, step): a resumed run
        draws the same."""
        if self.hparams.input_noise == 0:
            return None
        self._noise.manual_seed(self.hparams.seed * 1_000_003 + self.global_step)
        if out is not None:
            return torch.randn(x.shape, generator=self._noise, out=out)
        return torch.randn(x.shape, generator=self._noise, device=x.device, dtype=x.dtype)

    def _loss_of(self, x: Tensor, noise: Tensor | None) -> Tensor:
        """The loss of reconstructing x from x + input_noise * noise (from x, without)."""
        noisy = x if noise is None else x + self.hparams.input_noise * noise
        return self._loss_from_logits(x, self.decode_logits(self.encode(noisy)))

    def _loss_from_logits(self, x: Tensor, logits: Tensor) -> Tensor:
        name = self.hparams.loss
        if name == "bce":
            return F.binary_cross_entropy_with_logits(logits, x)
        x_hat = self._output(logits, leak=0.01)
        if name == "sse":  # summed in float32: 784 squares overflow float16's range
            return (x_hat - x).float().pow(2).sum(dim=1).mean()
        return F.mse_loss(x_hat, x) if name == "mse" else F.l1_loss(x_hat, x)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        """One optimizer step on a mini-batch, through Lightning's own loop."""
        loss = self._training_loss(batch)
        self._track(loss, len(batch))
        self._sync_every_n_steps(1)
        return loss

    def _track(self, loss: Tensor, n: int) -> None:
        """Keep the step's loss on the device (no host sync per step: each one would stall
        a GPU) with its size, epoch and step, for the epoch's mean and the divergence check.
        In one buffer per epoch: a tensor kept per step fragments the heap (+0.3-0.5 GiB
        over an epoch of 15,000 steps, docs/data.md)."""
        self._losses[len(self._sizes)] = loss.detach()
        self._sizes.append(n)
        self._where.append((self.current_epoch, self.global_step))

    def _sync_every_n_steps(self, steps: int) -> None:
        """Read the device every log_every_n_steps steps: divergence check and the step log,
        which gets every n-th step of the epoch whatever the chunk size (one read for all)."""
        every = self.trainer.log_every_n_steps
        self._unsynced += steps
        if self._unsynced >= every:
            self._unsynced = 0
            self.check_finite()
            due = [i for i in range(self._logged, len(self._sizes)) if (i + 1) % every == 0]
            values = self._losses[due].tolist() if due else []
            for i, value in zip(due, values, strict=True):
                epoch, step = self._where[i]
                for logger in self.loggers:  # every chosen logger, e.g. logger=[csv,tensorboard]
                    logger.log_metrics({"train_loss_step": value, "epoch": epoch}, step)
            self._logged = len(self._sizes)

    def check_finite(self) -> None:
        """Raise DivergenceError naming the first non-finite step not checked yet."""
        tracked = len(self._sizes)
        if self._checked == tracked:
            return
        finite = torch.isfinite(self._losses[self._checked : tracked])
        if not bool(finite.all()):
            first = self._checked + int((~finite).int().argmax())
            epoch, step = self._where[first]
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise DivergenceError(
                f"training loss became {float(self._losses[first])} at epoch {epoch}, "
                f"step {step}; try a lower optimizer.lr (now {lr:g})"
            )
        self._checked = tracked

    def on_train_start(self) -> None:
        self._noise = torch.Generator(device=self.device)
        self.on_train_epoch_start()  # a run resumed mid-epoch starts without that hook

    def on_train_epoch_start(self) -> None:
        steps = self.trainer.num_training_batches * self.steps_per_call  # at most
        self._losses = torch.empty(steps, dtype=torch.float32, device=self.device)
        self._sizes: list[int] = []
        self._where: list[tuple[int, int]] = []
        self._checked = self._unsynced = self._logged = 0

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        if self._sizes:
            losses = self._losses[: len(self._sizes)]
            mean = (losses * losses.new_tensor(self._sizes)).sum() / sum(self._sizes)
            self.log("train_loss", mean, prog_bar=True, sync_dist=True)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        log = dict(prog_bar=True, batch_size=len(batch), sync_dist=True)
        logits = self.decode_logits(self.encode(batch))  # one forward for both
        self.log("val_loss", self._loss_from_logits(batch, logits), **log)
        x_hat = self._output(logits, leak=0.0)
        self.log("val_mse", F.mse_loss(x_hat, batch), **log)  # what select=best ranks

    def configure_optimizers(self) -> Any:
        """The configured optimizer in parameter_groups, and scheduler. A scheduler may say
        `interval: step` (stepped after every optimizer step) and `T_max: null` (the run's
        length: its optimizer steps or epochs)."""
        groups = parameter_groups(self, self.hparams.optimizer["lr"], self.hparams.linear_lr_scale)
        optimizer = instantiate(self.hparams.optimizer)(groups)
        settings = dict(self.hparams.scheduler or {})
        self._interval = settings.pop("interval", "epoch")
        if not settings:
            return optimizer
        if "T_max" in settings and settings["T_max"] is None:
            epochs = self.trainer.max_epochs
            if self._interval == "step":
                self.trainer.estimated_stepping_batches  # noqa: B018 (sets the loader up)
                epochs *= self.trainer.train_dataloader.n_batches
            settings["T_max"] = epochs
        scheduler = instantiate(settings)(optimizer)
        if not self.automatic_optimization:  # training_step steps it, where Lightning would
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self._interval},
        }


def parameter_groups(net: AutoEncoderNet, lr: float, linear_lr_scale: float) -> list[dict]:
    """Weight decay acts on weight matrices only: on the residual model's branches it pulls
    the model toward PCA; biases are offsets, not capacity (the first decoder layer's biases
    place its kinks along a code that spans tens of units at k = 1), and the PCA path would
    be pulled away from PCA. The PCA path also runs at lr x linear_lr_scale."""
    linear: list[Tensor] = []
    weights: list[Tensor] = []
    biases: list[Tensor] = []
    for name, p in net.named_parameters():
        (linear if name.startswith("linear_") else weights if p.ndim >= 2 else biases).append(p)
    groups = [
        {"params": weights},
        {"params": biases, "weight_decay": 0.0},
        {"params": linear, "lr": lr * linear_lr_scale, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


@torch.no_grad()
def score(
    model: AutoEncoderNet, splits: dict[str, Tensor], batch_size: int = 1000
) -> dict[str, float]:
    """`{split}_mse` (per pixel) and `{split}_sse` (per image) of each split, in float32
    whatever precision trained the model, on the model's device. Casts the model to
    float32 in place: call it after training."""
    model.float().eval()
    torch.set_float32_matmul_precision("highest")  # no TF32 in a reported figure
    device = next(model.parameters()).device
    scores: dict[str, float] = {}
    for split, x in splits.items():
        sq_sum = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device, torch.float32)
            sq_sum += (model(batch) - batch).pow(2).sum(dtype=torch.float64)
        sse = float(sq_sum) / len(x)
        scores[f"{split}_mse"], scores[f"{split}_sse"] = sse / x.shape[1], sse
    return scores
