"""Loaders: digits, IDX (gz and plain), npz, and the real Fashion-MNIST."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

import mmgen
from mmgen.errors import DataError


def test_digits(digits):
    assert digits.input_shape == (1, 8, 8) and digits.n_classes == 10
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert 0.0 <= float(digits.x_train.min()) and float(digits.x_train.max()) <= 1.0
    assert set(digits.y_test.tolist()) == set(range(10))
    again = mmgen.data.load("digits")
    assert torch.equal(again.y_test, digits.y_test)  # the split is fixed


def _write_idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (20, 5, 6)), gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, (20,)), gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (7, 5, 6)), gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, (7,)), gz)
    ds = mmgen.data.load(f"idx:{tmp_path}")
    assert ds.x_train.shape == (20, 1, 5, 6) and ds.x_test.shape == (7, 1, 5, 6)
    assert float(ds.x_train.max()) <= 1.0


def test_truncated_idx(tmp_path):
    _write_idx(tmp_path / "f", np.zeros((4, 3, 3)), False)
    data = (tmp_path / "f").read_bytes()
    (tmp_path / "f").write_bytes(data[:-3])
    with pytest.raises(DataError, match="truncated"):
        mmgen.data.read_idx(tmp_path / "f")


def test_npz(tmp_path):
    x = np.random.default_rng(0).random((30, 2, 3)).astype(np.float32)
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, n_classes=np.array(3))
    ds = mmgen.data.load(f"npz:{tmp_path / 'd.npz'}")
    assert ds.n_classes == 3 and ds.input_shape == (2, 3) and len(ds.y_train) == 30 and len(ds.y_test) == 0
    np.savez(tmp_path / "bad.npz", x=x)
    with pytest.raises(DataError, match="'x' and 'y'"):
        mmgen.data.load(f"npz:{tmp_path / 'bad.npz'}")


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        mmgen.data.load(f"fashion-mnist:{tmp_path}")


def test_unknown_spec():
    with pytest.raises(DataError, match="Unknown data spec 'mnist'"):
        mmgen.data.load("mnist")


def test_real_fashion_mnist():
    try:
        ds = mmgen.data.load("fashion-mnist")
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {exc}")
    assert ds.x_train.shape == (60_000, 1, 28, 28) and ds.x_test.shape == (10_000, 1, 28, 28)
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert 0.0 == float(ds.x_train.min()) and float(ds.x_train.max()) == 1.0
