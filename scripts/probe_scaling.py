"""How the scale of PCA's codes moves the linear probe (docs/probes.md): test accuracy of
scikit-learn's LogisticRegression on the embedded digits' PCA codes at several k, scaled
three ways, beside logistic regression on the raw pixels.

    python scripts/probe_scaling.py        # ~30 s on one busy core
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from aesweep.data import load_splits
from aesweep.pca import fit_pca
from aesweep.probe import on_input_scale


def linear_probe(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y) -> float:
    return LogisticRegression(max_iter=1000).fit(train, train_y).score(test, test_y)


def main() -> None:
    cfg = OmegaConf.load(Path(__file__).parents[1] / "configs" / "data" / "mnist5k.yaml")
    splits = load_splits(cfg)
    pca = fit_pca(splits.train_x, splits.test_x)
    y, y_test = splits.train_y.numpy(), splits.test_y.numpy()
    spread = float(splits.train_x.var(dim=0).mean().sqrt())
    with threadpool_limits(1):
        pixels = linear_probe(splits.train_x.numpy(), y, splits.test_x.numpy(), y_test)
        print(f"raw pixels: {pixels:.3f}")
        print("    k  per-feature standardised  unit RMS spread  input's RMS spread (aesweep)")
        for k in (784, 256, 64, 32, 8, 2):
            basis = pca.components[:k].T
            train = ((splits.train_x - pca.mean) @ basis).numpy()
            test = ((splits.test_x - pca.mean) @ basis).numpy()
            scaler = StandardScaler().fit(train)
            standardised = linear_probe(scaler.transform(train), y, scaler.transform(test), y_test)
            unit, ours = (
                linear_probe(a, y, b, y_test)
                for a, b in (on_input_scale(train, test, s) for s in (1.0, spread))
            )
            print(f"{k:5d}  {standardised:24.3f}  {unit:15.3f}  {ours:28.3f}")


if __name__ == "__main__":
    main()
