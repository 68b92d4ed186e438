"""What a SLURM job costs on the local one-node cluster (scripts/slurm_cluster.sh):
seconds from `sbatch` to the job's first command, from `scontrol requeue` to the requeued
job's first command, and the wall time of the tiny test sweep with the submitit_slurm
launcher against Hydra's basic (in-process, sequential) launcher.

    python scripts/bench_slurm.py [--repeats 3] [--no-sweep]

Starts the cluster if it is not running (and leaves it running)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).with_name("slurm_cluster.sh")
TINY = ["sweep", "sweep.dims=[4,2]", "trainer=smoke", "data.subset=300"]


def start_cluster() -> float:
    """Seconds `slurm_cluster.sh start` took; exports SLURM_CONF for the commands below."""
    t0 = time.perf_counter()
    done = subprocess.run(["bash", SCRIPT, "start"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr.strip())
    os.environ["SLURM_CONF"] = done.stdout.split("export SLURM_CONF=")[-1].strip()
    return time.perf_counter() - t0


def submit_to_start(folder: Path) -> float:
    """Seconds from calling sbatch to the job's first command running on the node."""
    stamp = folder / f"start-{time.monotonic_ns()}"
    t0 = time.time()
    subprocess.run(
        ["sbatch", "--quiet", "-o", "/dev/null", "--wrap", f"date +%s.%N > {stamp}"], check=True
    )
    while not (stamp.is_file() and stamp.read_text().strip()):
        time.sleep(0.01)
    return float(stamp.read_text()) - t0


def requeue_to_restart(folder: Path) -> float:
    """Seconds from `scontrol requeue` of a running job to its command running again."""
    stamps = folder / f"restart-{time.monotonic_ns()}"
    job = subprocess.run(
        ["sbatch", "--parsable", "--requeue", "-o", "/dev/null",
         "--wrap", f"date +%s.%N >> {stamps}; sleep 600"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    while not stamps.is_file():
        time.sleep(0.01)
    t0 = time.time()
    subprocess.run(["scontrol", "requeue", job], check=True)
    while len(stamps.read_text().split()) < 2:
        time.sleep(0.01)
    subprocess.run(["scancel", job], check=True)
    return float(stamps.read_text().split()[1]) - t0


def sweep_seconds(folder: Path, *launcher: str) -> float:
    """Wall time of `aesweep sweep` over the tiny sweep, submission to report."""
    sweep = Path(tempfile.mkdtemp(dir=folder)) / "sw"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "aesweep", *TINY, *launcher, f"hydra.sweep.dir={sweep}"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-sweep", action="store_true", help="the SLURM latencies only")
    args = parser.parse_args()
    print(f"slurm_cluster.sh start: {start_cluster():.1f} s")
    with tempfile.TemporaryDirectory(dir=os.getcwd(), prefix=".bench-slurm-") as tmp:
        folder = Path(tmp)
        waits = [submit_to_start(folder) for _ in range(5 * args.repeats)]
        print(
            f"sbatch to first command: median {statistics.median(waits):.2f} s, "
            f"min {min(waits):.2f} s, max {max(waits):.2f} s ({len(waits)} jobs)"
        )
        holds = [requeue_to_restart(folder) for _ in range(args.repeats)]
        print(
            f"scontrol requeue to first command again: median {statistics.median(holds):.1f} s, "
            f"min {min(holds):.1f} s, max {max(holds):.1f} s ({len(holds)} jobs)"
        )
        if args.no_sweep:
            return
        sweep_seconds(folder)  # warm the data and PCA caches of both launchers
        basic, slurm = [], []
        for _ in range(args.repeats):  # alternate, so that load on the machine hits both
            basic.append(sweep_seconds(folder))
            slurm.append(sweep_seconds(folder, "hydra/launcher=submitit_slurm"))
        b, s = statistics.median(basic), statistics.median(slurm)
        print(f"tiny sweep ({' '.join(TINY)}), median of {args.repeats}:")
        print(f"  basic launcher:  {b:.1f} s  {[round(x, 1) for x in basic]}")
        print(f"  submitit_slurm:  {s:.1f} s  {[round(x, 1) for x in slurm]}")
        print(f"  slurm / basic:   {s / b:.2f}x, {s - b:+.1f} s")


if __name__ == "__main__":
    main()
