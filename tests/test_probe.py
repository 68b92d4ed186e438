"""What the codes keep: probes on the AE's and PCA's codes in every labelled run, their place
in the sweep report, and the k = 2 code plane."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from aesweep.data import Splits, load_splits
from aesweep.pca import fit_pca
from aesweep.probe import accuracies, code_plane, on_input_scale, probe_codes, say_no_labels
from tests.conftest import SMOKE

ACCURACIES = ["probe_acc", "pca_probe_acc", "knn_acc", "pca_knn_acc"]


def embedded_splits(data_root: Path) -> Splits:
    cfg = OmegaConf.load(Path(__file__).parents[1] / "configs" / "data" / "mnist5k.yaml")
    cfg.root = str(data_root)
    return load_splits(cfg)


def test_pca_codes_at_full_k_probe_like_raw_pixels(data_root: Path) -> None:
    """At k = d PCA's codes are the pixels rotated: the linear probe lands where scikit-learn's
    logistic regression on the raw pixels does (per-feature standardisation: 0.81)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    splits = embedded_splits(data_root)
    with threadpool_limits(1):  # as the probes run (two threads: slow on a busy machine)
        pixels = LogisticRegression(max_iter=1000).fit(splits.train_x.numpy(), splits.train_y)
    raw = pixels.score(splits.test_x.numpy(), splits.test_y.numpy())
    pca = fit_pca(splits.train_x, splits.test_x)
    result = probe_codes(lambda x: x, splits, pca, k=784)
    assert raw > 0.85
    # within 0.01: the thread count moves PCA's floats and the probe with them (0.892 with two
    # threads, 0.890 with one, raw pixels 0.894); a wrong code scaling is 0.08 off
    assert result["pca_probe_acc"] == pytest.approx(raw, abs=0.01)
    assert result["probe_acc"] == pytest.approx(raw, abs=0.01)  # the identity "encoder"


def test_probes_see_the_code_not_its_scale() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    codes = rng.normal(size=(600, 4)) + 2.0 * y[:, None]

    def probed(scale: float) -> tuple[float, float]:
        train, test = on_input_scale(scale * codes[:400], scale * codes[400:], input_spread=0.3)
        return accuracies(train, y[:400], test, y[400:])

    assert probed(1.0)[0] > 0.9 and probed(1.0)[1] > 0.9
    assert probed(1e4) == pytest.approx(probed(1.0))


def test_data_without_labels_skip_the_probes_saying_so_once(capsys) -> None:
    x = torch.rand(60, 16)
    unlabelled = Splits(x[:40], None, x[40:50], None, x[50:], None, (1, 4, 4))
    pca = fit_pca(x[:40], x[50:])
    say_no_labels.cache_clear()
    assert probe_codes(lambda x: x[:, :2], unlabelled, pca, k=2) == {}
    assert probe_codes(lambda x: x[:, :2], unlabelled, pca, k=2) == {}
    assert capsys.readouterr().err.count("no labels") == 1


def test_the_code_plane_spans_the_codes_range_row_by_row() -> None:
    codes = torch.tensor([[-1.0, 10.0], [3.0, 20.0], [0.0, 15.0]])
    images, z0, z1 = code_plane(lambda z: z, codes, n=5)  # each "image" is its own code
    assert images.shape == (25, 2)
    assert images[0].tolist() == [-1.0, 20.0]  # top left: smallest z[0], largest z[1]
    assert images[4].tolist() == [3.0, 20.0]
    assert images[24].tolist() == [3.0, 10.0]
    assert z0.tolist() == [-1.0, 0.0, 1.0, 2.0, 3.0] and z1[0] == 20.0 and z1[-1] == 10.0


def test_a_run_at_k_2_reports_the_probes_and_draws_its_code_plane(aesweep, tmp_path) -> None:
    outcome = aesweep("train", "dim_z=2", *SMOKE, "hydra.run.dir=run")
    assert outcome.code == 0, outcome.err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    for key in ACCURACIES:
        assert 0.1 < result[key] <= 1.0, key  # ten classes: chance is 0.1
    assert "probe" in result["timings"]
    assert (tmp_path / "run" / "latent.png").is_file()
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "run" / "manifold.png").shape[:2] == (700, 700)


def test_probe_false_turns_the_probes_off_and_the_errors_stay(aesweep, tmp_path) -> None:
    for probe in ("true", "false"):
        outcome = aesweep("train", "dim_z=4", f"probe={probe}", *SMOKE, f"hydra.run.dir=p{probe}")
        assert outcome.code == 0, outcome.err
    probed, plain = (
        json.loads((tmp_path / p / "result.json").read_text()) for p in ("ptrue", "pfalse")
    )
    assert set(ACCURACIES) <= set(probed) and not set(ACCURACIES) & set(plain)
    for key in ("test_sse", "val_sse", "train_sse", "pca_test_sse"):  # the probes read, never train
        assert probed[key] == plain[key], key


def test_the_report_shows_the_accuracies_against_pca(aesweep, tmp_path) -> None:
    outcome = aesweep("sweep", "sweep.dims=[8,2]", *SMOKE, "hydra.sweep.dir=sw")
    assert outcome.code == 0, outcome.err
    sweep = tmp_path / "sw"
    table = pd.read_csv(sweep / "loss_vs_dim.csv")
    assert table[ACCURACIES].notna().all().all()
    assert (sweep / "accuracy_vs_dim.png").is_file()
    report = (sweep / "report.md").read_text()
    assert "![test accuracy on the codes vs dim(z)](accuracy_vs_dim.png)" in report
    assert "the AE's codes separate the classes better than PCA's at k = " in report
    assert "[manifold.png](dim_z=2/manifold.png)" in report
    header = next(line for line in outcome.out.splitlines() if line.split()[:1] == ["dim_z"])
    assert "probe_acc" in header.split() and "pca_probe_acc" in header.split()
