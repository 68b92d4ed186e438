"""The config tree composes (Hydra Compose API) and every shipped choice is valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from aesweep.config import ConfigError, check_machine, validate
from tests.conftest import composed

CONFIGS = Path(__file__).parents[1] / "configs"


# Every training setting of the default run and of the shipped experiments, as they were
# before the recipe left the architecture (main e5b79b6): recipes must not move a figure.
TRAINING = ("dim_z", "data.name", "data.batch_size", "model", "loss.name", "optimizer",
            "scheduler", "select", "patience", "trainer.max_epochs",
            "trainer.check_val_every_n_epoch", "sweep.dims")  # fmt: skip
COSINE = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True}
LECTURE_DIMS = [784, 256, 64, 32, 16, 8, 4, 2, 1]
DEFAULT = {
    "dim_z": 32,
    "data.name": "mnist5k",
    "data.batch_size": 64,
    "model": {"kind": "residual", "hidden": [256, 256, 256], "activation": "relu",
              "output": "clamp", "center": False, "input_noise": 0.1, "linear_lr_scale": 0.1},
    "loss.name": "sse",
    "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 2e-3,
                  "weight_decay": 0.3, "fused": True},
    "scheduler": {**COSINE, "T_max": None, "interval": "step"},
    "select": "best",
    "patience": 10,
    "trainer.max_epochs": 50,
    "trainer.check_val_every_n_epoch": 1,
    "sweep.dims": None,  # the data's sizes: on MNIST the lecture's (test_arrays)
}  # fmt: skip
LECTURE = {
    **DEFAULT,
    "data.batch_size": 128,
    "model": {"kind": "mlp", "hidden": [], "activation": "relu", "output": "sigmoid",
              "center": False, "input_noise": 0.0, "linear_lr_scale": 1.0},
    "loss.name": "mse",
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3,
                  "weight_decay": 0.0, "fused": True},
    "scheduler": None,
    "select": "last",
    "patience": None,
    "trainer.max_epochs": 100,
    "trainer.check_val_every_n_epoch": 5,
}  # fmt: skip
BEFORE = {
    (): DEFAULT,
    ("experiment=hinton2006",): {
        **DEFAULT, "dim_z": 30, "data.name": "mnist", "data.batch_size": 128,
        "model": {**DEFAULT["model"], "hidden": [1000, 500, 250], "input_noise": 0.0},
        "optimizer": {**DEFAULT["optimizer"], "lr": 1e-3}, "sweep.dims": [30],
    },
    ("experiment=lecture",): {**LECTURE, "sweep.dims": LECTURE_DIMS},
    ("experiment=capacity",): LECTURE,
    ("model=linear", "recipe=linear"): {  # was model=linear, which carried this recipe
        **LECTURE,
        "model": {**LECTURE["model"], "activation": "identity", "output": "identity",
                  "center": True},
        "optimizer": {**LECTURE["optimizer"], "lr": 1e-2},
        "scheduler": {**COSINE, "T_max": 100},
    },
}  # fmt: skip


def training(cfg) -> dict:
    """The TRAINING settings of a composed config, as plain values."""
    values = {key: OmegaConf.select(cfg, key) for key in TRAINING}
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in values.items()}  # fmt: skip


@pytest.mark.parametrize("overrides", list(BEFORE), ids=lambda o: " ".join(o) or "default")
def test_recipes_train_the_default_and_every_experiment_as_before(overrides) -> None:
    cfg = composed(*overrides)
    assert training(cfg) == BEFORE[overrides]
    validate(cfg)
    if overrides == ("experiment=capacity",):
        assert cfg.hydra.sweeper.params == {"model.hidden": "[],[256,64],[1000,500,250]"}


def test_choosing_a_model_optimizer_or_loss_changes_only_that(aesweep) -> None:
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05, "momentum": 0.9,
           "nesterov": True, "weight_decay": 0.0, "fused": True}  # sgd.yaml's own  # fmt: skip
    assert training(composed("optimizer=sgd")) == {**DEFAULT, "optimizer": sgd}
    adamw = {**DEFAULT["optimizer"], "lr": 1e-3, "weight_decay": 1e-2}  # torch's defaults
    assert training(composed("optimizer=adamw")) == {**DEFAULT, "optimizer": adamw}
    mlp = {**DEFAULT["model"], "kind": "mlp", "hidden": [], "output": "sigmoid"}
    assert training(composed("model=mlp")) == {**DEFAULT, "model": mlp}
    assert training(composed("loss=mse")) == {**DEFAULT, "loss.name": "mse"}
    shown = aesweep("train", "--cfg", "job", "optimizer=sgd")
    assert shown.code == 0 and "  lr: 0.05\n" in shown.out and "  weight_decay: 0.0\n" in shown.out


def test_the_default_recipe_on_your_own_data_has_no_input_noise_and_a_lower_rate() -> None:
    """recipe=default's noise (std 0.1) and rate (2e-3) are in MNIST's pixel units and swamp
    the detail of low-contrast data (docs/data.md); on data=array the recipe drops the noise
    and AdamW runs at 5e-4. Another optimizer still gets its own defaults."""
    array = ("data=array", "data.path=x.npy")
    adapted = {**DEFAULT, "data.name": "array",
               "model": {**DEFAULT["model"], "input_noise": 0.0},
               "optimizer": {**DEFAULT["optimizer"], "lr": 5e-4}}  # fmt: skip
    assert training(composed(*array)) == adapted
    assert composed(*array, "optimizer=sgd").optimizer.lr == 0.05  # sgd.yaml's own
    assert composed(*array, "model.input_noise=0.1", "optimizer.lr=2e-3").model.input_noise == 0.1
    assert training(composed(*array, "recipe=lecture"))["optimizer"]["lr"] == 1e-3
    assert training(composed()) == DEFAULT  # MNIST's recipe is untouched


def test_the_defaults_write_metrics_csv_and_validate() -> None:
    cfg = composed()
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    assert list(cfg.logger) == ["csv"]  # metrics.csv in the run folder
    assert cfg.hydra.runtime.choices.recipe == "default"  # what result.json records
    validate(cfg)


@pytest.mark.parametrize(
    "group", ["data", "model", "recipe", "optimizer", "loss", "trainer", "experiment", "logger"]
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
