"""Atomic file writes: a temp file in the target's folder, then a rename. A crash mid-write,
or two processes writing the same cache, never leave a half-written file behind. Files get
the permissions `open()` would give them (0666 less the umask), not mkstemp's 0600, so a
team can read each other's sweeps."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _proc_umask() -> int | None:
    """The umask from /proc/self/status (Linux), or None where there is none."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1], 8) for line in lines if line.startswith("Umask:")), None)


def _flip_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# os.umask can only be read by setting it, and a file another thread creates meanwhile
# would get the wrong mode: without /proc (macOS), read it once, at import.
_IMPORT_UMASK = _flip_umask() if _proc_umask() is None else 0


def _umask() -> int:
    mask = _proc_umask()
    return _IMPORT_UMASK if mask is None else mask


def replace_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), then rename tmp_path onto path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(obj: dict[str, Any], path: Path) -> None:
    replace_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def write_text(text: str, path: Path) -> None:
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text))


def save_figure(fig: Any, path: Path, dpi: int = 100) -> None:
    """A matplotlib Figure as PNG."""
    replace_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def save_torch(obj: object, path: Path) -> None:
    """torch.save, serialised in memory first: torch reports a write that fails on a full
    disk as a RuntimeError without errno, Python's own write as OSError(ENOSPC)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    replace_atomically(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))
