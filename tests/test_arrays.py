"""Your own data: `data=array data.path=FILE` on image, colour and table files written here
from scikit-learn's bundled sets, the scaling and what it records, splits, default sizes,
montages, CIFAR-10 in its own format, and one line for each kind of bad file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from aesweep.config import LECTURE_DIMS, default_dims
from aesweep.data import fit_scaling, load_splits
from aesweep.plots import digit_grid
from tests.conftest import SMOKE


def digits(tmp_path: Path, name: str = "digits.npy", **extra) -> Path:
    """scikit-learn's 8x8 digits (values 0..16) as (n, 8, 8) images, no labels."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.uint8)
    path = tmp_path / name
    np.save(path, images) if name.endswith(".npy") else np.savez(path, x=images, **extra)
    return path


def wine_csv(tmp_path: Path) -> Path:
    """scikit-learn's wine table: 13 named numeric columns and a `target` column."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    path = tmp_path / "wine.csv"
    frame.to_csv(path, index=False)
    return path


def data_cfg(path: Path, **values):
    return OmegaConf.create({"name": "array", "path": str(path), "root": str(path.parent),
                             "image_shape": None, "label_column": None, "scale": "auto",
                             "n_val": None, "n_test": None, "split_seed": 0, "subset": None,
                             **values})  # fmt: skip


def test_default_sizes_are_d_and_the_powers_of_two_below_it() -> None:
    assert default_dims(64) == [64, 32, 16, 8, 4, 2, 1]
    assert default_dims(3072)[:3] == [3072, 2048, 1024] and default_dims(3072)[-1] == 1
    assert default_dims(13) == [13, 8, 4, 2, 1]
    assert default_dims(784) == LECTURE_DIMS == [784, 256, 64, 32, 16, 8, 4, 2, 1]


def test_mnist_sweeps_the_lecture_sizes_when_none_are_given() -> None:
    from aesweep.cli import sweep_arguments

    assert "dim_z=784,256,64,32,16,8,4,2,1" in sweep_arguments(SMOKE)


def test_pixel_scaling_of_uint8_images_is_exactly_a_division_by_255() -> None:
    x = torch.randint(0, 256, (50, 784), dtype=torch.uint8)
    x[0, 0], x[1, 1] = 0, 255
    scaling = fit_scaling("minmax", x, per_feature=False)
    assert torch.equal(scaling.apply(x), x.float().div_(255.0))  # MNIST unchanged, bit for bit


def test_a_table_is_standardised_by_its_training_split_and_maps_back(tmp_path: Path) -> None:
    splits = load_splits(data_cfg(wine_csv(tmp_path), label_column="target"))
    assert splits.scaling.kind == "standard" and splits.image_shape is None
    assert not splits.unit_range and splits.input_dim == 13 and splits.feature_names[0] == "alcohol"
    assert splits.train_x.mean(0).abs().max() < 1e-5
    assert (splits.train_x.std(0) - 1).abs().max() < 1e-5
    assert (len(splits.val_x), len(splits.test_x), len(splits.train_x)) == (18, 18, 142)
    raw = torch.tensor(pd.read_csv(tmp_path / "wine.csv").drop(columns="target").to_numpy())
    back = splits.scaling.invert(splits.test_x).double()
    nearest = torch.cdist(back, raw).min(dim=1).values  # every test row is a row of the file
    assert nearest.max() < 1e-3 and set(splits.test_y.tolist()) <= {0, 1, 2}


def test_images_scale_by_the_training_range_and_splits_follow_the_settings(tmp_path) -> None:
    path = digits(tmp_path)
    splits = load_splits(data_cfg(path, n_val=100, n_test=0.25))
    assert (len(splits.val_x), len(splits.test_x)) == (100, 449)  # 1797 rows: a count, 25%
    assert splits.scaling.kind == "minmax" and splits.image_shape == (1, 8, 8)
    assert splits.train_x.min() == 0 and splits.train_x.max() == 1 and splits.unit_range
    again = load_splits(data_cfg(path, n_val=100, n_test=0.25, split_seed=1))
    assert not torch.equal(splits.test_x, again.test_x)  # the split follows data.split_seed


def test_a_test_split_in_the_file_is_used_as_is(tmp_path: Path) -> None:
    x_test = np.full((7, 8, 8), 3, dtype=np.uint8)
    splits = load_splits(data_cfg(digits(tmp_path, "d.npz", x_test=x_test, y_test=np.arange(7))))
    assert len(splits.test_x) == 7 and splits.test_y.tolist() == list(range(7))
    assert torch.allclose(splits.test_x, torch.full((7, 64), 3 / 16))
    assert len(splits.val_x) == 180 and len(splits.train_x) == 1797 - 180


def test_an_image_array_sweeps_with_no_other_setting(aesweep, tmp_path: Path) -> None:
    path = digits(tmp_path)
    outcome = aesweep("sweep", "data=array", f"data.path={path}", *SMOKE, "hydra.sweep.dir=sw")
    assert outcome.code == 0, outcome.err
    table = pd.read_csv(tmp_path / "sw" / "loss_vs_dim.csv")
    assert table["dim_z"].tolist() == [64, 32, 16, 8, 4, 2, 1]
    assert (table["status"] == "ok").all() and (table["scale"] == "minmax").all()
    assert (table["input_noise"] == 0.0).all() and (table["lr"] == 5e-4).all()  # data.md
    assert (table["baseline_test_sse"] > table["pca_test_sse"]).all()  # k = 0 leaves the most
    assert matplotlib.image.imread(tmp_path / "sw" / "reconstructions.png").shape[:2] == (
        3 * (8 * 10 + 2), 130 + 3 * (10 * 10 + 2))  # fmt: skip
    report = (tmp_path / "sw" / "report.md").read_text()
    assert "latent.png (codes coloured by label): skipped, no labels" in report
    assert not (tmp_path / "sw" / "dim_z=2" / "latent.png").exists()


def test_colour_images_make_a_colour_montage(aesweep, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((120, 3, 6, 5), dtype=np.float32)
    x[:, 0] *= 0.2  # little red: a grey montage would hide it
    np.savez(tmp_path / "colour.npz", x=x, y=rng.integers(0, 3, 120))
    args = ("data=array", "data.path=colour.npz", "dim_z=4", *SMOKE)
    assert aesweep("train", *args, "hydra.run.dir=run").code == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["image_shape"] == [3, 6, 5] and result["output"] == "clamp"
    picture = matplotlib.image.imread(tmp_path / "run" / "reconstructions.png")[..., :3]
    assert (picture[..., 0] < picture[..., 2] - 0.3).any()  # a blue, not a grey, pixel
    grid = digit_grid([x[:4].reshape(4, -1)], (3, 6, 5))
    assert grid.shape == (6 + 4, 4 * 7 + 2, 3)


def test_a_table_trains_linear_output_and_reports_error_per_feature(aesweep, tmp_path) -> None:
    wine_csv(tmp_path)
    args = ("data=array", "data.path=wine.csv", "data.label_column=target", *SMOKE)
    outcome = aesweep("sweep", *args, "sweep.dims=[8,2]", "hydra.sweep.dir=sw")
    assert outcome.code == 0, outcome.err
    run = tmp_path / "sw" / "dim_z=2"
    result = json.loads((run / "result.json").read_text())
    assert (result["scale"], result["output"], result["input_dim"]) == ("standard", "identity", 13)
    assert len(result["scaling"]["offset"]) == 13 and (run / "latent.png").is_file()
    errors = pd.read_csv(run / "feature_errors.csv")
    assert errors["feature"].tolist()[:2] == ["alcohol", "malic_acid"]
    assert errors["test_mse"].mean() * 13 == pytest.approx(result["test_sse"], rel=1e-4)
    assert errors["pca_test_mse"].mean() * 13 == pytest.approx(result["pca_test_sse"], rel=1e-4)
    report = (tmp_path / "sw" / "report.md").read_text()
    assert "## Error per feature" in report and "| alcohol |" in report
    assert (
        "standardised features" in report and not (tmp_path / "sw" / "reconstructions.png").exists()
    )

    from aesweep import load

    model = load(run)
    raw = torch.tensor(pd.read_csv("wine.csv").drop(columns="target").to_numpy()[:5])
    assert model.output_kind == "identity"
    assert model.scaling.apply(raw).abs().max() < 5  # raw units -> the model's space
    assert torch.allclose(model.scaling.invert(model.scaling.apply(raw)).double(), raw, rtol=1e-4)


def test_pca_of_a_table_smaller_than_the_default_code(aesweep, tmp_path: Path) -> None:
    wine_csv(tmp_path)
    args = ("pca", "data=array", "data.path=wine.csv", "data.label_column=target")
    outcome = aesweep(*args, "hydra.run.dir=pca")
    assert outcome.code == 0, outcome.err  # dim_z=32 > d = 13 does not matter to PCA
    curve = pd.read_csv(tmp_path / "pca" / "pca_vs_dim.csv")
    assert curve["k"].tolist() == list(range(14)) and curve["pca_test_sse"].iloc[-1] < 1e-9
    assert "error per row = sum over standardised features" in outcome.out


def write_cifar(root: Path, n_train: int = 12, n_test: int = 6) -> None:
    """Small files in CIFAR-10's format: pickled dicts of uint8 rows (n, 3072), R then G
    then B planes, and integer labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist()}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [str(i) for i in range(10)]})
    )


def test_cifar10_reads_torchvisions_format_offline(aesweep, tmp_path, monkeypatch) -> None:
    import torchvision.datasets.cifar as cifar

    write_cifar(tmp_path / "cf")
    # torchvision checks each file's md5 against the real CIFAR-10: these are small stand-ins
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    args = ("data=cifar10", "data.root=cf", "data.n_val=10", "dim_z=8", *SMOKE)
    outcome = aesweep("train", *args, "hydra.run.dir=run")
    assert outcome.code == 0, outcome.err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert (result["input_dim"], result["n_train"], result["n_test"]) == (3072, 50, 6)
    assert result["image_shape"] == [3, 32, 32] and result["scale"] == "minmax"
    splits = load_splits(OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml").data)
    first = pickle.loads((tmp_path / "cf/cifar-10-batches-py/test_batch").read_bytes())["data"][0]
    low, high = float(splits.scaling.offset), float(splits.scaling.scale)
    expected = (torch.tensor(first, dtype=torch.float32) - low) / high
    assert torch.allclose(splits.test_x[0], expected)  # channels first, as the file has them


def test_cifar10_without_files_says_where_they_go(aesweep, tmp_path: Path) -> None:
    outcome = aesweep("train", "data=cifar10", "data.root=none", "hydra.run.dir=run")
    assert outcome.code == 2 and len(outcome.lines) == 1 and not (tmp_path / "run").exists()
    assert outcome.lines[0].startswith("aesweep: error: data=cifar10: data_batch_1, ")
    assert "extract cifar-10-python.tar.gz into data.root" in outcome.lines[0]


def bad_files(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(file, extra overrides, what the one line says) for each kind of bad input."""
    np.save(tmp / "flat.npy", np.arange(10.0))
    np.save(tmp / "five.npy", np.zeros((10, 5, 4, 4)))
    nan = np.zeros((40, 3))
    nan[7, 2], nan[9, 0] = np.nan, np.inf
    np.save(tmp / "nan.npy", nan)
    np.save(tmp / "few.npy", np.zeros((3, 4)))
    (tmp / "text.csv").write_text("a,b\n1,x\n2,3\n")
    (tmp / "labels.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp / "junk.npy").write_bytes(b"not numpy")
    (tmp / "data.txt").write_text("1 2 3\n")
    return [
        ("missing.npy", [], "data.path=missing.npy is invalid: no such file"),
        ("junk.npy", [], "data.path=junk.npy is invalid: unreadable ("),
        ("data.txt", [], "the suffix .txt is unknown: must be one of .npy, .npz, .pt, .csv"),
        ("text.csv", [], "column b is not numeric (row 0, counting from 0: 'x'); drop it, "
                         "or name it with data.label_column=b"),
        ("nan.npy", [], "x has 2 NaN or infinite values (the first at row 7, feature 2, counting"),
        ("flat.npy", [], "x has shape (10,): must be (n, d) vectors, (n, H, W) or (n, C, H, W) "
                         "images; e.g. x.reshape(-1, 1) for one feature"),
        ("few.npy", [], "has 3 rows: too few for 1 validation and 1 test rows and 2 training"),
        ("labels.csv", ["data.label_column=y"], "data.label_column=y is invalid: "),
        ("five.npy", [], "images must be (n, C, H, W) with C = 1 or 3 channels"),
        ("nan.npy", ["model.output=sigmoid"], "model.output=sigmoid is invalid: data.scale=auto"),
        ("few.npy", ["sweep.dims=[5,2]"], "sweep.dims=[5,2] is invalid: every entry must be"),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(11))
def test_bad_input_is_one_line_exit_2_and_nothing_written(aesweep, tmp_path, case) -> None:
    name, extra, message = bad_files(tmp_path)[case]
    if name == "nan.npy" and extra:  # sigmoid on standardised data: a clean file
        np.save(tmp_path / name, np.random.default_rng(0).normal(size=(40, 3)))
    if name == "few.npy" and extra:  # a size above d = 4, on a file with rows enough
        np.save(tmp_path / name, np.zeros((30, 4)))
    outcome = aesweep("sweep", "data=array", f"data.path={name}", *extra, "hydra.sweep.dir=sw")
    assert outcome.code == 2 and len(outcome.lines) == 1, outcome.err
    assert outcome.lines[0].startswith("aesweep: error: ") and message in outcome.lines[0]
    assert not (tmp_path / "sw").exists() and "Traceback" not in outcome.out + outcome.err


def test_a_relative_data_path_still_encodes_from_another_folder(
    aesweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digits(tmp_path)
    args = ("data=array", "data.path=digits.npy", "dim_z=4", *SMOKE, "hydra.run.dir=run")
    assert aesweep("train", *args).code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the saved config names the file absolutely
    outcome = aesweep("encode", str(tmp_path / "run"))
    assert outcome.code == 0, outcome.err
    assert np.load(tmp_path / "run" / "codes_test.npz")["codes"].shape[1] == 4


@pytest.mark.parametrize("units", [1.0, 1e-3, 1e3])
def test_beating_pca_means_the_same_in_any_units(units: float) -> None:
    """The verdict must not depend on the data's units: 8x8 colour patches in [0, 1] have
    errors of 0.06 per patch at k = 64, where a fixed 'near zero' of 0.05 called a 3% win a tie."""
    from aesweep.report import against_pca

    rows = {  # dim_z: (AE, PCA) per sample, for data whose variance per sample is 20
        192: (3e-9, 1e-9), 64: (0.0626, 0.0650), 16: (0.4818, 0.4869), 8: (0.709, 0.7112),
        1: (1.79, 3.44),
    }  # fmt: skip
    ok = pd.DataFrame(
        [{"dim_z": k, "test_sse": ae * units, "pca_test_sse": pca * units,
          "baseline_test_sse": 20.0 * units} for k, (ae, pca) in rows.items()]
    )  # fmt: skip
    table = against_pca(ok, [])[-2].splitlines()[2:]  # the markdown table's rows
    verdicts = {row.split("|")[1].strip(): row.split("|")[-2].strip() for row in table}
    assert verdicts == {"192": "tie", "64": "yes", "16": "yes", "8": "tie", "1": "yes"}


def test_large_arrays_are_checked_in_chunks_with_the_same_answers(monkeypatch) -> None:
    """The finite and whole-number checks read a large array chunk by chunk (a check over
    the whole would copy it): the first bad value is still named by its row in the file."""
    from aesweep import arrays
    from aesweep.config import ConfigError

    monkeypatch.setattr(arrays, "CHUNK_ROWS", 4)
    x = torch.zeros(10, 3)
    x[9, 1], x[6, 2] = float("inf"), float("nan")
    with pytest.raises(ConfigError, match=r"x has 2 NaN .* first at row 6, feature 2, counting"):
        arrays.check_finite("f.npy", "x", x, None)
    whole = torch.randint(0, 256, (10, 3)).float()
    assert arrays.ArrayData(whole, None, None, None, None, None).pixels
    whole[9, 0] += 0.5  # one value in the last chunk is not a whole number
    assert not arrays.ArrayData(whole, None, None, None, None, None).pixels
