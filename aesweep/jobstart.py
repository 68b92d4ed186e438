"""The first code of an aesweep SLURM job (`env --block-signal=USR2 python -u -m
aesweep.jobstart ... FOLDER`): submitit's job entry point with the time-limit warning held.
A requeued job whose whole limit lies in SLURM's 30 s check window gets USR2 as it starts,
whose default action would kill it before submitit's handler is in: blocked from exec on
and held here, training acts on it instead (aesweep.requeue.StopOnTimeLimit).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

HELD = "AESWEEP_HELD_WARNING"  # set when the warning came before training could act on it


def hold(signum: int, frame: Any) -> None:
    os.environ[HELD] = signal.Signals(signum).name


def main() -> None:
    signal.signal(signal.SIGUSR2, hold)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})  # one that came is held now
    from submitit.core.submission import process_job

    from aesweep.config import quiet_launcher_schema

    quiet_launcher_schema()  # the job composes its config again
    process_job(sys.argv[-1])  # the job folder, last as in submitit's own command


if __name__ == "__main__":
    main()
