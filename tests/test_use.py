"""Using what a run produced: `aesweep.load` gives back the trained model, `aesweep encode`
writes exactly its codes, `aesweep.load_sweep` gives a typed table, and a folder that is
not a trained run is refused with one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from aesweep import RunFolderError, load, load_sweep
from aesweep.data import load_splits
from aesweep.trained import run_config
from tests.conftest import SMOKE, result_of


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """One tiny trained run shared by the tests of this module (they copy it to damage it)."""
    folder = tmp_path_factory.mktemp("trained")
    subprocess.run(
        [sys.executable, "-m", "aesweep", "train", "dim_z=4", *SMOKE, "hydra.run.dir=run"],
        cwd=folder,
        env={**os.environ, "AESWEEP_DATA": str(data_root)},
        check=True,
        capture_output=True,
    )
    return folder / "run"


def test_import_aesweep_stays_light() -> None:
    code = "import sys, aesweep; print('torch' in sys.modules, 'pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"]  # aesweep --help stays fast


def test_load_gives_back_the_trained_model(trained_run: Path) -> None:
    model = load(trained_run)
    assert not model.training and next(model.parameters()).device.type == "cpu"
    splits = load_splits(run_config(trained_run).data)
    x = splits.test_x
    codes = model.encode(x)
    pixels = model.decode(codes)
    assert codes.shape == (len(x), 4) and pixels.shape == x.shape
    assert not codes.requires_grad and pixels.min() >= 0 and pixels.max() <= 1
    result = result_of(trained_run)
    # the same weights as at the end of training: the test error comes out the same
    assert (pixels - x).pow(2).mean().item() == pytest.approx(result["test_mse"], rel=1e-5)


def test_encode_writes_the_codes_that_load_encodes(aesweep, trained_run: Path) -> None:
    outcome = aesweep("encode", str(trained_run), "split=val")
    assert outcome.code == 0, outcome.err
    path = Path(outcome.out.strip())
    assert path == trained_run / "codes_val.npz"
    saved = np.load(path)
    splits = load_splits(run_config(trained_run).data)
    index = torch.from_numpy(saved["index"])
    expected = load(trained_run).encode(splits.val_x[index]).numpy()
    assert saved["codes"].shape == (len(splits.val_x), 4)
    assert np.array_equal(saved["codes"], expected)  # exactly, not approximately
    assert np.array_equal(saved["labels"], splits.val_y[index].numpy())


def test_a_folder_that_is_no_trained_run_is_refused(
    aesweep, trained_run: Path, tmp_path: Path
) -> None:
    outcome = aesweep("encode", "nowhere")
    assert outcome.code == 2
    assert outcome.lines == [
        "aesweep: error: RUN_DIR=nowhere is invalid: not a run folder "
        "(no nowhere/.hydra/config.yaml)"
    ]
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    ckpt = run / "checkpoints" / "best.ckpt"  # the kept weights (select=best)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # damaged
    with pytest.raises(RunFolderError, match=f"checkpoint {ckpt} is damaged"):
        load(run)
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    outcome = aesweep("encode", str(run), "split=test")
    assert outcome.code == 2
    assert outcome.lines == [f"aesweep: error: {run / 'checkpoints'} holds no checkpoint: this "
                             "run saved none (it stopped early)"]  # fmt: skip
    assert aesweep("encode", str(run), "split=all").lines == [
        "aesweep: error: split=all is invalid: must be one of test, train, val"
    ]


def write_result(folder: Path, **fields: object) -> None:
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"status": "ok", "error": None, **fields}))


def test_load_sweep_is_a_typed_table(tmp_path: Path) -> None:
    for seed, dim in ((0, 8), (1, 2)):
        write_result(
            tmp_path / "sw" / f"dim_z={dim},seed={seed}",
            dim_z=dim, seed=seed, test_sse=10.0 / dim, pca_test_sse=12.0 / dim, hidden=[256, 64],
            overrides=[f"dim_z={dim}", f"seed={seed}", "optimizer=sgd"],
            run_dir=str(tmp_path / "sw" / f"dim_z={dim},seed={seed}"),
        )  # fmt: skip
    table = load_sweep(tmp_path / "sw")
    assert table["dim_z"].tolist() == [8, 2] and table["seed"].tolist() == [0, 1]
    assert pd.api.types.is_integer_dtype(table["seed"])  # a swept setting, typed
    assert pd.api.types.is_float_dtype(table["test_sse"])
    assert table["hidden"].tolist() == [[256, 64], [256, 64]]  # lists stay lists
    with pytest.raises(RunFolderError, match="must be a sweep folder"):
        load_sweep(tmp_path / "sw" / "dim_z=8,seed=0")


def test_help_answers_before_the_heavy_imports() -> None:
    """`aesweep --help` loads neither torch nor Lightning, which is what keeps it fast (its
    time is measured in scripts/bench_commands.py, never here)."""
    probe = (
        "import sys\nfrom aesweep.cli import main\ntry:\n    main(['--help'])\n"
        "except SystemExit:\n    pass\n"
        "print([m for m in ('torch', 'pytorch_lightning', 'hydra') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0 and "encode RUN_DIR" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"
