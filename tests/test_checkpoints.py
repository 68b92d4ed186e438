"""Checkpoints you can trust: read as data, loadable on any machine, one consistent state to
continue from, never a non-finite one, never lost to a failed write."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import SMOKE, ctrl_c_at_step, result_of


class RunsCode:
    """What a hostile checkpoint carries: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_code_is_refused_and_never_runs(aesweep, tmp_path: Path) -> None:
    from aesweep.trained import RunFolderError, load

    assert aesweep("train", "dim_z=4", *SMOKE, "hydra.run.dir=run").code == 0
    assert aesweep("encode", "run").code == 0  # an honest folder encodes
    marker = tmp_path / "ran"
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert checkpoints
    for path in checkpoints:
        torch.save({**torch.load(path, weights_only=True), "extra": RunsCode(marker)}, path)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"

    outcomes = {
        "encode": aesweep("encode", "run"),
        "resume": aesweep("train", "resume=run", "trainer.max_epochs=3"),
        "ckpt_path": aesweep("train", "dim_z=4", *SMOKE, f"ckpt_path={last}", "hydra.run.dir=b"),
    }
    for how, outcome in outcomes.items():
        assert outcome.code == 2, how
        assert len(outcome.lines) == 1, (how, outcome.err)
        assert "is refused: it holds posix.system, which is not data" in outcome.lines[0], how
    with pytest.raises(RunFolderError, match="is refused: it holds posix.system"):
        load(tmp_path / "run")
    assert not marker.exists()


def test_a_run_saved_with_another_steps_per_call_loads_and_encodes(aesweep, tmp_path) -> None:
    """steps_per_call=null resolves per machine (a GPU's chunk is not a CPU's): a folder
    trained with one loads where the config resolves to another."""
    from aesweep.trained import load

    assert aesweep("train", "dim_z=4", *SMOKE, "steps_per_call=2", "hydra.run.dir=run").code == 0
    config = tmp_path / "run" / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config)
    cfg.steps_per_call = 1  # as this run's config resolves on another machine
    OmegaConf.save(cfg, config)
    assert load(tmp_path / "run").encode(torch.zeros(3, 784)).shape == (3, 4)
    assert aesweep("encode", "run").code == 0


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_a_run_resumed_with_another_steps_per_call_matches_one_never_interrupted(
    aesweep, tmp_path: Path, before: int, after: int
) -> None:
    args = ("train", "dim_z=8", "trainer=smoke", "data.subset=500", "trainer.max_epochs=3",
            "data.batch_size=128")  # fmt: skip
    assert aesweep(*args, f"steps_per_call={after}", "hydra.run.dir=whole").code == 0
    with ctrl_c_at_step(before, 6):  # 4 steps an epoch: inside the second
        assert aesweep(*args, f"steps_per_call={before}", "hydra.run.dir=split").code == 130
    resumed = aesweep("train", "resume=split", f"steps_per_call={after}")
    assert resumed.code == 0, resumed.err
    assert f"continuing with this machine's steps_per_call={after}" in resumed.err
    whole, split = result_of(tmp_path / "whole"), result_of(tmp_path / "split")
    assert whole["steps"] == split["steps"] == 12
    for metric in ("train_sse", "val_sse", "test_sse"):  # same batches, same updates
        assert split[metric] == whole[metric], metric


@pytest.mark.parametrize(
    ("change", "epochs", "steps"),
    [
        (["trainer.max_epochs=3"], 3, 15),
        (["trainer.max_epochs=4", "trainer.max_steps=17"], 4, 17),
        (["trainer.max_epochs=3", "checkpoint_every_s=0.5"], 3, 15),
        (["trainer.max_epochs=3", "trainer.enable_progress_bar=true"], 3, 15),
    ],
)
def test_every_documented_resume_works(aesweep, tmp_path, change, epochs, steps) -> None:
    """README, "Resume": each setting a resume may change (300 images: 5 steps an epoch)."""
    assert aesweep("train", "dim_z=4", *SMOKE, "hydra.run.dir=run").code == 0
    resumed = aesweep("train", "resume=run", *change)
    assert resumed.code == 0, resumed.err
    result = result_of(tmp_path / "run")
    assert (result["status"], result["epochs"], result["steps"]) == ("ok", epochs, steps)


def test_last_ckpt_is_the_last_state_and_the_kept_weights_the_best(
    aesweep, tmp_path: Path, monkeypatch
) -> None:
    """With select=best, last.ckpt still holds the last step's weights with its optimizer
    (a resume continues from there), and best.ckpt the best validation's, here the start."""
    from aesweep.model import AutoEncoder

    def worse_every_epoch(self, batch, batch_idx):
        self.log("val_mse", 1.0 + self.current_epoch)

    monkeypatch.setattr(AutoEncoder, "validation_step", worse_every_epoch)
    args = ("dim_z=4", *SMOKE, "patience=null", "scheduler=null")
    whole = aesweep("train", *args, "select=last", "trainer.max_epochs=3", "hydra.run.dir=a")
    assert whole.code == 0
    assert aesweep("train", *args, "select=best", "hydra.run.dir=b").code == 0
    assert aesweep("train", "resume=b", "trainer.max_epochs=3").code == 0
    assert result_of(tmp_path / "b")["best_epoch"] == 0  # the untrained start
    ends = [torch.load(tmp_path / r / "checkpoints/last.ckpt", weights_only=True) for r in "ab"]
    for key, value in ends[0]["state_dict"].items():
        assert torch.equal(ends[1]["state_dict"][key], value), key
    assert ends[0]["global_step"] == ends[1]["global_step"] == 15


def test_weights_that_went_non_finite_are_never_kept(aesweep, tmp_path, monkeypatch) -> None:
    """An update after the last finite loss makes a weight NaN: the run fails as a divergence
    does, and the checkpoint on disk stays the last finite one."""
    from aesweep.model import AutoEncoder

    epoch_end = AutoEncoder.on_train_epoch_end

    def poison_the_last_epoch(self):
        epoch_end(self)
        if self.current_epoch == self.trainer.max_epochs - 1:
            with torch.no_grad():
                next(self.parameters()).fill_(float("nan"))

    monkeypatch.setattr(AutoEncoder, "on_train_epoch_end", poison_the_last_epoch)
    outcome = aesweep("train", "dim_z=4", *SMOKE, "checkpoint_every_s=0.001", "hydra.run.dir=run")
    assert outcome.code == 1
    result = result_of(tmp_path / "run")
    assert result["status"] == "failed" and "weights became non-finite" in result["error"]
    for path in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        for value in torch.load(path, weights_only=True)["state_dict"].values():
            assert torch.isfinite(value).all(), path


def test_a_full_disk_keeps_the_previous_checkpoint(aesweep, tmp_path, monkeypatch) -> None:
    """The second last.ckpt write runs out of space half-way: the job fails with one line
    naming the folder, and the first last.ckpt still loads."""
    write_bytes, writes = Path.write_bytes, []

    def disk_fills_up(self, data):
        if ".last.ckpt." in self.name:  # the temporary file beside it
            writes.append(self)
            if len(writes) > 1:
                write_bytes(self, b"PK\x03\x04 half a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_fills_up)
    run = tmp_path / "run"
    outcome = aesweep("train", "dim_z=4", *SMOKE, "checkpoint_every_s=0.001", "hydra.run.dir=run")
    assert outcome.code == 1
    assert outcome.lines[-1] == (
        f"aesweep: error: cannot write a checkpoint into {run / 'checkpoints'}: no space left "
        f"on the device (the previous checkpoint is kept)"
    )
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_sweep_whose_next_job_cannot_start_ends_in_one_line(
    aesweep, tmp_path, monkeypatch, capsys
) -> None:
    """The disk is full when Hydra writes the second job's config: the sweep stops with one
    line and the resume= command, the finished job's report is written, no traceback; once
    there is room again, resume= finishes the sweep."""
    import hydra.core.utils

    from aesweep import report

    save_config = hydra.core.utils._save_config

    def disk_full_for_dim_4(cfg, filename, output_dir):
        if "dim_z=4" in str(output_dir):
            raise OSError(errno.ENOSPC, "No space left on device", str(output_dir / filename))
        return save_config(cfg, filename, output_dir)

    monkeypatch.setattr(hydra.core.utils, "_save_config", disk_full_for_dim_4)
    sweep = tmp_path / "sw"
    stopped = aesweep("sweep", "sweep.dims=[8,4,2]", *SMOKE, "hydra.sweep.dir=sw")
    assert stopped.code == 1
    assert "Traceback" not in stopped.out + stopped.err
    assert stopped.lines == [
        f"aesweep: error: job dim_z=4 could not start: [Errno 28] No space left on device: "
        f"'{sweep / 'dim_z=4' / '.hydra' / 'config.yaml'}'"
    ]
    assert stopped.out.splitlines()[-1] == (
        f"aesweep: 2 of 3 jobs did not finish; rerun them with: aesweep sweep resume={sweep}"
    )
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert table["dim_z"].tolist() == [8] and table["status"].tolist() == ["ok"]
    assert not (sweep / "dim_z=2").exists()  # the sweep stopped there

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as full:  # no room for the report either: still one line
        full.setattr(report, "write_text", no_room)
        assert report.report_and_exit_code(sweep, n_jobs=3) == 1
    out, err = capsys.readouterr()
    assert (
        err
        == "aesweep: error: the report could not be written: [Errno 28] No space left on device\n"
    )
    assert out.splitlines()[-1].startswith("aesweep: 2 of 3 jobs did not finish")

    monkeypatch.setattr(hydra.core.utils, "_save_config", save_config)
    assert aesweep("sweep", f"resume={sweep}").code == 0
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert table["dim_z"].tolist() == [8, 4, 2] and set(table["status"]) == {"ok"}


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 40 MB file system (a tmpfs standing in for a quota), where the tests may mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)]
    if subprocess.run(command, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_sweep_on_a_full_disk_loses_nothing(aesweep, small_disk) -> None:
    """The issue's sweep on a real 40 MB file system: the disk fills up mid-sweep. Every
    error is one line, no traceback; every checkpoint and result.json on the disk reads; the
    command ends with the resume= command."""
    sweep = small_disk / "sw"
    outcome = aesweep("sweep", "sweep.dims=[64,32,16,8,4,2]", *SMOKE, f"hydra.sweep.dir={sweep}")
    assert outcome.code == 1
    assert "Traceback" not in outcome.out + outcome.err
    assert "Error executing job" not in outcome.err
    assert [
        line for line in outcome.lines if "rror" in line and "aesweep: error:" not in line
    ] == []
    assert "no space left on the device" in outcome.out  # the jobs' own lines
    last = outcome.out.splitlines()[-1]
    assert re.fullmatch(rf"aesweep: [1-6] of 6 jobs did not finish; rerun them with: "
                        rf"aesweep sweep resume={re.escape(str(sweep))}", last)  # fmt: skip
    for path in sweep.glob("*/checkpoints/*.ckpt"):
        assert torch.load(path, weights_only=True)["state_dict"], path
    for path in sweep.glob("*/result.json"):
        assert json.loads(path.read_text())["status"] in ("ok", "failed", "running"), path


def test_a_users_trainer_plugins_keep_the_run_folders_checkpoint_io(tmp_path) -> None:
    """+trainer.plugins adds to aesweep's plugins: checkpoints are still read as data and
    written through a temporary file in their folder."""
    from aesweep.callbacks import RunFolderCheckpointIO
    from aesweep.requeue import StopOnTimeLimit
    from aesweep.train import build_trainer
    from tests.conftest import composed

    environment = "lightning_fabric.plugins.environments.LightningEnvironment"
    cfg = composed(*SMOKE, f"+trainer.plugins=[{{_target_:{environment}}}]")
    trainer = build_trainer(cfg, tmp_path, StopOnTimeLimit(), failed_loggers={})
    assert isinstance(trainer.strategy.checkpoint_io, RunFolderCheckpointIO)
    environments = trainer._accelerator_connector.cluster_environment
    assert type(environments).__name__ == "LightningEnvironment"


def test_select_best_without_a_validation_keeps_the_last_state_and_says_so(aesweep, tmp_path):
    """trainer.max_steps=2 ends before the first validation (5 steps an epoch): nothing chose
    the untrained start, so the run keeps what it trained, says so, and load/encode agree."""
    from aesweep.trained import load

    outcome = aesweep("train", "dim_z=4", *SMOKE, "trainer.max_steps=2", "hydra.run.dir=run")
    assert outcome.code == 0
    assert "aesweep: select=best kept the last state: training ended before its first " in (
        outcome.err
    )
    result = result_of(tmp_path / "run")
    assert result["best_epoch"] is None and result["steps"] == 2
    assert any("kept the last state" in note for note in result["notes"])
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt"]
    x = torch.rand(8, 784)
    last = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(load(tmp_path / "run").encoder[0].weight, last["encoder.0.weight"])
    assert load(tmp_path / "run")(x).shape == x.shape
