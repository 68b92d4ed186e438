"""Training throughput: aesweep's own path against a hand-written PyTorch loop.

Both train the same model (784-256-64-32 mirrored, ReLU, sigmoid output, MSE, Adam 1e-3) for
the same epochs on the embedded MNIST split. aesweep's side is its real data module,
LightningModule and Trainer, with the progress bar, logging, validation and checkpointing of
a default run. Each repeat runs the plain loop a user would write (torch.optim.Adam's
defaults), the same loop with the fused Adam that aesweep's config uses, and aesweep, back
to back in one process; the printed ratio is the median over repeats of the ratio within a
repeat, which cancels most of a shared machine's drift.

    python scripts/bench_throughput.py [--epochs 20] [--repeats 7] [--batch-sizes 64 256]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from torch import nn

from aesweep.config import register
from aesweep.data import TensorDataModule, load_splits
from aesweep.train import LastCheckpoint, build_model, build_trainer

HIDDEN, DIM_Z = [256, 64], 32
TARGETS = {64: 0.80, 256: 0.90}


def config(batch_size: int, epochs: int, progress_bar: bool = True):
    register()
    overrides = [
        f"model.hidden=[{HIDDEN[0]},{HIDDEN[1]}]",
        f"dim_z={DIM_Z}",
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={epochs}",
        f"trainer.enable_progress_bar={progress_bar}",
    ]
    with initialize_config_module("aesweep.configs", version_base="1.3"):
        return compose("train", overrides)


def plain_loop(x: torch.Tensor, batch_size: int, epochs: int, fused: bool = False) -> float:
    """The loop a user would write instead (torch.optim.Adam's defaults), or the same loop
    with aesweep's fused Adam: seconds to train."""
    model = nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, DIM_Z),
        nn.Linear(DIM_Z, 64), nn.ReLU(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 784),
        nn.Sigmoid(),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            batch = x[order[i : i + batch_size]]
            loss = F.mse_loss(model(batch), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def aesweep_path(cfg, splits, run_dir: Path) -> float:
    """aesweep's own data module, model and Trainer as a default run sets them up (progress
    bar, CSV logging, validation every 5 epochs, last.ckpt): seconds in trainer.fit."""
    model = build_model(cfg, splits)
    last = LastCheckpoint(run_dir / "last.ckpt", cfg.checkpoint_every_s)
    trainer = build_trainer(cfg, run_dir, last)
    datamodule = TensorDataModule(splits, cfg.data.batch_size)
    start = time.perf_counter()
    unseen = io.StringIO()  # the progress bar draws as in a terminal, but out of sight
    with contextlib.redirect_stdout(unseen), contextlib.redirect_stderr(unseen):
        trainer.fit(model, datamodule=datamodule)
    return time.perf_counter() - start


def main() -> None:
    # Importing Lightning sets this, which makes torch.optim probe NVML at every step; a plain
    # script never imports Lightning, so the baseline must not pay for it either.
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--no-progress-bar", action="store_true", help="as trainer=smoke")
    args = parser.parse_args()

    splits = load_splits(config(64, 1).data)
    n = len(splits.train_x) * args.epochs
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n} samples per fit")
    for batch_size in args.batch_sizes:
        cfg = config(batch_size, args.epochs, progress_bar=not args.no_progress_bar)
        plain_loop(splits.train_x, batch_size, 1)  # warm-up
        rates: dict[str, list[float]] = {"plain": [], "plain_fused": [], "aesweep": []}
        for repeat in range(args.repeats):
            rates["plain"].append(n / plain_loop(splits.train_x, batch_size, args.epochs))
            rates["plain_fused"].append(
                n / plain_loop(splits.train_x, batch_size, args.epochs, True)
            )
            with tempfile.TemporaryDirectory() as tmp:
                rates["aesweep"].append(n / aesweep_path(cfg, splits, Path(tmp)))
            latest = ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items())
            print(f"  batch {batch_size} repeat {repeat}: {latest}", flush=True)
        # Each repeat runs the three side by side; the median of the per-repeat ratios cancels
        # most of the machine's drift between repeats.
        ratio = statistics.median(
            a / p for a, p in zip(rates["aesweep"], rates["plain"], strict=True)
        )
        pairs = zip(rates["aesweep"], rates["plain_fused"], strict=True)
        fused = statistics.median(a / p for a, p in pairs)
        median = {k: statistics.median(v) for k, v in rates.items()}
        target = TARGETS.get(batch_size, 0)
        print(
            f"batch {batch_size}: plain loop {median['plain']:,.0f} samples/s (with fused Adam "
            f"{median['plain_fused']:,.0f}), aesweep {median['aesweep']:,.0f}; median paired "
            f"ratio {ratio:.3f} vs the plain loop (target {target:.2f}: "
            f"{'met' if ratio >= target else 'MISSED'}), {fused:.3f} vs the fused plain loop"
        )


if __name__ == "__main__":
    main()
