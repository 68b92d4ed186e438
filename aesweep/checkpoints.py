"""Checkpoints as data: read without running anything they carry, compared on what shapes the
weights only, written through a temporary file in their own folder.

A run folder may come from someone else, so a checkpoint is read with torch's weights-only
unpickler: tensors and plain containers, nothing that could call code. Speed settings
(steps_per_call, cuda_graph, device, precision) never block a load: they are the machine's.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from aesweep.config import ConfigError, show
from aesweep.io import save_torch

SHAPE_KEYS = ("kind", "input_dim", "dim_z", "hidden", "activation", "output")
# How a run trains, as its checkpoint records it: hyperparameter -> the setting that sets it
RECIPE_KEYS = {"loss": "loss.name", "optimizer": "optimizer", "scheduler": "scheduler",
               "input_noise": "model.input_noise", "linear_lr_scale": "model.linear_lr_scale",
               "seed": "seed", "center": "model.center",
               "batch_size": "data.batch_size"}  # fmt: skip
KEPT = ("best.ckpt", "last.ckpt")  # the weights a run keeps: best on validation, else the last


class CheckpointError(ConfigError):
    """A checkpoint is damaged, holds more than data, belongs to another model, or cannot be
    written; the message names the file or folder."""


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint as plain data, or CheckpointError saying why not, before anything in
    it runs."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        unsafe = re.search(r"(?:unsupported|Unsupported global:) GLOBAL (\S+)", str(e))
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} is refused: it holds {unsafe.group(1)}, which is not data "
                f"(checkpoints are read as tensors and plain containers only)"
            ) from None
        reason = " ".join(str(e).split())[:200]
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a Lightning checkpoint ({reason})"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("hyper_parameters"), dict):
        raise CheckpointError(f"checkpoint {path} is damaged or not a Lightning checkpoint")
    return ckpt


def check_shapes(path: Path, ckpt: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse a checkpoint of another model, naming the first setting that shapes the
    weights differently."""
    saved = ckpt["hyper_parameters"]
    for key in (k for k in SHAPE_KEYS if k in expected):
        if saved.get(key) != expected[key]:
            raise CheckpointError(
                f"checkpoint {path} was trained with {key}={saved.get(key)}, this run has "
                f"{key}={expected[key]}"
            )


def shapes_of(cfg: Any) -> dict[str, Any]:
    """What shapes a job's weights that its config alone says (the data fix the rest)."""
    m = cfg.model
    return {"kind": str(m.kind), "dim_z": cfg.dim_z, "hidden": list(m.hidden),
            "activation": str(m.activation)}  # fmt: skip


def recipe_of(cfg: Any) -> dict[str, Any]:
    """The LightningModule's training settings in a job's config (besides the net's)."""
    return {
        "loss": str(cfg.loss.name),
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "scheduler": OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.scheduler else None,
        "input_noise": cfg.model.input_noise,
        "linear_lr_scale": cfg.model.linear_lr_scale,
        "seed": cfg.seed,
    }


def check_recipe(path: Path, ckpt: dict[str, Any], cfg: Any) -> None:
    """resume=DIR composes a run again from its overrides: refuse configs that now give it
    another recipe (changed since it began: another aesweep version), naming the first
    difference, rather than continue it as a run nobody started. Keys a checkpoint lacks
    (recorded by later versions) are not compared."""
    saved = {**ckpt["hyper_parameters"], **ckpt.get("datamodule_hyper_parameters", {})}
    now = {**recipe_of(cfg), "center": cfg.model.center, "batch_size": cfg.data.batch_size}
    for key in (k for k in RECIPE_KEYS if k in saved):
        if (found := _difference(RECIPE_KEYS[key], saved[key], now[key])) is not None:
            name, old, new = found
            raise CheckpointError(
                f"checkpoint {path} was trained with {name}={show(old)}, these configs give "
                f"{name}={show(new)}: resume continues a run only as it began (resume it with "
                f"the aesweep version that made it, or start a new run)"
            )


def check_continuation(path: Path, shapes: dict[str, Any], cfg: Any) -> None:
    """A checkpoint to continue from: data only, of a model with these `shapes`, and with
    resume=DIR of the recipe these configs give (the CLI's preflight and the job both ask)."""
    ckpt = read_checkpoint(path)
    check_shapes(path, ckpt, shapes)
    if cfg.resume is not None:
        check_recipe(path, ckpt, cfg)


def _difference(name: str, old: Any, new: Any) -> tuple[str, Any, Any] | None:
    """The first (setting, old, new) that differs, looking into nested settings."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys(), key=str):
            if (found := _difference(f"{name}.{key}", old.get(key), new.get(key))) is not None:
                return found
        return None
    return None if old == new else (name, old, new)


def kept_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint holding the weights a run keeps (what load, encode and result.json
    use), None if it saved none."""
    folder = Path(run_dir) / "checkpoints"
    return next((folder / n for n in KEPT if (folder / n).is_file()), None)


def write_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """Write through a temporary file in the checkpoint's own folder, then rename: a write
    that fails (a full disk) leaves the previous checkpoint as it was."""
    try:
        save_torch(ckpt, path)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise CheckpointError(
            f"cannot write a checkpoint into {path.parent}: no space left on the device "
            f"(the previous checkpoint is kept)"
        ) from None


def checkpoint_to_continue(cfg: Any, run_dir: Path) -> Path | None:
    """ckpt_path=FILE, or with resume=DIR the run folder's last.ckpt where there is one."""
    if cfg.ckpt_path is not None:
        return Path(str(cfg.ckpt_path))
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return last if cfg.resume is not None and last.is_file() else None
