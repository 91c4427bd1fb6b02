"""Tables' private rows: CSV/Parquet/data-frame readers and writers, chunked streams, and the schema draft.

The public schema and its encoding live in :mod:`mmgen.data.schema` (nothing private there; the
generators, the feature maps and ``fit`` import it); this module reads and writes the rows
themselves. :func:`draft_schema` and :func:`observe_table` look at a table to help a person declare
its schema: the draft keeps no value, and the report of what the table holds is private and read
by no stage. Every name of :mod:`mmgen.data.schema` is also importable from here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import Dataset
from .holdout import holdout_mask
from .schema import (DRAFT_WARNING, BINNED, BINNED_MISSING, CATEGORICAL, DEFAULT_BINS, NA_VALUES, NUMERIC, NUMERIC_MISSING, TYPES,
                     Column, Schema)  # fmt: skip

__all__ = [
    "Column", "Schema", "read_table", "write_table", "draft_schema", "observe_table", "schema_hints", "load_table",
    "load_frames",
    "TableStream", "DRAFT_WARNING", "OBSERVED_WARNING", "LOG_SUGGESTION", "NUMERIC", "NUMERIC_MISSING", "BINNED", "BINNED_MISSING",
    "CATEGORICAL", "DEFAULT_BINS", "NA_VALUES", "TYPES",
]  # fmt: skip

OBSERVED_WARNING = (
    "PRIVATE: values read off the data file by `mmgen schema draft`. A minimum, a maximum or a category seen once is "
    "a fact about one person. No mmgen stage reads this file; do not publish it and do not copy from it into a schema."
)


def read_table(path: str | os.PathLike, kind: str | None = None):
    """Reads a CSV or Parquet file into a data frame (empty CSV fields and ``NA`` are missing).

    Args:
        path: the file.
        kind: ``"csv"`` or ``"parquet"``; default from the suffix.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist.")
    kind = kind or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, keep_default_na=False, na_values=NA_VALUES)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path} as {kind}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except ImportError as exc:  # pyarrow missing
        raise DataError(f"Reading Parquet needs pyarrow: {exc}") from None


def write_table(frame, path: str | os.PathLike) -> Path:
    """Writes a data frame as CSV (or Parquet for a ``.parquet`` suffix), atomically."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_table(
    spec: str,
    schema: Schema | dict | str | os.PathLike,
    *,
    holdout: float | None = None,
    clip: bool = False,
    frame=None,
):
    """Loads a table (``csv:FILE``, ``parquet:FILE`` or a data frame) as an encoded :class:`~mmgen.data.Dataset`.

    Every row is used (a release reads exactly the records given); ``holdout`` sets aside a
    per-record hashed share for evaluation (:func:`~mmgen.data.holdout_mask`), which is then
    not released and whose scores are not private.

    Returns:
        A :class:`~mmgen.data.Dataset` whose records are the encoded rows (shape ``(D,)``, domain
        [0, 1]) and whose ``table`` holds the schema.
    """

    schema = Schema.coerce(schema)
    if frame is None:
        kind, _, arg = spec.partition(":")
        if kind not in ("csv", "parquet") or not arg:
            raise DataError(f"A table spec is csv:FILE or parquet:FILE. Got {spec!r}.")
        frame = read_table(arg, kind)
        name = kind
    else:
        name = "table"
    x, y = schema.encode(frame, clip=clip)
    empty_x, empty_y = x[:0], y[:0]
    x_test, y_test = empty_x, empty_y
    if holdout is not None:
        held = torch.from_numpy(holdout_mask(x.numpy(), y.numpy(), holdout))
        x, y, x_test, y_test = x[~held], y[~held], x[held], y[held]
    table = schema.to_dict()
    table["clip"] = bool(clip)
    return Dataset(
        name=name, x_train=x, y_train=y, x_test=x_test, y_test=y_test, n_classes=schema.n_classes,
        class_names=schema.class_names, table=table,
    )  # fmt: skip


class TableStream:
    """The rows of a CSV or Parquet table, read and encoded chunk by chunk: memory flat in the number of rows.

    Iterating yields encoded ``(x, y)`` batches (see :meth:`Schema.encode`) of at most
    ``chunk_rows`` rows, in file order, with row numbers in error messages counted from the
    file's first row. ``holdout`` drops the rows :func:`~mmgen.data.holdout_mask` holds out
    (decided per row, so the released rows are the same as with :func:`load_table`).
    :func:`mmgen.release` takes a stream directly; the CLI releases tables this way.

    Args:
        spec: ``csv:FILE`` or ``parquet:FILE``.
        schema: the public schema (a :class:`Schema`, its JSON form or a JSON file).
        holdout: fraction of rows held out by their hash, or None.
        clip: clip numbers into their declared bounds instead of refusing them (recorded).
        chunk_rows: rows read at a time.
    """

    def __init__(self, spec: str, schema, *, holdout: float | None = None, clip: bool = False, chunk_rows: int = 65536):
        schema = Schema.coerce(schema)
        kind, _, arg = spec.partition(":")
        if kind not in ("csv", "parquet") or not arg:
            raise DataError(f"A table spec is csv:FILE or parquet:FILE. Got {spec!r}.")
        if not Path(arg).is_file():
            raise DataError(f"{arg} does not exist.")
        if holdout is not None and not (isinstance(holdout, (int, float)) and 0 < holdout < 1):
            raise DataError(f"`holdout` must be a fraction in (0, 1). Got {holdout!r}.")
        self.schema, self.kind, self.path = schema, kind, Path(arg)
        self.holdout, self.clip, self.chunk_rows = holdout, bool(clip), int(chunk_rows)

    @property
    def table(self) -> dict:
        """The schema's JSON form as a release records it (with ``clip``)."""
        return {**self.schema.to_dict(), "clip": self.clip}

    def _frames(self):
        import pandas as pd

        try:
            if self.kind == "parquet":
                import pyarrow.parquet as pq

                for batch in pq.ParquetFile(self.path).iter_batches(batch_size=self.chunk_rows):
                    yield batch.to_pandas()
            else:
                yield from pd.read_csv(self.path, chunksize=self.chunk_rows, keep_default_na=False, na_values=NA_VALUES)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"Cannot read {self.path} as {self.kind}: {first}") from None

    def __iter__(self):

        seen = 0
        for frame in self._frames():
            x, y = self.schema.encode(frame, clip=self.clip, offset=seen)
            seen += len(frame)
            if self.holdout is not None:
                keep = torch.from_numpy(~holdout_mask(x.numpy(), y.numpy(), self.holdout))
                x, y = x[keep], y[keep]
            yield x, y


def load_frames(spec: str, schema, *, holdout: float | None = None, clip: bool = False):
    """The rows of a table as data frames ``(released, held_out)``, split as :func:`load_table` splits them.

    For evaluation: the held-out frame is empty without ``holdout``. Rows are checked against
    the schema first (the same one-line errors as a release).
    """

    schema = Schema.coerce(schema)
    kind, _, arg = spec.partition(":")
    if kind not in ("csv", "parquet") or not arg:
        raise DataError(f"A table spec is csv:FILE or parquet:FILE. Got {spec!r}.")
    frame = read_table(arg, kind)
    x, y = schema.encode(frame, clip=clip)
    if holdout is None:
        return frame.reset_index(drop=True), frame.iloc[:0].reset_index(drop=True)
    held = holdout_mask(x.numpy(), y.numpy(), holdout)
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


def draft_schema(frame, label: str | None = None, max_categories: int = 50) -> dict:
    """A draft schema of a table: the column names, types and gaps, with **every bound and category list empty**.

    Types are read off the table (``numeric``; ``integer`` when every value is whole; ``categorical`` for
    text and for whole numbers with at most 10 distinct values; ``"missing": true`` where there are gaps), but
    no value is: ``low``, ``high`` and ``categories`` are ``null``, and :meth:`Schema.from_dict` refuses the
    schema until each is declared, whatever its ``note`` says. What the table holds (min, max, categories
    seen) is returned by :func:`observe_table`, a private report that no stage reads.

    Example:
        >>> import pandas as pd
        >>> d = draft_schema(pd.DataFrame({"income": [12.5, 987654.32], "region": ["north", "south"]}))
        >>> [(c["name"], c["type"], c.get("low", "-"), c.get("categories", "-")) for c in d["columns"]]
        [('income', 'numeric', None, '-'), ('region', 'categorical', '-', None)]
    """
    cols = []
    for name, seen in observe_table(frame, max_categories)["columns"].items():
        col: dict[str, Any] = {"name": name, "type": seen["type"]}
        if seen["type"] == "categorical":
            col["categories"] = None
        else:
            col.update(low=None, high=None)
            if seen["missing"]:
                col["missing"] = True
        cols.append(col)
    out: dict[str, Any] = {"note": DRAFT_WARNING, "columns": cols}
    if label is not None:
        out["label"] = label
    return out


LOG_SUGGESTION = (
    f"all values are positive and the largest is more than {DEFAULT_BINS} times the median: on a linear axis at "
    f"least half the rows (those up to the median) would share the first of the {DEFAULT_BINS} bins, whatever "
    "bounds are declared around them; a log axis spreads them. Declare \"transform\": \"log\" with a low > 0 "
    "(and a high) from public knowledge, not from this report."
)


def _log_suggestion(v: np.ndarray) -> dict | None:
    """The ``transform: log`` suggestion for a number's present values ``v`` (private), or None.

    The rule: every value > 0 and ``max > DEFAULT_BINS × median``. Then any linear axis
    ``[low, high]`` holding the values (``0 ≤ low ≤ min``, ``high ≥ max``) puts every value up to
    the median into its first of ``DEFAULT_BINS`` equal bins, since that bin reaches
    ``(15·low + high)/16 ≥ max/16 > median`` (for 16 bins).
    """
    if len(v) == 0 or v.min() <= 0:
        return None
    ratio = float(v.max() / np.median(v))
    if ratio <= DEFAULT_BINS:
        return None
    return {"transform": "log", "why": LOG_SUGGESTION, "max_over_median": round(ratio, 1)}


def observe_table(frame, max_categories: int = 50) -> dict:
    """What a table holds, per column — **private**: its type, gaps, min and max or the categories seen.

    For the person preparing a schema to compare with public knowledge; :func:`draft_schema` keeps none of it.
    The report is not a schema (:meth:`Schema.from_dict` refuses it) and carries :data:`OBSERVED_WARNING`.

    A numeric or integer column whose present values are all > 0 and whose largest is more than
    ``DEFAULT_BINS`` (16) times its median also gets ``"suggest": [{"transform": "log", "why": ...,
    "max_over_median": ...}]``: on a linear axis at least half its rows would share the first bin
    (see :data:`LOG_SUGGESTION`). ``why`` holds no value of the data; ``max_over_median`` does.

    Example:
        >>> import pandas as pd
        >>> seen = observe_table(pd.DataFrame({"income": [900.5, 1200.5, 1500.5, 2100.5, 98000.5], "age": [30.5, 41, 52, 63, 74]}))
        >>> [(name, [s["transform"] for s in col.get("suggest", [])]) for name, col in seen["columns"].items()]
        [('income', ['log']), ('age', [])]
    """
    import pandas as pd

    cols: dict[str, dict] = {}
    for name in frame.columns:
        s = frame[name]
        missing = bool(s.isna().any())
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            v = s.dropna().to_numpy(dtype=np.float64)
            whole = bool(len(v)) and bool((v == np.round(v)).all())
            lo, hi = (float(v.min()), float(v.max())) if len(v) else (None, None)
            if whole and len(np.unique(v)) <= 10:
                cols[str(name)] = {"type": "categorical", "missing": missing,
                                   "seen": [int(u) for u in np.unique(v)] + ([None] if missing else [])}  # fmt: skip
                continue
            cols[str(name)] = {"type": "integer" if whole else "numeric", "missing": missing,
                               "min": None if lo is None else (int(lo) if whole else lo),
                               "max": None if hi is None else (int(hi) if whole else hi)}  # fmt: skip
            suggestion = _log_suggestion(v)
            if suggestion is not None:
                cols[str(name)]["suggest"] = [suggestion]
        else:
            seen = sorted({str(v) for v in s.dropna().unique()})
            cols[str(name)] = {"type": "categorical", "missing": missing, "seen": seen[:max_categories]
                               + ([None] if missing else []), "more_than_listed": len(seen) > max_categories}  # fmt: skip
    return {"private": OBSERVED_WARNING, "columns": cols}


def schema_hints(schema) -> list[str]:
    """Hints about a declared schema, read off its declarations alone (no data): one line each.

    A ``numeric`` or ``integer`` column declared with ``low > 0``, ``high ≥ 100 × low`` and no
    ``transform`` gets a hint to consider ``"transform": "log"``: its declared range spans two
    orders of magnitude or more, and on a linear axis the first of its ``n_bins`` equal bins alone
    covers ``[low, low + (high − low)/n_bins)``. Whether its values really spread over that range
    (incomes, wages, prices) is for the data steward to judge from public knowledge.

    Args:
        schema: a :class:`Schema`, its JSON form or a JSON file's path.

    Returns:
        The hints, in column order (an empty list when there is nothing to say).

    Example:
        >>> hints = schema_hints({"columns": [{"name": "income", "type": "numeric", "low": 1, "high": 1e6},
        ...                                   {"name": "age", "type": "integer", "low": 0, "high": 120}]})
        >>> len(hints), hints[0][:44]
        (1, 'income: declared [1, 1e+06] without a transf')
    """
    schema = Schema.coerce(schema)
    hints = []
    for c in schema.columns:
        if not c.is_numeric or c.transform is not None or c.knots is not None or c.low <= 0 or c.high < 100 * c.low:
            continue
        first = c.low + (c.high - c.low) / c.n_bins
        hints.append(
            f"{c.name}: declared [{c.low:g}, {c.high:g}] without a transform, so high is {c.high / c.low:.0f}x low on "
            f"a linear axis whose first of {c.n_bins} bins alone covers [{c.low:g}, {first:.4g}). If its values spread "
            "over orders of magnitude (incomes, wages, prices), declare \"transform\": \"log\"."
        )
    return hints
