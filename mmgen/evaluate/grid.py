"""Pictures of synthetic samples: one row per class."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import DataError
from ..files import check_picture

__all__ = ["save_grid", "save_sample_grid", "image_grid"]


def image_grid(x: torch.Tensor, n_classes: int, per_class: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Tiles ``(n_classes · per_class, C, H, W)`` images, class-major, into one (H', W', C) array in [0, 1]."""
    c, h, w = x.shape[1:]
    x = ((x - low) / (high - low)).clamp(0, 1)
    x = torch.nn.functional.pad(x, (1, 1, 1, 1), value=1.0)  # a white border around each image
    x = x.view(n_classes, per_class, c, h + 2, w + 2).permute(0, 3, 1, 4, 2)  # (rows, H, cols, W, C)
    return x.reshape(n_classes * (h + 2), per_class * (w + 2), c)


def save_grid(trained, path: str | os.PathLike, per_class: int = 10, seed: int = 0) -> Path:
    """Writes a PNG with ``per_class`` samples of every class of a trained generator (one row per class).

    Raises:
        DataError: if the generator does not make images.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_picture(path, "path")
    cfg = trained.generator.config
    if len(cfg.input_shape) != 3 or cfg.input_shape[0] not in (1, 3):
        raise DataError(f"Sample grids need image records (1 or 3, H, W). This generator makes {tuple(cfg.input_shape)}.")
    labels = torch.arange(cfg.n_classes).repeat_interleave(per_class)
    x, _ = trained.sample(len(labels), seed=seed, labels=labels)
    grid = image_grid(x, cfg.n_classes, per_class, cfg.low, cfg.high)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = grid[..., 0].numpy() if grid.shape[-1] == 1 else grid.numpy()
    plt.imsave(path, img, cmap="gray" if grid.shape[-1] == 1 else None, vmin=0, vmax=1)
    return path


def save_sample_grid(
    x: torch.Tensor,
    y: torch.Tensor,
    path: str | os.PathLike,
    *,
    n_classes: int | None = None,
    per_class: int = 10,
    low: float = 0.0,
    high: float = 1.0,
) -> Path:
    """Writes a PNG of labelled images, one row per class (the first ``per_class`` records of each).

    A class with fewer records is padded with blank (white) tiles.

    Args:
        x ((N, C, H, W) Tensor): images in ``[low, high]``, C = 1 or 3.
        y ((N,) Tensor): their integer labels.
        path: the PNG to write.
        n_classes: rows (default: one more than the largest label).
        per_class: columns.
        low, high: the domain, mapped to black..white.

    Returns:
        The path written.

    Raises:
        DataError: if the records are not images.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_picture(path, "path")
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"Sample grids need images of shape (N, 1 or 3, H, W). Got {tuple(x.shape)}.")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    tiles = torch.full((n_classes, per_class, *x.shape[1:]), float(high))
    for c in range(n_classes):
        xc = x[y == c][:per_class]
        tiles[c, : len(xc)] = xc.float()
    grid = image_grid(tiles.reshape(-1, *x.shape[1:]), n_classes, per_class, low, high)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = grid[..., 0].numpy() if grid.shape[-1] == 1 else grid.numpy()
    plt.imsave(path, img, cmap="gray" if grid.shape[-1] == 1 else None, vmin=0, vmax=1)
    return path
