"""The sweep report: one table of every job's result.json, the loss-vs-dimension plot, the
montage of every code size, report.md, and the Hydra callback that writes them when a
multirun ends. Works on partial sweeps; every file is replaced atomically.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from matplotlib.figure import Figure

from aesweep.config import (
    FEATURE_ERRORS,
    GENERATED,
    NOT_JOB_SETTINGS,
    RESULT,
    UNITS,
    job_settings,
    saved_overrides,
)
from aesweep.io import save_figure, write_text
from aesweep.plots import DPI, draw_accuracy_vs_dim, draw_montage, log_dims

ACCURACIES = ["probe_acc", "pca_probe_acc", "knn_acc", "pca_knn_acc"]  # aesweep/probe.py
METRIC_COLUMNS = [
    "dim_z",
    "test_mse",
    "pca_test_mse",
    "test_sse",
    "pca_test_sse",
    "baseline_test_sse",
    "val_mse",
    "val_sse",
    "train_mse",
    "train_sse",
    *ACCURACIES,
    "max_principal_angle_deg",
    "mean_sq_cos",
    "n_train",
    "n_val",
    "n_test",
    "epochs",
    "steps",
    "seconds",
    "n_params",
    "status",
    "error",
]
DESCRIPTION_COLUMNS = [
    "data",
    "model",
    "recipe",
    "kind",
    "best_epoch",
    "hidden",
    "activation",
    "output",
    "loss",
    "optimizer",
    "lr",
    "input_noise",
    "batch_size",
    "max_epochs",
    "seed",
    "input_dim",
    "scale",
    "component_abs_cos",
    "requeued",
    "failed_loggers",
    "run_dir",
]


def collect(sweep_dir: Path) -> pd.DataFrame:
    """One row per job folder's result.json, sorted by dim_z descending: the swept settings
    (overrides that differ between jobs), then the metrics; `run_dir` is where it is now."""
    rows = []
    for path in sorted(sweep_dir.glob(f"*/{RESULT}")):
        try:
            row = json.loads(path.read_text())
        except ValueError:
            row = {"status": "failed", "error": f"unreadable {path}"}
        rows.append({**row, "run_dir": str(path.parent)})  # where it is now: sweeps move
    if not rows:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    settings = [job_settings(r.get("overrides", []), ("dim_z", *NOT_JOB_SETTINGS)) for r in rows]
    keys = sorted({k for s in settings for k in s})
    swept = [k for k in keys if len({s.get(k) for s in settings}) > 1]
    table = pd.DataFrame(rows)
    for k in reversed(swept):  # inserted at the front, so they end up in key order
        if k in table:  # e.g. a swept seed: the override's column replaces result.json's
            del table[k]
        table.insert(0, k, [s.get(k, "") for s in settings])
    described = [c for c in METRIC_COLUMNS + DESCRIPTION_COLUMNS if c in table and c not in swept]
    columns = [*swept, *described]
    table = table[columns].sort_values(["dim_z", *swept], ascending=[False] + [True] * len(swept))
    table = table.reset_index(drop=True)
    table.attrs["notes"] = sorted({n for r in rows for n in r.get("notes") or []})
    table.attrs["settings"] = [k for k in swept if k != "seed"]  # seeds are repeats, not curves
    return table


def per_size(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per curve and code size over its seeds: n_seeds, the mean test_sse with its
    std, min and max, and PCA's (the same for every seed); each accuracy's mean, min, max."""
    keys = [*ok.attrs.get("settings", []), "dim_z"]
    grouped = ok.groupby(keys, sort=False, dropna=False)
    spread = {f"{c}{s}": (c, s.lstrip("_") or "mean") for c in ACCURACIES if c in ok
              for s in ("", "_min", "_max")}  # fmt: skip
    sizes = grouped.agg(
        n_seeds=("test_sse", "size"),
        test_sse=("test_sse", "mean"),
        test_sse_std=("test_sse", "std"),
        test_sse_min=("test_sse", "min"),
        test_sse_max=("test_sse", "max"),
        pca_test_sse=("pca_test_sse", "first"),
        **spread,
    ).reset_index()
    sizes.attrs = ok.attrs
    return sizes


def combinations(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per combination of the swept non-dim settings; one ("", all) if none."""
    settings = table.attrs.get("settings", [])
    if not settings:
        return [("", table)]
    groups = []
    for key, rows in table.groupby(settings, sort=True, dropna=False):  # key: a tuple
        groups.append((", ".join(f"{k}={v}" for k, v in zip(settings, key, strict=True)), rows))
    return groups


def units_of(table: pd.DataFrame) -> str:
    """What a row's error sums over, from the runs' data.scale (older runs: pixels)."""
    scales = table["scale"].dropna().unique() if "scale" in table else []
    return UNITS[scales[0]] if len(scales) == 1 else UNITS["minmax"]


def draw_loss_vs_dim(table: pd.DataFrame) -> Figure:
    """Test error per image of each AE curve and of PCA against dim_z on a log axis; for
    linear sweeps a second panel with the largest principal angle to PCA's subspace."""
    ok = table[table["status"] == "ok"]
    angles = "max_principal_angle_deg" in ok and ok["max_principal_angle_deg"].notna().any()
    fig = Figure(figsize=(11 if angles else 7, 4.8), dpi=DPI)
    axes = fig.subplots(1, 2 if angles else 1, squeeze=False)[0]
    pca_curves: list[tuple[str, tuple]] = []
    for label, rows in combinations(per_size(ok)):
        rows = rows.sort_values("dim_z")
        seeds = int(rows["n_seeds"].max())
        name = f"AE {label}".strip() + (
            f" (mean of {seeds} seeds, band: min-max)" if seeds > 1 else ""
        )
        line = axes[0].plot(rows["dim_z"], rows["test_sse"], "o-", label=name)[0]
        if seeds > 1:
            axes[0].fill_between(rows["dim_z"], rows["test_sse_min"], rows["test_sse_max"],
                                 color=line.get_color(), alpha=0.2)  # fmt: skip
        curve = tuple(zip(rows["dim_z"], rows["pca_test_sse"].round(6), strict=True))
        if curve not in [c for _, c in pca_curves]:
            pca_curves.append((label, curve))
    for label, rows in combinations(ok) if angles else []:
        rows = rows.sort_values("dim_z")
        axes[1].plot(rows["dim_z"], rows["max_principal_angle_deg"], "o-", label=label or None)
    for i, (label, curve) in enumerate(pca_curves):
        dims, errors = zip(*curve, strict=True)
        name = "PCA (closed form)" + (f" {label}" if len(pca_curves) > 1 else "")
        axes[0].plot(dims, errors, "s--", color="black", alpha=1 - 0.25 * (i % 3), label=name)
    input_dim = int(ok["input_dim"].iloc[0]) if len(ok) and "input_dim" in ok else None
    dims = sorted(ok["dim_z"].unique())
    log_dims(
        axes[0],
        dims,
        ylabel=f"test error: squared error per row\n(sum over its {units_of(table)})",
        title=f"Reconstruction error vs code size (input dim {input_dim})",
    )
    axes[0].legend(fontsize=8)
    if angles:
        log_dims(
            axes[1],
            dims,
            ylabel="largest principal angle to PCA subspace (degrees)",
            title="Linear AE subspace vs PCA",
        )
    fig.tight_layout()
    return fig


def draw_sweep_montage(rows: pd.DataFrame) -> Figure | None:
    """Originals, then one row per dim (descending) from each job's samples.npz."""
    samples = []
    ok = rows[rows["status"] == "ok"]
    if "seed" in ok and ok["seed"].nunique() > 1:  # one row per size: the first seed's
        ok = ok[ok["seed"] == ok["seed"].min()]
    for _, row in ok.sort_values("dim_z", ascending=False).iterrows():
        path = Path(row["run_dir"]) / "samples.npz"
        if path.is_file():
            samples.append((int(row["dim_z"]), np.load(path)))
    if not samples:
        return None
    first = samples[0][1]
    shape = tuple(int(s) for s in first["image_shape"])
    return draw_montage(
        first["originals"], [(f"dim(z) = {k}", s["reconstructions"]) for k, s in samples], shape
    )


def slug(label: str) -> str:
    """File-name-safe label: 'model.hidden=[256,64], loss=bce' -> 'model.hidden=256-64_loss=bce'"""
    text = label.replace("[]", "none").replace(", ", "_")
    text = re.sub(r"[\[\]\s]", "", text).replace(",", "-")
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", text)


def write_report(sweep_dir: Path, table: pd.DataFrame) -> None:
    """(Re)build a sweep folder's loss_vs_dim.csv, loss_vs_dim.png and montage(s) from its
    table (`collect`: the job folders' result.json); works on partial sweeps."""
    inside = table.assign(run_dir=[Path(d).name for d in table["run_dir"]])  # relative
    write_text(inside.to_csv(index=False), sweep_dir / "loss_vs_dim.csv")
    if (table["status"] == "ok").any():
        save_figure(draw_loss_vs_dim(table), sweep_dir / "loss_vs_dim.png")
    accuracy = accuracy_figure(table[table["status"] == "ok"])
    if accuracy is not None:
        save_figure(accuracy, sweep_dir / "accuracy_vs_dim.png")
    groups = combinations(table)
    montages = []
    for label, rows in groups:
        fig = draw_sweep_montage(rows)
        if fig is not None:
            name = (
                "reconstructions.png" if len(groups) == 1 else f"reconstructions_{slug(label)}.png"
            )
            save_figure(fig, sweep_dir / name)
            montages.append((label, name))
    write_text(markdown_report(sweep_dir, table, montages), sweep_dir / "report.md")


def probed(ok: pd.DataFrame) -> pd.DataFrame:
    """The finished rows that carry every accuracy (runs with labels and probe=true)."""
    if not set(ACCURACIES) <= set(ok):
        return ok.iloc[:0]
    return ok.dropna(subset=ACCURACIES)


def accuracy_figure(ok: pd.DataFrame) -> Figure | None:
    """accuracy_vs_dim.png: the probes' accuracy against k, AE and PCA; None if none probed."""
    rows = probed(ok)
    if not len(rows):
        return None
    sizes = per_size(rows)
    return draw_accuracy_vs_dim(combinations(sizes), seeds=int(sizes["n_seeds"].max()))


def sweep_command(sweep_dir: Path) -> str | None:
    """The command that reproduces the sweep, from Hydra's multirun.yaml."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        return None
    overrides = saved_overrides(saved)
    kept = [o for o in [*overrides["task"], *overrides["hydra"]] if not o.startswith(GENERATED)]
    if any(o.startswith("dim_z=") for o in kept):  # sweep.dims has no effect next to dim_z
        kept = [o for o in kept if not o.startswith("sweep.dims=")]
    return "aesweep train -m " + " ".join(shlex.quote(o) for o in kept)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pandas' to_markdown would add a dependency)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def markdown_report(sweep_dir: Path, table: pd.DataFrame, montages: list[tuple[str, str]]) -> str:
    """report.md: the command, the table, the plot and montages, AE vs PCA, and each run."""
    settings = table.attrs.get("settings", [])
    parts = [f"# Sweep report: {sweep_dir.name}", ""]
    command = sweep_command(sweep_dir)
    if command:
        parts += ["Made by:", "", "```bash", command, "```", ""]
    parts += [
        "## Results",
        "",
        f"Errors per test row (`*_sse`: sum of squared errors over its {units_of(table)}) and "
        "per value (`*_mse`). Test accuracy of a linear probe (`*probe_acc`) and of 5-NN "
        "(`*knn_acc`) on the codes of the AE and of PCA (`pca_*`).",
        "",
        markdown_table(summary(table, "pca_test_mse", *ACCURACIES)),
        "",
    ]
    if (sweep_dir / "loss_vs_dim.png").is_file():
        parts += ["![test error vs dim(z)](loss_vs_dim.png)", ""]
    for label, name in montages:
        parts += [f"### Reconstructions {label}".rstrip(), "", f"![reconstructions]({name})", ""]
    parts += against_pca(table[table["status"] == "ok"], settings)
    parts += what_codes_keep(table[table["status"] == "ok"], sweep_dir)
    parts += feature_section(table[table["status"] == "ok"])
    notes = table.attrs.get("notes", [])
    parts += ["## Notes", "", *(f"- {n}" for n in notes), ""] if notes else []
    parts += ["## Runs", ""]
    for _, row in table.iterrows():
        folder = Path(str(row["run_dir"]))
        files = ("reconstructions.png", "latent.png", "manifold.png", "pca_components.png",
                 "result.json")  # fmt: skip
        links = [f"[{f}]({folder.name}/{f})" for f in files if (folder / f).is_file()]
        failed = row.get("failed_loggers")
        failed = failed if isinstance(failed, dict) else {}
        notes = [f"logger {k} failed: {v}" for k, v in failed.items()]
        parts.append(f"- [{folder.name}]({folder.name}/) ({row['status']}): "
                     + "; ".join([", ".join(links), *notes]))  # fmt: skip
    return "\n".join(parts) + "\n"


def against_pca(ok: pd.DataFrame, settings: list[str]) -> list[str]:
    """The PCA comparison section of report.md: ratio per size, and angles for linear AEs.
    With several seeds a size counts as a win only where every seed beats PCA."""
    if not len(ok):
        return []
    gap = ok["test_sse"] - ok["pca_test_sse"]
    # Near k = d both errors are rounding; "near" is 1e-4 of the data's own variance, so it
    # means the same on any scale (0.005 per image on MNIST)
    baseline = ok["baseline_test_sse"] if "baseline_test_sse" in ok else pd.Series(np.nan, ok.index)
    near_zero = (1e-4 * baseline).fillna(0.05)  # folders older than the field: as before
    tie = gap.abs() <= np.maximum(0.01 * ok["pca_test_sse"], near_zero)
    verdicts = ok.assign(verdict=np.select([tie, gap < 0], [1, 0], 2))  # 0 yes, 1 tie, 2 no
    sizes, keys = per_size(ok), [*settings, "dim_z"]
    worst = verdicts.groupby(keys, sort=False, dropna=False)["verdict"].max()
    sizes["beats PCA"] = np.array(["yes", "tie", "no"])[worst.to_numpy()]
    nonzero = sizes["pca_test_sse"].where(sizes["pca_test_sse"] > 1e-6)  # PCA at k = d is exact
    sizes.insert(sizes.columns.get_loc("pca_test_sse") + 1, "AE / PCA", sizes["test_sse"] / nonzero)
    seeds = int(sizes["n_seeds"].max())
    spread = ["n_seeds", "test_sse", "test_sse_std", "test_sse_max"] if seeds > 1 else ["test_sse"]
    versus = sizes[[*keys, *spread, "pca_test_sse", "AE / PCA", "beats PCA"]]
    if "max_principal_angle_deg" in ok and ok["max_principal_angle_deg"].notna().any():
        angle = ok.groupby(keys, sort=False, dropna=False)["max_principal_angle_deg"].max()
        versus = versus.assign(**{"largest principal angle (deg)": angle.to_numpy()})
    wins = int((versus["beats PCA"] == "yes").sum())
    ties = int((versus["beats PCA"] == "tie").sum())
    every = f", every one of {seeds} seeds," if seeds > 1 else ""
    return [
        "## Against PCA",
        "",
        f"The autoencoder{every} beats closed-form PCA at {wins} of {len(versus)} sizes and "
        f"ties it (within 1%, or 1e-4 of the data's variance near zero) at {ties}.",
        "",
        markdown_table(versus),
        "",
    ]


def feature_section(ok: pd.DataFrame, most: int = 4) -> list[str]:
    """Vectors without an image have no montage: their test error per feature instead, the
    AE's beside PCA's, at up to `most` code sizes below d spread over the sweep (first seed)."""
    runs = {}
    for row in ok.sort_values("dim_z", ascending=False).itertuples():
        path = Path(str(row.run_dir)) / FEATURE_ERRORS
        if path.is_file():
            runs.setdefault(int(row.dim_z), path)
    if not runs:
        return []
    full = int(ok["input_dim"].max()) if "input_dim" in ok else None
    dims = [k for k in runs if k != full] or list(runs)  # at k = d both are exact
    picks = sorted({dims[i] for i in np.linspace(0, len(dims) - 1, min(most, len(dims))).round()
                    .astype(int)}, reverse=True)  # fmt: skip
    errors = [
        pd.read_csv(runs[k]).set_index("feature").set_axis([f"AE k={k}", f"PCA k={k}"], axis=1)
        for k in picks
    ]
    return [
        "## Error per feature",
        "",
        "Mean squared test error of each feature (no image to show for these vectors).",
        "",
        markdown_table(pd.concat(errors, axis=1).reset_index()),
        "",
    ]


def what_codes_keep(ok: pd.DataFrame, sweep_dir: Path) -> list[str]:
    """report.md's probe section: the figure, and where the AE's codes separate the classes
    better or worse than PCA's (linear probe, mean over seeds; within 0.01 is a tie)."""
    rows = probed(ok)
    if not len(rows):
        return []
    parts = ["## What the codes keep", ""]
    if (sweep_dir / "accuracy_vs_dim.png").is_file():
        parts += ["![test accuracy on the codes vs dim(z)](accuracy_vs_dim.png)", ""]
    every = per_size(rows)
    if every["n_seeds"].max() > 1:  # mean and spread over seeds, as for the error
        spread = [f"{c}{s}" for c in ACCURACIES for s in ("", "_min", "_max")]
        shown = [*every.attrs.get("settings", []), "dim_z", "n_seeds", *spread]
        parts += [markdown_table(every[shown]), ""]
    for label, sizes in combinations(every):
        gap = (sizes["probe_acc"] - sizes["pca_probe_acc"]).to_numpy()
        masks = (gap > 0.01, gap < -0.01, np.abs(gap) <= 0.01)
        better, worse, same = (listed(sizes["dim_z"][m]) for m in masks)
        parts.append(
            f"Linear probe{f' ({label})' if label else ''}: the AE's codes separate the classes "
            f"better than PCA's at k = {better}, worse at k = {worse}, as well (within 0.01) "
            f"at k = {same}."
        )
    return [*parts, ""]


def listed(dims: pd.Series) -> str:
    """'256, 32, 2' (descending), or 'none'."""
    return ", ".join(str(k) for k in sorted(dims, reverse=True)) or "none"


def summary(table: pd.DataFrame, *metrics: str, seeds: bool = True) -> pd.DataFrame:
    """The columns a reader compares: swept settings, dim_z, seed (where it varies), the
    errors, `metrics`, epochs, seconds and status (those the table has)."""
    seed = ["seed"] if seeds and "seed" in table and table["seed"].nunique() > 1 else []
    first = [*table.attrs.get("settings", []), "dim_z", *seed, "test_sse", "pca_test_sse"]
    columns = [*first, "test_mse", *metrics, "epochs", "seconds", "status"]
    return table[[c for c in columns if c in table]]


def format_table(table: pd.DataFrame) -> str:
    """The compact table printed at the end of a sweep."""
    shown = summary(table, "probe_acc", "pca_probe_acc")
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def report_and_exit_code(sweep_dir: Path, n_jobs: int | None = None) -> int:
    """Write the report (a full disk costs the report, not the command's ending), print it,
    and say whether all `n_jobs` (default: every job folder) finished (0) or not (1)."""
    table = collect(sweep_dir)
    try:
        write_report(sweep_dir, table)
    except OSError as e:
        print(f"aesweep: error: the report could not be written: {e}", file=sys.stderr)
    print(f"\nsweep folder: {sweep_dir}")
    print(format_table(table))
    total = max(n_jobs or 0, len(table))
    unfinished = total - int((table["status"] == "ok").sum())
    if unfinished:
        print(
            f"aesweep: {unfinished} of {total} jobs did not finish; "
            f"rerun them with: aesweep sweep resume={sweep_dir}"
        )
        return 1
    return 0


def compare(sweep_dirs: Sequence[Path]) -> pd.DataFrame:
    """The tables of several sweeps as one: a `sweep` column (the folder's name, its path
    where names repeat) first, then every sweep's swept settings, then the metrics."""
    names = [d.name for d in sweep_dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in sweep_dirs]
    tables, settings = [], []
    for name, sweep_dir in zip(names, sweep_dirs, strict=True):
        table = collect(sweep_dir)
        settings += [k for k in table.attrs.get("settings", []) if k not in settings]
        tables.append(table.assign(sweep=name))
    table = pd.concat(tables, ignore_index=True)
    for key in settings:
        table[key] = table[key].fillna("")
    rest = [c for c in table.columns if c not in settings and c != "sweep"]
    table = table[["sweep", *settings, *rest]]
    table.attrs["settings"] = ["sweep", *settings]
    return table


def write_comparison(sweep_dirs: Sequence[Path], out: Path) -> pd.DataFrame:
    """Write the comparison of several sweeps into `out`: loss_vs_dim.csv (one table),
    loss_vs_dim.png (one curve per sweep, plus PCA) and report.md (both, and the sweeps)."""
    table = compare(sweep_dirs)
    write_text(table.to_csv(index=False), out / "loss_vs_dim.csv")
    parts = [f"# Comparison of {len(sweep_dirs)} sweeps", ""]
    parts += [f"- `{name}`: {Path(d).absolute()}" for name, d in
              zip(table["sweep"].unique(), sweep_dirs, strict=True)]  # fmt: skip
    if (table["status"] == "ok").any():
        save_figure(draw_loss_vs_dim(table), out / "loss_vs_dim.png")
        parts += ["", "![test error vs dim(z)](loss_vs_dim.png)"]
    parts += ["", markdown_table(summary(table, seeds=False)), ""]
    write_text("\n".join(parts), out / "report.md")
    return table


def compare_and_exit_code(sweep_dirs: Sequence[Path], out: Path | None = None) -> int:
    """Write and print a comparison (default folder outputs/compare/<timestamp>-<id>)."""
    if out is None:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        out = Path("outputs/compare") / f"{stamp}-{secrets.token_hex(3)}"
    table = write_comparison(sweep_dirs, out)
    print(f"comparison folder: {out}")
    print(format_table(table))
    return 0


def duration(seconds: float) -> str:
    """'42 s', '7 min', '1.5 h': as precise as a time-left estimate deserves."""
    if seconds < 100:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 6000 else f"{seconds / 3600:.1f} h"


def progress_head(done: int, total: int | None, elapsed: float) -> str:
    """`[3/9 done, ~42 s left]`: the time left assumes the jobs still to run take as long as
    the finished ones did on average."""
    if total is None:
        return f"[{done} done]"
    if done == 0:
        return f"[0/{total} done]"
    if done < total:
        return f"[{done}/{total} done, ~{duration(elapsed / done * (total - done))} left]"
    return f"[{done}/{total} done in {duration(elapsed)}]"


def progress_line(done: int, total: int | None, elapsed: float, job: str, result: Any) -> str:
    """`[3/9 done, ~42 s left] dim_z=32: test_sse=8.555 (PCA 13.297)`."""
    head = progress_head(done, total, elapsed)
    if not isinstance(result, dict):
        return f"{head} {job}: failed: {result}"
    if result.get("status") != "ok":
        return f"{head} {job}: {result.get('status')}: {result.get('error')}"
    return f"{head} {job}: test_sse={result['test_sse']:.4g} (PCA {result['pca_test_sse']:.4g})"


class SweepReportCallback(Callback):
    """Prints a progress line per finished job (of `n_jobs`, set by aesweep's CLI) and writes
    the report when a Hydra multirun ends; jobs record their failure and return, so Hydra
    always gets there. Launchers that run jobs in other processes (joblib, submitit) build
    a copy of this callback there, which stays silent."""

    def __init__(self, n_jobs: int | None = None) -> None:
        self.n_jobs = n_jobs
        self.done = 0
        self.started: float | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.done, self.started = 0, time.monotonic()

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        if self.started is None:  # a single run, or a job in a launcher's own process
            return
        self.done += 1
        try:
            result = job_return.return_value  # re-raises the job's exception if it failed
        except Exception as e:
            result = " ".join(str(e).split()) or type(e).__name__
        job = Path(str(config.hydra.runtime.output_dir)).name
        elapsed = time.monotonic() - self.started
        print(progress_line(self.done, self.n_jobs, elapsed, job, result), flush=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        code = report_and_exit_code(Path(config.hydra.sweep.dir).absolute(), self.n_jobs)
        if code:
            raise SystemExit(code)
