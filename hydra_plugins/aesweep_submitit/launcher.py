"""`hydra/launcher=submitit_slurm` in aesweep: Hydra's submitit SLURM launcher (the same
job array and settings), watched from the submitting terminal: a line whenever a job starts,
is requeued, finishes or fails; a sweep whose jobs did not all return ends with one line per
such job and the resume command (exit 1), not submitit's traceback. Jobs start with
aesweep.jobstart. Hydra imports this module at every start: it imports nothing heavy.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

try:  # Hydra's plugin scan imports this module at every start, with the `launchers` extra or not
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
except ImportError:
    submitit_launcher = None

POLL_S = 5.0  # one sacct call per poll, for every job of the sweep
WAITING = ("PENDING", "REQUEUED", "RESIZING", "SUSPENDED")


if submitit_launcher is not None:  # else no `launchers` extra: nothing to offer

    class SlurmLauncher(submitit_launcher.SlurmLauncher):
        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            assert self.config is not None
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            submitit_launcher.log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
            names = job_names(job_overrides)
            args = [
                (list(overrides), "hydra.sweep.dir", initial_job_idx + i,
                 f"job_id_for_{initial_job_idx + i}", Singleton.get_state())
                for i, overrides in enumerate(job_overrides)
            ]  # fmt: skip
            jobs = self._executor().map_array(self, *zip(*args, strict=True))
            returns = watch(jobs, names)
            if all(r is not None for r in returns):
                return returns
            missing = [
                (j, name) for j, name, r in zip(jobs, names, returns, strict=True) if r is None
            ]
            for job, name in missing:
                print(f"aesweep: job {job.job_id} ({name}) ended without a result: "
                      f"{state_of(job)}; log: {job.paths.stderr}", file=sys.stderr)  # fmt: skip
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                missing[0][0].result()  # submitit's own error, with its log
            from aesweep.report import report_and_exit_code

            if report_and_exit_code(sweep_dir.absolute()) == 0:
                print(f"aesweep: rerun them with: aesweep sweep resume={sweep_dir.absolute()}")
            raise SystemExit(1)

        def _executor(self) -> Any:
            """Hydra's executor (same sbatch settings), with jobs started by aesweep.jobstart."""
            import submitit

            params, python = dict(self.params), shlex.quote(sys.executable)
            executor = submitit.AutoExecutor(
                folder=params.pop("submitit_folder"),
                cluster="slurm",
                slurm_max_num_timeout=params.pop("max_num_timeout"),
                slurm_python=f"{block_warning()}{python} -u -m aesweep.jobstart",
            )
            shared = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(
                **{k if k in shared else f"slurm_{k}": v for k, v in params.items()}
            )
            return executor


def block_warning() -> str:
    """`env --block-signal=USR2 ` where env has it (GNU coreutils >= 8.31): SLURM's warning
    that comes while Python starts then waits for aesweep.jobstart instead of killing it."""
    import subprocess

    try:
        blocks = subprocess.run(["env", "--block-signal=USR2", "true"], capture_output=True)
    except OSError:
        return ""
    return "env --block-signal=USR2 " if blocks.returncode == 0 else ""


def job_names(job_overrides: Sequence[Sequence[str]]) -> list[str]:
    """Each job by the settings that tell it apart (dim_z always), e.g. `dim_z=8`."""
    varying = {o for job in job_overrides for o in job if any(o not in j for j in job_overrides)}
    return [",".join(o for o in job if o in varying or o.startswith("dim_z=")) for job in
            job_overrides]  # fmt: skip


def state_of(job: Any) -> str:
    """The job's SLURM state from the last sacct call ("CANCELLED by 0" -> CANCELLED)."""
    state = job.watcher.get_state(job.job_id, mode="cache")
    return (state.split() or ["UNKNOWN"])[0]


def watch(jobs: list[Any], names: list[str]) -> list[JobReturn | None]:
    """Poll SLURM until every job has ended, printing a line at each start, requeue and end;
    returns each job's JobReturn (None where it ended without one)."""
    from aesweep.report import progress_head, progress_line

    start = time.monotonic()
    returns: list[JobReturn | None] = [None] * len(jobs)
    last = ["PENDING"] * len(jobs)
    running, started = set(range(len(jobs))), set()  # started: a start this terminal showed
    while running:
        jobs[0].get_info(mode="force")  # one sacct call refreshes every job's state
        for i in sorted(running):
            job, state = jobs[i], state_of(jobs[i])
            head = progress_head(len(jobs) - len(running), len(jobs), time.monotonic() - start)
            ended_now = job.paths.result_pickle.exists() or job.watcher.is_done(job.job_id, "cache")
            if not ended_now:
                if state == "RUNNING" and last[i] != "RUNNING":
                    again = " again" if i in started else ""  # a start between polls: unseen
                    started.add(i)
                    print(f"{head} {names[i]}: started{again} (SLURM job {job.job_id})", flush=True)
                elif state in WAITING and last[i] in ("RUNNING", "REQUEUED"):
                    if last[i] == "RUNNING":
                        print(f"{head} {names[i]}: requeued (SLURM job {job.job_id})", flush=True)
                    state = "REQUEUED"
                last[i] = state
                continue
            running.discard(i)
            returns[i], outcome = ended(job, state)
            done, elapsed = len(jobs) - len(running), time.monotonic() - start
            print(progress_line(done, len(jobs), elapsed, names[i], outcome), flush=True)
        if running:
            wait_a_poll(jobs, running)
    return returns


def wait_a_poll(jobs: list[Any], running: set[int]) -> None:
    """Until the next sacct call is due, or until a running job's result file appears (no
    sacct call needed): a finished job is reported, and the last one ends the sweep, at once."""
    due = time.monotonic() + POLL_S
    while time.monotonic() < due:
        if any(jobs[i].paths.result_pickle.exists() for i in running):
            return
        time.sleep(0.5)


def ended(job: Any, state: str) -> tuple[JobReturn | None, Any]:
    """(JobReturn or None, what its progress line says: result.json's record or a reason)."""
    if not job.paths.result_pickle.exists():  # e.g. `cancelled: no result (log: ...)`
        return None, {"status": state.lower(), "error": f"no result (log: {job.paths.stderr})"}
    try:
        returned = job.results()[0]
        return returned, returned.return_value
    except Exception as e:  # the job raised: its last traceback line says why
        lines = [line for line in str(e).splitlines() if line.strip()]
        return None, lines[-1] if lines else type(e).__name__
