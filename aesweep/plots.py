"""Pure figure functions, as torchvision.utils: arrays in, a matplotlib Figure out, no files
and no hidden state. Montages are built with torchvision's make_grid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

SCALE, PAD, LABEL_PX, DPI = 3, 2, 130, 100


def digit_grid(rows: Sequence[Any], image_shape: Sequence[int]) -> np.ndarray:
    """One image of `rows` of flattened images (C, H, W) in [0, 1], one row each, via
    torchvision's make_grid: grey (H, W) for C = 1, colour (H, W, 3) for C = 3, with
    H = n_rows * (h + PAD) + PAD, W likewise."""
    import torch
    from torchvision.utils import make_grid

    n_cols = len(rows[0])
    images = torch.cat([torch.as_tensor(np.asarray(r), dtype=torch.float32) for r in rows])
    grid = make_grid(images.view(-1, *image_shape), nrow=n_cols, padding=PAD, pad_value=1.0)
    grid = grid.clamp(0, 1)
    return (grid[0] if image_shape[0] == 1 else grid.permute(1, 2, 0)).numpy()


def draw_montage(
    first: Any,
    rows: Sequence[tuple[str, Any]],
    image_shape: Sequence[int],
    first_label: str = "original",
) -> Figure:
    """Originals on top, then one labelled row per (label, images): the lecture's figure.
    Exactly LABEL_PX + SCALE * W by SCALE * H pixels (see digit_grid)."""
    labels = [first_label, *(label for label, _ in rows)]
    grid = digit_grid([first, *(images for _, images in rows)], image_shape)
    h, w = grid.shape[:2]
    width, height = LABEL_PX + SCALE * w, SCALE * h
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes((LABEL_PX / width, 0, SCALE * w / width, 1))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    row_h = (h - PAD) / len(labels)
    for i, label in enumerate(labels):
        y = 1 - (PAD / 2 + (i + 0.5) * row_h) / h
        fig.text((LABEL_PX - 8) / width, y, label, ha="right", va="center", fontsize=11)
    return fig


def draw_components(recovered: Any, pca: Any, image_shape: Sequence[int]) -> Figure:
    """Directions recovered from a linear AE above PCA's, each scaled to [0, 1] (0.5 = zero)."""

    def to_unit(v: Any) -> np.ndarray:
        v = np.asarray(v, dtype=np.float32)
        return 0.5 + 0.5 * v / np.abs(v).max(axis=1, keepdims=True).clip(1e-12)

    return draw_montage(
        to_unit(recovered), [("PCA", to_unit(pca))], image_shape, first_label="linear AE"
    )


def draw_latent(codes: Any, labels: Any) -> Figure:
    """Test codes coloured by digit label (the model never saw labels): a scatter for
    dim_z = 2, a per-digit strip plot for dim_z = 1."""
    codes, labels = np.asarray(codes), np.asarray(labels)
    fig = Figure(figsize=(6.4, 5.2), dpi=DPI)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    for label in np.unique(labels):
        c = codes[labels == label]  # dim_z = 1: the labels, jittered, as the second axis
        y = c[:, 1] if codes.shape[1] >= 2 else label + rng.uniform(-0.3, 0.3, len(c))
        ax.scatter(c[:, 0], y, s=6, color=f"C{int(label) % 10}", label=str(label), alpha=0.7)
    if codes.shape[1] >= 2:
        ax.set(xlabel="z[0]", ylabel="z[1]", title="Test codes, dim(z) = 2")
    else:
        ax.set(xlabel="z", ylabel="digit label", title="Test codes, dim(z) = 1")
        ax.set_yticks(np.unique(labels))
    ax.legend(title="digit", markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def draw_manifold(images: Any, z0: Any, z1: Any, image_shape: Sequence[int]) -> Figure:
    """What a 2-number code's decoder draws: images (n0 * n1, d), row by row, decoded at
    (z0[j], z1[i]) for row i (top: z1[0]) and column j, on axes in code units."""
    z0, z1 = np.asarray(z0), np.asarray(z1)
    images = np.asarray(images).reshape(len(z1), len(z0), -1)
    grid = digit_grid(list(images), image_shape)
    half0, half1 = (z0[-1] - z0[0]) / (2 * (len(z0) - 1)), (z1[0] - z1[-1]) / (2 * (len(z1) - 1))
    fig = Figure(figsize=(7, 7), dpi=DPI)
    ax = fig.add_subplot()
    extent = (z0[0] - half0, z0[-1] + half0, z1[-1] - half1, z1[0] + half1)
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, extent=extent, aspect="auto")
    ax.set(xlabel="z[0]", ylabel="z[1]", title="Decoder output across the test codes' range")
    fig.tight_layout()
    return fig


PROBES = (("probe_acc", "o-", "linear probe"), ("knn_acc", "o--", "5-NN"))


def draw_accuracy_vs_dim(curves: Sequence[tuple[str, Any]], seeds: int = 1) -> Figure:
    """Test accuracy of the linear probe (solid) and 5-NN (dashed) on the AE's and PCA's
    (black) codes against k; `curves`: (label, report.per_size's table) per AE curve."""
    fig = Figure(figsize=(7, 4.8), dpi=DPI)
    ax = fig.add_subplot()
    pca_drawn: list[tuple] = []
    for label, rows in curves:
        rows = rows.sort_values("dim_z")
        color = None
        for column, style, name in PROBES:
            line = ax.plot(rows["dim_z"], rows[column], style, color=color,
                           label=f"AE {label} {name}".replace("  ", " "))[0]  # fmt: skip
            color = line.get_color()
            if seeds > 1:
                ax.fill_between(rows["dim_z"], rows[f"{column}_min"], rows[f"{column}_max"],
                                color=color, alpha=0.2)  # fmt: skip
        pca = tuple(rows[["dim_z", "pca_probe_acc", "pca_knn_acc"]].itertuples(index=False))
        if pca not in pca_drawn:
            pca_drawn.append(pca)
            first = len(pca_drawn) == 1
            ax.plot(rows["dim_z"], rows["pca_probe_acc"], "s-", color="black", alpha=0.7,
                    label="PCA linear probe" if first else None)  # fmt: skip
            ax.plot(rows["dim_z"], rows["pca_knn_acc"], "s--", color="black", alpha=0.7,
                    label="PCA 5-NN" if first else None)  # fmt: skip
    band = f" (mean of {seeds} seeds, band: min-max)" if seeds > 1 else ""
    dims = sorted({int(k) for _, rows in curves for k in rows["dim_z"]})
    log_dims(
        ax,
        dims,
        ylabel="test accuracy on the codes",
        title=f"What the codes keep of the classes{band}",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def log_dims(ax: Any, dims: Sequence[int], **labels: str) -> None:
    """A log-scale dim(z) axis ticked at the swept sizes, with a light grid."""
    ax.set(xscale="log", xlabel="bottleneck size dim(z) (log scale)", **labels)
    ax.set_xticks(dims, [str(k) for k in dims])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
