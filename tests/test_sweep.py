"""The bottleneck sweep: one report (CSV, plot, montage) from `aesweep sweep` and from a
plain Hydra multirun, failed jobs as rows, resume after kill -9, and real launchers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from aesweep.report import collect, draw_loss_vs_dim, progress_line
from aesweep.train import set_threads
from tests.conftest import SMOKE, result_of, run_subprocess
from tests.test_train import CONTRACT

CSV_COLUMNS = [*CONTRACT, "run_dir"]  # every metrics-contract field, then the run folder


def montage_size(rows: int, cols: int = 10) -> tuple[int, int]:
    """Pixel size of a montage: rows x cols digits of 28 px, 2 px padding, 3x, 130 px labels."""
    return 3 * (rows * 30 + 2), 130 + 3 * (cols * 30 + 2)


def image_size(path: Path) -> tuple[int, int]:
    return matplotlib.image.imread(path).shape[:2]


def test_sweep_writes_one_report_over_the_dims(aesweep, tmp_path: Path) -> None:
    outcome = aesweep("sweep", "sweep.dims=[16,4,2]", *SMOKE, "hydra.sweep.dir=sw")
    assert outcome.code == 0, outcome.err
    sweep = tmp_path / "sw"
    assert sorted(p.name for p in sweep.glob("dim_z=*")) == ["dim_z=16", "dim_z=2", "dim_z=4"]
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert table["dim_z"].tolist() == [16, 4, 2]
    assert set(CSV_COLUMNS) <= set(table.columns)
    assert (table["status"] == "ok").all()
    assert table["run_dir"].tolist() == [f"dim_z={k}" for k in (16, 4, 2)]  # relative
    for _, row in table.iterrows():
        result = result_of(sweep / row["run_dir"])
        assert row["test_sse"] == pytest.approx(result["test_sse"])
    assert table["pca_test_sse"].is_monotonic_increasing  # less code, more error
    assert image_size(sweep / "reconstructions.png") == montage_size(rows=1 + 3)
    height, width = image_size(sweep / "loss_vs_dim.png")
    assert (height, width) == (480, 700)
    assert (sweep / "dim_z=2" / "latent.png").is_file()
    printed = outcome.out.splitlines()
    assert f"sweep folder: {sweep}" in printed
    assert printed[-4].split()[:2] == ["dim_z", "test_sse"] and printed[-1].split()[0] == "2"
    progress = [line for line in printed if re.match(r"\[\d+/3 done", line)]  # one per job
    assert re.fullmatch(
        r"\[1/3 done, ~\d+ s left\] dim_z=16: test_sse=\S+ \(PCA \S+\)", progress[0]
    )
    assert re.fullmatch(r"\[2/3 done, ~\d+ s left\] dim_z=4: .*", progress[1])
    last = table.iloc[2]
    expected = f"dim_z=2: test_sse={last['test_sse']:.4g} (PCA {last['pca_test_sse']:.4g})"
    assert re.fullmatch(r"\[3/3 done in \d+ s\] " + re.escape(expected), progress[2])


def test_the_progress_line_estimates_the_time_left_from_finished_jobs() -> None:
    ok = {"status": "ok", "test_sse": 8.5551, "pca_test_sse": 13.297}
    assert progress_line(3, 9, 30.0, "dim_z=32", ok) == (
        "[3/9 done, ~60 s left] dim_z=32: test_sse=8.555 (PCA 13.3)"
    )
    assert progress_line(1, 9, 100.0, "dim_z=784", ok).startswith("[1/9 done, ~13 min left]")
    failed = {"status": "failed", "error": "DivergenceError: loss became nan"}
    assert progress_line(9, 9, 125.0, "dim_z=1", failed) == (
        "[9/9 done in 2 min] dim_z=1: failed: DivergenceError: loss became nan"
    )
    assert progress_line(2, None, 5.0, "job1", ok).startswith("[2 done] job1: ")


def test_a_hand_typed_multirun_writes_the_same_report(aesweep, tmp_path: Path) -> None:
    outcome = aesweep("train", "-m", "dim_z=8,2", *SMOKE, "hydra.sweep.dir=sw")
    assert outcome.code == 0, outcome.err
    table = pd.read_csv(tmp_path / "sw" / "loss_vs_dim.csv")
    assert table["dim_z"].tolist() == [8, 2] and (table["status"] == "ok").all()
    assert image_size(tmp_path / "sw" / "reconstructions.png") == montage_size(rows=3)


def test_two_swept_settings_become_columns_and_one_curve_each(aesweep, tmp_path) -> None:
    outcome = aesweep(
        "train", "-m", "dim_z=8,2", "model.hidden=[],[16]", *SMOKE, "hydra.sweep.dir=sw"
    )
    assert outcome.code == 0, outcome.err
    sweep = tmp_path / "sw"
    table = pd.read_csv(sweep / "loss_vs_dim.csv", dtype={"model.hidden": str})
    assert table.columns[0] == "model.hidden"
    assert sorted(zip(table["model.hidden"], table["dim_z"], strict=True)) == [
        ("[16]", 2),
        ("[16]", 8),
        ("[]", 2),
        ("[]", 8),
    ]
    assert (sweep / "dim_z=8,model.hidden=[16]" / "result.json").is_file()
    lines = draw_loss_vs_dim(collect(sweep)).axes[0].get_lines()
    labels = sorted(line.get_label() for line in lines)
    assert labels == ["AE model.hidden=[16]", "AE model.hidden=[]", "PCA (closed form)"]
    for name in ("reconstructions_model.hidden=none.png", "reconstructions_model.hidden=16.png"):
        assert image_size(sweep / name) == montage_size(rows=3)


def test_a_failed_job_is_a_row_and_the_rest_still_run(aesweep, tmp_path: Path) -> None:
    outcome = aesweep(
        "train",
        "-m",
        "dim_z=4",
        "optimizer.lr=1e-3,1e6",
        "optimizer=sgd",
        "model.output=identity",
        *SMOKE,
        "hydra.sweep.dir=sw",
    )
    assert outcome.code == 1
    table = pd.read_csv(tmp_path / "sw" / "loss_vs_dim.csv")
    by_lr = dict(zip(table["optimizer.lr"], table["status"], strict=True))
    assert by_lr == {0.001: "ok", 1e6: "failed"}
    error = table.loc[table["status"] == "failed", "error"].iloc[0]
    assert "training loss became" in error and "\n" not in error
    assert (tmp_path / "sw" / "loss_vs_dim.png").is_file()
    assert "1 of 2 jobs did not finish" in outcome.out


def test_report_rebuilds_from_a_partial_sweep(aesweep, tmp_path: Path) -> None:
    assert aesweep("sweep", "sweep.dims=[8,2]", *SMOKE, "hydra.sweep.dir=sw").code == 0
    sweep = tmp_path / "sw"
    for name in ("loss_vs_dim.csv", "loss_vs_dim.png", "reconstructions.png"):
        (sweep / name).unlink()
    result = sweep / "dim_z=2" / "result.json"
    result.write_text(json.dumps({**json.loads(result.read_text()), "status": "running"}))
    outcome = aesweep("report", str(sweep))
    assert outcome.code == 1  # one job unfinished
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert table["status"].tolist() == ["ok", "running"]
    assert image_size(sweep / "reconstructions.png") == montage_size(rows=2)


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def status_of(job: Path) -> str | None:
    try:
        return result_of(job)["status"]
    except (OSError, ValueError, KeyError):
        return None


def test_resume_after_kill_9_reruns_only_unfinished_dims(tmp_path: Path) -> None:
    sweep = tmp_path / "sw"
    args = [
        "sweep",
        "sweep.dims=[16,8,4]",
        "data.subset=300",
        "trainer=smoke",
        "trainer.max_epochs=150",
        "patience=null",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aesweep", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (
                status_of(sweep / "dim_z=16") == "ok"
                and (sweep / "dim_z=8" / "checkpoints" / "last.ckpt").is_file()
            )
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert status_of(sweep / "dim_z=8") == "running" and not (sweep / "dim_z=4").exists()
    finished = (sweep / "dim_z=16" / "result.json").read_text()

    done = run_subprocess("sweep", f"resume={sweep}")
    assert done.returncode == 0, done.stderr
    assert (sweep / "dim_z=16" / "result.json").read_text() == finished  # kept as it was
    assert "already finished, kept" in done.stdout
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert table["dim_z"].tolist() == [16, 8, 4] and (table["status"] == "ok").all()
    resumed = result_of(sweep / "dim_z=8")
    assert resumed["resumed_from"] == str(sweep / "dim_z=8" / "checkpoints" / "last.ckpt")
    assert resumed["epochs"] == 150
    assert result_of(sweep / "dim_z=4")["resumed_from"] is None


def test_a_slurm_job_runs_torch_with_the_cpus_slurm_gave_it(monkeypatch) -> None:
    """Without cgroups SLURM does not confine a job to its CPUs; torch's default of one thread
    per core of the node would oversubscribe them."""
    launcher = OmegaConf.create(
        {"_target_": "hydra_plugins.aesweep_submitit.launcher.SlurmLauncher"}
    )
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("SLURM_CPUS_ON_NODE", "1")
        set_threads(None, launcher)
        assert torch.get_num_threads() == 1
        set_threads(None, OmegaConf.merge(launcher, {"cpus_per_task": 3}))  # asked: it wins
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launchers_run_the_jobs_and_the_report_aggregates_them(tmp_path, launcher) -> None:
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    done = run_subprocess(
        "sweep",
        "sweep.dims=[8,2]",
        *SMOKE,
        f"hydra/launcher={launcher}",
        *extra,
        f"hydra.sweep.dir={tmp_path / 'sw'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "sw" / "loss_vs_dim.csv")
    assert table["dim_z"].tolist() == [8, 2] and (table["status"] == "ok").all()
    assert (tmp_path / "sw" / "reconstructions.png").is_file()
    if launcher == "joblib":  # two jobs side by side share the cores instead of fighting
        threads = result_of(tmp_path / "sw" / "dim_z=8")
        assert threads["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)


def test_the_last_allocation_trains_on_past_the_warning(monkeypatch, capsys) -> None:
    """With no requeue left (restart count = max_num_timeout), SLURM's warning does not stop
    training: submitit would not requeue, so stopping early only wastes the allocation (the
    limit's SIGTERM still writes last.ckpt). With one left, it stops as before."""
    from aesweep.requeue import StopOnTimeLimit

    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    last = StopOnTimeLimit(delay_s=30, requeues=3)
    last._on_warning(signal.SIGUSR2, None)
    assert last.last_allocation and not last.warned and last._timer is None
    assert "no requeue left: training on until the limit" in capsys.readouterr().out
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert not StopOnTimeLimit(delay_s=30, requeues=3).last_allocation
    assert not StopOnTimeLimit(delay_s=30).last_allocation  # not a submitit job
