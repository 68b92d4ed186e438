"""aesweep: train undercomplete autoencoders across bottleneck sizes and report what each keeps.

`aesweep.load(run_dir)` (the trained model), `aesweep.load_sweep(sweep_dir)` (a sweep's
table) and `aesweep.RunFolderError` import torch on first use, so `aesweep --help` stays fast.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["RunFolderError", "__version__", "load", "load_sweep"]
_LAZY = ("load", "load_sweep", "RunFolderError")  # from aesweep.trained


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from aesweep import trained

        return getattr(trained, name)
    raise AttributeError(f"module 'aesweep' has no attribute {name!r}")
