"""aesweep's Hydra launchers (Hydra finds launchers in the hydra_plugins namespace):
hydra/launcher=submitit_slurm (launcher.py) and aesweep's hydra/launcher=basic (basic.py)."""
