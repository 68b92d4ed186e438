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


def test_loading_a_model_imports_neither_the_training_runner_nor_lightning(trained_run) -> None:
    code = (
        "import sys, aesweep; model = aesweep.load(sys.argv[1]); "
        "print(type(model).__name__, *(m in sys.modules for m in "
        "('aesweep.train', 'aesweep.model', 'pytorch_lightning')))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(trained_run)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.split() == ["AutoEncoderNet", "False", "False", "False"]


def test_a_checkpoint_of_the_chunked_cpu_default_still_loads(trained_run, tmp_path) -> None:
    """Until the split, a CPU run chunked 8 steps per call by default and recorded it."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for ckpt in (run / "checkpoints").glob("*.ckpt"):  # the kept one among them
        state = torch.load(ckpt, weights_only=True)
        state["hyper_parameters"].update(steps_per_call=8, cuda_graph=True)
        torch.save(state, ckpt)
    x = load_splits(run_config(run).data).test_x
    assert torch.equal(load(run).encode(x), load(trained_run).encode(x))


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
        )  # fmt: skip
    table = load_sweep(tmp_path / "sw")
    assert table["dim_z"].tolist() == [8, 2] and table["seed"].tolist() == [0, 1]
    assert pd.api.types.is_integer_dtype(table["seed"])  # a swept setting, typed
    assert pd.api.types.is_float_dtype(table["test_sse"])
    assert table["hidden"].tolist() == [[256, 64], [256, 64]]  # lists stay lists
    assert table["run_dir"].tolist() == [str(tmp_path / "sw" / f"dim_z={d},seed={s}")
                                         for s, d in ((0, 8), (1, 2))]  # fmt: skip
    with pytest.raises(RunFolderError, match="must be a sweep folder"):
        load_sweep(tmp_path / "sw" / "dim_z=8,seed=0")


def test_a_moved_or_copied_sweep_reads_only_its_own_files(aesweep, tmp_path: Path) -> None:
    from tests.test_sweep import image_size, montage_size

    assert aesweep("sweep", "sweep.dims=[4,2]", *SMOKE, "hydra.sweep.dir=sw").code == 0
    shutil.copytree(tmp_path / "sw", tmp_path / "copy")
    (tmp_path / "copy" / "dim_z=2" / "samples.npz").unlink()
    assert aesweep("report", "copy").code == 0  # the original's dim_z=2 samples stay unread
    assert image_size(tmp_path / "copy" / "reconstructions.png") == montage_size(rows=1 + 1)

    (tmp_path / "sw").rename(tmp_path / "moved")
    (tmp_path / "moved" / "reconstructions.png").unlink()
    assert aesweep("report", "moved").code == 0
    assert image_size(tmp_path / "moved" / "reconstructions.png") == montage_size(rows=1 + 2)
    csv = pd.read_csv(tmp_path / "moved" / "loss_vs_dim.csv")
    assert csv["run_dir"].tolist() == ["dim_z=4", "dim_z=2"]  # relative to the sweep folder
    table = load_sweep("moved")
    assert table["run_dir"].tolist() == [str(Path("moved") / f"dim_z={k}") for k in (4, 2)]
    assert load(table["run_dir"][0]).encode(torch.zeros(1, 784)).shape == (1, 4)
    assert "run_dir" not in json.loads((tmp_path / "moved/dim_z=4/result.json").read_text())


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
