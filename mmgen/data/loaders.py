"""Data loaders by spec string: ``digits``, ``fashion-mnist[:FOLDER]``, ``idx:FOLDER``, ``npz:FILE``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import Dataset
from .idx import load_fashion_mnist, load_idx_folder

__all__ = ["load", "load_digits", "load_npz", "SPECS"]

SPECS = ("digits", "fashion-mnist", "fashion-mnist:FOLDER", "idx:FOLDER", "npz:FILE")
SPLIT_SEED = 0  # public seed of the fixed train/test split of data sets that ship without one


def _split(n: int, test_fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def load_digits() -> Dataset:
    """scikit-learn's bundled handwritten digits: 1,797 images of 1×8×8 in [0, 1], 10 classes.

    Pixel values 0..16 are divided by 16. The train/test split (80/20) is fixed by
    a public seed, so every run and every user sees the same split.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train, test = _split(len(y), 0.2)
    return Dataset(
        name="digits", x_train=x[train].contiguous(), y_train=y[train],
        x_test=x[test].contiguous(), y_test=y[test], n_classes=10,
        class_names=tuple(str(i) for i in range(10)),
    )  # fmt: skip


def load_npz(path: str | os.PathLike, *, n_classes: int | None = None) -> Dataset:
    """Loads a user's arrays from a ``.npz`` file.

    The file holds ``x`` (N, ...) and ``y`` (N,) and optionally ``x_test``,
    ``y_test``; without them a fixed 80/20 split is made with a public seed.
    ``uint8`` values are divided by 255; float values must already lie in the
    declared domain [0, 1] (checked when a release is made). The number of
    classes is public: pass it, or the file may hold a scalar ``n_classes``;
    else it defaults to ``max(label) + 1`` *of the declared label set*, which
    you should avoid for private data (a warning says so).

    Raises:
        DataError: if the file or an array is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist.")
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {path} as .npz: {exc}") from None
    with arrays:
        missing = [k for k in ("x", "y") if k not in arrays.files]
        if missing:
            raise DataError(f"{path} must hold arrays 'x' and 'y'. Missing: {missing}.")
        data = {k: arrays[k] for k in arrays.files}

    def to_x(a: np.ndarray, key: str) -> torch.Tensor:
        if a.dtype == np.uint8:
            return torch.from_numpy(a.astype(np.float32) / 255.0)
        if not np.issubdtype(a.dtype, np.floating):
            raise DataError(f"{path}: '{key}' must be uint8 or float. Got {a.dtype}.")
        return torch.from_numpy(a.astype(np.float32))

    def to_y(a: np.ndarray, key: str) -> torch.Tensor:
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"{path}: '{key}' must be a 1-d integer array. Got {a.dtype} {a.shape}.")
        return torch.from_numpy(a.astype(np.int64))

    x, y = to_x(data["x"], "x"), to_y(data["y"], "y")
    if len(x) != len(y):
        raise DataError(f"{path}: 'x' has {len(x)} records but 'y' has {len(y)} labels.")
    if "x_test" in data and "y_test" in data:
        x_test, y_test = to_x(data["x_test"], "x_test"), to_y(data["y_test"], "y_test")
    else:
        train, test = _split(len(y), 0.2)
        x, y, x_test, y_test = x[train], y[train], x[test], y[test]
    if n_classes is None and "n_classes" in data:
        n_classes = int(data["n_classes"])
    if n_classes is None:
        import warnings

        n_classes = int(max(int(y.max(initial=0)), int(y_test.max(initial=0)))) + 1 if len(y) else 1
        warnings.warn(
            f"{path}: the number of classes was read off the labels ({n_classes}); "
            "declare it (n_classes array in the file) so that it is public, not data-dependent.",
            stacklevel=2,
        )
    return Dataset(
        name=f"npz:{path}", x_train=x.contiguous(), y_train=y,
        x_test=x_test.contiguous(), y_test=y_test, n_classes=n_classes,
    )  # fmt: skip


def load(spec: str, *, max_train: int | None = None, max_test: int | None = None) -> Dataset:
    """Loads a data set by spec.

    Args:
        spec: ``"digits"``, ``"fashion-mnist"`` (Debian's package or
            ``$MMGEN_DATA/fashion-mnist``), ``"fashion-mnist:FOLDER"``,
            ``"idx:FOLDER"`` (the four standard IDX files) or ``"npz:FILE"``.
        max_train: keep only the first ``max_train`` training records.
        max_test: keep only the first ``max_test`` test records.

    Raises:
        DataError: if the spec is unknown or the data is missing; the message says what to do.
    """
    kind, _, arg = spec.partition(":")
    if kind == "digits" and not arg:
        ds = load_digits()
    elif kind == "fashion-mnist":
        return load_fashion_mnist(arg or None, max_train=max_train, max_test=max_test)
    elif kind == "idx" and arg:
        return load_idx_folder(arg, name=spec, max_train=max_train, max_test=max_test)
    elif kind == "npz" and arg:
        ds = load_npz(arg)
    else:
        raise DataError(f"Unknown data spec {spec!r}. Known: {', '.join(SPECS)}.")
    if max_train is None and max_test is None:
        return ds
    import dataclasses

    return dataclasses.replace(
        ds, x_train=ds.x_train[:max_train], y_train=ds.y_train[:max_train],
        x_test=ds.x_test[:max_test], y_test=ds.y_test[:max_test],
    )  # fmt: skip
