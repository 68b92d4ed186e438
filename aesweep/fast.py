"""Chunked optimizer steps and CUDA graphs: the fast path for one GPU.

Lightning's per-step Python (0.5-2 ms) dominates these small models' steps on a GPU; a chunk
of steps per Lightning step, each replayed from a CUDA graph, trains 2-4x faster there. On a
CPU the same chunks gain ~5% (docs/benchmarks.md), so only a GPU uses them by default.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor

from aesweep.model import AutoEncoder


class ChunkedAutoEncoder(AutoEncoder):
    """An AutoEncoder whose training_step makes one optimizer step per mini-batch of a chunk
    of `steps_per_call`: the same updates in the same order as Lightning's loop (tested bit
    for bit on the CPU), with Lightning's per-step cost paid once per chunk. With
    `cuda_graph` on one CUDA device, each step's forward and backward replay a CUDA graph."""

    def __init__(self, steps_per_call: int, cuda_graph: bool = True, **settings: Any) -> None:
        super().__init__(**settings)
        self.steps_per_call, self.cuda_graph = steps_per_call, cuda_graph
        self.automatic_optimization = False  # training_step steps the optimizer itself

    def training_step(self, batch: list[Tensor], batch_idx: int) -> None:
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

    def _forward_backward(self, x: Tensor, optimizer: Any) -> Tensor:
        """The loss of mini-batch x, its gradients in the parameters' .grad: replayed from
        the CUDA graph where one applies (full mini-batches), else computed eagerly."""
        if self._graph is None and self._graphs:
            self._graph = CapturedStep(self, x)
        if self._graph is not None and x.shape == self._graph.x.shape:
            self._draw_noise(x, out=self._graph.noise)
            return self._graph.run(x)
        loss = self._training_loss(x)
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

    def on_train_start(self) -> None:
        super().on_train_start()
        self._graph: CapturedStep | None = None
        self._graphs = self.cuda_graph and self.device.type == "cuda"
        if self._graphs and (blocker := self._graph_blocker()):
            print(f"aesweep: cuda_graph=true runs eagerly: {blocker}", file=sys.stderr)
            self._graphs = False


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
