"""The MLP autoencoder and the LightningModule that trains and scores it."""

from __future__ import annotations

import sys
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from aesweep.config import Activation

TORCH_ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.relu: nn.ReLU,
    Activation.leaky_relu: nn.LeakyReLU,
    Activation.elu: nn.ELU,
    Activation.gelu: nn.GELU,
    Activation.silu: nn.SiLU,
    Activation.sigmoid: nn.Sigmoid,
    Activation.tanh: nn.Tanh,
    Activation.identity: nn.Identity,
}


class DivergenceError(RuntimeError):
    """The training loss stopped being finite."""


def mlp(widths: list[int], activation: str) -> nn.Sequential:
    """Linear layers through `widths`, the activation between them but not after the last:
    the code and the output logits stay linear."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i > 0 and activation != "identity":
            layers.append(TORCH_ACTIVATIONS[Activation(activation)]())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class AutoEncoder(pl.LightningModule):
    """x -> z = enc(x) -> x_hat = dec(z); the decoder mirrors the encoder's widths.

    kind=mlp: the MLPs are the encoder and decoder (`hidden=[]` is the lecture's AE).
    kind=residual: z = W_e x + b_e + g(x) and x_hat = W_d z + b_d + h(z), where g and h are
    the MLPs with their last layers starting at zero and the linear path starts at PCA
    (init_from_pca): at step 0 the model IS PCA, and training can only add to it.

    `center=True` subtracts the training mean before encoding and adds it back after decoding
    (PCA's setting). output=clamp clips pixels to [0, 1] (training sees a leaky clip, slope
    0.01 outside, so the gradient never dies). Metrics are always in pixel space: `*_mse` is
    per pixel, `*_sse` is the sum of squared errors per image.
    """

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
        steps_per_call: int = 1,
        kind: str = "mlp",
        input_noise: float = 0.0,
        linear_lr_scale: float = 1.0,
        seed: int = 0,
        cuda_graph: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = steps_per_call == 1  # else training_step steps itself
        self.encoder = mlp([input_dim, *hidden, dim_z], activation)
        self.decoder = mlp([dim_z, *reversed(hidden), input_dim], activation)
        self.register_buffer("mean", torch.zeros(input_dim))
        self.residual = kind == "residual"
        if self.residual:
            self.linear_encoder = nn.Linear(input_dim, dim_z)
            self.linear_decoder = nn.Linear(dim_z, input_dim)
            for branch in (self.encoder, self.decoder):
                nn.init.zeros_(branch[-1].weight)
                nn.init.zeros_(branch[-1].bias)

    @torch.no_grad()
    def init_from_pca(self, mean: Tensor, components: Tensor) -> None:
        """Start the residual model's linear path at PCA: mean (d,), components (k, d)."""
        self.linear_encoder.weight.copy_(components)
        self.linear_encoder.bias.copy_(-(components @ mean))
        self.linear_decoder.weight.copy_(components.T)
        self.linear_decoder.bias.copy_(mean)

    def encode(self, x: Tensor) -> Tensor:
        """Images (n, input_dim) in [0, 1] to codes (n, dim_z)."""
        x = x - self.mean if self.hparams.center else x
        z = self.encoder(x)
        return z + self.linear_encoder(x) if self.residual else z

    def decode_logits(self, z: Tensor) -> Tensor:
        """Decoder output before the output activation (what BCE-with-logits needs)."""
        out = self.decoder(z)
        out = out + self.linear_decoder(z) if self.residual else out
        return out + self.mean if self.hparams.center else out

    def decode(self, z: Tensor) -> Tensor:
        """Codes (n, dim_z) to pixels (n, input_dim), the output activation applied."""
        return self._output(self.decode_logits(z), leak=0.0)

    def _output(self, out: Tensor, leak: float) -> Tensor:
        if self.hparams.output == "sigmoid":
            return torch.sigmoid(out)
        if self.hparams.output == "clamp":
            clipped = out.clamp(0, 1)
            return clipped + leak * (out - clipped) if leak else clipped
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def _loss(self, x: Tensor, training: bool = False) -> Tensor:
        return self._loss_of(x, self._draw_noise(x) if training else None)

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

    def training_step(self, batch: Tensor | list[Tensor], batch_idx: int) -> Tensor | None:
        """One optimizer step on a mini-batch (Lightning's own loop), or, with
        steps_per_call > 1, one per mini-batch of a chunk: the same updates in the same order,
        with Lightning's per-step cost paid once per chunk."""
        if self.automatic_optimization:
            loss = self._loss(batch, training=True)
            self._track(loss, len(batch))
            self._sync_every_n_steps(1)
            return loss
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        for x in batch:
            self._track(self._forward_backward(x, optimizer), len(x))
            optimizer.step()
            if scheduler is not None and self._interval == "step":
                scheduler.step()
        last = batch_idx + 1 == self.trainer.num_training_batches
        if scheduler is not None and self._interval == "epoch" and last:
            scheduler.step()  # where Lightning steps an epoch scheduler
        self._sync_every_n_steps(len(batch))
        return None

    def _forward_backward(self, x: Tensor, optimizer: Any) -> Tensor:
        """The loss of mini-batch x, its gradients in the parameters' .grad: replayed from
        the CUDA graph where one applies (cuda_graph=true, chunked steps on one CUDA device
        at a true precision), else computed eagerly."""
        if self._graph is None and self._graphs:
            self._graph = CapturedStep(self, x)
        if self._graph is not None and x.shape == self._graph.x.shape:
            self._draw_noise(x, out=self._graph.noise)
            return self._graph.run(x)
        loss = self._loss(x, training=True)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        return loss.detach()

    def _graph_blocker(self) -> str | None:
        """Why chunked steps on this CUDA device cannot replay a graph (None: they can):
        several devices sync gradients in Lightning's backward; mixed precisions autocast."""
        if self.trainer.world_size > 1:
            return f"{self.trainer.world_size} devices"
        if not str(self.trainer.precision).endswith("-true"):
            return f"trainer.precision={self.trainer.precision} autocasts"
        return None

    def _track(self, loss: Tensor, n: int) -> None:
        """Keep the step's loss on the device (no host sync per step: each one would stall
        a GPU) with its size, epoch and step, for the epoch's mean and the divergence check."""
        self._losses.append(loss.detach())
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
            due = [i for i in range(self._logged, len(self._losses)) if (i + 1) % every == 0]
            values = torch.stack([self._losses[i] for i in due]).tolist() if due else []
            for i, value in zip(due, values, strict=True):
                epoch, step = self._where[i]
                for logger in self.loggers:  # every chosen logger, e.g. logger=[csv,tensorboard]
                    logger.log_metrics({"train_loss_step": value, "epoch": epoch}, step)
            self._logged = len(self._losses)

    def check_finite(self) -> None:
        """Raise DivergenceError naming the first non-finite step not checked yet."""
        pending = self._losses[self._checked :]
        if not pending:
            return
        finite = torch.isfinite(torch.stack(pending).float())
        if not bool(finite.all()):
            first = self._checked + int((~finite).int().argmax())
            epoch, step = self._where[first]
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise DivergenceError(
                f"training loss became {float(self._losses[first])} at epoch {epoch}, "
                f"step {step}; try a lower optimizer.lr (now {lr:g})"
            )
        self._checked = len(self._losses)

    def on_train_start(self) -> None:
        self._noise = torch.Generator(device=self.device)
        self._graph: CapturedStep | None = None
        chunked_cuda = not self.automatic_optimization and self.device.type == "cuda"
        self._graphs = bool(self.hparams.cuda_graph and chunked_cuda)
        if self._graphs and (blocker := self._graph_blocker()):
            print(f"aesweep: cuda_graph=true runs eagerly: {blocker}", file=sys.stderr)
            self._graphs = False
        self.on_train_epoch_start()  # a run resumed mid-epoch starts without that hook

    def on_train_epoch_start(self) -> None:
        self._losses: list[Tensor] = []
        self._sizes: list[int] = []
        self._where: list[tuple[int, int]] = []
        self._checked = self._unsynced = self._logged = 0

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        if self._losses:
            losses = torch.stack(self._losses).float()
            mean = (losses * losses.new_tensor(self._sizes)).sum() / sum(self._sizes)
            self.log("train_loss", mean, prog_bar=True, sync_dist=True)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        log = dict(prog_bar=True, batch_size=len(batch), sync_dist=True)
        logits = self.decode_logits(self.encode(batch))  # one forward for both
        self.log("val_loss", self._loss_from_logits(batch, logits), **log)
        x_hat = self._output(logits, leak=0.0)
        self.log("val_mse", F.mse_loss(x_hat, batch), **log)  # what select=best ranks

    def configure_optimizers(self) -> Any:
        """The configured optimizer and scheduler, in three parameter groups. Weight decay
        acts on weight matrices only: on the residual model's branches it pulls the model
        toward PCA; biases are offsets, not capacity (the first decoder layer's biases place
        its kinks along a code that spans tens of units at k = 1), and the PCA path would be
        pulled away from PCA. The PCA path also runs at lr x linear_lr_scale. A scheduler
        may say `interval: step` (stepped after every optimizer step) and `T_max: null` (the
        run's length: its optimizer steps or epochs)."""
        linear: list[Tensor] = []
        weights: list[Tensor] = []
        biases: list[Tensor] = []
        for name, p in self.named_parameters():
            (linear if name.startswith("linear_") else weights if p.ndim >= 2 else biases).append(p)
        lr = self.hparams.optimizer["lr"]
        scale = self.hparams.linear_lr_scale
        groups = [
            {"params": weights},
            {"params": biases, "weight_decay": 0.0},
            {"params": linear, "lr": lr * scale, "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
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

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class CapturedStep:
    """One training step's forward and backward on a full mini-batch, recorded once in a
    CUDA graph and replayed for every one after: one launch instead of one per kernel (these
    small models are bound by kernel launches, not by arithmetic). It computes exactly what
    the eager step computes, from the same input and noise, copied into its static buffers;
    the optimizer and the scheduler still step through Lightning, so lr, schedules and the
    step count behave as without it. Warm-up runs compute gradients but apply none."""

    def __init__(self, model: AutoEncoder, x: Tensor) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.x = x.detach().clone()
        self.noise = torch.zeros_like(x) if model.hparams.input_noise > 0 else None

        def loss_and_grads() -> tuple[Tensor, tuple[Tensor, ...]]:
            loss = model._loss_of(self.x, self.noise)
            return loss, torch.autograd.grad(loss, self.params)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # cuBLAS handles and workspaces, outside the graph
            for _ in range(3):
                loss_and_grads()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.grads = loss_and_grads()

    def run(self, x: Tensor) -> Tensor:
        """The loss of x (a copy: the next replay overwrites the graph's), grads in .grad."""
        self.x.copy_(x)
        self.graph.replay()
        for param, grad in zip(self.params, self.grads, strict=True):
            param.grad = grad
        return self.loss.clone()


@torch.no_grad()
def score(
    model: AutoEncoder, splits: dict[str, Tensor], batch_size: int = 1000
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
