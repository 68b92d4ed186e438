"""One run: seed, build data and model, fit, test, write the run folder's artefacts.

`run_job` is the Hydra task. It never lets a job's failure escape: Hydra would abort the
sweep and skip the report, so a failure becomes `result.json` with status=failed instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning_fabric.plugins import CheckpointIO, ClusterEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import Callback, EarlyStopping
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only

from aesweep.artefacts import write_artefacts
from aesweep.callbacks import (
    BestCheckpoint,
    Continuation,
    LastCheckpoint,
    RunFolderCheckpointIO,
)
from aesweep.checkpoints import (
    SHAPE_KEYS,
    check_continuation,
    checkpoint_to_continue,
    read_checkpoint,
    recipe_of,
)
from aesweep.config import (
    RESULT,
    ConfigError,
    check_machine,
    job_overrides,
    kept_as_finished,
    read_result,
)
from aesweep.data import DataError, Splits, load_splits
from aesweep.datamodule import TensorDataModule
from aesweep.fast import ChunkedAutoEncoder
from aesweep.io import write_json
from aesweep.lock import FolderLocked, lock_folder
from aesweep.loggers import build_loggers, log_results
from aesweep.model import AutoEncoder, DivergenceError, score
from aesweep.nets import net_settings
from aesweep.pca import PCAFit, pca_of
from aesweep.probe import probe_codes
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
        warnings.filterwarnings(
            "ignore", message=r"(Experiment logs|Checkpoint) directory .* exists"
        )
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


class Interrupted(Exception):
    """Training stopped on SIGINT, SIGTERM or SLURM's time-limit warning (SIGUSR2) after
    saving its checkpoint."""

    def __init__(self, signame: str) -> None:
        why = "time limit near (SIGUSR2)" if signame == "SIGUSR2" else f"interrupted by {signame}"
        super().__init__(f"{why}; continue with resume=<this run folder>")
        self.exit_code = 128 + getattr(signal, signame)


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
    """The untrained autoencoder a job's config describes, with its training recipe;
    `output` as output_for resolved it for the data (default: model.output)."""
    settings = {**net_settings(cfg, input_dim, output), **recipe_of(cfg)}
    k = steps_per_call(cfg)
    if k == 1:
        return AutoEncoder(**settings)
    return ChunkedAutoEncoder(steps_per_call=k, cuda_graph=cfg.cuda_graph, **settings)


def steps_per_call(cfg: DictConfig) -> int:
    """cfg.steps_per_call (null: 32 on one CUDA device, where Lightning's per-step cost
    dominates a step; else 1: on a CPU chunks gain ~5%, docs/benchmarks.md), or 1 where a
    setting needs Lightning's own optimizer loop (clipping, accumulation, a step limit that
    may end inside a chunk): with a one-line notice if the user asked for more. Chunks give
    the same updates as single steps (tested bit for bit)."""
    asked = cfg.steps_per_call
    k = asked if asked is not None else 32 if on_one_cuda_device(cfg.trainer) else 1
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


def on_one_cuda_device(trainer: DictConfig) -> bool:
    devices, accelerator = trainer.get("devices", 1), trainer.get("accelerator", "auto")
    one = devices == 1 or (OmegaConf.is_list(devices) and len(devices) == 1)
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return one and cuda


def checkpointing(cfg: DictConfig, run_dir: Path) -> list[Callback]:
    """last.ckpt to continue from; with select=best, best.ckpt and, with `patience`, a stop
    after that many validations without a better one (or one that is not finite)."""
    folder = run_dir / "checkpoints"
    callbacks: list[Callback] = [LastCheckpoint(folder, cfg.checkpoint_every_s), Continuation()]
    if cfg.select == "best":
        callbacks.append(BestCheckpoint(folder))
        if cfg.patience is not None:
            callbacks.append(EarlyStopping("val_mse", patience=cfg.patience,
                                           check_on_train_epoch_end=False))  # fmt: skip
    return callbacks


def build_trainer(
    cfg: DictConfig, run_dir: Path, time_limit: StopOnTimeLimit, failed_loggers: dict[str, str]
) -> pl.Trainer:
    """The configured Trainer with the chosen loggers (by default metrics.csv) and the
    checkpoints in the run folder."""
    chosen = list(instantiate(cfg.trainer.get("plugins")) or [])  # the user's trainer.plugins
    taken = tuple(
        k for k in (ClusterEnvironment, CheckpointIO) if any(isinstance(c, k) for c in chosen)
    )
    ours = [p for p in [*cluster_plugins(), RunFolderCheckpointIO()] if not isinstance(p, taken)]
    trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir, failed_loggers) or False,
        callbacks=[*checkpointing(cfg, run_dir), time_limit, *plain_progress(cfg.trainer)],
        plugins=chosen + ours,
    )
    if isinstance(trainer.accelerator, CPUAccelerator):
        # Lightning sets this at import so that CUDA checks never initialise CUDA before a
        # fork; torch.optim then probes NVML (a dlopen) at every optimizer step, 0.5 ms per
        # step with a CUDA build of torch. A CPU run initialises no CUDA: restore the default.
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    return trainer


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
    datamodule = TensorDataModule(splits, cfg.data.batch_size, cfg.seed, model.steps_per_call)

    ckpt_path = checked_checkpoint(cfg, run_dir, model)
    failed_loggers: dict[str, str] = {}  # logger -> why it failed; the run goes on without it
    trainer = build_trainer(cfg, run_dir, time_limit, failed_loggers)
    clock.lap("build")
    fit(trainer, model, datamodule, ckpt_path, time_limit)
    seconds = clock.lap("fit")
    best_epoch = keep_selected(trainer, model)

    scores = score(model, {"train": splits.train_x, "val": splits.val_x, "test": splits.test_x})
    for csv in (lg for lg in trainer.loggers if isinstance(lg, CSVLogger)):  # others: log_results
        csv.log_metrics(scores, step=trainer.global_step)
        csv.save()
    clock.lap("test")
    metrics = {
        **dict(sorted(scores.items())),
        "pca_test_mse": pca.test_mse(cfg.dim_z),
        "pca_test_sse": float(pca.test_sse[cfg.dim_z]),
        "baseline_test_sse": float(pca.test_sse[0]),  # every sample as the mean: the data's scale
        "input_dim": splits.input_dim,
        "image_shape": list(splits.image_shape) if splits.image_shape else None,
        "output": model.hparams.output,
        "scale": splits.scaling.kind,
        "scaling": splits.scaling.as_dict(),
        "n_train": len(splits.train_x),
        "n_val": len(splits.val_x),
        "n_test": len(splits.test_x),
        "epochs": trainer.current_epoch,
        "best_epoch": best_epoch,
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
        if cfg.select == "best" and best_epoch is None:
            metrics["notes"].append(NO_VALIDATION.removeprefix("aesweep: "))
        clock.lap("artefacts")  # rank 0 records the run, and its timings
        log_results(trainer.loggers, metrics, trainer.global_step, failed_loggers)
    return {**metrics, "failed_loggers": failed_loggers or None, "timings": clock.timings}


def checked_checkpoint(cfg: DictConfig, run_dir: Path, model: AutoEncoder) -> Path | None:
    """The checkpoint this run continues from, its shapes (and on resume its recipe) checked
    against the model (again here, after the CLI's check: a cluster node may read another
    file system, a requeued job run another version)."""
    ckpt_path = checkpoint_to_continue(cfg, run_dir)
    if ckpt_path is not None:
        check_continuation(ckpt_path, {key: model.hparams[key] for key in SHAPE_KEYS}, cfg)
    return ckpt_path


def fit(
    trainer: pl.Trainer,
    model: AutoEncoder,
    datamodule: TensorDataModule,
    ckpt_path: Path | None,
    time_limit: StopOnTimeLimit,
) -> None:
    """trainer.fit; a stop (Ctrl-C, SIGTERM, SLURM's time-limit warning) becomes Interrupted,
    a validation error that is not finite a divergence."""
    last = next(c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint))
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit:
        if last.signame:
            raise Interrupted("SIGUSR2" if time_limit.warned else last.signame) from None
        raise
    if trainer.interrupted:
        raise Interrupted(last.signame or "SIGINT")
    for stopper in trainer.early_stopping_callbacks:
        if stopper.stopping_reason == EarlyStoppingReason.NON_FINITE_METRIC:
            raise DivergenceError(str(stopper.stopping_reason_message))


def keep_selected(trainer: pl.Trainer, model: AutoEncoder) -> int | None:
    """select=best: the model takes best.ckpt's weights; returns the epoch they are from (0:
    the untrained start); None with select=last, where the model keeps its last weights, and
    where no validation ran to choose (then best.ckpt, the untrained start, goes: load and
    encode use last.ckpt, the weights result.json reports, and a notice says so)."""
    best = next((c for c in trainer.checkpoint_callbacks if isinstance(c, BestCheckpoint)), None)
    if best is None:
        return None
    if best.validations == 0 and trainer.global_step > 0:
        Path(best.best_model_path).unlink(missing_ok=True)
        print(NO_VALIDATION, file=sys.stderr)
        return None
    kept = read_checkpoint(Path(best.best_model_path))
    model.load_state_dict(kept["state_dict"])
    return kept["epoch"] + 1 if kept["global_step"] > 0 else 0


NO_VALIDATION = (
    "aesweep: select=best kept the last state: training ended before its first validation "
    "(e.g. trainer.max_steps), so nothing chose another"
)


def describe(cfg: DictConfig, hydra_cfg: Any) -> dict[str, Any]:
    """The settings that identify a job in result.json and in the sweep table."""
    choices = hydra_cfg.runtime.choices
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
        "input_noise": cfg.model.input_noise,
        "batch_size": cfg.data.batch_size,
        "max_epochs": cfg.trainer.max_epochs,
        "seed": cfg.seed,
        "overrides": job_overrides(hydra_cfg.overrides.task),
    }  # no run_dir: a folder that moves would name its old place (the report adds it)


EXPLAINED = (ConfigError, DataError, DivergenceError, Interrupted)  # messages say it all


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, EXPLAINED) else f"{type(exc).__name__}: {text}"


def set_threads(threads: int | None, launcher: DictConfig | None) -> None:
    """torch's intra-op threads: `threads` if set; else, for jobs that a local launcher runs
    side by side, each job's share of the cores, and in a SLURM job the CPUs SLURM gave it.
    torch's default of one thread per core oversubscribes the CPU there (a cluster without
    cgroups does not confine a job to its CPUs), and its threads then wait on each other
    (docs/benchmarks.md)."""
    if threads is None and launcher is not None:
        target, cores = str(launcher.get("_target_", "")), os.cpu_count() or 1
        if "joblib" in target and launcher.get("n_jobs") not in (1, None):
            threads = max(1, cores // (launcher.n_jobs if launcher.n_jobs > 0 else cores))
        elif "submitit" in target:
            allocated = launcher.get("cpus_per_task") or os.environ.get("SLURM_CPUS_ON_NODE")
            threads = int(allocated) if allocated else None
    if threads is not None:
        torch.set_num_threads(threads)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """Hydra task: one job. Records its own outcome in result.json (running, ok, failed,
    interrupted) and prints the run folder and key metrics last."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    base = describe(cfg, hydra_cfg)
    set_threads(cfg.threads, hydra_cfg.launcher if multirun else None)
    if rank_zero_only.rank != 0:  # a DDP worker: it trains, rank 0 records the run
        with quiet_lightning():
            return train(cfg, run_dir)

    if (refused := claim(run_dir)) is not None:
        return {**base, "status": "failed", "error": refused}  # that folder's writer records
    previous = read_result(run_dir)
    if is_own_folder(previous):  # requeued by SLURM: this job's own run, continued
        with open_dict(cfg):
            cfg.resume = str(run_dir)
    if cfg.resume is not None and kept_as_finished(previous, hydra_cfg.overrides.task):
        print(f"already finished, kept: {run_dir}")
        return previous

    base.update(slurm_job=slurm_job_id(), requeued=times_requeued())
    record({**base, "status": "running", "error": None}, run_dir)
    launcher = hydra_cfg.launcher if multirun else {}
    time_limit = StopOnTimeLimit(launcher.get("signal_delay_s"), launcher.get("max_num_timeout"))
    try:
        check_machine(cfg.trainer)  # again here: a cluster node may differ from the submitter
        with quiet_lightning():
            result = {**base, **train(cfg, run_dir, time_limit), "status": "ok", "error": None}
    except (Interrupted, KeyboardInterrupt) as e:
        interrupted = e if isinstance(e, Interrupted) else Interrupted("SIGINT")
        record({**base, "status": "interrupted", "error": one_line(interrupted)}, run_dir)
        print(f"aesweep: {one_line(interrupted)}\nrun folder: {run_dir}", file=sys.stderr)
        time_limit.hand_over()  # submitit requeues the job (and exits) or says why not
        raise SystemExit(interrupted.exit_code) from None
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        error = one_line(e)
        if not isinstance(e, EXPLAINED):
            with contextlib.suppress(OSError):  # a full disk: the line still says what failed
                (run_dir / "error.log").write_text(traceback.format_exc())
                error += f" (traceback in {run_dir / 'error.log'})"
        result = {**base, "status": "failed", "error": error}

    record(result, run_dir)
    print(f"run folder: {run_dir}")
    print(summary(result))
    if result["status"] != "ok" and not multirun:
        print(f"aesweep: error: {result['error']}", file=sys.stderr)
        raise SystemExit(1)
    return result


def record(result: dict[str, Any], run_dir: Path) -> None:
    """result.json; a disk too full for it costs the record (one line), never the sweep:
    the job then counts as unfinished, and resume= runs it again."""
    try:
        write_json(result, run_dir / RESULT)
    except OSError as e:
        print(f"aesweep: error: cannot record the job's {result['status']}: {e}", file=sys.stderr)


def claim(run_dir: Path) -> str | None:
    """Lock the run folder for this process (one writer per folder, aesweep/lock.py); the
    one-line reason if another live process writes it."""
    try:
        lock_folder(run_dir, f"hydra.run.dir={run_dir}")
    except FolderLocked as e:
        print(f"aesweep: error: {e}", file=sys.stderr)
        return str(e)
    return None


def summary(result: dict[str, Any]) -> str:
    """One line of the key metrics, units spelt out."""
    if result["status"] != "ok":
        return f"dim_z={result['dim_z']}: {result['status']}: {result['error']}"
    return (
        f"dim_z={result['dim_z']}: test_sse={result['test_sse']:.3f} per image "
        f"(test_mse={result['test_mse']:.5f} per pixel); PCA at k={result['dim_z']}: "
        f"{result['pca_test_sse']:.3f}; {result['epochs']} epochs in {result['seconds']:.1f} s"
    )
