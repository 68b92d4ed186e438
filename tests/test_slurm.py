"""Sweeps on a real SLURM cluster: the one-node cluster of scripts/slurm_cluster.sh (slurmctld,
slurmd, slurmdbd with MariaDB), driven through Hydra's submitit_slurm launcher. Where the
cluster cannot start (it needs root and apt) these tests skip with its reason, unless
AESWEEP_REQUIRE_SLURM=1 (.ci/run sets it): then they fail, so CI fails when the cluster does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.conftest import SMOKE, result_of, run_subprocess
from tests.test_sweep import status_of, wait_for

SCRIPT = Path(__file__).parents[1] / "scripts" / "slurm_cluster.sh"
SLURM = "hydra/launcher=submitit_slurm"


@pytest.fixture(scope="session")
def slurm_conf() -> Iterator[str]:
    """Starts the cluster for the session (installing it if needed) and stops it at the end,
    unless it was already running; every client, submitit's included, finds it through
    SLURM_CONF."""
    was_running = subprocess.run(["bash", SCRIPT, "status"], capture_output=True).returncode == 0
    started = subprocess.run(["bash", SCRIPT, "start"], capture_output=True, text=True)
    if started.returncode != 0:
        reason = f"the SLURM cluster did not start: {started.stderr.strip()}"
        if os.environ.get("AESWEEP_REQUIRE_SLURM") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(f"{reason} (AESWEEP_REQUIRE_SLURM=1 makes this a failure)")
    conf = started.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", conf)
        yield conf
    if not was_running:
        subprocess.run(["bash", SCRIPT, "stop"], capture_output=True)


def slurm_job_id(run_dir: Path) -> str:
    """The SLURM job id a job ran under, as the launcher recorded it (e.g. 12_0)."""
    return str(OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.job.id)


def sacct_states(job_id: str) -> dict[str, str]:
    """{job id: state} from the accounting database, for a job or a whole array."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", job_id.split("_")[0]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line)


LIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED")


def final_state(job_id: str) -> str:
    """The job's state once it has ended: sacct may lag the job's last moments behind the
    result the launcher has already read."""

    def ended() -> bool:
        return sacct_states(job_id).get(job_id, "PENDING").split()[0] not in LIVE

    wait_for(timeout=30, condition=ended)
    return sacct_states(job_id)[job_id]


def table(sweep: Path) -> pd.DataFrame:
    return pd.read_csv(sweep / "loss_vs_dim.csv")


def test_a_sweep_runs_every_job_as_a_slurm_job_on_its_own_gpu(slurm_conf, tmp_path) -> None:
    """gpus_per_node=1: SLURM gives each job one GPU of the node and sets CUDA_VISIBLE_DEVICES
    (the test cluster's GPUs are placeholders: training itself runs on the CPU), and torch
    runs with the one CPU SLURM gave the job."""
    sweep = tmp_path / "sw"
    bar = "trainer.enable_progress_bar=true"  # smoke turns it off; a job's log shows it
    done = run_subprocess(
        "sweep", SLURM, "hydra.launcher.gpus_per_node=1",
        "hydra.launcher.setup=['echo visible: $CUDA_VISIBLE_DEVICES']",
        "sweep.dims=[4,2]", *SMOKE, bar, f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table(sweep)
    assert rows["dim_z"].tolist() == [4, 2] and (rows["status"] == "ok").all()
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    assert "#SBATCH --gpus-per-node=1" in script.read_text().splitlines()
    visible = []
    for dim in (4, 2):
        job = slurm_job_id(sweep / f"dim_z={dim}")
        assert final_state(job) == "COMPLETED"
        log = (sweep / ".submitit" / job / f"{job}_0_log.out").read_text()
        assert f"run folder: {sweep / f'dim_z={dim}'}" in log  # the job's own output
        assert "epoch 2/2: train_loss=" in log and "\r" not in log  # one line per epoch
        assert "\r" not in (sweep / ".submitit" / job / f"{job}_0_log.err").read_text()
        visible += [line.split(": ")[1] for line in log.splitlines() if line.startswith("visible:")]
        assert result_of(sweep / f"dim_z={dim}")["torch_threads"] == 1  # SLURM_CPUS_ON_NODE
    assert sorted(visible) == ["0", "1"]  # both jobs ran at once, on different GPUs
    assert (sweep / "reconstructions.png").is_file() and (sweep / "report.md").is_file()


def test_a_failing_job_is_a_failed_row_and_the_others_finish(slurm_conf, tmp_path) -> None:
    sweep = tmp_path / "sw"
    done = run_subprocess(
        "train",
        "-m",
        SLURM,
        "dim_z=4",
        "optimizer=sgd",
        "model.output=identity",
        "optimizer.lr=1e-3,1e6",  # diverges at run time, not at validation
        *SMOKE,
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    rows = table(sweep)
    assert dict(zip(rows["optimizer.lr"], rows["status"], strict=True)) == {
        0.001: "ok",
        1e6: "failed",
    }
    assert "training loss became" in rows.loc[rows["status"] == "failed", "error"].iloc[0]
    assert "1 of 2 jobs did not finish" in done.stdout


def test_a_gpu_job_on_a_node_without_one_fails_inside_the_job(slurm_conf, tmp_path) -> None:
    """The submitting host's GPUs say nothing about the node's: the check runs in the job."""
    sweep = tmp_path / "sw"
    done = run_subprocess(
        "sweep", SLURM, "trainer.accelerator=gpu", "sweep.dims=[4,2]", *SMOKE,
        f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]  # accepted at submission, failed in the job
    rows = table(sweep)
    assert (rows["status"] == "failed").all()
    assert rows["error"].str.contains("no CUDA GPU is visible").all()


def test_scancel_then_resume_finishes_each_job_once(slurm_conf, tmp_path: Path) -> None:
    sweep = tmp_path / "sw"
    args = [SLURM, "sweep.dims=[4,2]", *SMOKE, "trainer.max_epochs=30", "patience=null"]
    args.append(f"hydra.sweep.dir={sweep}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aesweep", "sweep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    cancelled = sweep / "dim_z=2"
    try:
        wait_for(timeout=180, condition=lambda: (cancelled / "checkpoints" / "last.ckpt").is_file())
        job = slurm_job_id(cancelled)
        subprocess.run(["scancel", job], check=True)
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 1, out[-3000:]  # one line per job without a result, no traceback
    assert "dim_z=2: cancelled: no result (log: " in out  # its progress line
    assert f"aesweep: job {job} (dim_z=2) ended without a result: CANCELLED; log: " in out
    assert f"rerun them with: aesweep sweep resume={sweep}" in out and "Traceback" not in out
    assert final_state(job).startswith("CANCELLED")
    assert status_of(cancelled) == "interrupted", out[-3000:]  # SIGTERM: checkpoint, record

    done = run_subprocess("sweep", f"resume={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table(sweep)
    assert rows["dim_z"].tolist() == [4, 2] and (rows["status"] == "ok").all()
    resumed = result_of(cancelled)
    assert resumed["resumed_from"] == str(cancelled / "checkpoints" / "last.ckpt")
    assert resumed["epochs"] == 30
    kept = slurm_job_id(sweep / "dim_z=4")  # the resumed sweep's job: it kept the result
    assert (
        "already finished, kept" in (sweep / ".submitit" / kept / f"{kept}_0_log.out").read_text()
    )
    assert final_state(slurm_job_id(cancelled)) == "COMPLETED"


def test_hydra_full_error_shows_why_a_job_has_no_result(slurm_conf, tmp_path, monkeypatch):
    """The one-line ending (test above) hides submitit's traceback; HYDRA_FULL_ERROR=1 shows
    it, after the same lines. The job's script exits before Python starts: no result."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    sweep = tmp_path / "sw"
    done = run_subprocess(
        "sweep", SLURM, "hydra.launcher.setup=['exit 3']", "sweep.dims=[4]", *SMOKE,
        f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert "dim_z=4: failed: no result (log: " in done.stdout
    assert "(dim_z=4) ended without a result: FAILED; log: " in done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "submitit.core.utils.UncompletedJobError" in done.stderr, done.stderr[-3000:]


def test_two_sweeps_at_once_keep_apart(slurm_conf, tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "aesweep", "sweep", SLURM, f"sweep.dims=[{dim}]", *SMOKE],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for dim in (4, 2)
    ]
    outs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    sweeps = sorted((tmp_path / "outputs" / "sweeps").iterdir())
    assert len(sweeps) == 2  # started in the same second: separate folders
    dims = sorted(table(sweep)["dim_z"].tolist() for sweep in sweeps)
    assert dims == [[2], [4]]
    for sweep in sweeps:
        (run,) = sweep.glob("dim_z=*")
        assert status_of(run) == "ok"
        assert (sweep / ".submitit" / slurm_job_id(run)).is_dir()  # its own job logs


def test_a_requeued_job_ends_like_one_never_interrupted(slurm_conf, tmp_path: Path) -> None:
    """`scontrol requeue` (as a preemption: SIGTERM) after the job's first epoch, then its
    time limit (SLURM's USR2 warning; the job stops `signal_delay_s` = 45 s before its 1-minute
    limit, or at SLURM's first 30-s check if that is later: 15 to 30 s after it started
    again): each time the job checkpoints, is requeued and continues in its folder. It ends
    with the steps and test_sse of the same run done in one go, and the terminal follows it.
    The limit is 10 minutes but while the job waits to start again (so that the warning
    cannot come first), and after the warning (so that a slow machine needs no further
    requeues). 1,000 images x 400 epochs: 39 s of training on the 2-core test machine when
    quiet, so the job is still training when its limit comes (a machine twice as fast may
    finish first: then this test times out waiting for the warning)."""
    run = ["dim_z=8", "data.subset=1000", "trainer.max_epochs=400", "patience=null",
           "threads=1", "steps_per_call=1"]  # fmt: skip
    whole = subprocess.Popen(  # the reference, alongside: the node has two cores
        [sys.executable, "-m", "aesweep", "train", *run, f"hydra.run.dir={tmp_path / 'whole'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    sweep = tmp_path / "sw"
    limit = ["hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=45",
             "hydra.launcher.cpus_per_task=1"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "aesweep", "train", "-m", SLURM, *run, *limit,
         f"hydra.sweep.dir={sweep}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    job_dir = sweep / "dim_z=8"
    try:
        wait_for(timeout=180, condition=lambda: (job_dir / "checkpoints" / "last.ckpt").is_file())
        job = slurm_job_id(job_dir)
        log = sweep / ".submitit" / job / f"{job}_0_log.out"
        subprocess.run(["scontrol", "requeue", job], check=True)
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=1"], check=True)
        wait_for(timeout=300, condition=lambda: "time limit near" in log.read_text())
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True)
        out, _ = proc.communicate(timeout=900)
        assert whole.wait(timeout=300) == 0, whole.stderr.read()[-3000:]
    finally:
        proc.kill()
        whole.kill()
    assert proc.returncode == 0, out[-3000:]
    expected, result = result_of(tmp_path / "whole"), result_of(job_dir)
    assert result["status"] == "ok" and result["epochs"] == 400
    assert result["steps"] == expected["steps"] and result["test_sse"] == expected["test_sse"]
    assert result["requeued"] == 2 and result["slurm_job"] == job
    assert table(sweep)["status"].tolist() == ["ok"]  # the job once
    assert "Requeued job" in log.read_text()  # by submitit, after the warning
    for line in ("dim_z=8: started (SLURM job", "dim_z=8: requeued (SLURM job",
                 "dim_z=8: started again (SLURM job", "[1/1 done in "):  # fmt: skip
        assert line in out, out[-3000:]
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("prepare", "reason"),
    [
        (lambda d: None, "was not created by this script"),
        (lambda d: d.chmod(0o777), "is writable by others (mode 777)"),
        (lambda d: os.chown(d, 65534, 65534), "belongs to uid 65534, not to us"),
    ],
    ids=["no-marker", "writable-by-others", "another-owner"],
)
def test_the_cluster_refuses_a_state_folder_it_did_not_create(tmp_path, prepare, reason) -> None:
    """The daemons run as root and trust the folder's munge key: a folder someone else made
    first (with a key of their own) is refused before anything is read or started."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / "munge.key").write_bytes(b"k" * 1024)
    prepare(folder)
    env = {**os.environ, "AESWEEP_SLURM_DIR": str(folder)}
    done = subprocess.run(["bash", SCRIPT, "start"], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and reason in done.stderr and "refusing it" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["munge.key"]  # nothing written
