"""Use what a run or sweep produced: the trained autoencoder, a split's codes, a sweep's table.
Read from the folders alone, as data: works on a run copied from another machine, and runs
nothing a folder carries."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from aesweep.checkpoints import CheckpointError, check_shapes, kept_checkpoint, read_checkpoint
from aesweep.config import RESULT, ConfigError, input_dim
from aesweep.data import Scaling, load_splits
from aesweep.io import replace_atomically
from aesweep.nets import AutoEncoderNet, net_settings
from aesweep.report import collect

SPLITS = ("test", "train", "val")


class RunFolderError(ConfigError):
    """Not a run (or sweep) folder, or its checkpoint is missing or damaged (names the file)."""


def run_config(run_dir: Path) -> DictConfig:
    """The job config the run was trained with (Hydra's .hydra/config.yaml)."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise RunFolderError(f"RUN_DIR={run_dir} is invalid: not a run folder (no {path})")
    return OmegaConf.load(path)


def load(run_dir: str | Path) -> AutoEncoderNet:
    """The trained autoencoder of a run folder (the weights it kept: best on validation with
    select=best, else the last), a plain nn.Module on the CPU, in eval mode, without
    gradients: `encode(x)` maps rows (n, input_dim) in the run's scaled space to codes
    (n, dim_z), `decode(z)` maps codes back to that space (output activation applied).
    `model.scaling` maps between the data's own units and that space:
    encode(scaling.apply(x)), scaling.invert(decode(z)) (for images it is x / 255 and back)."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    path = kept_checkpoint(run_dir)
    if path is None:
        raise RunFolderError(
            f"{run_dir / 'checkpoints'} holds no checkpoint: this run saved none (it stopped early)"
        )
    result = {}
    with contextlib.suppress(OSError, ValueError):  # an unfinished run: the config alone
        result = json.loads((run_dir / RESULT).read_text())
    d = result.get("input_dim") or input_dim(cfg)  # result.json knows data=array's d
    settings = net_settings(cfg, d, result.get("output"))
    model = AutoEncoderNet(**settings)
    if result.get("scaling"):
        model.scaling = Scaling.from_dict(result["scaling"])
    try:
        ckpt = read_checkpoint(path)
        check_shapes(path, ckpt, settings)
        model.load_state_dict(ckpt["state_dict"])
    except (CheckpointError, KeyError, RuntimeError) as e:
        raise RunFolderError(" ".join(str(e).split())) from None
    return model.eval().requires_grad_(False)  # codes come back as plain tensors


def encode_split(run_dir: str | Path, split: str = "test") -> Path:
    """Write `codes_<split>.npz` into the run folder: `codes` (n, dim_z), `labels` (n,) and
    `index` (n,), the position of each image in the split as the run defined it (same
    data, split seed and subset); returns its path."""
    if split not in SPLITS:
        raise ConfigError(f"split={split} is invalid: must be one of {', '.join(SPLITS)}")
    run_dir = Path(run_dir)
    model = load(run_dir)
    splits = load_splits(run_config(run_dir).data)
    x, labels = getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y")
    with torch.no_grad():
        codes = model.encode(x)
    path = run_dir / f"codes_{split}.npz"
    arrays = {"codes": codes.numpy(), "index": np.arange(len(x))}
    if labels is not None:  # data without labels: codes and index alone
        arrays["labels"] = labels.numpy()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez_compressed(f, **arrays)

    replace_atomically(path, write)
    return path


def load_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """A sweep folder's table as in loss_vs_dim.csv, numeric columns as numbers."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir() or not any(sweep_dir.glob(f"*/{RESULT}")):
        raise RunFolderError(
            f"SWEEP_DIR={sweep_dir} is invalid: must be a sweep folder holding */{RESULT}"
        )
    table = collect(sweep_dir)
    for column in table.columns:  # swept settings (seed=0,1) are strings in the overrides
        values = table[column]
        if values.isna().all() or not all(isinstance(v, str) for v in values.dropna()):
            continue  # numbers already, or lists such as hidden=[256, 64]
        with contextlib.suppress(ValueError, TypeError):  # not all numbers: keep as is
            table[column] = pd.to_numeric(values)
    return table
