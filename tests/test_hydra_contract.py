"""What aesweep relies on in Hydra beyond its public API, pinned: a Hydra upgrade that
changes it fails here, in CI, not for a user."""

from __future__ import annotations

import sys

from hydra._internal.utils import get_args_parser


def test_hydras_argument_parser_splits_flags_from_overrides() -> None:
    args = get_args_parser().parse_args(["-m", "--config-dir", "mine", "dim_z=8,4", "seed=1"])
    assert args.multirun and args.config_dir == "mine"
    assert args.overrides == ["dim_z=8,4", "seed=1"]
    flags = get_args_parser().parse_args(["--cfg", "job", "--help"])
    assert flags.cfg == "job" and flags.help and not flags.multirun


def test_hydra_main_reads_its_arguments_from_sys_argv(tmp_path, monkeypatch) -> None:
    """cli.run_hydra hands the arguments over through sys.argv (without the subcommand)."""
    from aesweep.cli import run_hydra

    monkeypatch.chdir(tmp_path)
    seen = {}
    monkeypatch.setattr("aesweep.pca.run_pca", lambda cfg: seen.update(dim_z=cfg.dim_z))
    run_hydra("aesweep.pca:run_pca", ["dim_z=7", "hydra.run.dir=x"])
    assert seen == {"dim_z": 7} and sys.argv[1:] == ["dim_z=7", "hydra.run.dir=x"]
