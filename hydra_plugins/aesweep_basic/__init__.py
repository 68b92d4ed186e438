"""aesweep's local launcher (Hydra finds launchers in the hydra_plugins namespace)."""
