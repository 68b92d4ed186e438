"""A non-editable install ships the config tree: the wheel runs from any folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_wheel_ships_its_configs_and_trains_from_another_folder(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    wheel = next((tmp_path / "dist").glob("aesweep-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = ("train.yaml", "model/linear.yaml", "recipe/default.yaml")
    assert all(f"aesweep/configs/{name}" in names for name in shipped)

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import aesweep, sys; from aesweep.cli import main; print(aesweep.__file__); main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "train", "dim_z=8", "trainer=smoke", "data.subset=200"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(str(target))  # the installed copy ran
    results = list((elsewhere / "outputs" / "runs").glob("*/result.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["status"] == "ok"
