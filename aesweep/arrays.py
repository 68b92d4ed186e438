"""A user's own data file (`data=array data.path=FILE`), checked up front as scikit-learn's
check_array does (numeric, finite, the right axes), with one line naming the file, what is
wrong and where. Nothing a file carries runs: .npy/.npz load without pickles, .pt with
weights_only."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aesweep.config import ConfigError, show

SUFFIXES = (".npy", ".npz", ".pt", ".csv")
KEYS = ("x", "y", "x_test", "y_test")  # what an .npz or a .pt dict may hold
CHUNK_ROWS = 65_536  # rows checked at once: a check over a whole large array copies it


@dataclass(frozen=True)
class ArrayData:
    """Rows as stored, flattened to (n, d), dtype kept (integer pixels stay integers)."""

    x: Tensor
    y: Tensor | None
    x_test: Tensor | None
    y_test: Tensor | None
    image_shape: tuple[int, ...] | None  # (C, H, W) when the layout or data.image_shape says so
    feature_names: tuple[str, ...] | None  # a .csv's column names

    @functools.cached_property  # a pass over every value; the preflight and load_splits ask
    def pixels(self) -> bool:
        """Images, or whole numbers in [0, 255]: scaled to [0, 1] by one range, not per feature."""
        if self.image_shape is not None:
            return True
        x = self.x
        integral = not x.is_floating_point() or all(
            torch.equal(chunk, chunk.round()) for chunk in x.split(CHUNK_ROWS)
        )  # in chunks: round() copies what it rounds
        return bool(integral and x.numel() > 0 and x.min() >= 0 and x.max() <= 255)


def fail(path: Any, problem: str) -> None:
    raise ConfigError(f"data.path={path} is invalid: {problem}")


def read_array(
    path: str, label_column: str | None = None, image_shape: Sequence[int] | None = None
) -> ArrayData:
    """The checked contents of `path`; the same file read twice (the preflight, then the
    job in the same process) is read once."""
    file = Path(path).expanduser()
    if file.suffix not in SUFFIXES:
        fail(path, f"the suffix {file.suffix or '(none)'} is unknown: must be one of "
                   f"{', '.join(SUFFIXES)}")  # fmt: skip
    if not file.is_file():
        fail(path, "no such file" if not file.exists() else "not a file")
    stat = file.stat()
    shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
    key = (str(file.absolute()), stat.st_size, stat.st_mtime_ns)
    return _read(path, key, label_column, shape)


@functools.lru_cache(maxsize=1)
def _read(
    path: str, key: tuple, label_column: str | None, shape: tuple[int, ...] | None
) -> ArrayData:
    """`path` as the user wrote it (for messages); `key` (absolute path, size, mtime) makes
    a changed file a new entry."""
    names, file = None, key[0]
    if path.endswith(".csv"):
        x, y, names = read_csv(file, label_column, path)
        arrays = {"x": x, "y": y}
    else:
        if label_column is not None:
            raise ConfigError(f"data.label_column={label_column} is invalid: only a .csv has "
                              f"columns; put labels in the file as y")  # fmt: skip
        arrays = read_arrays(file, path)
    x, x_test = arrays["x"], arrays.get("x_test")
    layout = image_layout(path, x, shape)
    if x_test is not None and tuple(x_test.shape[1:]) != tuple(x.shape[1:]):
        fail(path, f"x_test has rows of shape {tuple(x_test.shape[1:])}, x has "
                   f"{tuple(x.shape[1:])}")  # fmt: skip
    for name in ("x", "x_test"):
        if arrays.get(name) is not None:
            check_finite(path, name, arrays[name], names)
    y = labels(path, "y", arrays.get("y"), len(x))
    y_test = labels(path, "y_test", arrays.get("y_test"), len(x_test) if x_test is not None else 0)
    x_test = x_test.reshape(len(x_test), -1) if x_test is not None else None
    return ArrayData(x.reshape(len(x), -1), y, x_test, y_test, layout, names)


def read_arrays(file: str, path: str) -> dict[str, Tensor]:
    """x (and y, x_test, y_test) of an .npy, .npz or .pt file, as tensors."""
    try:
        if file.endswith(".pt"):
            blob = torch.load(file, map_location="cpu", weights_only=True)
        else:
            blob = np.load(file, allow_pickle=False)
            blob = {k: blob[k] for k in blob.files} if file.endswith(".npz") else blob
    except Exception as e:
        reason = " ".join(str(e).split()).split(". ")[0][:200] or type(e).__name__
        fail(path, f"unreadable ({reason})")
    if not isinstance(blob, dict):
        blob = {"x": blob}
    if "x" not in blob:
        fail(path, f"holds no array named x (it holds: {', '.join(map(str, blob)) or 'nothing'})")
    return {k: as_tensor(path, k, blob[k]) for k in KEYS if blob.get(k) is not None}


def as_tensor(path: str, name: str, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    if not value.flags.writeable:  # torch warns on read-only memory (e.g. a pandas view)
        value = value.copy()
    if value.dtype == bool:
        value = value.astype(np.uint8)
    if not np.issubdtype(value.dtype, np.integer) and not np.issubdtype(value.dtype, np.floating):
        fail(path, f"{name} holds {value.dtype} values: must be real numbers")
    if value.dtype in (np.float16, np.uint16, np.uint32, np.uint64):  # torch lacks some ops
        value = value.astype(np.float32 if value.dtype == np.float16 else np.int64)
    return torch.from_numpy(np.ascontiguousarray(value))


def read_csv(file: str, label_column: str | None, path: str) -> tuple[Tensor, Tensor | None, tuple]:
    """Numeric columns as x; `label_column` as integer labels (names become 0, 1, ... in
    sorted order). A first row of numbers is data, not a header."""
    import pandas as pd

    try:
        table = pd.read_csv(file)
        if all(is_number(c) for c in table.columns):
            table = pd.read_csv(file, header=None)
    except Exception as e:
        fail(path, f"unreadable as CSV ({' '.join(str(e).split())[:200]})")
    table.columns = [str(c) for c in table.columns]
    y = None
    if label_column is not None:
        if label_column not in table:
            raise ConfigError(f"data.label_column={label_column} is invalid: {path} has no such "
                              f"column (it has: {', '.join(table.columns[:20])})")  # fmt: skip
        column = table.pop(label_column)
        if column.isna().any():
            fail(path, f"column {label_column} (the labels) has {int(column.isna().sum())} "
                       f"empty cells")  # fmt: skip
        codes = column if pd.api.types.is_integer_dtype(column) else pd.factorize(column, True)[0]
        y = torch.from_numpy(np.array(codes, dtype=np.int64))
    if table.shape[1] == 0:
        fail(path, "has no feature columns")
    for name in table.columns:
        if not pd.api.types.is_numeric_dtype(table[name]):
            values = pd.to_numeric(table[name], errors="coerce")
            row = int(np.flatnonzero(values.isna() & table[name].notna())[0])
            fail(path, f"column {name} is not numeric (row {row}, counting from 0: "
                       f"{table[name].iloc[row]!r}); drop it, or name it with "
                       f"data.label_column={name}")  # fmt: skip
    x = table.to_numpy(dtype=np.float64 if (table.dtypes == np.float64).any() else None)
    return as_tensor(path, "x", x), y, tuple(table.columns)


def is_number(text: Any) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


def image_layout(path: str, x: Tensor, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """(C, H, W) for images ((n, H, W), (n, C, H, W), or vectors that data.image_shape views
    as images); None for plain vectors."""
    if x.ndim < 2 or x.ndim > 4:
        hint = "; e.g. x.reshape(-1, 1) for one feature" if x.ndim == 1 else ""
        fail(path, f"x has shape {tuple(x.shape)}: must be (n, d) vectors, (n, H, W) or "
                   f"(n, C, H, W) images{hint}")  # fmt: skip
    if x.ndim == 4 and x.shape[1] not in (1, 3):
        fail(path, f"x has shape {tuple(x.shape)}: images must be (n, C, H, W) with C = 1 or 3 "
                   f"channels, first (channels last: x.transpose(0, 3, 1, 2))")  # fmt: skip
    if len(x) == 0 or math.prod(x.shape[1:]) == 0:
        fail(path, f"x has shape {tuple(x.shape)}: no values")
    stored = (1, *x.shape[1:]) if x.ndim == 3 else tuple(x.shape[1:]) if x.ndim == 4 else None
    if shape is None:
        return stored
    wanted = (1, *shape) if len(shape) == 2 else shape
    if len(wanted) != 3 or wanted[0] not in (1, 3) or math.prod(wanted) != math.prod(x.shape[1:]):
        raise ConfigError(
            f"data.image_shape={show(list(shape))} is invalid: must be [H,W] or [C,H,W] "
            f"(C = 1 or 3) with {math.prod(x.shape[1:])} values, as {path} has per row"
        )
    return wanted


def check_finite(path: str, name: str, x: Tensor, names: tuple[str, ...] | None) -> None:
    """No NaN or infinite value; else say how many and where the first one is. In chunks:
    torch.isfinite holds 2.2 times what it checks (docs/data.md, memory)."""
    if not x.is_floating_point():
        return
    chunks = x.reshape(len(x), -1).split(CHUNK_ROWS)
    counts = [int((~torch.isfinite(chunk)).sum()) for chunk in chunks]
    if count := sum(counts):
        i = next(i for i, n in enumerate(counts) if n)
        row, col = (int(j) for j in (~torch.isfinite(chunks[i])).nonzero()[0])
        row += i * CHUNK_ROWS
        column = f"column {names[col]}" if names else f"feature {col}"
        fail(path, f"{name} has {count} NaN or infinite values (the first at row {row}, "
                   f"{column}, counting from 0); drop or fill them")  # fmt: skip


def labels(path: str, name: str, y: Tensor | None, n: int) -> Tensor | None:
    """Integer labels, one per row (the probes and latent plots use them); None if absent."""
    if y is None:
        return None
    y = y.reshape(-1)
    if len(y) != n:
        fail(path, f"{name} has {len(y)} labels for {n} rows")
    if y.is_floating_point() and not bool(torch.equal(y, y.round())):
        fail(path, f"{name} holds non-integer values: labels must be integers")
    return y.long()
