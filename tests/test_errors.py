"""Every user mistake: exit code 2 before any work starts, one line on stderr naming the
setting, the value received and what is allowed, and no traceback."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_subprocess

BAD_INPUT = [
    # (arguments, text the one line must contain)
    (["train", "dim_z=0"], "dim_z=0 is invalid: must be an integer in [1, 784]"),
    (["train", "dim_z=785"], "dim_z=785 is invalid: must be an integer in [1, 784]"),
    (["train", "dim_z=abc"], "dim_z=abc is invalid: must be an integer"),
    (["train", "dim_z=3.5"], "dim_z=3.5 is invalid: must be an integer"),
    (["train", "dim_z=8,4"], "dim_z=8,4 is invalid: sweeping a setting needs -m"),
    (["train", "-m", "dim_z=8,0"], "dim_z=0 is invalid: must be an integer in [1, 784]"),
    (["train", "seed=-1"], "seed=-1 is invalid: must be an integer >= 0"),
    (["train", "model.hidden=[0]"], "model.hidden=[0] is invalid: must be a list of positive"),
    (["train", "model.hidden=[256,-3]"], "model.hidden=[256,-3] is invalid: must be a list of"),
    (["train", "model.hidden=abc"], "model.hidden=abc is invalid: must be a list of integers"),
    (["train", "model.activation=swish"], "model.activation=swish is invalid: must be one of relu"),
    (
        ["train", "model.output=tanh"],
        "model.output=tanh is invalid: must be one of sigmoid, identity",
    ),
    (["train", "model.center=true"], "model.center=true is invalid: needs model.output=identity"),
    (["train", "optimizer.lr=0"], "optimizer.lr=0 is invalid: must be a number > 0"),
    (["train", "optimizer.lr=-1e-3"], "optimizer.lr=-0.001 is invalid: must be a number > 0"),
    (["train", "optimizer.lr=fast"], "optimizer.lr=fast is invalid: must be a number > 0"),
    (["train", "optimizer.weight_decay=-1"], "optimizer.weight_decay=-1 is invalid: must be a"),
    (["train", "optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum=1.5 is invalid"),
    (["train", "data.subset=0"], "data.subset=0 is invalid: must be an integer >= 1"),
    (["train", "data.batch_size=0"], "data.batch_size=0 is invalid: must be an integer >= 1"),
    (
        ["train", "data=mnist", "data.download=maybe"],
        "data.download=maybe is invalid: must be true or false",
    ),
    (
        ["train", "data.root=/etc/passwd"],
        "data.root=/etc/passwd is invalid: must be a folder",
    ),
    (["train", "model.center=maybe"], "model.center=maybe is invalid: must be true or false"),
    (["train", "probe=maybe"], "probe=maybe is invalid: must be true or false"),
    (
        ["train", "trainer.devices=many"],
        "trainer.devices=many is invalid: must be auto, -1, a positive",
    ),
    (
        ["train", "checkpoint_every_s=0"],
        "checkpoint_every_s=0.0 is invalid: must be a number of seconds > 0",
    ),
    (["train", "threads=0"], "threads=0 is invalid: must be an integer >= 1"),
    (
        ["train", "scheduler=cosine"],
        "scheduler=cosine is invalid: must be null or a config with _target_",
    ),
    (
        ["train", "loss=bce", "model.output=identity"],
        "loss=bce is invalid: needs model.output=sigmoid",
    ),
    (["train", "loss=huber"], "loss=huber is invalid: must be one of bce, l1, mse, sse"),
    (["train", "loss.name=huber"], "loss.name=huber is invalid: must be one of mse, sse, bce, l1"),
    (["train", "model.hidden=[8,x]"], "model.hidden=[8,x] is invalid: must be a list of integers"),
    (["train", "threads=many"], "threads=many is invalid: must be an integer or null"),
    (
        ["train", "optimizer=adamx"],
        "optimizer=adamx is invalid: must be one of adam, adam_linear, adamw, adamw_default, "
        "rmsprop, sgd",
    ),
    (["train", "model=resnet"], "model=resnet is invalid: must be one of deep, linear, mlp"),
    (["train", "model=null"], "model=null is invalid: must be one of deep, linear, mlp, residual"),
    (["sweep", "model=null"], "model=null is invalid: must be one of deep, linear, mlp, residual"),
    (
        ["train", "recipe_for_data=default_array"],  # Hydra would ignore it and train
        "recipe_for_data=default_array is invalid: recipe_for_data follows the recipe, optimizer",
    ),
    (
        ["train", "data=svhn"],
        "data=svhn is invalid: must be one of array, cifar10, fashion_mnist, mnist, mnist5k",
    ),
    (["train", "trainer=tpu"], "trainer=tpu is invalid: must be one of ddp, default, gpu, smoke"),
    (["train", "experiment=nope"], "experiment=nope is invalid: must be one of"),
    (["train", "trainer.max_epochs=0"], "trainer.max_epochs=0 is invalid: must be an integer >= 1"),
    (
        ["train", "trainer.accelerator=tpu9"],
        "trainer.accelerator=tpu9 is invalid: must be one of auto",
    ),
    (["train", "trainer.devices=0"], "trainer.devices=0 is invalid: must be auto, -1, a positive"),
    (["train", "trainer.precision=8"], "trainer.precision=8 is invalid: must be one of 32-true"),
    (["train", "trainer.precision=16-true"], "trainer.precision=16-true is invalid: must be one"),
    (["train", "trainer.foo=1"], "trainer.foo=1 is invalid: there is no such setting"),
    (["train", "+trainer.foo=1"], "trainer.foo=1 is invalid: is not a pytorch_lightning.Trainer"),
    (["train", "modle.hidden=[8]"], "modle.hidden=[8] is invalid: there is no such setting"),
    (["train", "ckpt_path=nowhere.ckpt"], "ckpt_path=nowhere.ckpt is invalid: must be an existing"),
    (["train", "resume=nowhere"], "resume=nowhere is invalid: no .hydra/overrides.yaml there"),
    (["sweep", "resume=nowhere"], "resume=nowhere is invalid: no multirun.yaml there"),
    (["train", "dim_z=[1,"], "dim_z=[1,"),
    (["sweep", "sweep.dims=[0,8]"], "sweep.dims=[0,8] is invalid: every entry must be an integer"),
    (["sweep", "sweep.dims=[]"], "sweep.dims=[] is invalid: must be a non-empty list"),
    (["sweep", "sweep.dims=[8,8]"], "sweep.dims=[8,8] is invalid: entries must be distinct"),
    (["train", "hydra/launcher=nope"], "hydra/launcher=nope is invalid: must be one of basic"),
    (
        ["train", "-m", "dim_z=8", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
        "hydra.launcher.n_jobs=0 is invalid: must be a positive integer or -1",
    ),
    (
        ["train", "-m", "dim_z=8", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=0"],
        "hydra.launcher.timeout_min=0 is invalid: must be an integer >= 1",
    ),
    (
        [
            "train",
            "-m",
            "dim_z=8",
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.max_num_timeout=-1",
        ],
        "hydra.launcher.max_num_timeout=-1 is invalid: must be an integer >= 0",
    ),  # fmt: skip
    (
        ["train", "hydra.run.dir=/proc/aesweep"],
        "hydra.run.dir=/proc/aesweep is invalid: cannot write",
    ),
    # Trainer arguments Lightning would refuse only inside the job, or that break it mid-run
    (["train", "trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 is invalid: must be"),
    (["train", "trainer.check_val_every_n_epoch=0"], "check_val_every_n_epoch=0 is invalid: must"),
    (["train", "trainer.limit_train_batches=0"], "limit_train_batches=0 is invalid: must be a"),
    (["train", "trainer.limit_train_batches=1.5"], "limit_train_batches=1.5 is invalid: must be"),
    (["train", "+trainer.limit_val_batches=-1"], "limit_val_batches=-1 is invalid: must be a"),
    (["train", "+trainer.val_check_interval=0"], "val_check_interval=0 is invalid: must be a"),
    (["train", "+trainer.overfit_batches=-1"], "trainer.overfit_batches=-1 is invalid: must be"),
    (["train", "trainer.max_steps=0"], "trainer.max_steps=0 is invalid: must be -1 (no limit)"),
    (["train", "trainer.max_steps=-2"], "trainer.max_steps=-2 is invalid: must be -1 (no limit)"),
    (["train", "trainer.accumulate_grad_batches=0"], "accumulate_grad_batches=0 is invalid: must"),
    (["train", "trainer.num_sanity_val_steps=-2"], "num_sanity_val_steps=-2 is invalid: must be"),
    (["train", "trainer.gradient_clip_val=-1"], "gradient_clip_val=-1 is invalid: must be >= 0"),
    (["train", "+trainer.gradient_clip_algorithm=l2"], "gradient_clip_algorithm=l2 is invalid"),
    (["train", "trainer.deterministic=maybe"], "deterministic=maybe is invalid: must be true"),
    (["train", "+trainer.max_time=1h"], "trainer.max_time=1h is invalid: must be DD:HH:MM:SS"),
    (
        ["train", "select=best", "+trainer.limit_val_batches=0"],
        "select=best is invalid: needs a validation to choose by, and trainer.limit_val_batches=0",
    ),
    (
        ["train", "select=best", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=5"],
        "select=best is invalid: needs a validation to choose by, and "
        "trainer.check_val_every_n_epoch=5 > trainer.max_epochs=3 runs none; use select=last",
    ),
    (["trian", "dim_z=8"], "command 'trian' is unknown: must be one of train, sweep, report, pca"),
    (["report", "nowhere"], "DIR=nowhere is invalid: must be a sweep folder"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_fails_with_one_clear_line(aesweep, tmp_path, args, expected) -> None:
    outcome = aesweep(*args)
    assert outcome.code == 2, outcome.out + outcome.err
    assert len(outcome.lines) == 1, outcome.err
    assert outcome.lines[0].startswith("aesweep: error: ")
    assert expected in outcome.lines[0]
    assert "Traceback" not in outcome.out + outcome.err
    assert not (tmp_path / "outputs").exists()  # nothing started


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_accelerator_without_gpu_is_refused_up_front(aesweep) -> None:
    outcome = aesweep("train", "trainer=gpu")
    assert outcome.code == 2
    import socket

    assert outcome.lines == [
        "aesweep: error: trainer.accelerator=gpu is invalid: no CUDA GPU is visible on "
        f"{socket.gethostname()}; use auto or cpu"
    ]


def test_a_real_process_prints_no_traceback_and_exits_non_zero() -> None:
    done = run_subprocess("train", "optimizer.lr=0", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "aesweep: error: optimizer.lr=0 is invalid: must be a number > 0, e.g. 1e-3"
    )
    assert "Traceback" not in done.stdout + done.stderr


def test_full_error_env_var_shows_the_traceback_for_debugging(monkeypatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    done = run_subprocess("train", "optimizer.lr=0", timeout=120)
    assert done.returncode != 0 and "Traceback" in done.stderr
