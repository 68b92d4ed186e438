"""What survives which fault: signals, damaged files, concurrent jobs, reused folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import SMOKE, ctrl_c_at_step, result_of, run_subprocess
from tests.test_sweep import status_of, wait_for

LONG = ["data.subset=300", "trainer=smoke", "trainer.max_epochs=300", "patience=null"]


def start(*args: str) -> subprocess.Popen:
    """`aesweep <args>` as a process that takes Ctrl-C as a terminal's would: a test runner
    started in the background by a non-interactive shell ignores SIGINT, and a child would
    inherit that."""

    def ctrl_c_as_in_a_terminal() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-m", "aesweep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_as_in_a_terminal)  # fmt: skip


def test_sigterm_keeps_the_checkpoint_and_resume_finishes_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start("train", "dim_z=8", *LONG, f"hydra.run.dir={run}")
    wait_for(lambda: (run / "checkpoints" / "last.ckpt").is_file())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    result = result_of(run)
    assert result["status"] == "interrupted" and "SIGTERM" in result["error"]
    assert "aesweep: interrupted by SIGTERM; continue with resume=<this run folder>" in err
    stopped = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert 0 < stopped["global_step"] < 300 * 5  # 300 images in batches of 64

    done = run_subprocess("train", f"resume={run}")
    assert done.returncode == 0, done.stderr
    resumed = result_of(run)
    assert resumed["status"] == "ok" and resumed["epochs"] == 300
    assert resumed["steps"] == 300 * 5  # continued, not restarted: no step done twice
    assert resumed["resumed_from"] == str(run / "checkpoints" / "last.ckpt")


def test_ctrl_c_stops_a_sweep_cleanly_and_its_resume_finishes_it(tmp_path: Path) -> None:
    sweep = tmp_path / "sw"
    endless = [*LONG, "trainer.max_epochs=100000"]  # still training when the signal lands
    proc = start("sweep", "sweep.dims=[16,8]", *endless, f"hydra.sweep.dir={sweep}")
    try:
        wait_for(lambda: (sweep / "dim_z=16" / "checkpoints" / "last.ckpt").is_file())
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        proc.kill()  # never leave an endless sweep behind
    assert proc.returncode == 128 + signal.SIGINT
    assert status_of(sweep / "dim_z=16") == "interrupted"
    assert not (sweep / "dim_z=8").exists()
    stopped = torch.load(sweep / "dim_z=16/checkpoints/last.ckpt", weights_only=False)["epoch"]

    done = run_subprocess("sweep", f"resume={sweep}", "trainer.max_epochs=3")  # may shorten it
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert table["dim_z"].tolist() == [16, 8] and (table["status"] == "ok").all()
    assert table["epochs"].tolist() == [max(3, stopped), 3]


def test_a_damaged_checkpoint_is_named(aesweep, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    outcome = aesweep("train", "dim_z=4", *SMOKE, f"ckpt_path={bad}", "hydra.run.dir=run")
    assert outcome.code == 2 and len(outcome.lines) == 1
    assert outcome.lines[-1].startswith(f"aesweep: error: checkpoint {bad} is damaged or not a")
    assert "Traceback" not in outcome.out + outcome.err


def test_a_checkpoint_of_another_model_is_refused_with_the_difference(aesweep, tmp_path) -> None:
    assert aesweep("train", "dim_z=8", *SMOKE, "hydra.run.dir=first").code == 0
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    outcome = aesweep("train", "dim_z=4", *SMOKE, f"ckpt_path={ckpt}", "hydra.run.dir=second")
    assert outcome.code == 2
    assert outcome.lines == [
        f"aesweep: error: checkpoint {ckpt} was trained with dim_z=8, this run has dim_z=4"
    ]


def test_a_damaged_pca_cache_is_recomputed(tmp_path: Path) -> None:
    from aesweep import pca

    train, test = torch.rand(50, 8), torch.rand(10, 8)
    first = pca.cached_pca(tmp_path, train, test)
    cache = next(tmp_path.glob("pca-*.pt"))
    cache.write_bytes(b"garbage")
    pca._memory.clear()
    again = pca.cached_pca(tmp_path, train, test)
    assert torch.allclose(again.test_sse, first.test_sse)
    assert torch.load(cache, weights_only=True)["test_sse"].shape == (9,)


def test_parallel_jobs_building_a_fresh_data_cache_never_corrupt_it(tmp_path, monkeypatch) -> None:
    fresh = tmp_path / "fresh-cache"
    monkeypatch.setenv("AESWEEP_DATA", str(fresh))
    done = run_subprocess(
        "sweep",
        "sweep.dims=[8,4,2,1]",
        *SMOKE,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path / 'sw'}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(tmp_path / "sw" / "loss_vs_dim.csv")
    assert (table["status"] == "ok").all() and len(table) == 4
    cached = torch.load(fresh / "mnist5k.pt", weights_only=True)
    assert cached["x"].shape == (5000, 784)
    assert not list(fresh.glob(".*.tmp"))  # no temp file left behind
    assert table["pca_test_sse"].nunique() == 4 and len(list(fresh.glob("pca-*.pt"))) == 1


def test_a_new_run_never_overwrites_a_finished_one(aesweep, tmp_path: Path) -> None:
    assert aesweep("train", "dim_z=4", *SMOKE, "hydra.run.dir=run").code == 0
    finished = (tmp_path / "run" / "result.json").read_text()
    outcome = aesweep("train", "dim_z=4", *SMOKE, "hydra.run.dir=run")
    assert outcome.code == 2
    assert outcome.lines == [
        "aesweep: error: hydra.run.dir=run is invalid: it already holds a run; continue it "
        "with aesweep train resume=run, or choose a new folder"
    ]
    assert (tmp_path / "run" / "result.json").read_text() == finished
    assert aesweep("sweep", "sweep.dims=[2]", *SMOKE, "hydra.sweep.dir=sw").code == 0
    again = aesweep("sweep", "sweep.dims=[2]", *SMOKE, "hydra.sweep.dir=sw")
    assert again.code == 2 and "aesweep sweep resume=sw" in again.lines[0]


@pytest.mark.parametrize("steps_per_call", [1, 2])
def test_a_run_resumed_mid_epoch_matches_one_never_interrupted(
    aesweep, tmp_path: Path, steps_per_call
) -> None:
    args = ("train", "dim_z=8", "trainer=smoke", "data.subset=500", "trainer.max_epochs=3",
            "data.batch_size=128", f"steps_per_call={steps_per_call}")  # fmt: skip
    assert aesweep(*args, "hydra.run.dir=whole").code == 0
    sigint = signal.getsignal(signal.SIGINT)
    with ctrl_c_at_step(steps_per_call, 6):  # 4 steps an epoch: inside the second
        assert aesweep(*args, "hydra.run.dir=split").code == 130
    assert signal.getsignal(signal.SIGINT) == sigint  # Lightning's SIG_IGN ends with the run
    stopped = torch.load(tmp_path / "split/checkpoints/last.ckpt", weights_only=False)
    assert (stopped["epoch"], stopped["global_step"]) == (1, 6)
    assert aesweep("train", "resume=split").code == 0
    whole, split = (result_of(tmp_path / r) for r in ("whole", "split"))
    assert whole["steps"] == split["steps"] == 12
    for metric in ("train_sse", "val_sse", "test_sse"):  # same batches, same updates
        assert split[metric] == whole[metric], metric


def test_resume_extends_a_finished_run_and_refuses_a_changed_model(aesweep, tmp_path) -> None:
    assert aesweep("train", "dim_z=8", *SMOKE, "hydra.run.dir=run").code == 0
    refused = aesweep("train", "resume=run", "dim_z=4")
    assert refused.code == 2 and refused.lines == [
        "aesweep: error: dim_z=4 is invalid with resume=DIR: a resumed run keeps the model and "
        "data its checkpoint was made with; only trainer.max_epochs, trainer.max_steps, "
        "checkpoint_every_s, trainer.enable_progress_bar, steps_per_call, cuda_graph and "
        "hydra.* may change"
    ]
    assert aesweep("train", "resume=run", "trainer.max_epochs=4").code == 0
    result = result_of(tmp_path / "run")
    assert (result["status"], result["epochs"], result["steps"]) == ("ok", 4, 4 * 5)
    assert "trainer.max_epochs=4" in result["overrides"]


@pytest.mark.parametrize(
    ("override", "trained", "now"),
    [
        ("model.input_noise=0.2", "model.input_noise=0.2", "model.input_noise=0.1"),
        ("optimizer.lr=0.001", "optimizer.lr=0.001", "optimizer.lr=0.002"),
        ("data.batch_size=128", "data.batch_size=128", "data.batch_size=64"),
    ],
)
def test_resume_refuses_a_run_these_configs_would_train_differently(
    aesweep, tmp_path, override, trained, now
) -> None:
    """resume=DIR composes the run again from its overrides: where the configs changed since
    it began (another aesweep version), the checkpoint names the setting that differs,
    before anything trains, for a run and for a sweep's unfinished job."""
    assert aesweep("train", "dim_z=8", *SMOKE, override, "hydra.run.dir=run").code == 0
    saved = tmp_path / "run/.hydra/overrides.yaml"
    saved.write_text(saved.read_text().replace(f"- {override}\n", ""))  # the old default
    last = tmp_path / "run/checkpoints/last.ckpt"
    before = last.read_bytes()
    refused = aesweep("train", "resume=run", "trainer.max_epochs=3")
    assert refused.code == 2 and refused.lines == [
        f"aesweep: error: checkpoint run/checkpoints/last.ckpt was trained with {trained}, these "
        f"configs give {now}: resume continues a run only as it began (resume it with the "
        f"aesweep version that made it, or start a new run)"
    ]
    assert last.read_bytes() == before and result_of(tmp_path / "run")["status"] == "ok"

    assert aesweep("sweep", "sweep.dims=[4,2]", *SMOKE, override, "hydra.sweep.dir=sw").code == 0
    (tmp_path / "sw/dim_z=2/result.json").unlink()  # one job unfinished
    saved = OmegaConf.load(tmp_path / "sw/multirun.yaml")
    saved.hydra.overrides.task.remove(override)
    OmegaConf.save(saved, tmp_path / "sw/multirun.yaml")
    finished = result_of(tmp_path / "sw/dim_z=4")  # as if the override had never been there
    finished["overrides"].remove(override)
    (tmp_path / "sw/dim_z=4/result.json").write_text(json.dumps(finished))
    refused = aesweep("sweep", "resume=sw")
    assert refused.code == 2 and len(refused.lines) == 1
    assert f"was trained with {trained}, these configs give {now}:" in refused.lines[0]
    assert "sw/dim_z=2/checkpoints/last.ckpt" in refused.lines[0]
    assert result_of(tmp_path / "sw/dim_z=4")["status"] == "ok"


def test_a_numbered_job_of_a_multirun_is_checked_before_it_starts(aesweep, tmp_path) -> None:
    """A multirun with nothing swept names its job folder job0 (${hydra.job.num}): its report
    is written, and on resume its recipe is compared up front as well, so a finished row is
    never turned into a failed one."""
    noise = "model.input_noise=0.2"
    assert aesweep("train", "-m", *SMOKE, noise, "hydra.sweep.dir=m").code == 0
    assert "aesweep train -m" in (tmp_path / "m/report.md").read_text()  # job${...} unresolved
    saved = OmegaConf.load(tmp_path / "m/multirun.yaml")
    saved.hydra.overrides.task.remove(noise)  # as if it had been the default then
    OmegaConf.save(saved, tmp_path / "m/multirun.yaml")
    finished = result_of(tmp_path / "m/job0")
    finished["overrides"].remove(noise)
    (tmp_path / "m/job0/result.json").write_text(json.dumps(finished))
    refused = aesweep("sweep", "resume=m", "trainer.max_epochs=3")  # extends the finished job
    assert refused.code == 2 and len(refused.lines) == 1
    assert (
        "checkpoint m/job0/checkpoints/last.ckpt was trained with model.input_noise=0.2"
        in (refused.lines[0])
    )
    assert result_of(tmp_path / "m/job0") == finished


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_results_are_written_with_the_users_umask(aesweep, tmp_path, umask, mode) -> None:
    import os
    import stat

    old = os.umask(umask)
    try:
        assert aesweep("sweep", "sweep.dims=[2]", *SMOKE, "hydra.sweep.dir=sw").code == 0
    finally:
        os.umask(old)
    written = ["dim_z=2/result.json", "dim_z=2/reconstructions.png", "loss_vs_dim.csv",
               "loss_vs_dim.png", "report.md", "reconstructions.png"]  # fmt: skip
    for name in written:
        assert stat.S_IMODE((tmp_path / "sw" / name).stat().st_mode) == mode, name


def test_two_sweeps_started_in_the_same_second_never_share_a_folder(
    aesweep, tmp_path, monkeypatch
) -> None:
    from datetime import datetime

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):  # Hydra's ${now:} resolver reads the clock here
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr("hydra.core.utils.datetime", Frozen)
    for _ in range(2):
        assert aesweep("sweep", "sweep.dims=[2]", *SMOKE).code == 0
    folders = sorted((tmp_path / "outputs" / "sweeps").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("2026-01-02_03-04-05-") for f in folders)
    for folder in folders:
        assert len(pd.read_csv(folder / "loss_vs_dim.csv")) == 1


def test_a_folder_being_written_refuses_a_second_writer_until_its_process_dies(
    aesweep, tmp_path: Path
) -> None:
    import socket

    run = tmp_path / "run"
    proc = start("train", "dim_z=8", *LONG, f"hydra.run.dir={run}")
    try:
        wait_for(lambda: (run / "checkpoints" / "last.ckpt").is_file())
        refused = aesweep("train", f"resume={run}")
        assert proc.poll() is None  # still training: the refusal was about a live writer
    finally:
        proc.kill()  # kill -9: the kernel drops its lock
        proc.wait()
    assert refused.code == 2 and refused.lines == [
        f"aesweep: error: resume={run} is invalid: pid {proc.pid} on {socket.gethostname()} "
        f"is writing {run}; wait until it ends"
    ]
    assert status_of(run) == "running"  # the refused command wrote nothing
    done = aesweep("train", f"resume={run}", "trainer.max_epochs=3")  # no stale lock
    assert done.code == 0, done.err


def test_two_resumes_of_one_sweep_at_once_one_trains_and_the_other_refuses(tmp_path) -> None:
    import socket

    sweep = tmp_path / "sw"
    endless = [*LONG, "trainer.max_epochs=100000"]  # still training when the signal lands
    proc = start("sweep", "sweep.dims=[8,4]", *endless, f"hydra.sweep.dir={sweep}")
    try:
        wait_for(lambda: (sweep / "dim_z=8" / "checkpoints" / "last.ckpt").is_file())
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert status_of(sweep / "dim_z=8") == "interrupted"
    stopped = torch.load(sweep / "dim_z=8/checkpoints/last.ckpt", weights_only=False)["epoch"]

    both = [start("sweep", f"resume={sweep}", "trainer.max_epochs=3") for _ in range(2)]
    pids = {f"pid {p.pid} on {socket.gethostname()}": p for p in both}
    lock = sweep / ".aesweep.lock"
    try:
        wait_for(lambda: lock.read_text().strip() in pids)
        winner = pids[lock.read_text().strip()]
        winner.send_signal(signal.SIGSTOP)  # holding the lock, it cannot finish too soon
        loser = both[1 - both.index(winner)]
        _, refused = loser.communicate(timeout=300)
        winner.send_signal(signal.SIGCONT)
        _, err = winner.communicate(timeout=600)
    finally:
        for p in both:
            p.kill()
    assert loser.returncode == 2 and refused.splitlines() == [
        f"aesweep: error: resume={sweep} is invalid: pid {winner.pid} on "
        f"{socket.gethostname()} is writing {sweep}; wait until it ends"
    ]
    assert winner.returncode == 0, err[-2000:]
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert table["dim_z"].tolist() == [8, 4] and (table["status"] == "ok").all()
    assert table["epochs"].tolist() == [max(3, stopped), 3]


def test_a_run_of_a_sweep_being_written_is_refused(aesweep, tmp_path: Path) -> None:
    """A job folder belongs to its sweep's writer, even one the sweep has not reached yet."""
    sweep = tmp_path / "sw"
    proc = start("sweep", "sweep.dims=[8,4]", *LONG, f"hydra.sweep.dir={sweep}")
    try:
        wait_for(lambda: (sweep / "dim_z=8" / "checkpoints" / "last.ckpt").is_file())
        refused = aesweep("train", "dim_z=4", *SMOKE, f"hydra.run.dir='{sweep}/dim_z=4'")
    finally:
        proc.kill()
        proc.wait()
    assert refused.code == 2 and len(refused.lines) == 1, refused.err
    assert refused.lines[0].startswith(f"aesweep: error: hydra.run.dir={sweep}/dim_z=4 is invalid")
    assert f"pid {proc.pid} on" in refused.lines[0] and f"is writing {sweep};" in refused.lines[0]
    assert not (sweep / "dim_z=4" / "result.json").exists()


def test_the_umask_is_read_without_being_changed(monkeypatch) -> None:
    """os.umask can only be read by setting it: a file another thread creates meanwhile
    (a logger's, a checkpoint) would get the wrong mode."""
    import os

    from aesweep import io

    umask = os.umask
    old = umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda *_: pytest.fail("the process umask was set"))
        assert io._umask() == 0o027
    finally:
        umask(old)


def test_every_file_of_a_run_follows_the_umask_the_checkpoint_too(tmp_path: Path) -> None:
    import os
    import stat

    done = run_subprocess("train", "dim_z=2", *SMOKE, "hydra.run.dir=run",
                          preexec_fn=lambda: os.umask(0o027))  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("result.json", "reconstructions.png", "samples.npz", "checkpoints/last.ckpt"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o640, name


def test_a_slurm_job_warned_of_its_time_limit_is_requeued_and_continues_exactly(
    aesweep, tmp_path: Path, monkeypatch
) -> None:
    """SLURM's warning (USR2) stops training at the end of the step with last.ckpt saved,
    then goes to submitit's handler (here a stand-in), which requeues the job; the requeued
    job, the same SLURM job in the same folder, continues: the run of an uninterrupted job."""
    from aesweep.cli import run_hydra
    from aesweep.model import AutoEncoder

    args = ["dim_z=8", "trainer=smoke", "data.subset=500", "trainer.max_epochs=3",
            "data.batch_size=128", "steps_per_call=1"]  # fmt: skip
    assert aesweep("train", *args, "hydra.run.dir=whole").code == 0
    requeued = []

    def submitit_handler(signum, frame):  # submitit's: requeue the job, then exit
        requeued.append(signum)
        sys.exit(-1)

    train_step = AutoEncoder.training_step

    def warned_at_step_6(self, batch, batch_idx):  # 4 steps an epoch: inside the second
        if self.global_step == 6:
            os.kill(os.getpid(), signal.SIGUSR2)
        return train_step(self, batch, batch_idx)

    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setattr(AutoEncoder, "training_step", warned_at_step_6)
    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        assert aesweep("train", *args, "hydra.run.dir=split").code == -1
    finally:
        signal.signal(signal.SIGUSR2, previous)
    monkeypatch.setattr(AutoEncoder, "training_step", train_step)
    assert requeued == [signal.SIGUSR2]
    stopped = json.loads((tmp_path / "split" / "result.json").read_text())
    assert stopped["status"] == "interrupted" and "time limit near" in stopped["error"]
    ckpt = torch.load(tmp_path / "split/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 7  # the step under way when the warning came, finished

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # SLURM starts the job again; submitit
    run_hydra("aesweep.train:run_job", [*args, "hydra.run.dir=split"])  # runs the Hydra task
    whole, split = (
        json.loads((tmp_path / r / "result.json").read_text()) for r in ("whole", "split")
    )
    assert split["status"] == "ok" and split["requeued"] == 1 and split["slurm_job"] == "42"
    assert split["resumed_from"] == str(tmp_path / "split" / "checkpoints" / "last.ckpt")
    assert whole["steps"] == split["steps"] == 12
    for metric in ("train_sse", "val_sse", "test_sse"):  # same batches, same updates
        assert split[metric] == whole[metric], metric


def test_a_warning_that_came_while_the_job_was_starting_stops_it_at_its_first_step(
    aesweep, tmp_path: Path, monkeypatch
) -> None:
    """SLURM may warn a job before submitit's handler is there (aesweep.jobstart holds it):
    training acts on it at once, checkpoints after one step and hands over to submitit."""
    from aesweep.jobstart import HELD

    requeued = []

    def submitit_handler(signum, frame):
        requeued.append(signum)
        sys.exit(-1)

    monkeypatch.setenv(HELD, "SIGUSR2")
    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        assert aesweep("train", "dim_z=8", *SMOKE, "steps_per_call=1", "hydra.run.dir=r").code == -1
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert requeued == [signal.SIGUSR2] and HELD not in os.environ
    assert torch.load(tmp_path / "r/checkpoints/last.ckpt", weights_only=False)["global_step"] == 1
