"""Data contract: in-memory float tensors in [0, 1], fixed splits, the tensor cache, and the
torchvision path read offline from small IDX files written here."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from aesweep.data import TensorBatches, load_splits

MNIST5K = {
    "name": "mnist5k",
    "image_shape": [1, 28, 28],
    "n_val": 500,
    "n_test": 500,
    "split_seed": 0,
    "subset": None,
    "batch_size": 128,
}
IDX_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def data_cfg(**values):
    return OmegaConf.create({**MNIST5K, **values})


def test_mnist5k_is_split_in_memory_as_float_tensors_in_unit_range(tmp_path: Path) -> None:
    splits = load_splits(data_cfg(root=str(tmp_path)))
    assert (len(splits.train_x), len(splits.val_x), len(splits.test_x)) == (4000, 500, 500)
    for x in (splits.train_x, splits.val_x, splits.test_x):
        assert x.dtype == torch.float32 and x.shape[1] == 784 and x.is_contiguous()
        assert x.min() >= 0 and x.max() <= 1
    assert set(splits.test_y.tolist()) == set(range(10))
    shown = splits.display_indices()
    assert splits.test_y[shown].tolist() == list(range(10))


def test_the_split_is_fixed_whatever_the_run_seed(tmp_path: Path) -> None:
    torch.manual_seed(1)
    a = load_splits(data_cfg(root=str(tmp_path)))
    torch.manual_seed(2)
    b = load_splits(data_cfg(root=str(tmp_path), subset=100))
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_x[:100], b.train_x)
    assert len(b.train_x) == 100


def test_the_tensor_cache_is_built_once_and_a_damaged_one_is_rebuilt(tmp_path: Path) -> None:
    first = load_splits(data_cfg(root=str(tmp_path)))
    cache = tmp_path / "mnist5k.pt"
    assert cache.is_file()
    cached = torch.load(cache, weights_only=True)
    assert cached["x"].dtype == torch.uint8 and cached["x"].shape == (5000, 784)
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated, as by a crash
    again = load_splits(data_cfg(root=str(tmp_path)))
    assert torch.equal(first.train_x, again.train_x)
    assert torch.load(cache, weights_only=True)["x"].shape == (5000, 784)


def test_batches_slice_the_tensor_and_cover_every_image_once_per_epoch() -> None:
    x = torch.arange(100.0).view(100, 1)
    batches = list(TensorBatches(x, batch_size=40, shuffle=True))
    assert [len(b) for b in batches] == [40, 40, 20] and len(TensorBatches(x, 40, True)) == 3
    seen = torch.cat(batches).flatten()
    assert sorted(seen.tolist()) == list(range(100))
    assert not torch.equal(seen, x.flatten())  # shuffled
    assert torch.equal(torch.cat(list(TensorBatches(x, 40, shuffle=False))), x)


def test_the_shuffle_is_a_function_of_the_seed_and_the_epoch() -> None:
    x = torch.arange(100.0).view(100, 1)

    def epoch(seed: int, e: int) -> torch.Tensor:
        torch.manual_seed(123 + e)  # the global RNG plays no part
        batches = TensorBatches(x, 40, True, seed=seed, position=lambda: (e, 0))
        return torch.cat(list(batches)).flatten()

    assert torch.equal(epoch(0, 0), epoch(0, 0))
    assert not torch.equal(epoch(0, 0), epoch(0, 1))
    assert not torch.equal(epoch(0, 0), epoch(1, 0))


def test_an_epoch_resumed_after_k_batches_serves_exactly_the_rest() -> None:
    x = torch.arange(100.0).view(100, 1)
    whole = list(TensorBatches(x, 30, True, seed=3, position=lambda: (5, 0)))
    rest = list(TensorBatches(x, 30, True, seed=3, position=lambda: (5, 2)))
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(whole[2:], rest, strict=True))


def write_idx(folder: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict:
    """Tiny MNIST-format files: magic 0x0803 (uint8, 3 dims) for images, 0x0801 for labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">iiii", 0x0803, n, 28, 28) + images.tobytes()
        )
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">ii", 0x0801, n) + labels.tobytes()
        )
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_torchvision_datasets_load_from_idx_files_offline(tmp_path, name, folder) -> None:
    arrays = write_idx(tmp_path / folder / "raw")
    cfg = data_cfg(name=name, root=str(tmp_path), n_val=5, download=False)
    del cfg["n_test"]
    splits = load_splits(cfg)
    assert (len(splits.train_x), len(splits.val_x), len(splits.test_x)) == (35, 5, 20)
    expected_test = torch.from_numpy(arrays["t10k"][0].reshape(20, 784)).float() / 255
    assert torch.equal(splits.test_x, expected_test)  # official test split, unshuffled
    assert splits.test_y.tolist() == arrays["t10k"][1].tolist()


def test_train_runs_on_idx_files_through_the_command_line(aesweep, tmp_path: Path) -> None:
    write_idx(tmp_path / "idx" / "MNIST" / "raw", n_train=60, n_test=20)
    outcome = aesweep(
        "train",
        "data=mnist",
        "data.root=idx",
        "data.n_val=10",
        "dim_z=4",
        "trainer=smoke",
        "hydra.run.dir=run",
    )
    assert outcome.code == 0, outcome.err
    assert '"n_train": 50' in (tmp_path / "run" / "result.json").read_text()


def test_missing_idx_files_say_which_files_go_in_which_folder(aesweep, tmp_path: Path) -> None:
    outcome = aesweep(
        "train", "data=mnist", "data.root=empty", "trainer=smoke", "hydra.run.dir=run"
    )
    assert outcome.code == 2 and len(outcome.lines) == 1  # found before any work starts
    assert not (tmp_path / "run").exists()
    raw = tmp_path / "empty" / "MNIST" / "raw"
    assert outcome.lines[-1] == (
        f"aesweep: error: data=mnist: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte not found in {raw}; put these "
        f"unzipped IDX files there, or add data.download=true (needs internet)"
    )
    assert "Traceback" not in outcome.out + outcome.err


def test_a_damaged_idx_file_is_named_not_a_crash_inside_torchvision(aesweep, tmp_path) -> None:
    raw = tmp_path / "idx" / "MNIST" / "raw"
    write_idx(raw)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    outcome = aesweep(
        "train", "data=mnist", "data.root=idx", "data.n_val=5", "trainer=smoke", "hydra.run.dir=run"
    )
    assert outcome.code == 1
    assert outcome.lines[-1].startswith(
        f"aesweep: error: data=mnist: the IDX files in {raw} are damaged"
    )
    assert "Traceback" not in outcome.out + outcome.err
