"""The one gate to private records: every stage that reads private data reaches it through :class:`PrivateData`.

The stages are the release (:func:`mmgen.release`, :func:`mmgen.distributed.release_distributed`), a table's private
discretisation (:func:`mmgen.data.discretise.private_knots`), Private
Evolution's votes (:func:`mmgen.evolve.evolve`), and the VAE's DP-SGD and per-record mechanism
(:func:`mmgen.vae.train_vae`, :func:`mmgen.vae.per_record_samples`). Each of them builds one ``PrivateData``
from the data and the public declarations, and reads records only through it:

1. **Declarations.** The record shape, the number of classes, the domain ``[low, high]``, ``clip`` and, for a
   table, the schema are public inputs. :attr:`PrivateData.facts` holds them and nothing read off the records
   (no count, min, max or label set). The hold-out of the loaders (``--holdout``) is decided per record by
   :func:`~mmgen.data.holdout_mask` before the records reach the gate.
2. **Budget first.** With a budget record, :meth:`PrivateData.admit` checks the stage's dp-accounting event
   against it; reading before that raises :class:`~mmgen.errors.PrivacyError`.
3. **Checked records.** :meth:`PrivateData.batches` (again at every call: PE reads the data once per round) and
   :meth:`PrivateData.tensors` (all at once: DP-SGD samples them) give records that passed
   :func:`check_batch`: finite, inside the declared domain (or clipped to it), labels in ``0..K-1``.
4. **Recorded after.** :meth:`PrivateData.record_stage` adds the stage to the budget record and saves it, once
   the stage has got past the domain checks (a refused data set spends nothing).

**Every path by which something derived from a private record leaves the process**, and its bound
(``docs/privacy.md`` §2 has the table with the tests):

* the release file: class-conditional sums and counts plus OpenDP Gaussian noise (``finalize``); L2 sensitivity
  per statistic bounded by the capped norm of one record's row;
* a schema's private knots: quantiles of per-column dyadic-tree cell counts plus OpenDP Gaussian noise; L2
  sensitivity √(K(L+1)) for K columns on 2^L cells (:mod:`mmgen.data.discretise`);
* PE's samples: candidates selected by vote histograms plus OpenDP Gaussian noise (sensitivity 1, or √2 under
  replace-one); everything after the noisy histogram is post-processing;
* the VAE file and everything sampled from it: Adam's steps on sums of clipped per-record gradients plus
  Gaussian noise of std σC from :class:`~mmgen.privacy.noise.PrivateStreams` (DP-SGD);
* the per-record samples: ``[μ(u, y); a·e_y]`` plus OpenDP Gaussian noise, under replace-one;
* the budget record: the stages' events, ε, δ and settings, all public, no count;
* error messages: a refused batch names the index (or file row) of its first bad record, never its values;
* the console: progress in batches or steps and wall time (both grow with the private number of records, as
  documented in ``docs/privacy.md`` §7); no count, no loss on private records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from ..errors import DataError, PrivacyError
from .base import Dataset, iter_batches
from .tables import TableStream

__all__ = ["PrivateData", "check_batch"]


def check_batch(x: torch.Tensor, y: torch.Tensor, shape, n_classes: int, low: float, high: float, clip: bool,
                offset: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One batch of records checked against the declarations: ``(x, y.long())``, ``x`` clipped if ``clip``.

    Args:
        x ((B, *shape) Tensor): floating-point records.
        y ((B,) Tensor): integer labels.
        shape: the declared shape of one record.
        n_classes: the declared number of classes.
        low, high: the declared domain.
        clip: clip values into ``[low, high]`` instead of refusing them.
        offset: the index of the batch's first record in the data (named in errors).

    Raises:
        DataError: wrong types or shapes, labels outside ``0..n_classes-1``, NaN or inf, values outside the domain.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError(f"Batches must be (x, y) tensors. Got ({type(x).__name__}, {type(y).__name__}).")
    if not x.is_floating_point():
        raise DataError(f"x must be a floating-point tensor. Got {x.dtype}.")
    if tuple(x.shape[1:]) != tuple(shape):
        raise DataError(f"Expected x of shape (N, {', '.join(map(str, shape))}). Got {tuple(x.shape)}.")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8) or y.ndim != 1:
        raise DataError(f"y must be a 1-d integer tensor. Got {y.dtype} of shape {tuple(y.shape)}.")
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} records but y has {len(y)} labels.")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise DataError(f"labels must be in [0, {n_classes}) (the declared classes); some are outside.")
    if not x.numel():
        return x, y.long()
    # One pass in the common case: min and max propagate NaN and show inf or out-of-domain values;
    # the slower per-record searches run only to word an error.
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
        raise DataError(f"x holds NaN or inf (first at record {offset + int(bad.nonzero()[0])}); clean the data first.")
    if clip:
        return x.clamp(low, high), y.long()
    if lo < low or hi > high:
        out = (x < low) | (x > high)
        first = offset + int(out.reshape(len(x), -1).any(dim=1).nonzero()[0])
        raise DataError(
            f"x has values outside the declared domain [{low}, {high}] (first at record {first}). "
            "Declare the domain the values can take (bounds=(low, high); CLI --low/--high) from public knowledge, "
            "or rescale with such public bounds — never with the data's own min/max, which would leak — or pass "
            "clip=True (--clip) to clip them."
        )
    return x, y.long()


def _as_tensors(x, y):
    """NumPy arrays as tensors (labels int64 unless float, which the label check then refuses)."""
    if type(x).__module__ != "numpy" and type(y).__module__ != "numpy":
        return x, y
    import numpy as np

    try:
        x = torch.from_numpy(np.ascontiguousarray(x)) if type(x).__module__ == "numpy" else x
        if type(y).__module__ == "numpy":
            y = torch.from_numpy(np.ascontiguousarray(y))
            y = y if y.is_floating_point() else y.long()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"`x` and `y` must be numeric arrays or tensors: {exc}") from None
    return x, y


class PrivateData:
    """Private records behind their public declarations, read only after the budget record allows it.

    Args:
        data: a :class:`~mmgen.data.Dataset` (its training records; it declares shape, classes and domain), a
            :class:`~mmgen.data.tables.TableStream` (a table file read in chunks, with its schema), a tensor or
            array ``x`` of records with labels ``y``, an iterable of ``(x, y)`` batches (read once), or a
            function returning such an iterable (read at every call of :meth:`batches`).
        y ((N,) Tensor): labels, with a tensor ``x`` only.
        n_classes: the declared number of classes (required unless ``data`` declares it).
        input_shape: the declared shape of one record (default: ``x.shape[1:]`` of a tensor, the data set's).
        bounds: the declared domain ``(low, high)`` (default: the data set's, else ``(0, 1)``).
        clip: clip values into the domain instead of refusing them.
        batch_size: records per batch when the data is held in memory.
        name: a public name of the data (default: the data set's).
        record: the data set's :class:`~mmgen.privacy.BudgetRecord`, or None.

    Raises:
        DataError: undeclared classes or shape, malformed inputs (before any record is read).
    """

    def __init__(self, data: Any, y: torch.Tensor | None = None, *, n_classes: int | None = None,
                 input_shape=None, bounds: tuple[float, float] | None = None, clip: bool = False,
                 batch_size: int = 4096, name: str | None = None, record=None) -> None:  # fmt: skip
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise DataError(f"`batch_size` must be a positive integer. Got {batch_size!r}.")
        self.record, self._admitted, self._table = record, record is None, None
        self._source: Callable[[], Iterable] | None = None
        self._once: Iterable | None = None
        if isinstance(data, TableStream):
            if y is not None or clip:
                raise DataError("A TableStream carries its schema, labels and clipping: pass it alone.")
            self._table = data.table
            input_shape, n_classes = (data.schema.encoded_dim,), data.schema.n_classes
            name = name or data.kind
            self._source = lambda: iter(data)
        elif isinstance(data, Dataset):
            self._table = data.table
            n_classes = data.n_classes if n_classes is None else n_classes
            bounds = (data.low, data.high) if bounds is None else bounds
            input_shape = data.input_shape if input_shape is None else input_shape
            name = name or data.name
            x_train, y_train = data.x_train, data.y_train
            self._source = lambda: iter_batches(x_train, y_train, batch_size)
        else:
            x, y = _as_tensors(data, y)
            if isinstance(x, torch.Tensor):
                if not isinstance(y, torch.Tensor):
                    raise DataError(f"Labels `y` must be a tensor with a tensor `x`. Got {type(y).__name__}.")
                if x.ndim < 2:
                    raise DataError(f"x must be (N, *input_shape) with at least 2 dimensions. Got shape {tuple(x.shape)}.")
                if y.ndim != 1 or len(x) != len(y):
                    raise DataError(f"y must be (N,) with one label per record: x has shape {tuple(x.shape)}, "
                                    f"y {tuple(y.shape)}.")  # fmt: skip
                input_shape = tuple(x.shape[1:]) if input_shape is None else input_shape
                self._source = lambda: iter_batches(x, y, batch_size)
            elif y is not None:
                raise DataError(f"With labels `y`, `x` must be a tensor or array. Got {type(x).__name__}.")
            elif callable(x):
                self._source = x
            elif isinstance(x, Iterable):
                self._once = x
            else:
                raise DataError(f"`data` must be a Dataset, a TableStream, tensors (x, y), or (x, y) batches. "
                                f"Got {type(x).__name__}.")  # fmt: skip
            if input_shape is None:
                raise DataError("`input_shape` is required when the data is an iterable of batches.")
        if n_classes is None:
            raise DataError("`n_classes` must be declared (it is public; reading it off the labels would leak).")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise DataError(f"`n_classes` must be a positive integer. Got {n_classes!r}.")
        low, high = (0.0, 1.0) if bounds is None else (float(bounds[0]), float(bounds[1]))
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_classes, self.low, self.high, self.clip, self.name = n_classes, low, high, bool(clip), name

    @property
    def table(self) -> dict | None:
        """A table's public schema (JSON form, with ``clip``), or None."""
        return self._table

    @property
    def facts(self) -> dict:
        """The public description of the data: name, record shape, classes, domain, clip (and a table's schema)."""
        out = {"name": self.name, "input_shape": list(self.input_shape), "n_classes": self.n_classes,
               "low": self.low, "high": self.high, "clip": self.clip}  # fmt: skip
        if self._table is not None:
            out["table"] = self._table
        return out

    def admit(self, event, *, delta: float | None = None, neighbouring: str | None = None) -> float | None:
        """Checks the stage's dp-accounting ``event`` against the budget record (before any record is read).

        Returns:
            The data set's total ε after the stage (None without a record).

        Raises:
            PrivacyError: the stage would exceed the record's declared total, or its relation differs.
        """
        if self.record is None:
            return None
        after = self.record.check(event, delta=delta if self.record.delta is None else None, neighbouring=neighbouring)
        self._admitted = True
        return after

    def _require_admitted(self) -> None:
        if not self._admitted:
            raise PrivacyError("The budget record must be checked (PrivateData.admit) before the first record is read.")

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The checked ``(x, y)`` batches, in order; each call reads the data again (once for a plain iterable)."""
        self._require_admitted()
        if self._source is not None:
            stream = self._source()
        elif self._once is not None:
            stream, self._once = self._once, None
        else:
            raise DataError("The data was an iterable of batches and has been read already; pass a function "
                            "returning the batches to read it again.")  # fmt: skip
        offset = 0
        for x, y in stream:
            x, y = check_batch(x, y, self.input_shape, self.n_classes, self.low, self.high, self.clip, offset)
            offset += len(y)
            yield x, y

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All checked records at once: ``(x, y)`` with ``x`` (N, *shape) and ``y`` (N,) int64."""
        parts = list(self.batches())
        if not parts:
            return torch.empty(0, *self.input_shape), torch.empty(0, dtype=torch.int64)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def record_stage(self, **entry) -> None:
        """Adds the stage to the budget record (:meth:`~mmgen.privacy.BudgetRecord.add`'s fields) and saves it."""
        if self.record is None:
            return
        self._require_admitted()
        self.record.add(**entry)
        if self.record.path is not None:
            self.record.save()
