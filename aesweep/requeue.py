"""A SLURM job that reaches its time limit or is preempted continues where it stopped, by
one mechanism: submitit's (`hydra.launcher.max_num_timeout`), which knows the limit on
requeues and resubmits the same Hydra job into the same folder; Lightning's auto-requeue
is off. submitit's warning (USR2, `signal_delay_s` before the limit) stops training at the
next step boundary with last.ckpt written, as on SIGTERM; the requeued job continues from it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

WARNING_SIGNAL = signal.SIGUSR2  # submitit's default (SUBMITIT_PREEMPT_SIGNAL)


def slurm_job_id() -> str | None:
    """This job's SLURM id as sacct and submitit name it (17_0 for a task of array 17); it
    stays the same when SLURM requeues the job."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def times_requeued() -> int:
    """How often SLURM has started this job again (0 outside SLURM)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def is_own_folder(previous: dict[str, Any] | None) -> bool:
    """The run folder holds a run of this very SLURM job: the job was requeued (time limit,
    preemption, `scontrol requeue`), so it continues (or keeps) that run, not another one."""
    job = slurm_job_id()
    return bool(previous and job and previous.get("slurm_job") == job)


def cluster_plugins() -> list[Any]:
    """Inside a SLURM job: Lightning's SLURM environment without its auto-requeue, whose
    USR1 handler and hpc_ckpt files would be a second requeue mechanism."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def seconds_left() -> float | None:
    """Seconds until this SLURM job's time limit, from squeue (None where unknown)."""
    job = os.environ.get("SLURM_JOB_ID")
    try:
        left = subprocess.run(["squeue", "-h", "-j", job, "-o", "%L"], capture_output=True,
                              text=True, timeout=10).stdout.strip() if job else ""  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.fullmatch(r"(?:(\d*)-)?(?:(\d+):)?(\d+):(\d+)", left)  # [D-][H:]M:S
    if match is None:
        return None  # UNLIMITED, NOT_SET, or no such job
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


class StopOnTimeLimit(Callback):
    """Where submitit has installed its handler, its warning signal stops training as SIGTERM
    does (at the end of the step, last.ckpt saved); `hand_over` then passes the signal on
    to submitit, which requeues the job. SLURM checks limits every 30 s, so the warning may
    come early (or, held by aesweep.jobstart, as a requeued job starts): training goes on
    until `delay_s` (the launcher's signal_delay_s) before the limit that squeue gives."""

    def __init__(self, delay_s: float | None = None, requeues: int | None = None) -> None:
        self.delay_s, self.warned = delay_s, False
        self._timer: threading.Timer | None = None
        # no requeue left (SLURM's restart count, which counts preemptions too, has reached
        # max_num_timeout): stopping at the warning would only waste the rest of the time
        self.last_allocation = requeues is not None and times_requeued() >= requeues

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from aesweep.jobstart import HELD

        # after Lightning's own handlers (SIGTERM's among them); it restores submitit's
        # USR2 handler when fit ends
        if callable(signal.getsignal(WARNING_SIGNAL)):
            signal.signal(WARNING_SIGNAL, self._on_warning)
            if os.environ.pop(HELD, None):
                self._on_warning(WARNING_SIGNAL, None)

    def _on_warning(self, signum: int, frame: Any) -> None:
        if self.last_allocation:  # SLURM's SIGTERM at the limit still writes last.ckpt
            print("aesweep: time limit near (SIGUSR2) and no requeue left: training on until "
                  "the limit", flush=True)  # fmt: skip
            return
        left = seconds_left() if self.delay_s is not None else None
        wait = 0.0 if left is None else left - float(self.delay_s or 0)
        if wait < 1 or self._timer is not None:
            self._stop()
            return
        print(f"aesweep: time limit in {left:.0f} s (SIGUSR2, early): checkpointing in "
              f"{wait:.0f} s", flush=True)  # fmt: skip
        self._timer = threading.Timer(wait, self._stop)
        self._timer.daemon = True
        self._timer.start()

    def _stop(self) -> None:
        print("aesweep: time limit near (SIGUSR2): checkpointing at the end of this step",
              flush=True)  # fmt: skip
        self.warned = True
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's graceful stop

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def hand_over(self) -> None:
        """Deliver the warning to submitit's handler: it requeues the job and exits, or
        raises UncompletedJobError when max_num_timeout is used up."""
        if not self.warned:
            return
        try:
            signal.raise_signal(WARNING_SIGNAL)
        except Exception as e:  # e.g. "timed-out too many times": the job ends, resumable
            print(f"aesweep: not requeued: {' '.join(str(e).split())}", flush=True)
