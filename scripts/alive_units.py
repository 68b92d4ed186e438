"""The share of each ReLU layer's units that fire on at least one row of a file, for a
trained run: the measure behind docs/data.md's "the branches' ReLUs die" (a unit that never
fires gets no gradient, so it stays dead).

    python scripts/alive_units.py RUN_DIR FILE.npy|FILE.npz
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

import aesweep


def alive(layers: nn.Sequential, h: torch.Tensor) -> list[float]:
    """Per ReLU in `layers`: the share of its units positive on some row of `h`."""
    shares = []
    for layer in layers:
        h = layer(h)
        if isinstance(layer, nn.ReLU):
            shares.append(round((h > 0).any(dim=0).float().mean().item(), 2))
    return shares


def main(run_dir: str, path: str) -> None:
    model = aesweep.load(run_dir)
    stored = np.load(path)
    x = torch.from_numpy(stored["x"] if path.endswith(".npz") else stored).float()
    x = model.scaling.apply(x.reshape(len(x), -1))
    with torch.no_grad():
        encoder, decoder = alive(model.encoder, x), alive(model.decoder, model.encode(x))
    print(f"{run_dir}: encoder branch {encoder}, decoder branch {decoder}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
