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

from aesweep.config import ConfigError
from aesweep.io import save_torch

SHAPE_KEYS = ("kind", "input_dim", "dim_z", "hidden", "activation", "output")
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
