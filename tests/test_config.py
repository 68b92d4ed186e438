"""The config tree composes (Hydra Compose API) and every shipped choice is valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from aesweep.config import ConfigError, check_machine, register, validate

CONFIGS = Path(__file__).parents[1] / "configs"


def composed(*overrides: str):
    register()
    with initialize_config_module("aesweep.configs", version_base="1.3"):
        return compose("train", list(overrides), return_hydra_config=True)


def test_defaults_are_the_residual_pca_model_and_lecture_pins_the_lecture() -> None:
    cfg = composed()
    assert cfg.dim_z == 32 and cfg.loss.name == "sse" and cfg.data.name == "mnist5k"
    model = (cfg.model.kind, list(cfg.model.hidden), cfg.model.output)
    assert model == ("residual", [256, 256, 256], "clamp")
    assert (cfg.select, cfg.patience, cfg.trainer.max_epochs) == ("best", 10, 50)
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.optimizer._partial_
    recipe = (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.data.batch_size)
    assert recipe == (2e-3, 0.3, 64)
    assert composed("optimizer=sgd").optimizer._target_ == "torch.optim.SGD"  # still chooses
    assert cfg.sweep.dims is None  # the data's sizes: MNIST's are the lecture's (test_arrays)
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    assert list(cfg.logger) == ["csv"]  # metrics.csv in the run folder
    validate(cfg)
    lecture = composed("experiment=lecture")
    assert (lecture.model.kind, list(lecture.model.hidden), lecture.loss.name) == ("mlp", [], "mse")
    assert (lecture.select, lecture.scheduler, lecture.trainer.max_epochs) == ("last", None, 100)
    assert composed("loss=mse").loss.name == "mse"  # the command line still chooses


@pytest.mark.parametrize(
    "group", ["data", "model", "optimizer", "loss", "trainer", "experiment", "logger"]
)
def test_every_shipped_choice_composes_and_validates(group: str) -> None:
    choices = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
    assert choices
    for choice in choices:
        overrides = [f"{group}={choice}"]
        if group == "loss" and choice == "bce":
            overrides.append("model.output=sigmoid")
        if group == "data" and choice == "array":
            overrides.append("data.image_shape=[1,28,28]")  # the file would say so
        elif group == "data" and choice != "mnist5k":
            overrides.append("data.download=true")  # offline, missing files are refused
        validate(composed(*overrides))  # machine checks are apart: see the next test


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_choice_is_checked_against_the_machine(accelerator: str) -> None:
    import torch

    trainer = composed(f"trainer.accelerator={accelerator}").trainer
    if torch.cuda.is_available():
        check_machine(trainer)
    else:
        with pytest.raises(ConfigError, match=f"trainer.accelerator={accelerator} is invalid: no"):
            check_machine(trainer)
    check_machine(composed("trainer.accelerator=cpu").trainer)  # always there


def test_groups_set_what_their_names_promise() -> None:
    assert list(composed("model=deep").model.hidden) == [1000, 500, 250]
    linear = composed("model=linear").model
    assert (linear.activation, linear.output, linear.center) == ("identity", "identity", True)
    sgd = composed("optimizer=sgd").optimizer
    assert sgd._target_ == "torch.optim.SGD" and sgd.momentum > 0
    assert composed("optimizer=rmsprop").optimizer._target_ == "torch.optim.RMSprop"
    assert composed("optimizer=adamw").optimizer._target_ == "torch.optim.AdamW"
    assert composed("trainer=ddp").trainer.strategy == "ddp"
    assert composed("data=mnist", "data.download=true").data.download is True


def test_run_and_sweep_folders_are_unique_even_within_one_second() -> None:
    a, b = composed(), composed()
    assert a.hydra.run.dir != b.hydra.run.dir and a.hydra.sweep.dir != b.hydra.sweep.dir
    assert a.hydra.sweep.dir.startswith("outputs/sweeps/")


def test_every_command_explains_itself(aesweep) -> None:
    from aesweep import __version__

    top = aesweep("--help")
    assert top.code == 0 and all(c in top.out for c in ("train", "sweep", "report", "pca"))
    assert aesweep("--version").out.strip() == f"aesweep {__version__}"
    for command, header in [("train", "aesweep train: train one undercomplete autoencoder"),
                            ("sweep", "aesweep sweep: train every dim_z in sweep.dims"),
                            ("pca", "aesweep pca: closed-form PCA error for every k")]:  # fmt: skip
        outcome = aesweep(command, "--help")
        assert outcome.code == 0 and outcome.out.startswith(header)
        assert "model: deep, linear, mlp" in outcome.out and "dim_z: 32" in outcome.out
    report = aesweep("report", "--help")
    assert report.code == 0 and "sweep_dir" in report.out
