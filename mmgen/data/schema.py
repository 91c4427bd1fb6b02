"""The public schema of a table and its encoding into bounded vectors (no private row is read here).

A table's domain is declared, never read off the private table. A
:class:`Schema` lists every column with its type and domain::

    {"columns": [
       {"name": "age", "type": "numeric", "low": 18, "high": 90},
       {"name": "children", "type": "integer", "low": 0, "high": 8},
       {"name": "wage", "type": "numeric", "low": 50, "high": 20000, "transform": "log", "missing": true},
       {"name": "region", "type": "categorical", "categories": ["north", "south", "east", "west", null]}],
     "label": "region"}

* ``numeric`` and ``integer`` columns have finite bounds ``low < high``; ``"transform": "log"``
  (needs ``low > 0``) scales them on a log axis; ``"bins"`` sets the coarse public binning
  that the 2-way marginals and the metrics use (default 16; an integer column with fewer
  values gets one bin per value), and ``"cells"`` the fine one its 1-way marginal uses, so
  that where a value falls inside its bin is released too (default: one cell per value of
  an integer column with at most 128 values, else 8 cells per bin). Each bin is a run of
  whole cells: cell k lies in bin ``⌊k·bins/cells⌋``.
* ``"knots": [low, k_1, ..., high]`` makes the axis piecewise linear (on the log scale with
  ``transform: log``): each interval between two knots gets an equal share of the scaled axis,
  so the coarse bins are the knot intervals (``bins`` = one per interval) and their fine cells
  split each interval evenly. Knots come from public knowledge (tax brackets, age bands) or from a private
  discretisation stage that spends declared budget (:mod:`mmgen.data.discretise`,
  ``mmgen schema discretise``), never from the data silently.
* ``categorical`` columns list their categories; ``null`` in the list is the missing value.
* ``"missing": true`` declares that a column may be empty. A numeric column's missingness
  is then released like any other feature; a categorical column gets a missing category.
* ``label`` (optional) names a categorical column: releases are then conditional on it.
* ``"unknown": "CATEGORY"`` on a categorical column maps values outside the list to that
  category, and loading with ``clip=True`` clips numbers into their bounds; both are
  recorded in the release. Without them such values are refused.

Each record is encoded as one vector in ``[0, 1]^D``, column by column (the label
column aside, it becomes the class ``y``): a numeric column is its value scaled by the
declared bounds, then (when it may be missing) its missingness, then the one-hot of its
public bin (all zero when missing); a categorical column is a one-hot block. :meth:`Schema.layout` describes the blocks;
the tabular feature maps and the tabular generator read it. Anything in
``[0, 1]^D`` is inside the domain the feature maps are bounded on, so their norm
bound holds whatever vector is passed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

__all__ = [
    "Column", "Schema", "NUMERIC", "NUMERIC_MISSING", "BINNED", "BINNED_MISSING", "CATEGORICAL", "DEFAULT_BINS",
    "NA_VALUES", "TYPES", "DRAFT_WARNING",
]  # fmt: skip

# layout block kinds: a schema's numbers are "binned" blocks; "numeric" blocks are for vectors without a schema
NUMERIC, NUMERIC_MISSING, CATEGORICAL = "numeric", "numeric-missing", "categorical"
BINNED, BINNED_MISSING = "binned", "binned-missing"
DEFAULT_BINS = 16
MAX_VALUE_CELLS = 128  # an integer column with at most this many values gets one fine cell per value
CELLS_PER_BIN = 8  # fine cells per bin of every other number
NA_VALUES = ["", "NA", "NaN", "nan", "null", "NULL"]  # how a CSV spells a gap
TYPES = ("numeric", "integer", "categorical")
DRAFT_WARNING = (
    "DRAFT ONLY: every bound and category list is left empty (null): declare each from public knowledge "
    "(a form's allowed values, a code list, a law's limits). What the file holds was written to a separate report "
    "that is PRIVATE (a maximum is one person's value): never copy a value from it into the schema."
)


@dataclasses.dataclass(frozen=True)
class Column:
    """One declared column.

    Attributes:
        name: the column's name in the table.
        type: ``"numeric"``, ``"integer"`` or ``"categorical"``.
        low, high: declared bounds of a numeric or integer column.
        categories: declared categories of a categorical column (``None`` is the missing value).
        missing: whether the column may be empty.
        transform: ``None`` or ``"log"`` (numeric columns with ``low > 0``).
        knots: ``None`` or the strictly increasing edges ``(low, ..., high)`` of a piecewise-linear axis (on the log
            scale with ``transform: log``).
        bins: the coarse public binning of a numeric column (2-way marginals, metrics).
        cells: the fine public binning of its 1-way marginal (a multiple of ``bins``, or one cell per integer value).
        unknown: a category that values outside the list are mapped to (recorded), or None to refuse them.
        description: free text, e.g. the public source of the bounds (recorded in the release).
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    categories: tuple | None = None
    missing: bool = False
    transform: str | None = None
    bins: int | None = None
    cells: int | None = None
    unknown: Any = None
    description: str | None = None
    knots: tuple | None = None

    @property
    def is_numeric(self) -> bool:
        return self.type in ("numeric", "integer")

    @property
    def n_bins(self) -> int:
        """Number of public bins of a numeric column (an integer column with few values: one per value)."""
        if self.knots is not None:
            return len(self.knots) - 1
        if self.bins is not None:
            return int(self.bins)
        if self.type == "integer" and self.transform is None:
            return int(min(DEFAULT_BINS, self.high - self.low + 1))
        return DEFAULT_BINS

    @property
    def n_values(self) -> int | None:
        """How many integers an integer column can hold (None for other columns)."""
        if self.type != "integer":
            return None
        return int(math.floor(self.high) - math.ceil(self.low) + 1)

    @property
    def per_value(self) -> bool:
        """Whether the fine cells of this column are its integer values, one each."""
        return self.type == "integer" and self.transform is None and self.knots is None and self.n_cells == self.n_values

    @property
    def n_cells(self) -> int:
        """Fine cells of a number's 1-way marginal (see the module): declared, else one per integer value up to
        ``MAX_VALUE_CELLS``, else ``CELLS_PER_BIN`` per bin."""
        if self.cells is not None:
            return int(self.cells)
        v = self.n_values
        if v is not None and self.transform is None and self.knots is None and v <= MAX_VALUE_CELLS:
            return max(v, self.n_bins)
        return CELLS_PER_BIN * self.n_bins

    def cell_of(self, values: np.ndarray) -> np.ndarray:
        """The fine cell of (present, in-domain) numbers: their integer's index, or ``⌊t·cells⌋`` of the scaled value."""
        if self.per_value:
            return np.clip(np.round(values).astype(np.int64) - math.ceil(self.low), 0, self.n_cells - 1)
        return _bin_of(self.scale(values), self.n_cells)

    def bin_of_cell(self, cells: np.ndarray) -> np.ndarray:
        """The coarse bin of fine cells: ``⌊k·bins/cells⌋``."""
        return (np.asarray(cells, dtype=np.int64) * self.n_bins) // self.n_cells

    def cell_range(self, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scaled interval ``[lo, hi)`` of fine cells (for a per-value column: the value's own point, twice)."""
        cell = np.asarray(cell, dtype=np.int64)
        if self.per_value:
            t = self.scale(math.ceil(self.low) + cell.astype(np.float64))
            return t, t
        return cell / self.n_cells, (cell + 1) / self.n_cells

    @property
    def n_codes(self) -> int:
        """Cells of this column's 1-way marginal: its bins (+1 when it may be missing) or its categories."""
        if self.is_numeric:
            return self.n_bins + int(self.missing)
        return len(self.categories)

    def scale(self, values: np.ndarray) -> np.ndarray:
        """Declared-bounds scaling of (present, in-domain) numbers into [0, 1]."""
        lo, hi, v = self.low, self.high, values.astype(np.float64)
        if self.transform == "log":
            lo, hi, v = math.log(lo), math.log(hi), np.log(np.clip(v, lo, hi))
        if self.knots is not None:  # piecewise linear on the declared axis: interval i of B covers [i/B, (i+1)/B)
            k = self._knot_axis()
            v = np.clip(v, k[0], k[-1])
            i = np.clip(np.searchsorted(k, v, side="right") - 1, 0, len(k) - 2)
            return np.clip((i + (v - k[i]) / (k[i + 1] - k[i])) / (len(k) - 1), 0.0, 1.0)
        return np.clip((v - lo) / (hi - lo), 0.0, 1.0)

    def _knot_axis(self) -> np.ndarray:
        """The knots on the declared axis (their logs for a log column)."""
        k = np.asarray(self.knots, dtype=np.float64)
        return np.log(k) if self.transform == "log" else k

    def unscale_raw(self, t) -> np.ndarray:
        """The inverse of :meth:`scale` without rounding or clipping."""
        t = np.asarray(t, dtype=np.float64)
        if self.knots is not None:
            k, b = self._knot_axis(), len(self.knots) - 1
            i = np.clip(np.floor(t * b).astype(np.int64), 0, b - 1)
            u = k[i] + (t * b - i) * (k[i + 1] - k[i])
            return np.exp(u) if self.transform == "log" else u
        if self.transform == "log":
            return np.exp(math.log(self.low) + t * (math.log(self.high) - math.log(self.low)))
        return self.low + t * (self.high - self.low)

    def unscale(self, t: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`scale` (integers rounded), inside the declared bounds."""
        v = np.clip(self.unscale_raw(np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)), self.low, self.high)
        return np.clip(np.round(v), math.ceil(self.low), math.floor(self.high)) if self.type == "integer" else v

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.is_numeric:
            out.update(low=self.low, high=self.high)
            if self.transform:
                out["transform"] = self.transform
            if self.knots is not None:
                out["knots"] = list(self.knots)
            if self.bins is not None:
                out["bins"] = self.bins
            if self.cells is not None:
                out["cells"] = self.cells
            if self.missing:
                out["missing"] = True
        else:
            out["categories"] = list(self.categories)
            if self.unknown is not None:
                out["unknown"] = self.unknown
        if self.description:
            out["description"] = self.description
        return out


def _undeclared(cols: list) -> list[str]:
    """``column.field`` for every bound or category list a schema leaves null (as a draft does)."""
    out = []
    for c in cols:
        if not isinstance(c, dict):
            continue
        name = c.get("name", "?")
        if c.get("type") in ("numeric", "integer"):
            out += [f"{name}.{k}" for k in ("low", "high") if k in c and c[k] is None]
        elif c.get("type") == "categorical" and "categories" in c and c["categories"] is None:
            out.append(f"{name}.categories")
    return out


def _column(spec: Any, index: int) -> Column:
    where = f"schema column {index}"
    if not isinstance(spec, dict):
        raise DataError(f"{where} must be an object with 'name' and 'type'. Got {type(spec).__name__}.")
    known = {"name", "type", "low", "high", "categories", "missing", "transform", "bins", "cells", "unknown", "description",
             "knots"}
    extra = sorted(set(spec) - known)
    if extra:
        raise DataError(f"{where} ({spec.get('name')!r}) has unknown field(s) {extra}. Known: {sorted(known)}.")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise DataError(f"{where} needs a non-empty string 'name'.")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise DataError(f"schema column {name!r}: 'description' must be text.")
    where = f"schema column {name!r}"
    kind = spec.get("type")
    if kind not in TYPES:
        raise DataError(f"{where}: 'type' must be one of {', '.join(TYPES)}. Got {kind!r}.")
    missing = spec.get("missing", False)
    if not isinstance(missing, bool):
        raise DataError(f"{where}: 'missing' must be true or false. Got {missing!r}.")
    if kind == "categorical":
        cats = spec.get("categories")
        if not isinstance(cats, list) or not cats:
            raise DataError(f"{where}: a categorical column declares its 'categories' as a non-empty list.")
        for c in cats:
            if not (c is None or isinstance(c, (str, int)) and not isinstance(c, bool)):
                raise DataError(f"{where}: categories must be strings, integers or null. Got {c!r}.")
        if len({_key(c) for c in cats}) != len(cats):
            raise DataError(f"{where}: the categories repeat a value ({cats}).")
        if missing and None not in cats:
            cats = cats + [None]
        for key in ("low", "high", "transform", "bins", "cells", "knots"):
            if key in spec:
                raise DataError(f"{where}: '{key}' applies to numeric columns only.")
        unknown = spec.get("unknown")
        if unknown is not None and _key(unknown) not in {_key(c) for c in cats}:
            raise DataError(f"{where}: 'unknown' must be one of the declared categories. Got {unknown!r}.")
        return Column(name, kind, categories=tuple(cats), missing=None in cats, unknown=unknown, description=description)
    if "categories" in spec or "unknown" in spec:
        raise DataError(f"{where}: 'categories' and 'unknown' apply to categorical columns only.")
    low, high = spec.get("low"), spec.get("high")
    for key, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise DataError(
                f"{where}: declare finite '{key}' (from public knowledge of what the values can be, "
                f"never from the data). Got {v!r}."
            )
    if not low < high:
        raise DataError(f"{where}: needs low < high. Got low={low}, high={high}.")
    transform = spec.get("transform")
    if transform not in (None, "log"):
        raise DataError(f"{where}: 'transform' must be \"log\" or absent. Got {transform!r}.")
    if transform == "log" and not low > 0:
        raise DataError(f"{where}: a log transform needs low > 0. Got low={low}.")
    if kind == "integer" and math.floor(high) < math.ceil(low):
        raise DataError(f"{where}: no integer lies in [{low}, {high}].")
    bins = spec.get("bins")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= 1000):
        raise DataError(f"{where}: 'bins' must be an integer in 2..1000. Got {bins!r}.")
    knots = _knots(spec.get("knots"), low, high, bins, where)
    column = Column(name, kind, low=float(low), high=float(high), missing=missing, transform=transform, bins=bins,
                    description=description, knots=knots)
    cells = spec.get("cells")
    if cells is not None:
        if isinstance(cells, bool) or not isinstance(cells, int) or not 2 <= cells <= 4096:
            raise DataError(f"{where}: 'cells' must be an integer in 2..4096. Got {cells!r}.")
        values = column.n_values if transform is None and knots is None else None
        if cells % column.n_bins and cells != values:
            raise DataError(
                f"{where}: 'cells' must be a multiple of its {column.n_bins} bins (each bin a run of whole cells)"
                + (f", or {values}: one cell per integer value" if values else "") + f". Got {cells}."
            )
        if values is not None and cells > values:
            raise DataError(f"{where}: an integer column holds {values} values; 'cells' can be at most that. Got {cells}.")
        column = dataclasses.replace(column, cells=cells)
    return column


def _knots(knots: Any, low: float, high: float, bins: int | None, where: str) -> tuple | None:
    """A column's validated ``knots`` (None when absent)."""
    if knots is None:
        return None
    if not isinstance(knots, list) or not 3 <= len(knots) <= 1001:
        raise DataError(f"{where}: 'knots' must be a list of 3 to 1001 numbers [low, ..., high].")
    if any(isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) for k in knots):
        raise DataError(f"{where}: 'knots' must be finite numbers. Got {knots!r}.")
    if not all(a < b for a, b in zip(knots, knots[1:])):
        raise DataError(f"{where}: 'knots' must be strictly increasing.")
    if knots[0] != low or knots[-1] != high:
        raise DataError(f"{where}: 'knots' must start at low ({low}) and end at high ({high}). Got {knots[0]} ... {knots[-1]}.")
    if bins is not None and bins != len(knots) - 1:
        raise DataError(f"{where}: with 'knots' the bins are the {len(knots) - 1} intervals between them; drop 'bins' "
                        f"(got {bins}).")  # fmt: skip
    return tuple(float(k) for k in knots)


def _key(value: Any) -> str | None:
    """How a category is matched: its text (a CSV holds ``1`` where the schema says 1 or "1")."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


@dataclasses.dataclass(frozen=True)
class Schema:
    """A table's public schema: the declared domain of every column and an optional label.

    Build one with :meth:`from_dict` or :meth:`load` (a JSON file); see the module's
    docstring for the format.
    """

    columns: tuple[Column, ...]
    label: str | None = None
    description: str | None = None

    # -- construction -------------------------------------------------------
    @classmethod
    def from_dict(cls, spec: dict) -> "Schema":
        """Validates and builds a schema from its JSON form.

        Raises:
            DataError: a malformed schema, in one line naming the column at fault.

        Example:
            >>> s = Schema.from_dict({"columns": [
            ...     {"name": "age", "type": "integer", "low": 18, "high": 90},
            ...     {"name": "smoker", "type": "categorical", "categories": ["no", "yes"]}], "label": "smoker"})
            >>> s.n_classes, s.encoded_dim
            (2, 74)
        """
        if isinstance(spec, Schema):
            return spec
        if not isinstance(spec, dict):
            raise DataError(f"A table schema is a JSON object with 'columns'. Got {type(spec).__name__}.")
        extra = sorted(set(spec) - {"columns", "label", "description", "note", "clip"})
        if extra:
            raise DataError(f"The schema has unknown field(s) {extra}. Known: columns, label, description, note, clip.")
        if spec.get("note") == DRAFT_WARNING:
            raise DataError(
                "This schema is still the draft: declare every empty (null) bound and category list from public "
                "knowledge, then delete its 'note'."
            )
        cols = spec.get("columns")
        if not isinstance(cols, list) or not cols:
            raise DataError("The schema needs a non-empty 'columns' list.")
        undeclared = _undeclared(cols)
        if undeclared:
            raise DataError(
                f"The schema leaves {', '.join(undeclared)} empty: declare each from public knowledge (mmgen never "
                "reads a domain off the data; a draft's report of the values seen is private)."
            )
        columns = tuple(_column(c, i) for i, c in enumerate(cols))
        names = [c.name for c in columns]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataError(f"The schema declares column(s) {dup} more than once.")
        label = spec.get("label")
        if label is not None:
            if label not in names:
                raise DataError(f"The schema's label {label!r} is not one of its columns ({', '.join(names)}).")
            if columns[names.index(label)].type != "categorical":
                raise DataError(f"The label column {label!r} must be categorical (a release is conditional on its classes).")
        if len([c for c in columns if c.name != label]) == 0:
            raise DataError("The schema needs at least one column besides the label.")
        description = spec.get("description")
        return cls(columns, label, description if isinstance(description, str) else None)

    @classmethod
    def coerce(cls, schema) -> "Schema":
        """A :class:`Schema` from a schema, its JSON form (a dict) or a JSON file's path."""
        if isinstance(schema, Schema):
            return schema
        return cls.from_dict(schema) if isinstance(schema, dict) else cls.load(schema)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Schema":
        """Reads a schema from a JSON file."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"Schema file {path} does not exist.")
        try:
            spec = json.loads(path.read_text())
        except ValueError as exc:
            raise DataError(f"Schema file {path} is not valid JSON: {exc}.") from None
        return cls.from_dict(spec)

    def to_dict(self) -> dict:
        """The JSON form (what a release records)."""
        out: dict[str, Any] = {"columns": [c.to_dict() for c in self.columns]}
        if self.label is not None:
            out["label"] = self.label
        if self.description:
            out["description"] = self.description
        return out

    # -- views --------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def features(self) -> list[Column]:
        """The columns that are encoded into the record vector (all but the label)."""
        return [c for c in self.columns if c.name != self.label]

    @property
    def label_column(self) -> Column | None:
        return next((c for c in self.columns if c.name == self.label), None)

    @property
    def n_classes(self) -> int:
        return len(self.label_column.categories) if self.label is not None else 1

    @property
    def class_names(self) -> tuple[str, ...]:
        if self.label is None:
            return ("all",)
        return tuple("(missing)" if c is None else str(c) for c in self.label_column.categories)

    def layout(self) -> list[list]:
        """The encoded vector's blocks, in order: ``[kind, size, bins]`` per feature column.

        ``kind`` is ``"binned"`` (``1 + cells`` slots: the scaled value t, then the one-hot of its
        fine public cell, :meth:`Column.cell_of`; cell k lies in the coarse bin ``⌊k·bins/cells⌋``),
        ``"binned-missing"`` (``2 + cells`` slots: t, 0 when missing; the missingness 0/1; the cell
        one-hot, all zero when missing) or ``"categorical"`` (one-hot over the categories; ``bins``
        is their number).
        """
        out = []
        for c in self.features:
            if c.is_numeric:
                out.append([BINNED_MISSING if c.missing else BINNED, c.n_cells + (2 if c.missing else 1), c.n_bins])
            else:
                out.append([CATEGORICAL, len(c.categories), len(c.categories)])
        return out

    @property
    def encoded_dim(self) -> int:
        return sum(size for _, size, _ in self.layout())

    # -- encoding -------------------------------------------------------------
    def encode(self, frame, *, clip: bool = False, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Checks a table against the schema and encodes it.

        Args:
            frame: a pandas data frame holding (at least) the declared columns.
            clip: clip numbers outside their declared bounds instead of refusing them.
            offset: row number of the frame's first row (for error messages).

        Returns:
            ``(x, y)``: (N, D) float64 records in ``[0, 1]`` and (N,) int64 labels (zeros without a label).

        Raises:
            DataError: a missing column, an undeclared gap, a value outside the domain, an unknown
                category or a non-integer in an integer column — in one line naming the column
                and the first bad row.
        """
        absent = [n for n in self.names if n not in frame.columns]
        if absent:
            raise DataError(f"The table has no column {absent[0]!r} (declared in the schema). Its columns: {list(frame.columns)}.")
        n = len(frame)
        blocks = []
        for c in self.features:
            blocks.extend(self._encode_column(c, frame[c.name], clip, offset))
        x = torch.from_numpy(np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0)))
        if self.label is None:
            y = torch.zeros(n, dtype=torch.int64)
        else:
            y = torch.from_numpy(self._codes(self.label_column, frame[self.label], offset))
        return x, y

    def _encode_column(self, c: Column, series, clip: bool, offset: int) -> list[np.ndarray]:
        if not c.is_numeric:
            codes = self._codes(c, series, offset)
            onehot = np.zeros((len(codes), len(c.categories)))
            onehot[np.arange(len(codes)), codes] = 1.0
            return [onehot]
        import pandas as pd

        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        gap = series.isna().to_numpy()
        bad = np.isnan(values) & ~gap
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"Column {c.name!r}: row {offset + i} holds {_plain(series.iloc[i])!r}, not a number.")
        if gap.any() and not c.missing:
            raise DataError(
                f"Column {c.name!r}: row {offset + int(np.flatnonzero(gap)[0])} is empty, and the schema does not declare "
                "it may be missing (add \"missing\": true to the column)."
            )
        if np.isinf(values).any():
            raise DataError(f"Column {c.name!r}: row {offset + int(np.flatnonzero(np.isinf(values))[0])} holds an infinite value.")
        present = ~gap
        if c.type == "integer" and (values[present] != np.round(values[present])).any():
            i = int(np.flatnonzero(present & (values != np.round(values)))[0])
            raise DataError(f"Column {c.name!r}: row {offset + i} holds {values[i]:g}, not an integer.")
        out = present & ((values < c.low) | (values > c.high))
        if out.any() and not clip:
            i = int(np.flatnonzero(out)[0])
            raise DataError(
                f"Column {c.name!r}: row {offset + i} holds {values[i]:g}, outside the declared [{c.low:g}, {c.high:g}]. "
                "Declare bounds the values can take (public knowledge, never the data's own min/max), "
                "or load with clip=True (--clip) to clip them (recorded in the release)."
            )
        t = np.zeros(len(values))
        t[present] = c.scale(np.clip(values[present], c.low, c.high))
        bins = np.zeros((len(t), c.n_cells))
        rows = np.flatnonzero(present)
        bins[rows, c.cell_of(np.clip(values[rows], c.low, c.high))] = 1.0
        if c.missing:
            return [t[:, None], gap.astype(np.float64)[:, None], bins]
        return [t[:, None], bins]

    def _codes(self, c: Column, series, offset: int) -> np.ndarray:
        keys = {_key(cat): i for i, cat in enumerate(c.categories)}
        raw = series.to_numpy(dtype=object)
        codes = np.empty(len(raw), dtype=np.int64)
        fallback = keys[_key(c.unknown)] if c.unknown is not None else None
        for i, v in enumerate(raw):
            k = None if _is_missing(v) else _key(v)
            code = keys.get(k)
            if code is None:
                if k is None:
                    raise DataError(
                        f"Column {c.name!r}: row {offset + i} is empty, and the schema does not declare it may be "
                        "missing (add null to its categories, or \"missing\": true)."
                    )
                if fallback is None:
                    raise DataError(
                        f"Column {c.name!r}: row {offset + i} holds {_plain(v)!r}, not one of the declared categories "
                        f"{[x for x in c.categories]} (declare it, or map unknown values with \"unknown\": CATEGORY)."
                    )
                code = fallback
            codes[i] = code
        return codes

    # -- decoding -------------------------------------------------------------
    def decode(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray | None = None):
        """Turns encoded records (hard or relaxed) back into a data frame with the declared columns.

        A categorical block takes its largest entry, a missingness slot above 1/2 means
        missing, and numbers are unscaled into their bounds (integers rounded). Columns come
        back in the schema's order with pandas dtypes: ``float64`` (numeric), ``Int64``
        (integer, nullable when missing), ``object`` (categories with their declared labels).
        """
        import pandas as pd

        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.encoded_dim:
            raise DataError(f"Encoded records must be (N, {self.encoded_dim}). Got {x.shape}.")
        data: dict[str, Any] = {}
        pos = 0
        for c, (kind, size, _) in zip(self.features, self.layout()):
            block = x[:, pos : pos + size]
            pos += size
            if kind == CATEGORICAL:
                data[c.name] = _labels(c, block.argmax(axis=1))
                continue
            gap = block[:, 1] > 0.5 if kind == BINNED_MISSING else np.zeros(len(block), dtype=bool)
            v = _value_in_cell(c, block[:, 0], block[:, -c.n_cells :].argmax(axis=1))
            if c.type == "integer":
                arr = pd.array(np.where(gap, 0, v).astype(np.int64), dtype="Int64")
                arr[gap] = pd.NA
                data[c.name] = arr
            else:
                data[c.name] = np.where(gap, np.nan, v)
        if self.label is not None:
            labels = np.zeros(len(x), dtype=np.int64) if y is None else np.asarray(torch.as_tensor(y).cpu(), dtype=np.int64)
            data[self.label] = _labels(self.label_column, labels)
        return pd.DataFrame({n: data[n] for n in self.names})

    def codes(self, frame) -> np.ndarray:
        """Every column's cell in its 1-way marginal: (N, n_columns) int64 (numbers binned on the declared bounds).

        A numeric column's bins split its (transformed) declared range into ``n_bins`` equal
        widths; when it may be missing, the last code is "missing". The table must pass
        :meth:`encode` (clipped values land in the edge bins).
        """
        import pandas as pd

        out = np.empty((len(frame), len(self.columns)), dtype=np.int64)
        for j, c in enumerate(self.columns):
            if not c.is_numeric:
                out[:, j] = self._codes(c, frame[c.name], 0)
                continue
            values = pd.to_numeric(frame[c.name], errors="coerce").to_numpy(dtype=np.float64)
            gap = np.isnan(values)
            code = c.bin_of_cell(c.cell_of(np.clip(np.where(gap, c.low, values), c.low, c.high)))
            out[:, j] = np.where(gap, c.n_bins, code) if c.missing else code
        return out

    def from_codes(self, codes: np.ndarray, seed: int = 0):
        """A table from marginal cells (:meth:`codes`' format): the inverse of binning, for binned methods (MST, AIM).

        A numeric cell becomes a value drawn uniformly inside its public bin (seeded: a fine cell
        of the bin, then a position inside it; an integer column's values drawn uniformly among
        the bin's), the missing cell a gap, a category its label.

        Args:
            codes ((N, n_columns) int array): one cell per column, in the schema's column order.
            seed: seed of the positions inside the bins.
        """
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(self.columns):
            raise DataError(f"codes must be (N, {len(self.columns)}). Got {codes.shape}.")
        for j, c in enumerate(self.columns):
            if len(codes) and (codes[:, j].min() < 0 or codes[:, j].max() >= c.n_codes):
                raise DataError(f"Column {c.name!r}: codes must be in 0..{c.n_codes - 1}.")
        rng = np.random.default_rng(seed)
        blocks = []
        for c in self.features:
            k = codes[:, self.names.index(c.name)]
            if not c.is_numeric:
                blocks.append(np.eye(len(c.categories))[k])
                continue
            gap = k == c.n_bins if c.missing else np.zeros(len(k), dtype=bool)
            kk = np.where(gap, 0, k)
            first = -((-kk * c.n_cells) // c.n_bins)  # the bin's cells: first … first + count − 1
            count = -((-(kk + 1) * c.n_cells) // c.n_bins) - first
            cell = first + np.minimum((rng.random(len(k)) * count).astype(np.int64), count - 1)
            lo, hi = c.cell_range(cell)
            t = np.where(gap, 0.0, lo + rng.random(len(k)) * (hi - lo))
            bins = np.eye(c.n_cells)[cell] * ~gap[:, None]
            blocks.extend([t[:, None]] + ([gap[:, None].astype(np.float64)] if c.missing else []) + [bins])
        y = codes[:, self.names.index(self.label)] if self.label is not None else None
        return self.decode(np.concatenate(blocks, axis=1), y)

    def cell_names(self, column: Column) -> list[str]:
        """Readable names of a column's marginal cells (bin edges or categories)."""
        if not column.is_numeric:
            return ["(missing)" if c is None else str(c) for c in column.categories]
        if column.per_value:
            first = -((-np.arange(column.n_bins + 1) * column.n_cells) // column.n_bins) + math.ceil(column.low)
            names = [f"{a}" if b == a + 1 else f"{a}–{b - 1}" for a, b in zip(first[:-1], first[1:])]
            return names + (["(missing)"] if column.missing else [])
        if column.knots is not None:
            edges = np.asarray(column.knots)
        else:
            edges = column.unscale(np.linspace(0, 1, column.n_bins + 1)) if column.type != "integer" else None
        if edges is None:
            lo, hi = column.low, column.high
            if column.transform == "log":
                lo, hi = math.log(lo), math.log(hi)
            raw = np.linspace(lo, hi, column.n_bins + 1)
            edges = np.exp(raw) if column.transform == "log" else raw
        names = [f"[{edges[k]:.4g}, {edges[k + 1]:.4g})" for k in range(column.n_bins)]
        return names + (["(missing)"] if column.missing else [])


def _bin_of(t: np.ndarray, bins: int) -> np.ndarray:
    """The public bin of scaled values t in [0, 1]: ``min(⌊t·bins⌋, bins − 1)``."""
    return np.minimum((np.clip(t, 0.0, 1.0) * bins).astype(np.int64), bins - 1)


def _value_in_cell(c: Column, t: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Values of scaled positions t, kept inside fine cell k (the cell a generator drew decides; t places the value in it).

    A per-value integer column's cell is its value. Otherwise a number is ``unscale(t)`` with t
    clipped into the cell's interval; an integer is that value rounded, then clipped to the
    integers of the cell (when the cell holds one), so that the decoded value falls in the drawn
    cell and re-encodes to it. For a real row (t inside its own cell) this is the value itself.
    """
    if c.per_value:
        return (math.ceil(c.low) + np.asarray(k, dtype=np.int64)).astype(np.float64)
    b = c.n_cells
    lo, hi = k / b, (k + 1) / b
    inside = np.clip(t, lo, np.nextafter(hi, 0.0))
    inside = np.where(k == b - 1, np.clip(t, lo, 1.0), inside)
    v = c.unscale(inside)  # integers come back rounded
    if c.type != "integer":
        return v
    first = np.ceil(c.unscale_raw(lo) - 1e-9)
    last_edge = c.unscale_raw(hi)
    last = np.where(k == b - 1, np.floor(last_edge + 1e-9), np.ceil(last_edge - 1e-9) - 1)
    has = first <= last
    return np.where(has, np.clip(v, first, np.maximum(first, last)), v)


def _plain(v: Any) -> Any:
    """A NumPy scalar as the Python value it holds (so messages show ``5``, not ``np.int64(5)``)."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN, pandas.NA (raises), NaT
    except TypeError:
        return True


def _labels(c: Column, codes: np.ndarray) -> np.ndarray:
    cats = np.empty(len(c.categories), dtype=object)
    cats[:] = list(c.categories)
    return cats[codes]


# -- files ----------------------------------------------------------------------
