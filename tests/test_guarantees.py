"""What survives which fault: signals, damaged files, concurrent jobs, reused folders."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from tests.conftest import SMOKE, run_subprocess
from tests.test_sweep import status_of, wait_for

LONG = ["data.subset=300", "trainer=smoke", "trainer.max_epochs=300"]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aesweep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_sigterm_keeps_the_checkpoint_and_resume_finishes_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start("train", "dim_z=8", *LONG, f"hydra.run.dir={run}")
    wait_for(lambda: (run / "checkpoints" / "last.ckpt").is_file())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "interrupted" and "SIGTERM" in result["error"]
    assert "aesweep: interrupted by SIGTERM; continue with resume=<this run folder>" in err
    stopped = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert 0 < stopped["global_step"] < 300 * 3

    done = run_subprocess("train", f"resume={run}")
    assert done.returncode == 0, done.stderr
    resumed = json.loads((run / "result.json").read_text())
    assert resumed["status"] == "ok" and resumed["epochs"] == 300
    assert resumed["steps"] == 300 * 3  # continued, not restarted: no step done twice
    assert resumed["resumed_from"] == str(run / "checkpoints" / "last.ckpt")


def test_ctrl_c_stops_a_sweep_cleanly_and_its_resume_finishes_it(tmp_path: Path) -> None:
    sweep = tmp_path / "sw"
    proc = start("sweep", "sweep.dims=[16,8]", *LONG, f"hydra.sweep.dir={sweep}")
    wait_for(lambda: (sweep / "dim_z=16" / "checkpoints" / "last.ckpt").is_file())
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT
    assert status_of(sweep / "dim_z=16") == "interrupted"
    assert not (sweep / "dim_z=8").exists()

    done = run_subprocess("sweep", f"resume={sweep}")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert table["dim_z"].tolist() == [16, 8] and (table["status"] == "ok").all()
    assert table["epochs"].tolist() == [300, 300]


def test_a_damaged_checkpoint_is_named(aesweep, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    outcome = aesweep("train", "dim_z=4", *SMOKE, f"ckpt_path={bad}", "hydra.run.dir=run")
    assert outcome.code == 1
    assert outcome.lines[-1].startswith(f"aesweep: error: checkpoint {bad} is damaged or not a")
    assert "Traceback" not in outcome.out + outcome.err


def test_a_checkpoint_of_another_model_is_refused_with_the_difference(aesweep, tmp_path) -> None:
    assert aesweep("train", "dim_z=8", *SMOKE, "hydra.run.dir=first").code == 0
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    outcome = aesweep("train", "dim_z=4", *SMOKE, f"ckpt_path={ckpt}", "hydra.run.dir=second")
    assert outcome.code == 1
    assert outcome.lines[-1] == (
        f"aesweep: error: checkpoint {ckpt} was trained with dim_z=8, this run has dim_z=4"
    )


def test_a_damaged_pca_cache_is_recomputed(tmp_path: Path) -> None:
    from aesweep import pca

    train, test = torch.rand(50, 8), torch.rand(10, 8)
    first = pca.cached_pca({"name": "toy"}, tmp_path, train, test)
    cache = next(tmp_path.glob("pca-*.pt"))
    cache.write_bytes(b"garbage")
    pca._memory.clear()
    again = pca.cached_pca({"name": "toy"}, tmp_path, train, test)
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


def test_two_sweeps_started_together_never_share_a_folder(tmp_path: Path) -> None:
    args = ("sweep", "sweep.dims=[2]", *SMOKE)
    procs = [start(*args), start(*args)]
    for proc in procs:
        proc.communicate(timeout=300)
        assert proc.returncode == 0
    folders = sorted((tmp_path / "outputs" / "sweeps").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert len(pd.read_csv(folder / "loss_vs_dim.csv")) == 1


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
