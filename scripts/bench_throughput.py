"""Training throughput: aesweep against a hand-written PyTorch loop, on the CPU or a GPU.

Every side trains the same model with the same recipe (MSE, fused Adam 1e-3, 4,000 embedded
MNIST images, the same epochs), the data already on the device:
- plain: the loop a user would write, batches sliced on the device;
- graphed (CUDA only): the same loop with its step captured in a CUDA graph (static input
  buffer, capturable Adam, replay per batch): the launch-free ceiling;
- aesweep: its real data module, LightningModule and Trainer as a default run sets them up
  (progress bar, CSV logging, validation, last.ckpt), with `steps_per_call` optimizer
  steps per Lightning step.
Each repeat runs the sides back to back in one process; a ratio is the median over repeats
of the ratio within a repeat, which cancels most of a shared machine's drift.

    python scripts/bench_throughput.py                      # CPU: --steps-per-call 1 8
    python scripts/bench_throughput.py --device cuda        # the GPU table of docs/benchmarks.md
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
from hydra import compose, initialize_config_module
from torch import nn

from aesweep.config import register
from aesweep.data import TensorDataModule, load_splits
from aesweep.pca import pca_of
from aesweep.train import LastCheckpoint, build_model, build_trainer

MODELS = {"784-32-784": [], "784-256-64-32, mirrored": [256, 64]}
DIM_Z = 32


def config(hidden: list[int], batch_size: int, epochs: int, device: str, k: int):
    register()
    overrides = [
        "model=mlp",  # the plain network the loops below write out, with mse
        "trainer.check_val_every_n_epoch=5",
        f"model.hidden=[{','.join(map(str, hidden))}]",
        f"dim_z={DIM_Z}",
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={epochs}",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"steps_per_call={k}",
    ]
    with initialize_config_module("aesweep.configs", version_base="1.3"):
        return compose("train", overrides)


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


def plain_loop(
    x: torch.Tensor, hidden: list[int], batch_size: int, epochs: int, fused: bool = True
) -> float:
    """Seconds for the loop a user would write, data on the device, fused Adam (or, on the
    CPU, also torch.optim.Adam's default, the baseline of the earlier CPU target)."""
    model = network(hidden, x.device.type)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    synchronize(x.device.type)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), device=x.device)
        for i in range(0, len(x), batch_size):
            batch = x[order[i : i + batch_size]]
            loss = F.mse_loss(model(batch), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    synchronize(x.device.type)
    return time.perf_counter() - start


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
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), device="cuda")
        for i in range(len(x) // batch_size):
            static.copy_(x[order[i * batch_size : (i + 1) * batch_size]])
            graph.replay()  # backward writes .grad in place; Adam reads and clears nothing
    torch.cuda.synchronize()
    return time.perf_counter() - start


def aesweep_path(cfg, splits, run_dir: Path) -> float:
    """aesweep's own data module, model and Trainer as a default run sets them up: seconds
    in trainer.fit (which includes moving the splits to the device)."""
    model = build_model(cfg, splits, pca_of(cfg.data, splits))
    trainer = build_trainer(cfg, run_dir, LastCheckpoint(run_dir / "last.ckpt", 10))
    datamodule = TensorDataModule(
        splits, cfg.data.batch_size, cfg.seed, model.hparams.steps_per_call
    )
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
    args = parser.parse_args()
    ks = args.steps_per_call or ([1, 8] if args.device == "cpu" else [1, 32])
    device = args.device

    splits = load_splits(config([], 128, 1, "cpu", 1).data)
    x = splits.train_x.to(device)
    print(f"torch {torch.__version__} on {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else
             f", {torch.get_num_threads()} threads")
          + f"; {len(x)} images x {args.epochs} epochs per fit")  # fmt: skip
    header = ["model", "batch", "plain loop"]
    header += ["CUDA graph"] if device == "cuda" else ["plain, unfused Adam"]
    header += [f"aesweep K={k}" for k in ks] + [f"aesweep K={k} / plain" for k in ks]
    header += [f"aesweep K={k} / {'graph' if device == 'cuda' else 'unfused'}" for k in ks]
    rows = []
    for name, hidden in MODELS.items():
        for batch_size in args.batch_sizes:
            full = (len(x) // batch_size) * batch_size * args.epochs  # the graph's samples
            sides: dict[str, tuple[Callable[..., float], tuple, int]] = {
                "plain": (plain_loop, (x, hidden, batch_size, args.epochs), len(x) * args.epochs)
            }
            if device == "cuda":
                sides["graph"] = (graphed_loop, (x, hidden, batch_size, args.epochs), full)
            else:
                unfused = (x, hidden, batch_size, args.epochs, False)
                sides["unfused"] = (plain_loop, unfused, len(x) * args.epochs)
            for k in ks:
                cfg = config(hidden, batch_size, args.epochs, device, k)
                sides[f"K={k}"] = (aesweep_in_tmp, (cfg, splits), len(x) * args.epochs)
            plain_loop(x, hidden, batch_size, 1)  # warm-up: kernels, allocator
            rates: dict[str, list[float]] = {side: [] for side in sides}
            for _ in range(args.repeats):
                for side, (seconds, inputs, samples) in sides.items():
                    rates[side].append(samples / seconds(*inputs))
            median = {side: statistics.median(v) for side, v in rates.items()}

            def paired(a: str, b: str, rates=rates) -> float:
                return statistics.median(p / q for p, q in zip(rates[a], rates[b], strict=True))

            row = [name, str(batch_size), f"{median['plain']:,.0f}"]
            row += [f"{median['graph' if device == 'cuda' else 'unfused']:,.0f}"]
            row += [f"{median[f'K={k}']:,.0f}" for k in ks]
            row += [f"{paired(f'K={k}', 'plain'):.2f}" for k in ks]
            other = "graph" if device == "cuda" else "unfused"
            row += [f"{paired(f'K={k}', other):.2f}" for k in ks]
            rows.append(row)
            print(" | ".join(row), flush=True)
    print("\nsamples/s, median of", args.repeats, "repeats; ratios: median of paired ratios")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
