"""One run: seed, build data and model, fit, test, write the run folder's artefacts.

`run_job` is the Hydra task. It never lets a job's failure escape: Hydra would abort the
sweep and skip the report, so a failure becomes `result.json` with status=failed instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import Callback, Checkpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from aesweep.config import (
    FEATURE_ERRORS,
    NOT_JOB_SETTINGS,
    RESULT,
    ConfigError,
    check_machine,
    override_key,
)
from aesweep.data import DataError, Splits, TensorDataModule, load_splits
from aesweep.io import save_figure, write_json, write_text
from aesweep.loggers import build_loggers, log_results
from aesweep.model import AutoEncoder, DivergenceError, score
from aesweep.pca import PCAFit, compare_subspaces, pca_of
from aesweep.plots import draw_components, draw_latent, draw_manifold, draw_montage
from aesweep.probe import code_plane, probe_codes
from aesweep.progress import plain_progress
from aesweep.requeue import (
    StopOnTimeLimit,
    cluster_plugins,
    is_own_folder,
    slurm_job_id,
    times_requeued,
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within a run, hide noise that says nothing about it: Hydra writes .hydra/ into the run
    folder before the CSV logger starts, a torch/Lightning deprecation, Lightning's tips."""

    def no_tips(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡")

    log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    log.addFilter(no_tips)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        warnings.filterwarnings("ignore", message=r"The `srun` command is available")  # SLURM
        # TensorBatches resumes mid-epoch exactly, from the position Lightning restores, but
        # is no Stateful loader, so Lightning warns that it cannot (tests prove it does).
        warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended")
        # Chunked steps: Lightning counts chunks, aesweep logs every log_every_n_steps steps.
        warnings.filterwarnings("ignore", message=r"The number of training batches .* logging")
        try:
            yield
        finally:
            log.removeFilter(no_tips)


class CheckpointError(RuntimeError):
    """A checkpoint to continue from is damaged or belongs to another model."""


class Interrupted(Exception):
    """Training stopped on SIGINT, SIGTERM or SLURM's time-limit warning (SIGUSR2) after
    saving its checkpoint."""

    def __init__(self, signame: str) -> None:
        why = "time limit near (SIGUSR2)" if signame == "SIGUSR2" else f"interrupted by {signame}"
        super().__init__(f"{why}; continue with resume=<this run folder>")
        self.exit_code = 128 + getattr(signal, signame)


class LastCheckpoint(Checkpoint):
    """checkpoints/last.ckpt, replaced atomically by Lightning's save_checkpoint: at the end
    of the first epoch and then of each epoch `every_s` seconds after the last save, at the
    end of fit, and mid-epoch when the user stops training (SIGINT, SIGTERM). Not on other
    exceptions: after a divergence the last good checkpoint must stay as it is.
    (ModelCheckpoint's time interval is checked at every batch, ~0.1 ms per step.)"""

    def __init__(self, path: Path, every_s: float) -> None:
        self.path, self.every_s, self.signame = path, every_s, None
        self._saved_at = -math.inf

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.lightning_module.check_finite()  # never replace a good state with a diverged one
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_at = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        due = time.monotonic() - self._saved_at >= self.every_s
        if trainer.strategy.broadcast(due):  # rank 0 decides: saving is a collective call
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exc: BaseException):
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if isinstance(exc, KeyboardInterrupt | SIGTERMException):
            self.signame = "SIGINT" if isinstance(exc, KeyboardInterrupt) else "SIGTERM"
            with contextlib.suppress(DivergenceError):  # then the last good one stays
                self._save(trainer)


def build_model(cfg: DictConfig, splits: Splits, pca: PCAFit) -> AutoEncoder:
    model = new_model(cfg, splits.input_dim, output_for(cfg, splits.unit_range))
    if cfg.model.center:
        model.mean.copy_(splits.train_x.mean(dim=0))
    if model.residual:
        model.init_from_pca(pca.mean, pca.components[: cfg.dim_z])
    return model


def output_for(cfg: DictConfig, unit_range: bool) -> str:
    """model.output for these data: clamp clips to [0, 1], the range of images; data that
    are not in [0, 1] (standardised features) have no such range, so their output is linear.
    (sigmoid there is refused up front: config.validate.)"""
    output = str(cfg.model.output)
    return "identity" if output == "clamp" and not unit_range else output


def new_model(cfg: DictConfig, input_dim: int, output: str | None = None) -> AutoEncoder:
    """The untrained autoencoder a job's config describes (also what a checkpoint loads
    into); `output` as output_for resolved it for the data (default: model.output)."""
    return AutoEncoder(
        input_dim=input_dim,
        dim_z=cfg.dim_z,
        hidden=list(cfg.model.hidden),
        activation=str(cfg.model.activation),
        output=output or str(cfg.model.output),
        loss=str(cfg.loss.name),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.scheduler else None,
        center=cfg.model.center,
        steps_per_call=steps_per_call(cfg),
        kind=str(cfg.model.kind),
        input_noise=cfg.model.input_noise,
        linear_lr_scale=cfg.model.linear_lr_scale,
        seed=cfg.seed,
        cuda_graph=cfg.cuda_graph,
    )


def steps_per_call(cfg: DictConfig) -> int:
    """cfg.steps_per_call (null: 32 on one CUDA device, where Lightning's per-step cost
    dominates; 8 on one CPU or other device, where it is ~5% of a default step; 1 across
    several devices), or 1 where a setting needs Lightning's own optimizer loop (clipping,
    accumulation, a step limit that may end inside a chunk): with a one-line notice if the
    user asked for more. Chunks give the same updates as single steps (tested bit for bit)."""
    asked = cfg.steps_per_call
    if asked is not None:
        k = asked
    elif not on_one_device(cfg.trainer):
        k = 1
    else:
        k = 32 if on_one_cuda_device(cfg.trainer) else 8
    plain = {"gradient_clip_val": None, "accumulate_grad_batches": 1, "max_steps": -1}
    needs = [
        f"trainer.{key}={v}" for key, d in plain.items() if (v := cfg.trainer.get(key, d)) != d
    ]
    if k > 1 and needs:
        if asked is not None:
            print(f"aesweep: steps_per_call={k} runs as 1: {needs[0]} needs Lightning's "
                  f"optimizer loop", file=sys.stderr)  # fmt: skip
        return 1
    return k


def on_one_device(trainer: DictConfig) -> bool:
    devices = trainer.get("devices", 1)
    return devices == 1 or (OmegaConf.is_list(devices) and len(devices) == 1)


def on_one_cuda_device(trainer: DictConfig) -> bool:
    accelerator = trainer.get("accelerator", "auto")
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return cuda and on_one_device(trainer)


def selection(cfg: DictConfig) -> list[Callback]:
    return [KeepBest(cfg.patience)] if cfg.select == "best" else []


class KeepBest(Callback):
    """select=best: keep the weights of the lowest val_mse, the untrained model (for the
    residual model: PCA) included, and restore them when fit ends; with `patience`, stop
    after that many validations without a better one. Chosen on validation alone: the test
    split is scored once, afterwards. (Lightning's EarlyStopping and ModelCheckpoint know no
    step-0 candidate.) Its state rides in the checkpoint, so a resumed run keeps its best."""

    def __init__(self, patience: int | None) -> None:
        self.patience, self.best, self.best_epoch, self.wait = patience, math.inf, -1, 0
        self.weights: dict[str, Tensor] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.weights is None:  # not resumed: the starting point is the first candidate
            dtype = next(pl_module.parameters()).dtype  # *-true precisions: the model's
            x = trainer.datamodule.val_x.to(dtype)
            with torch.no_grad():
                pl_module.eval()
                self._consider(F.mse_loss(pl_module(x), x).item(), pl_module, epoch=-1)
                pl_module.train()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val_mse" not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics["val_mse"])
        if not self._consider(value, pl_module, trainer.current_epoch):
            self.wait += 1
            trainer.should_stop = trainer.should_stop or self.wait >= (self.patience or math.inf)

    def _consider(self, value: float, pl_module: pl.LightningModule, epoch: int) -> bool:
        if value >= self.best:
            return False
        self.best, self.best_epoch, self.wait = value, epoch, 0
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        return True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.weights is not None:
            pl_module.load_state_dict(self.weights)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "weights": self.weights}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict["best"], state_dict["best_epoch"]
        self.wait, self.weights = state_dict["wait"], state_dict["weights"]


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    last: LastCheckpoint,
    time_limit: StopOnTimeLimit,
    failed_loggers: dict[str, str],
) -> pl.Trainer:
    """The configured Trainer with the chosen loggers (by default metrics.csv) and last.ckpt
    in the run folder."""
    plugins = {} if "plugins" in cfg.trainer else {"plugins": cluster_plugins()}
    trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir, failed_loggers) or False,
        callbacks=[*selection(cfg), last, time_limit, *plain_progress(cfg.trainer)],
        **plugins,
    )
    if isinstance(trainer.accelerator, CPUAccelerator):
        # Lightning sets this at import so that CUDA checks never initialise CUDA before a
        # fork; torch.optim then probes NVML (a dlopen) at every optimizer step, 0.5 ms per
        # step with a CUDA build of torch. A CPU run initialises no CUDA: restore the default.
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    return trainer


def check_checkpoint(path: Path, model: AutoEncoder) -> dict[str, Any]:
    """Fail with the file's name when a checkpoint is damaged or belongs to another model,
    instead of deep inside torch.load or load_state_dict; returns the loaded checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        saved = ckpt["hyper_parameters"]
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a Lightning checkpoint ({e})"
        ) from e
    for key in ("kind", "input_dim", "dim_z", "hidden", "activation", "output", "steps_per_call"):
        if saved.get(key) != model.hparams[key]:
            raise CheckpointError(
                f"checkpoint {path} was trained with {key}={saved.get(key)}, this run has "
                f"{key}={model.hparams[key]}"
            )
    return ckpt


class Stopwatch:
    """Seconds per phase of a run, for result.json's `timings`."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> float:
        now = time.perf_counter()
        self.timings[phase] = round(now - self._last, 3)
        self._last = now
        return self.timings[phase]


def train(
    cfg: DictConfig, run_dir: Path, time_limit: StopOnTimeLimit | None = None
) -> dict[str, Any]:
    """Fit one autoencoder and write its artefacts; returns the metrics of the contract."""
    time_limit = time_limit or StopOnTimeLimit()
    clock = Stopwatch()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(str(cfg.matmul_precision))  # "high": TF32 on GPUs
    splits = load_splits(cfg.data)
    clock.lap("data")
    pca = pca_of(cfg.data, splits)
    clock.lap("pca")
    model = build_model(cfg, splits, pca)
    datamodule = TensorDataModule(
        splits, cfg.data.batch_size, cfg.seed, model.hparams.steps_per_call
    )

    ckpt_path = cfg.ckpt_path
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is None and cfg.resume is not None and last.is_file():
        ckpt_path = last
    if ckpt_path is not None:
        check_checkpoint(Path(ckpt_path), model)

    last_checkpoint = LastCheckpoint(last, cfg.checkpoint_every_s)
    failed_loggers: dict[str, str] = {}  # logger -> why it failed; the run goes on without it
    trainer = build_trainer(cfg, run_dir, last_checkpoint, time_limit, failed_loggers)
    clock.lap("build")
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit:
        if last_checkpoint.signame:
            raise Interrupted("SIGUSR2" if time_limit.warned else last_checkpoint.signame) from None
        raise
    seconds = clock.lap("fit")
    if trainer.interrupted:
        raise Interrupted(last_checkpoint.signame or "SIGINT")

    scores = score(model, {"train": splits.train_x, "val": splits.val_x, "test": splits.test_x})
    for csv in (lg for lg in trainer.loggers if isinstance(lg, CSVLogger)):  # others: log_results
        csv.log_metrics(scores, step=trainer.global_step)
        csv.save()
    clock.lap("test")
    metrics = {
        **dict(sorted(scores.items())),
        "pca_test_mse": pca.test_mse(cfg.dim_z),
        "pca_test_sse": float(pca.test_sse[cfg.dim_z]),
        "input_dim": splits.input_dim,
        "image_shape": list(splits.image_shape) if splits.image_shape else None,
        "output": model.hparams.output,
        "scale": splits.scaling.kind,
        "scaling": splits.scaling.as_dict(),
        "n_train": len(splits.train_x),
        "n_val": len(splits.val_x),
        "n_test": len(splits.test_x),
        "epochs": trainer.current_epoch,
        "best_epoch": next(
            (c.best_epoch + 1 for c in trainer.callbacks if isinstance(c, KeepBest)), None
        ),
        "steps": trainer.global_step,
        "seconds": seconds,
        "n_params": model.n_params,
        "resumed_from": str(ckpt_path) if ckpt_path is not None else None,
        "torch_threads": torch.get_num_threads(),
    }
    model.eval()
    if trainer.is_global_zero and cfg.probe:
        metrics.update(probe_codes(model.cpu().encode, splits, pca, cfg.dim_z))
    clock.lap("probe")
    if trainer.is_global_zero:
        metrics.update(write_artefacts(model, splits, pca, cfg, run_dir))
    clock.lap("artefacts")
    if trainer.is_global_zero:
        log_results(trainer.loggers, metrics, trainer.global_step, failed_loggers)
    return {**metrics, "failed_loggers": failed_loggers or None, "timings": clock.timings}


@torch.no_grad()
def write_artefacts(
    model: AutoEncoder, splits: Splits, pca: PCAFit, cfg: DictConfig, run_dir: Path
) -> dict[str, Any]:
    """Reconstruction grid and the images behind it (vectors: the test error per feature),
    and the plots that depend on dim_z or on the model being linear; returns the extra
    metrics they produce, and `notes` on what was skipped and why."""
    model = model.cpu()
    extra: dict[str, Any] = {"notes": []}
    if splits.image_shape is None:
        table = feature_errors(model, splits, pca, cfg.dim_z)
        write_text(table.to_csv(index=False), run_dir / FEATURE_ERRORS)
    else:
        shown = splits.display_indices()
        originals = splits.test_x[shown]
        recon = model(originals)
        np.savez_compressed(
            run_dir / "samples.npz",
            originals=originals.numpy(),
            reconstructions=recon.numpy(),
            image_shape=np.array(splits.image_shape),
            **({} if splits.test_y is None else {"labels": splits.test_y[shown].numpy()}),
        )
        fig = draw_montage(originals, [(f"dim(z) = {cfg.dim_z}", recon)], splits.image_shape)
        save_figure(fig, run_dir / "reconstructions.png")

    if cfg.dim_z <= 2 and splits.test_y is None:
        extra["notes"].append("latent.png (codes coloured by label): skipped, no labels")
    elif cfg.dim_z <= 2:
        codes = model.encode(splits.test_x)
        save_figure(draw_latent(codes, splits.test_y), run_dir / "latent.png")
    if cfg.dim_z == 2 and splits.image_shape:  # labels or not; vectors draw no images
        plane = code_plane(model.decode, model.encode(splits.test_x))
        save_figure(draw_manifold(*plane, splits.image_shape), run_dir / "manifold.png")
    if is_linear(cfg):
        decoder = model.decoder[-1].weight  # (d, k): its columns span the decoded subspace
        comparison, recovered = compare_subspaces(decoder, pca, splits.train_x - pca.mean)
        extra.update(comparison.as_dict())
        n = min(16, cfg.dim_z)
        if splits.image_shape is not None:
            fig = draw_components(recovered[:n], pca.components[:n], splits.image_shape)
            save_figure(fig, run_dir / "pca_components.png")
    return extra


def feature_errors(model: AutoEncoder, splits: Splits, pca: PCAFit, k: int) -> pd.DataFrame:
    """Mean squared test error of each feature, the AE's beside PCA's with the same k: what
    a vector without an image shows instead of a montage."""
    x = splits.test_x
    top = pca.components[:k]
    pca_x = (x - pca.mean) @ top.T @ top + pca.mean
    names = splits.feature_names or [str(i) for i in range(x.shape[1])]
    return pd.DataFrame({
        "feature": names,
        "test_mse": (model(x) - x).pow(2).mean(0).numpy(),
        "pca_test_mse": (pca_x - x).pow(2).mean(0).numpy(),
    })  # fmt: skip


def is_linear(cfg: DictConfig) -> bool:
    """A linear AE: no nonlinearity anywhere, so its decoder is one linear map."""
    m = cfg.model
    return m.activation == "identity" and m.output == "identity" and len(m.hidden) == 0


def describe(cfg: DictConfig, hydra_cfg: Any, run_dir: Path) -> dict[str, Any]:
    """The settings that identify a job in result.json and in the sweep table."""
    choices = hydra_cfg.runtime.choices
    overrides = [o for o in hydra_cfg.overrides.task if override_key(o) not in NOT_JOB_SETTINGS]
    return {
        "dim_z": cfg.dim_z,
        "data": choices.get("data"),
        "model": choices.get("model"),
        "recipe": choices.get("recipe"),
        "kind": str(cfg.model.kind),
        "hidden": list(cfg.model.hidden),
        "activation": str(cfg.model.activation),
        "output": str(cfg.model.output),
        "loss": str(cfg.loss.name),
        "optimizer": str(cfg.optimizer._target_).rpartition(".")[2].lower(),  # adamw, sgd, ...
        "lr": cfg.optimizer.lr,
        "batch_size": cfg.data.batch_size,
        "max_epochs": cfg.trainer.max_epochs,
        "seed": cfg.seed,
        "overrides": list(overrides),
        "run_dir": str(run_dir),
    }


def read_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None


EXPLAINED = (
    ConfigError,
    DataError,
    CheckpointError,
    DivergenceError,
    Interrupted,
)  # messages say it all


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, EXPLAINED) else f"{type(exc).__name__}: {text}"


def set_threads(threads: int | None, launcher: DictConfig | None) -> None:
    """torch's intra-op threads: `threads` if set; else, for jobs that a local launcher runs
    side by side, each job's share of the cores. torch's default of one thread per core
    oversubscribes the CPU there, and its threads then wait on each other
    (docs/benchmarks.md)."""
    if threads is None and launcher is not None:
        target, cores = str(launcher.get("_target_", "")), os.cpu_count() or 1
        if "joblib" in target and launcher.get("n_jobs") not in (1, None):
            threads = max(1, cores // (launcher.n_jobs if launcher.n_jobs > 0 else cores))
        elif "submitit" in target and launcher.get("cpus_per_task"):
            threads = int(launcher.cpus_per_task)
    if threads is not None:
        torch.set_num_threads(threads)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """Hydra task: one job. Records its own outcome in result.json (running, ok, failed,
    interrupted) and prints the run folder and key metrics last."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    base = describe(cfg, hydra_cfg, run_dir)
    set_threads(cfg.threads, hydra_cfg.launcher if multirun else None)
    if rank_zero_only.rank != 0:  # a DDP worker: it trains, rank 0 records the run
        with quiet_lightning():
            return train(cfg, run_dir)

    previous = read_result(run_dir)
    if is_own_folder(previous):  # requeued by SLURM: this job's own run, continued
        with open_dict(cfg):
            cfg.resume = str(run_dir)
    elif cfg.resume is None:
        previous = None
    if (
        previous
        and previous.get("status") == "ok"
        and previous.get("overrides") == base["overrides"]
    ):
        print(f"already finished, kept: {run_dir}")
        return previous

    base.update(slurm_job=slurm_job_id(), requeued=times_requeued())
    write_json({**base, "status": "running", "error": None}, run_dir / RESULT)
    time_limit = StopOnTimeLimit(hydra_cfg.launcher.get("signal_delay_s") if multirun else None)
    try:
        check_machine(cfg.trainer)  # again here: a cluster node may differ from the submitter
        with quiet_lightning():
            result = {**base, **train(cfg, run_dir, time_limit), "status": "ok", "error": None}
    except (Interrupted, KeyboardInterrupt) as e:
        interrupted = e if isinstance(e, Interrupted) else Interrupted("SIGINT")
        write_json(
            {**base, "status": "interrupted", "error": one_line(interrupted)}, run_dir / RESULT
        )
        print(f"aesweep: {one_line(interrupted)}\nrun folder: {run_dir}", file=sys.stderr)
        time_limit.hand_over()  # submitit requeues the job (and exits) or says why not
        raise SystemExit(interrupted.exit_code) from None
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        error = one_line(e)
        if not isinstance(e, EXPLAINED):
            (run_dir / "error.log").write_text(traceback.format_exc())
            error += f" (traceback in {run_dir / 'error.log'})"
        result = {**base, "status": "failed", "error": error}

    write_json(result, run_dir / RESULT)
    print(f"run folder: {run_dir}")
    print(summary(result))
    if result["status"] != "ok" and not multirun:
        print(f"aesweep: error: {result['error']}", file=sys.stderr)
        raise SystemExit(1)
    return result


def summary(result: dict[str, Any]) -> str:
    """One line of the key metrics, units spelt out."""
    if result["status"] != "ok":
        return f"dim_z={result['dim_z']}: {result['status']}: {result['error']}"
    return (
        f"dim_z={result['dim_z']}: test_sse={result['test_sse']:.3f} per image "
        f"(test_mse={result['test_mse']:.5f} per pixel); PCA at k={result['dim_z']}: "
        f"{result['pca_test_sse']:.3f}; {result['epochs']} epochs in {result['seconds']:.1f} s"
    )
