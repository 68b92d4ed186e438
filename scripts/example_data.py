"""Three files of data nobody here tuned on, from scikit-learn's bundled (offline) sets, for
the measurements in docs/data.md:

  digits.npy   (1797, 8, 8) uint8: 8x8 gray digits, values 0..16 (load_digits)
  patches.npz  x (8480, 3, 8, 8) uint8: 8x8 colour patches of the two sample photos
               (load_sample_images), no labels
  hopper.npz   x (4800, 3, 8, 8) uint8: the same of matplotlib's bundled grace_hopper.jpg
  skimage.npz  x (14158, 3, 8, 8) uint8: the same of scikit-image's astronaut, chelsea,
               coffee and rocket photos; only where scikit-image is installed (it is not a
               dependency: `pip install scikit-image`)
  cancer.csv   569 rows, 30 named numeric columns and a `target` column (load_breast_cancer)

    python scripts/example_data.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.cbook
import matplotlib.image
import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_sample_images


def patches(image: np.ndarray, size: int = 8) -> np.ndarray:
    """Non-overlapping size x size patches of an (H, W, 3) image, channels first."""
    h, w = (s - s % size for s in image.shape[:2])
    tiles = image[:h, :w].reshape(h // size, size, w // size, size, 3)
    return tiles.transpose(0, 2, 4, 1, 3).reshape(-1, 3, size, size)


def photos() -> dict[str, list[np.ndarray]]:
    """The bundled (offline) colour photos, by the file they go to."""
    hopper = matplotlib.image.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
    found = {"patches.npz": load_sample_images().images, "hopper.npz": [hopper]}
    try:
        import skimage.data
    except ImportError:
        return found
    names = ("astronaut", "chelsea", "coffee", "rocket")
    return {**found, "skimage.npz": [getattr(skimage.data, n)()[..., :3] for n in names]}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "digits.npy", load_digits().images.astype(np.uint8))
    load_breast_cancer(as_frame=True).frame.to_csv(out / "cancer.csv", index=False)
    written = ["digits.npy", "cancer.csv"]
    for name, images in photos().items():
        np.savez(out / name, x=np.concatenate([patches(i) for i in images]))
        written.append(name)
    print(f"written: {', '.join(str(out / f) for f in written)}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
