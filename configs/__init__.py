"""Hydra config tree of aesweep; a package so that it ships inside the wheel."""
