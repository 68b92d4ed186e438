"""Training throughput: aesweep against a hand-written PyTorch loop, on the CPU or a GPU.

Every side trains the same model with the same recipe (MSE, fused Adam 1e-3, 4,000 embedded
MNIST images, the same epochs), the data already on the device:
- plain: the loop a user would write, batches sliced on the device;
- graphed (CUDA only): the same loop with its step captured in a CUDA graph (static input
  buffer, capturable Adam, replay per batch): the launch-free ceiling;
- compiled (CUDA only, --compile): the plain loop's model under
  torch.compile(mode="reduce-overhead"), after its compile, which is timed apart;
- aesweep: its real data module, LightningModule and Trainer as a default run sets them up
  (progress bar, CSV logging, validation, last.ckpt), with `steps_per_call` optimizer
  steps per Lightning step (on CUDA each replayed from a CUDA graph; "eager": cuda_graph=false).
Each repeat runs the sides back to back in one process; a ratio is the median over repeats
of the ratio within a repeat, which cancels most of a shared machine's drift.

    python scripts/bench_throughput.py                      # CPU: --steps-per-call 1 8
    python scripts/bench_throughput.py --device cuda        # the GPU table of docs/benchmarks.md
    python scripts/bench_throughput.py --device cuda --compile --batch-sizes 128
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aesweep.cli import compose
from aesweep.data import load_splits
from aesweep.datamodule import TensorDataModule
from aesweep.pca import pca_of
from aesweep.requeue import StopOnTimeLimit
from aesweep.train import build_model, build_trainer

MODELS = {"784-32-784": [], "784-256-64-32, mirrored": [256, 64]}
DIM_Z = 32


def config(hidden: list[int], batch_size: int, epochs: int, device: str, k: int, graph=True):
    overrides = [
        "model=mlp",  # the plain network the loops below write out,
        "recipe=lecture",  # trained as they train it: Adam, mse, no schedule
        "trainer.check_val_every_n_epoch=5",
        f"model.hidden=[{','.join(map(str, hidden))}]",
        f"dim_z={DIM_Z}",
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={epochs}",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"steps_per_call={k}",
        f"cuda_graph={graph}",
    ]
    return compose(overrides, argparse.Namespace(config_dir=None, config_name=None))


def network(hidden: list[int], device: str) -> nn.Module:
    """aesweep's architecture, written out as a user would."""
    widths = [784, *hidden, DIM_Z]
    layers: list[nn.Module] = []
    for side in (widths, widths[::-1]):
        for i, (a, b) in enumerate(zip(side[:-1], side[1:], strict=True)):
            layers += [nn.ReLU()] if i > 0 else []
            layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers, nn.Sigmoid()).to(device)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_epochs(
    x: torch.Tensor,
    batch_size: int,
    epochs: int,
    step: Callable[[torch.Tensor], object],
    full_only: bool = False,
) -> float:
    """Seconds for `epochs` shuffled passes of step(batch) over x, batches sliced on x's
    device (full batches only for the graphed loops, whose input shape is fixed)."""
    end = len(x) // batch_size * batch_size if full_only else len(x)
    synchronize(x.device.type)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), device=x.device)
        for i in range(0, end, batch_size):
            step(x[order[i : i + batch_size]])
    synchronize(x.device.type)
    return time.perf_counter() - start


def plain_loop(
    x: torch.Tensor, hidden: list[int], batch_size: int, epochs: int, fused: bool = True
) -> float:
    """Seconds for the loop a user would write, data on the device, fused Adam (or, on the
    CPU, also torch.optim.Adam's default, the baseline of the earlier CPU target)."""
    model = network(hidden, x.device.type)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)

    def step(batch: torch.Tensor) -> None:
        loss = F.mse_loss(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return timed_epochs(x, batch_size, epochs, step)


def graphed_loop(x: torch.Tensor, hidden: list[int], batch_size: int, epochs: int) -> float:
    """Seconds for the same loop with its step in a CUDA graph (PyTorch's whole-network
    capture recipe). Full batches only, so the caller counts len(x) // batch_size batches."""
    model = network(hidden, "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=True)
    static = x[:batch_size].clone()

    def step() -> None:
        loss = F.mse_loss(model(static), static)
        loss.backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph, as the recipe asks
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()

    def replay(batch: torch.Tensor) -> None:
        static.copy_(batch)
        graph.replay()  # backward writes .grad in place; Adam reads and clears nothing

    return timed_epochs(x, batch_size, epochs, replay, full_only=True)


class CompiledLoop:
    """The plain loop with its model under torch.compile(mode="reduce-overhead") (CUDA
    graphs through Inductor). Compiled once, on the first call, whose compile and warm-up
    seconds are kept in `compile_s`; full batches only, like the graphed loop."""

    def __init__(self, hidden: list[int], batch_size: int) -> None:
        self.hidden, self.batch_size, self.compile_s = hidden, batch_size, None

    def __call__(self, x: torch.Tensor, epochs: int) -> float:
        if self.compile_s is None:
            torch.compiler.reset()
            self.model = torch.compile(network(self.hidden, "cuda"), mode="reduce-overhead")
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
            start = time.perf_counter()
            for _ in range(3):
                self.step(x[: self.batch_size])
            torch.cuda.synchronize()
            self.compile_s = time.perf_counter() - start
        return timed_epochs(x, self.batch_size, epochs, self.step, full_only=True)

    def step(self, batch: torch.Tensor) -> None:
        torch.compiler.cudagraph_mark_step_begin()
        loss = F.mse_loss(self.model(batch), batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def aesweep_path(cfg, splits, run_dir: Path) -> float:
    """aesweep's own data module, model and Trainer as a default run sets them up: seconds
    in trainer.fit (which includes moving the splits to the device)."""
    model = build_model(cfg, splits, pca_of(cfg.data, splits))
    trainer = build_trainer(cfg, run_dir, StopOnTimeLimit(), failed_loggers={})
    datamodule = TensorDataModule(splits, cfg.data.batch_size, cfg.seed, model.steps_per_call)
    start = time.perf_counter()
    unseen = io.StringIO()  # the progress bar draws as in a terminal, but out of sight
    with contextlib.redirect_stdout(unseen), contextlib.redirect_stderr(unseen):
        trainer.fit(model, datamodule=datamodule)
    return time.perf_counter() - start


def aesweep_in_tmp(cfg, splits) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return aesweep_path(cfg, splits, Path(tmp))


def main() -> None:
    # Importing Lightning sets this, which makes torch.optim probe NVML at every step on the
    # CPU; a plain script never imports Lightning, so the baseline must not pay for it either.
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--steps-per-call", type=int, nargs="+", default=None,
                        help="aesweep's K values (default: 1 8 on cpu, 1 32 on cuda)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="add torch.compile (CUDA)")
    args = parser.parse_args()
    ks = args.steps_per_call or ([1, 8] if args.device == "cpu" else [1, 32])
    device, epochs = args.device, args.epochs
    cuda = device == "cuda"

    splits = load_splits(config([], 128, 1, "cpu", 1).data)
    x = splits.train_x.to(device)
    print(f"torch {torch.__version__} on {device}"
          + (f" ({torch.cuda.get_device_name()})" if cuda else
             f", {torch.get_num_threads()} threads")
          + f"; {len(x)} images x {epochs} epochs per fit")  # fmt: skip
    baseline = "CUDA graph" if cuda else "plain, unfused Adam"
    rows, header, compiled_s = [], [], {}
    for name, hidden in MODELS.items():
        for batch_size in args.batch_sizes:
            full = (len(x) // batch_size) * batch_size * epochs  # graphed loops: full batches
            every = len(x) * epochs
            sides: dict[str, tuple[Callable[..., float], tuple, int]] = {
                "plain loop": (plain_loop, (x, hidden, batch_size, epochs), every)
            }
            if cuda:
                sides[baseline] = (graphed_loop, (x, hidden, batch_size, epochs), full)
            else:
                sides[baseline] = (plain_loop, (x, hidden, batch_size, epochs, False), every)
            if cuda and args.compile:
                compiled = CompiledLoop(hidden, batch_size)
                sides["torch.compile"] = (compiled, (x, epochs), full)
            ours = []
            for k in ks:
                for graph in [True, False] if cuda and k > 1 else [True]:
                    label = f"aesweep K={k}" + ("" if graph else " eager")
                    cfg = config(hidden, batch_size, epochs, device, k, graph)
                    sides[label] = (aesweep_in_tmp, (cfg, splits), every)
                    ours.append(label)
            plain_loop(x, hidden, batch_size, 1)  # warm-up: kernels, allocator
            rates: dict[str, list[float]] = {side: [] for side in sides}
            for _ in range(args.repeats):
                for side, (seconds, inputs, samples) in sides.items():
                    rates[side].append(samples / seconds(*inputs))
            if cuda and args.compile:
                compiled_s[f"{name}, batch {batch_size}"] = compiled.compile_s

            def paired(a: str, b: str, rates=rates) -> float:
                return statistics.median(p / q for p, q in zip(rates[a], rates[b], strict=True))

            header = ["model", "batch", *sides]
            header += [f"{o} / plain" for o in ours] + [f"{o} / {baseline}" for o in ours]
            row = [name, str(batch_size)]
            row += [f"{statistics.median(v):,.0f}" for v in rates.values()]
            row += [f"{paired(o, 'plain loop'):.2f}" for o in ours]
            row += [f"{paired(o, baseline):.2f}" for o in ours]
            rows.append(row)
            print(" | ".join(row), flush=True)
    print("\nsamples/s, median of", args.repeats, "repeats; ratios: median of paired ratios")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for shape, seconds in compiled_s.items():
        print(f"torch.compile(mode='reduce-overhead'), {shape}: {seconds:.1f} s to compile "
              f"and record before the first timed step")  # fmt: skip


if __name__ == "__main__":
    main()
