"""Pictures of synthetic samples: one row per class."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["save_grid", "image_grid"]


def image_grid(x: torch.Tensor, n_classes: int, per_class: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Tiles ``(n_classes · per_class, C, H, W)`` images, class-major, into one (H', W', C) array in [0, 1]."""
    c, h, w = x.shape[1:]
    x = ((x - low) / (high - low)).clamp(0, 1)
    x = torch.nn.functional.pad(x, (1, 1, 1, 1), value=1.0)  # a white border around each image
    x = x.view(n_classes, per_class, c, h + 2, w + 2).permute(0, 3, 1, 4, 2)  # (rows, H, cols, W, C)
    return x.reshape(n_classes * (h + 2), per_class * (w + 2), c)


def save_grid(trained, path: str | os.PathLike, per_class: int = 10, seed: int = 0) -> Path:
    """Writes a PNG with ``per_class`` samples of every class of a trained generator (one row per class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = trained.generator.config
    labels = torch.arange(cfg.n_classes).repeat_interleave(per_class)
    x, _ = trained.sample(len(labels), seed=seed, labels=labels)
    if len(cfg.input_shape) != 3:
        raise ValueError("Sample grids need image records (C, H, W).")
    grid = image_grid(x, cfg.n_classes, per_class, cfg.low, cfg.high)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = grid[..., 0].numpy() if grid.shape[-1] == 1 else grid.numpy()
    plt.imsave(path, img, cmap="gray" if grid.shape[-1] == 1 else None, vmin=0, vmax=1)
    return path
