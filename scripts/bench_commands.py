"""What a whole command costs beyond training: start-up, data, PCA, test and artefacts.

Runs the real console commands as a user would, in a scratch folder, and prints:
  - `aesweep --help` start-up time (median of 5; target < 1 s),
  - `aesweep train dim_z=32`: wall time against its fit time, with result.json's per-phase
    timings (the rest is interpreter start, imports and Hydra),
  - `aesweep sweep`: wall time against the sum of its jobs' fit times (target <= 1.3),
  - with --parallel: a 4-dim sweep on the basic launcher and on joblib with 2 jobs, with
    torch threads shared between the jobs (the default) and not.

    python scripts/bench_commands.py [--sweep-dims 784,256,64,32,16,8,4,2,1] [--skip-sweep]
                                     [--parallel]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AESWEEP = [sys.executable, "-m", "aesweep"]


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep-dims", default="784,256,64,32,16,8,4,2,1")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--parallel", action="store_true", help="compare local launchers")
    args = parser.parse_args()
    console = shutil.which("aesweep")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        help_cmd = [console, "--help"] if console else [*AESWEEP, "--help"]
        startup = statistics.median(timed(help_cmd, work) for _ in range(5))
        print(f"aesweep --help: {startup:.2f} s (median of 5; target < 1 s)")

        timed([*AESWEEP, "train", "dim_z=1", "trainer.max_epochs=1"], work)  # builds the caches
        wall = timed([*AESWEEP, "train", "dim_z=32", "hydra.run.dir=run32"], work)
        result = json.loads((work / "run32" / "result.json").read_text())
        phases = ", ".join(f"{k} {v:.2f} s" for k, v in result["timings"].items())
        rest = wall - sum(result["timings"].values())
        print(f"aesweep train dim_z=32: wall {wall:.1f} s, fit {result['seconds']:.1f} s, "
              f"ratio {wall / result['seconds']:.2f}; phases: {phases}; start-up, imports "
              f"and Hydra {rest:.1f} s")  # fmt: skip

        if args.parallel:
            dims = "sweep.dims=[32,16,8,4]"
            joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
            for label, extra in [
                ("basic launcher (one job at a time)", []),
                ("joblib, 2 jobs, threads shared (default)", joblib),
                ("joblib, 2 jobs, threads=2 each", [*joblib, "threads=2"]),
            ]:
                wall = timed([*AESWEEP, "sweep", dims, *extra], work)
                print(f"sweep over 4 dims, {label}: wall {wall:.1f} s")

        if not args.skip_sweep:
            sweep = work / "sweep"
            wall = timed([*AESWEEP, "sweep", f"sweep.dims=[{args.sweep_dims}]",
                          f"hydra.sweep.dir={sweep}"], work)  # fmt: skip
            fits = [json.loads(p.read_text())["seconds"] for p in sweep.glob("*/result.json")]
            print(f"aesweep sweep over {len(fits)} dims: wall {wall:.1f} s, sum of fit times "
                  f"{sum(fits):.1f} s, ratio {wall / sum(fits):.2f} (target <= 1.3)")  # fmt: skip


if __name__ == "__main__":
    main()
