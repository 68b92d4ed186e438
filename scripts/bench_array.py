"""Memory and fit time of `data=array` on a large file: one job, as a user runs it.

Writes an (n, d) float32 .npy (a rank-32 signal plus noise, so codes have something to
keep) in a scratch folder, without holding it in memory, then runs
`aesweep train data=array data.path=FILE dim_z=K trainer.max_epochs=E` as a child process
and prints the rows x d, the file size, the child's peak RSS, its wall time and the fit
time from result.json (with its phases: reading and splitting the file, PCA, fit, test).
--max-steps bounds the fit where a full epoch would take too long.

    python scripts/bench_array.py [--rows 1000000] [--dim 128] [--dim-z 16] [--epochs 1]
                                  [--max-steps N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_array(path: Path, rows: int, dim: int, chunk: int = 100_000) -> None:
    """A float32 .npy of low-rank signal plus noise, written chunk by chunk."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(32, dim)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        codes = rng.normal(size=(n, 32)).astype(np.float32)
        out[start : start + n] = codes @ basis + 0.3 * rng.normal(size=(n, dim))
    out.flush()
    del out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dim-z", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=-1, help="-1: the whole epochs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "big.npy"
        write_array(path, args.rows, args.dim)
        command = [sys.executable, "-m", "aesweep", "train", "data=array", f"data.path={path}",
                   f"dim_z={args.dim_z}", f"trainer.max_epochs={args.epochs}", "hydra.run.dir=run",
                   f"trainer.max_steps={args.max_steps}",
                   "trainer.enable_progress_bar=false"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, cwd=work, check=True, capture_output=True)
        wall = time.perf_counter() - start
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
        result = json.loads((work / "run" / "result.json").read_text())
    size_mib = args.rows * args.dim * 4 / 2**20
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result["timings"].items())
    print(f"{args.rows:,} x {args.dim} float32 ({size_mib:.0f} MiB), dim_z={args.dim_z}, "
          f"{result['steps']:,} steps of {result['n_train']:,} training rows: peak RSS "
          f"{peak_gib:.2f} GiB, wall {wall:.0f} s, fit {result['seconds']:.0f} s "
          f"({phases}); test_sse {result['test_sse']:.2f}, "
          f"PCA {result['pca_test_sse']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
