"""`aesweep report DIR1 DIR2 ...`: several sweeps on one plot (one curve each, plus PCA)
with one table, written to its own folder; the sweep folders are left as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from aesweep.report import compare, draw_loss_vs_dim

PCA = {8: 30.1, 2: 43.5}


def fake_sweep(folder: Path, errors: dict[int, float], extra: str | None = None) -> Path:
    """A finished sweep as the report reads it: one result.json per job, nothing trained."""
    for dim, error in errors.items():
        job = folder / f"dim_z={dim}"
        job.mkdir(parents=True)
        result = {
            "status": "ok", "error": None, "dim_z": dim, "input_dim": 784,
            "test_sse": error, "pca_test_sse": PCA[dim], "test_mse": error / 784,
            "overrides": [f"dim_z={dim}", *([extra] if extra else [])],
        }  # fmt: skip
        (job / "result.json").write_text(json.dumps(result))
    return folder


def test_two_sweeps_share_one_plot_and_one_table(aesweep, tmp_path: Path) -> None:
    shallow = fake_sweep(tmp_path / "shallow", {8: 25.0, 2: 45.0})
    deep = fake_sweep(tmp_path / "deep", {8: 20.0, 2: 35.0}, extra="model=deep")
    outcome = aesweep("report", str(shallow), str(deep), "--out", "cmp")
    assert outcome.code == 0, outcome.err
    assert outcome.out.splitlines()[0] == "comparison folder: cmp"

    table = pd.read_csv(tmp_path / "cmp" / "loss_vs_dim.csv")
    assert table.columns[0] == "sweep"
    rows = list(zip(table["sweep"], table["dim_z"], table["test_sse"], strict=True))
    assert rows == [
        ("shallow", 8, 25.0),
        ("shallow", 2, 45.0),
        ("deep", 8, 20.0),
        ("deep", 2, 35.0),
    ]
    assert (tmp_path / "cmp" / "loss_vs_dim.png").is_file()
    assert "| deep | 2 | 35 | 43.5 |" in (tmp_path / "cmp" / "report.md").read_text()
    assert not (shallow / "loss_vs_dim.csv").exists()  # the sweeps themselves are untouched

    lines = draw_loss_vs_dim(compare([shallow, deep])).axes[0].get_lines()
    assert [line.get_label() for line in lines] == [
        "AE sweep=deep",
        "AE sweep=shallow",
        "PCA (closed form)",  # the same data: one PCA curve
    ]


def test_without_out_the_comparison_gets_a_new_folder(aesweep, tmp_path: Path) -> None:
    a = fake_sweep(tmp_path / "runs" / "a", {8: 25.0})
    b = fake_sweep(tmp_path / "other" / "a", {8: 21.0})  # same name: the paths tell them apart
    outcome = aesweep("report", str(a), str(b))
    assert outcome.code == 0, outcome.err
    folder = Path(outcome.out.splitlines()[0].removeprefix("comparison folder: "))
    assert folder.parent == Path("outputs/compare")
    assert pd.read_csv(folder / "loss_vs_dim.csv")["sweep"].tolist() == [str(a), str(b)]


def test_one_folder_keeps_rebuilding_its_own_report(aesweep, tmp_path: Path) -> None:
    sweep = fake_sweep(tmp_path / "sw", {8: 25.0, 2: 45.0})
    outcome = aesweep("report", str(sweep))
    assert outcome.code == 0, outcome.err
    assert (sweep / "loss_vs_dim.csv").is_file() and not (tmp_path / "outputs").exists()


def test_a_folder_that_is_no_sweep_is_refused(aesweep, tmp_path: Path) -> None:
    sweep = fake_sweep(tmp_path / "sw", {8: 25.0})
    outcome = aesweep("report", str(sweep), "nowhere")
    assert outcome.code == 2
    assert outcome.lines == [
        "aesweep: error: DIR=nowhere is invalid: must be a sweep folder holding */result.json"
    ]
