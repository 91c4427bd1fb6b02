"""The labelled data set type and streaming helpers.

A :class:`Dataset` holds images (or any fixed-shape records) as float tensors
inside a *declared* public domain ``[low, high]`` with integer labels in
``[0, n_classes)``, already split into train and test parts. The domain bounds
and the number of classes are public inputs (the privacy contract forbids
deriving them from the private data); the loaders declare them.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

import torch

from ..errors import DataError
from .holdout import holdout_mask

__all__ = ["Dataset", "iter_batches", "VALIDATION_SALT"]

VALIDATION_SALT = b"mmgen-validation-v1"  # public salt of Dataset.validation_split's per-record hash (plus the seed)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A labelled data set with a train/test split and a declared domain.

    Attributes:
        name: the spec it was loaded from, e.g. ``"digits"``.
        x_train ((N, *input_shape) Tensor): float32 records in ``[low, high]``.
        y_train ((N,) Tensor): int64 labels in ``[0, n_classes)``.
        x_test ((M, *input_shape) Tensor): float32 test records.
        y_test ((M,) Tensor): int64 test labels.
        n_classes: number of classes (public).
        low, high: the declared (public) domain of every value.
        class_names: optional names of the classes.
        table: for a table, its public schema (:class:`mmgen.data.tables.Schema` JSON form);
            the records are then the encoded rows.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    low: float = 0.0
    high: float = 1.0
    class_names: tuple[str, ...] | None = None
    table: dict | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one record, e.g. ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])

    def schema(self) -> dict:
        """The public description of the data that a release records."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "low": self.low,
            "high": self.high,
            "class_names": list(self.class_names) if self.class_names else None,
            **({"table": self.table} if self.table is not None else {}),
        }

    def validation_split(self, fraction: float = 0.25, seed: int = 0) -> "Dataset":
        """A tuning data set: part of the *training* records held out in place of the test split.

        Hyper-parameters chosen on it never see the real test split, so figures
        reported on the test split stay honest. Each record's side is a keyed hash
        of that record's own bytes (:func:`mmgen.data.loaders.holdout_mask`, with a
        salt of its own and of ``seed``), never a permutation of N: adding or
        removing one record moves no other record between the sides (privacy
        contract, item 7), so the released side of a neighbouring data set is a
        neighbouring data set.

        Args:
            fraction: expected share of the training records held out, in (0, 1).
            seed: public seed, part of the hash's salt (another seed, another split).

        Returns:
            A :class:`Dataset` named ``"<name>:validation"`` whose ``x_test``/``y_test`` are the
            held-out training records and whose ``x_train``/``y_train`` are the rest, both in their order.

        Raises:
            DataError: ``fraction`` is not in (0, 1), or a side would be empty.

        Example:
            >>> import mmgen
            >>> val = mmgen.data.load("digits").validation_split(0.25)
            >>> len(val.y_train), len(val.y_test)
            (1071, 367)
        """

        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DataError(f"`seed` must be an integer ≥ 0. Got {seed!r}.")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise DataError(f"`fraction` must be a number in (0, 1). Got {fraction!r}.")
        salt = VALIDATION_SALT + seed.to_bytes(8, "big")
        x, y = self.x_train.detach().cpu().numpy(), self.y_train.cpu().numpy()
        held = torch.from_numpy(holdout_mask(x, y, fraction, salt=salt))  # (N,) bool: each record's own hash
        if bool(held.all()) or not bool(held.any()):
            raise DataError(f"`fraction` {fraction!r} left one side of the split of the {len(held)} training "
                            "records empty; use a fraction nearer 0.5 or more records.")  # fmt: skip
        return dataclasses.replace(
            self, name=f"{self.name}:validation", x_train=self.x_train[~held], y_train=self.y_train[~held],
            x_test=self.x_train[held], y_test=self.y_train[held],
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"input_shape={self.input_shape}, n_classes={self.n_classes}, "
            f"domain=[{self.low}, {self.high}])"
        )


def iter_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields ``(x, y)`` slices of at most ``batch_size`` records, in order.

    Args:
        x ((N, ...) Tensor): records.
        y ((N,) Tensor): labels.
        batch_size: records per batch.
    """
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


def as_batches(
    data: tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]],
    batch_size: int = 4096,
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Turns a pair of tensors or an iterable of batches into an iterable of batches."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return iter_batches(data[0], data[1], batch_size)
    return data
