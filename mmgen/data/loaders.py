"""Data loaders by spec string: ``digits``, ``fashion-mnist[:FOLDER]``, ``idx:FOLDER``, ``npz:FILE``, ``csv:FILE``, ``parquet:FILE``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import Dataset
from .holdout import HOLDOUT_SALT, holdout_mask
from .idx import load_fashion_mnist, load_idx_folder
from .tables import load_table

__all__ = ["load", "load_digits", "load_npz", "holdout_mask", "SPECS", "HOLDOUT_SALT"]

SPECS = ("digits", "fashion-mnist", "fashion-mnist:FOLDER", "idx:FOLDER", "npz:FILE", "csv:FILE", "parquet:FILE")
SPLIT_SEED = 0  # public seed of the fixed train/test split of data sets that ship without one


def _split(n: int, test_fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def load_digits() -> Dataset:
    """scikit-learn's bundled handwritten digits: 1,797 images of 1×8×8 in [0, 1], 10 classes.

    Pixel values 0..16 are divided by 16. The train/test split (80/20) is fixed by
    a public seed, so every run and every user sees the same split. That is fine
    for this fixed public benchmark; a permutation of N is never used on a
    user's own data (see :func:`load_npz`).
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


def load_npz(
    path: str | os.PathLike,
    *,
    n_classes: int | None = None,
    holdout: float | None = None,
    low: float | None = None,
    high: float | None = None,
) -> Dataset:
    """Loads a user's arrays from a ``.npz`` file.

    The file holds ``x`` (N, ...) and ``y`` (N,), and optionally ``x_test``,
    ``y_test`` and a scalar ``n_classes``. A release uses **every** record of
    ``x`` — never a subset picked by a rule that depends on N or on the other
    records. Without ``x_test``/``y_test`` the data set has no test records:
    evaluation then needs test records of the user's own (a second file), or
    ``holdout``, a per-record hashed split (see :func:`holdout_mask`) that puts
    each record on one side by its own bytes alone; the held-out records are
    not released, and any score computed on them is *not* private.

    The domain is public: declare it with ``low``/``high`` (or scalar ``low``
    and ``high`` arrays in the file) — from public knowledge of what the values
    can be, never from the data's own min/max, which would leak. Values are then
    used as stored (uint8 too). Without a declared domain it is [0, 1]: ``uint8``
    values are divided by 255 and float values must already lie in [0, 1]
    (checked when a release is made). The number of classes is public: pass
    ``n_classes`` or store it in the file; it is never read off the labels.

    Raises:
        DataError: if the file or an array is missing or malformed, the number of
            classes is not declared (or declared twice, differently), or a label is outside ``0..K-1``.
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

    declared_domain = low is not None or "low" in data  # values used as stored
    low, high = _declared_bounds(path, data, low, high)

    def to_x(a: np.ndarray, key: str) -> torch.Tensor:
        if a.dtype == np.uint8 and not declared_domain:
            return torch.from_numpy(a.astype(np.float32) / 255.0)
        if not (np.issubdtype(a.dtype, np.floating) or (declared_domain and np.issubdtype(a.dtype, np.integer))):
            raise DataError(
                f"{path}: '{key}' must be uint8 or float (or integers with a declared domain, --low/--high). Got {a.dtype}."
            )
        return torch.from_numpy(a.astype(np.float32))

    def to_y(a: np.ndarray, key: str) -> torch.Tensor:
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"{path}: '{key}' must be a 1-d integer array. Got {a.dtype} {a.shape}.")
        return torch.from_numpy(a.astype(np.int64))

    declared = None
    if "n_classes" in data:
        a = data["n_classes"]
        if a.size != 1 or not np.issubdtype(a.dtype, np.integer) or int(a.reshape(-1)[0]) < 1:
            raise DataError(f"{path}: 'n_classes' must be one positive integer. Got {a.dtype} {a.shape}.")
        declared = int(a.reshape(-1)[0])
    if n_classes is not None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
            raise DataError(f"`n_classes` must be a positive integer. Got {n_classes!r}.")
        if declared is not None and declared != int(n_classes):
            raise DataError(f"{path} declares n_classes={declared} but {int(n_classes)} was given; they must agree.")
        declared = int(n_classes)
    if declared is None:
        raise DataError(
            f"{path}: the number of classes is not declared (it is public and never read off the labels): "
            "pass --n-classes K (CLI) or n_classes=K (API), or store a scalar 'n_classes' array in the file."
        )

    x, y = to_x(data["x"], "x"), to_y(data["y"], "y")
    if len(x) != len(y):
        raise DataError(f"{path}: 'x' has {len(x)} records but 'y' has {len(y)} labels.")
    has_test = "x_test" in data and "y_test" in data
    if has_test:
        x_test, y_test = to_x(data["x_test"], "x_test"), to_y(data["y_test"], "y_test")
        if len(x_test) != len(y_test):
            raise DataError(f"{path}: 'x_test' has {len(x_test)} records but 'y_test' has {len(y_test)} labels.")
        if holdout is not None:
            raise DataError(f"{path} holds its own test records (x_test, y_test); do not ask for a hold-out too.")
    elif holdout is not None:
        held = torch.from_numpy(holdout_mask(data["x"], data["y"], holdout))
        x, y, x_test, y_test = x[~held], y[~held], x[held], y[held]
    else:
        x_test, y_test = x[:0], y[:0]
    for key, labels in (("y", y), ("y_test", y_test)):
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= declared):
            raise DataError(f"{path}: labels '{key}' must be in 0..{declared - 1} (n_classes={declared}); some are outside.")
    return Dataset(
        name="npz", x_train=x.contiguous(), y_train=y,  # never the path: it may name the owner or the cohort
        x_test=x_test.contiguous(), y_test=y_test, n_classes=declared, low=low, high=high,
    )  # fmt: skip


def _declared_bounds(path, data: dict, low: float | None, high: float | None) -> tuple[float, float]:
    """The public domain: the arguments, else the file's scalar ``low``/``high``, else [0, 1]."""
    import math

    def scalar(key):
        a = data[key]
        if a.size != 1 or not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{path}: '{key}' must be one number (a public bound). Got {a.dtype} {a.shape}.")
        return float(a.reshape(-1)[0])

    if (low is None) != (high is None):
        raise DataError("Declare both bounds of the domain (--low and --high), or neither.")
    if low is None:
        if ("low" in data) != ("high" in data):
            raise DataError(f"{path} must store both 'low' and 'high', or neither.")
        low, high = (scalar("low"), scalar("high")) if "low" in data else (0.0, 1.0)
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise DataError(f"The declared domain needs finite low < high. Got [{low}, {high}].")
    return low, high


def load(
    spec: str,
    *,
    max_train: int | None = None,
    max_test: int | None = None,
    n_classes: int | None = None,
    holdout: float | None = None,
    low: float | None = None,
    high: float | None = None,
    schema=None,
    clip: bool = False,
) -> Dataset:
    """Loads a data set by spec.

    Args:
        spec: ``"digits"``, ``"fashion-mnist"`` (Debian's package or
            ``$MMGEN_DATA/fashion-mnist``), ``"fashion-mnist:FOLDER"``,
            ``"idx:FOLDER"`` (the four standard IDX files) or ``"npz:FILE"``.
        max_train: keep only the first ``max_train`` training records (for public benchmarks: a
            prefix is not a subset a release may take of private data — a record inserted before
            position ``max_train`` pushes another one out, a replace-one change).
        max_test: keep only the first ``max_test`` test records.
        n_classes: the declared number of classes of an ``npz:`` file (public; see :func:`load_npz`).
        holdout: for an ``npz:`` file without test records, the fraction held out by a per-record
            hash (see :func:`holdout_mask`).
        low, high: the declared public domain of an ``npz:`` file (see :func:`load_npz`).
        schema: for ``csv:FILE`` and ``parquet:FILE`` (required): the table's public schema
            (a :class:`~mmgen.data.tables.Schema`, its JSON form or a JSON file); see
            :func:`mmgen.data.tables.load_table`. ``holdout`` applies to tables too.
        clip: for a table, clip numbers into their declared bounds instead of refusing them.

    Raises:
        DataError: if the spec is unknown or the data is missing; the message says what to do.
    """
    kind, _, arg = spec.partition(":")
    if kind in ("csv", "parquet") and arg:
        if schema is None:
            raise DataError(f"A table ({spec}) needs its public schema: --schema schema.json (draft one with `mmgen schema draft`).")
        if any(v is not None for v in (n_classes, low, high, max_train, max_test)):
            raise DataError("A table's classes and domain come from its schema; --n-classes/--low/--high do not apply.")

        return load_table(spec, schema, holdout=holdout, clip=clip)
    if schema is not None or clip:
        raise DataError(f"`schema` and `clip` at load apply to csv: and parquet: tables only. Got {spec!r}.")
    if kind != "npz" and any(v is not None for v in (n_classes, holdout, low, high)):
        raise DataError(
            f"`n_classes`, `holdout` and the bounds apply to npz: files only; {spec!r} declares its own classes, "
            "split and domain."
        )
    if kind == "digits" and not arg:
        ds = load_digits()
    elif kind == "fashion-mnist":
        return load_fashion_mnist(arg or None, max_train=max_train, max_test=max_test)
    elif kind == "idx" and arg:
        return load_idx_folder(arg, name="idx", max_train=max_train, max_test=max_test)  # never the path
    elif kind == "npz" and arg:
        ds = load_npz(arg, n_classes=n_classes, holdout=holdout, low=low, high=high)
    else:
        raise DataError(f"Unknown data spec {spec!r}. Known: {', '.join(SPECS)}.")
    if max_train is None and max_test is None:
        return ds
    import dataclasses

    return dataclasses.replace(
        ds, x_train=ds.x_train[:max_train], y_train=ds.y_train[:max_train],
        x_test=ds.x_test[:max_test], y_test=ds.y_test[:max_test],
    )  # fmt: skip
