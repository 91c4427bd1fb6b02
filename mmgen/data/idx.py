"""Readers for IDX files (the MNIST/Fashion-MNIST format), gzipped or not.

An IDX file starts with two zero bytes, a type code (0x08 = unsigned byte)
and the number of dimensions, then one big-endian uint32 per dimension, then
the values in C order (LeCun et al., "The MNIST database", file format section).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import Dataset

__all__ = ["read_idx", "load_idx_folder", "load_fashion_mnist", "FASHION_MNIST_CLASSES"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
HOW_TO_GET = (
    "Install Debian's package (`apt-get install dataset-fashion-mnist`, files land in "
    f"{SYSTEM_FASHION_MNIST}), put the four IDX files in $MMGEN_DATA/fashion-mnist, "
    "or pass a folder as `fashion-mnist:/path/to/folder`."
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (``.gz`` or plain) into a numpy array.

    Raises:
        DataError: if the file is not a well-formed IDX file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated or padded: header says {dims} ({expected} bytes), "
            f"file has {len(raw)} bytes."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx_folder(
    folder: str | os.PathLike,
    *,
    name: str,
    class_names: tuple[str, ...] | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
) -> Dataset:
    """Loads the four standard IDX files of a folder as a :class:`Dataset`.

    Images are ``uint8`` and are scaled to ``[0, 1]`` (the declared domain),
    with a channel axis added: ``(N, 1, H, W)``. The number of classes is
    ``len(class_names)`` when given, else 10 for MNIST-style files; it is never
    read off the labels (a public input, not a data-dependent one).

    Raises:
        DataError: if a file is missing or malformed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"Data folder {folder} does not exist.")
    arrays = {}
    for key, stem in _STEMS.items():
        path = _find(folder, stem)
        if path is None:
            raise DataError(f"{folder} has no {stem}[.gz] (IDX files expected).")
        arrays[key] = read_idx(path)
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"{folder}: {part} images must be (N, H, W) and labels (N,). "
                f"Got {x.shape} and {y.shape}."
            )
        if x.dtype != np.uint8:
            raise DataError(f"{folder}: images must be unsigned bytes. Got {x.dtype}.")
    n_classes = len(class_names) if class_names else 10

    def tensors(part: str, limit: int | None):
        # bytes to float32 in torch, in place (the same correctly rounded float32 quotients as NumPy's
        # astype(float32) / 255.0, without its two full-size float32 temporaries: 0.1 s against 0.7-1.3 s for 60,000 images)
        x = torch.from_numpy(np.array(arrays[f"x_{part}"][:limit])).to(torch.float32).div_(255.0)  # a writable copy of the bytes
        y = torch.from_numpy(arrays[f"y_{part}"][:limit].astype(np.int64))
        return x.unsqueeze(1).contiguous(), y

    x_train, y_train = tensors("train", max_train)
    x_test, y_test = tensors("test", max_test)
    return Dataset(
        name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        n_classes=n_classes, low=0.0, high=1.0, class_names=class_names,
    )  # fmt: skip


def fashion_mnist_folder(folder: str | os.PathLike | None = None) -> Path:
    """Where the Fashion-MNIST files are: ``folder``, ``$MMGEN_DATA/fashion-mnist`` or Debian's.

    Raises:
        DataError: if none of them holds the files; the message says how to get them.
    """
    candidates = []
    if folder is not None:
        candidates.append(Path(folder))
    else:
        if os.environ.get("MMGEN_DATA"):
            candidates.append(Path(os.environ["MMGEN_DATA"]) / "fashion-mnist")
        candidates.append(SYSTEM_FASHION_MNIST)
    for c in candidates:
        if c.is_dir() and _find(c, _STEMS["x_train"]) is not None:
            return c
    raise DataError(
        f"Fashion-MNIST not found (looked in {', '.join(str(c) for c in candidates)}). "
        + HOW_TO_GET
    )


def load_fashion_mnist(
    folder: str | os.PathLike | None = None,
    *,
    max_train: int | None = None,
    max_test: int | None = None,
) -> Dataset:
    """Loads the real Fashion-MNIST (60,000 train / 10,000 test, 1×28×28 in [0, 1], 10 classes)."""
    return load_idx_folder(
        fashion_mnist_folder(folder), name="fashion-mnist",
        class_names=FASHION_MNIST_CLASSES, max_train=max_train, max_test=max_test,
    )  # fmt: skip
