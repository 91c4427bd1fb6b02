"""Private discretisation: knots of a number's axis from a noisy histogram, a stage of its own in the budget record.

A number whose public range is honest but wide (an income declared 0 to 10⁶) puts most rows in a
few of its equal bins. When no public axis is good (no tax brackets, no age bands), the owner
can pay for one: :func:`private_knots` spends a declared (ε, δ) on the chosen columns, once,
and returns the schema with ``knots`` at the columns' noisy quantiles (:mod:`mmgen.data.schema`).

**The mechanism** (hierarchical histograms, as in Hay, Rastogi, Miklau & Suciu, VLDB 2010).
Each chosen column's scaled value t (on its declared axis, log if declared) falls in one of
G = ``grid`` equal cells of [0, 1] (G a power of 2), or it is missing. The statistic holds, per
column, the exact counts of the dyadic tree over the cells — level 0 the G cells, level l the
G/2^l unions of 2^l neighbours, level L = log₂ G the root — and the count of missing values. A
present record adds 1 to one node per level (L + 1 counts), a missing one adds 1 to the missing
count, so for K columns one record's vector has L2 norm at most √(K(L + 1)): that is the
sensitivity under add/remove, √(2K(L + 1)) under replace-one (the record leaves its nodes and
enters others). The Gaussian mechanism (:func:`mmgen.privacy.gaussian_mechanism`: OpenDP's
floating-point-safe sampler) adds noise of std σ·Δ, σ from ``(epsilon, delta)``; the stage's
dp-accounting event is that Gaussian, admitted by the budget record before the first record is
read (the one gate, :class:`~mmgen.data.private.PrivateData`) and recorded after, so it
composes with every later release of the same data.

**Post-processing** (no budget): the count below each cell edge is the sum of at most L noisy
tree nodes (its noise std σΔ√L, against σ√K·√i for a flat histogram's running sum); the
counts are made non-decreasing and divided by the noisy root, and knot j of B sits where that
share reaches j/B (linear inside a cell). Knots closer than one cell are merged, so a column
may get fewer than B bins. The noisy counts themselves are not returned.

Example:
    >>> import pandas as pd
    >>> from mmgen.data.schema import Schema
    >>> frame = pd.DataFrame({"income": [1000.0 * (i % 50 + 1) for i in range(2000)], "g": ["a", "b"] * 1000})
    >>> schema = Schema.from_dict({"columns": [{"name": "income", "type": "numeric", "low": 0, "high": 1e6},
    ...     {"name": "g", "type": "categorical", "categories": ["a", "b"]}], "label": "g"})
    >>> new, info = private_knots(frame, schema, ["income"], epsilon=1.0, delta=1e-5, bins=4)
    >>> new.columns[0].knots[0], new.columns[0].knots[-1], new.columns[0].knots[2] < 1e5
    (0.0, 1000000.0, True)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..privacy import dp_event, noise_multiplier_for
from ..privacy.calibration import check_epsilon_delta
from ..privacy.mechanism import check_neighbouring, gaussian_mechanism
from .private import PrivateData
from .schema import BINNED_MISSING, Schema

__all__ = ["private_knots", "tree_counts", "cdf_from_tree", "knots_from_cdf", "DEFAULT_GRID"]

DEFAULT_GRID = 1024  # finest cells per column (a power of 2): quantiles to 1/1024 of the declared axis


def _levels(grid: int) -> int:
    return int(grid).bit_length() - 1  # grid = 2^L


def tree_counts(cells: torch.Tensor, grid: int) -> torch.Tensor:
    """The dyadic tree of exact cell counts: levels 0 (the ``grid`` cells) to L (the root), concatenated.

    ``cells`` holds (N,) cell indices in ``0..grid`` (``grid``: missing, counted in one last entry).
    Each present record adds 1 to one node per level (L + 1 counts), a missing one 1 to the last entry.
    """
    base = torch.bincount(cells, minlength=grid + 1)
    levels, level = [], base[:grid]
    while True:
        levels.append(level)
        if len(level) == 1:
            break
        level = level.reshape(-1, 2).sum(dim=1)
    return torch.cat(levels + [base[grid:]])


def cdf_from_tree(tree: np.ndarray, grid: int) -> np.ndarray:
    """Post-processing: noisy counts below each cell edge 0..grid, each a sum of at most L dyadic nodes, and the total.

    Returns ``(grid + 1,)`` counts ``F(0) = 0, F(1), ..., F(grid)``; ``F(grid)`` is the root.
    """
    levels, pos = [], 0
    size = grid
    while size >= 1:
        levels.append(tree[pos : pos + size])
        pos += size
        size //= 2
    out = np.zeros(grid + 1)
    for i in range(1, grid + 1):
        total, start = 0.0, 0
        for lev in range(len(levels) - 1, -1, -1):  # largest blocks first: [start, start + 2^lev) inside [0, i)
            width = 1 << lev
            if start + width <= i:
                total += levels[lev][start >> lev]
                start += width
        out[i] = total
    return out


def knots_from_cdf(cdf: np.ndarray, bins: int) -> np.ndarray:
    """Post-processing: scaled knots ``0 = t_0 < ... < t_b = 1`` (b ≤ ``bins``) at the quantiles of a noisy CDF.

    Args:
        cdf: (G + 1,) noisy counts below the edges of G equal cells of [0, 1] (``F(0) = 0``).
        bins: the bins wanted.

    Returns:
        The knots on [0, 1], strictly increasing, at least one cell apart; equal bins when the noisy
        total is not positive.

    Example:
        >>> knots_from_cdf(np.array([0.0, 0.0, 4.0, 4.0, 8.0]), 2).tolist()
        [0.0, 0.5, 1.0]
    """
    g = len(cdf) - 1
    f = np.maximum.accumulate(np.asarray(cdf, dtype=np.float64))  # monotone (post-processing)
    total = f[-1]
    if not total > 0:
        return np.linspace(0.0, 1.0, bins + 1)
    f = np.clip(f / total, 0.0, 1.0)
    inner = []
    for j in range(1, bins):
        q = j / bins
        i = int(np.clip(np.searchsorted(f, q, side="left"), 1, g))  # first edge with F ≥ q: q lies in cell i − 1
        lo, hi = f[i - 1], f[i]
        frac = 1.0 if hi <= lo else (q - lo) / (hi - lo)
        inner.append((i - 1 + float(np.clip(frac, 0.0, 1.0))) / g)
    knots, gap = [0.0], 1.0 / g
    for t in inner:
        if t >= knots[-1] + gap and t <= 1.0 - gap:
            knots.append(t)
    return np.asarray(knots + [1.0])


def private_knots(
    data: Any,
    schema: Schema | dict,
    columns: Sequence[str],
    *,
    epsilon: float,
    delta: float,
    bins: int = 16,
    grid: int = DEFAULT_GRID,
    neighbouring: str = "add-remove",
    record=None,
    output: str | None = None,
) -> tuple[Schema, dict]:
    """Knots for ``columns`` at their noisy quantiles, for (ε, δ) recorded as a stage of its own.

    Args:
        data: the private table: a pandas data frame, or a :class:`~mmgen.data.Dataset` /
            :class:`~mmgen.data.tables.TableStream` that carries ``schema`` (read once, in chunks).
        schema: the declared public schema; the chosen columns keep their bounds, and their declared
            axis (linear or log) is the one the histogram's cells split evenly.
        columns: numeric or integer feature columns without knots.
        epsilon, delta: the stage's own budget (it composes with later releases in the budget record).
        bins: knots per column (at most ``bins`` intervals; fewer where quantiles fall in one cell).
        grid: cells of each column's noisy histogram.
        neighbouring: ``"add-remove"`` or ``"replace-one"`` (the budget record's relation).
        record: the data set's :class:`~mmgen.privacy.BudgetRecord` (checked before reading, added to after).
        output: the schema file this stage writes, for the record's entry.

    Returns:
        ``(schema, info)``: the schema with ``knots`` on the chosen columns (their declared axis kept
        inside the knot intervals, their ``bins`` and ``cells`` replaced), and the stage's public description (ε, δ, σ, Δ, columns, grid, bins per column).

    Raises:
        DataError: unknown, categorical, label or already-knotted columns; bad ``bins`` or ``grid``.
        PrivacyError: bad (ε, δ) or relation, or a budget record that refuses the stage.
    """
    schema = Schema.coerce(schema)
    check_epsilon_delta(epsilon, delta)
    check_neighbouring(neighbouring)
    if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= 1000:
        raise DataError(f"`bins` must be an integer in 2..1000. Got {bins!r}.")
    if isinstance(grid, bool) or not isinstance(grid, int) or not bins <= grid <= 1 << 16 or grid & (grid - 1):
        raise DataError(f"`grid` must be a power of 2 in bins..65536. Got {grid!r}.")
    names = [c.name for c in schema.features]
    columns = list(dict.fromkeys(columns))
    if not columns:
        raise DataError("Name at least one numeric column to discretise.")
    for name in columns:
        if name not in names:
            where = "the label" if name == schema.label else "not a feature column of the schema"
            raise DataError(f"{name!r} is {where} ({', '.join(names)}).")
        c = schema.features[names.index(name)]
        if not c.is_numeric:
            raise DataError(f"{name!r} is categorical: its categories are its cells; only numbers get knots.")
        if c.knots is not None:
            raise DataError(f"{name!r} has knots already.")
    if type(data).__name__ == "DataFrame":
        from .tables import load_table

        data = load_table("table", schema, frame=data)
    gate = PrivateData(data, record=record)  # the one gate to the records
    if gate.table is None or Schema.from_dict(gate.table) != schema:
        raise DataError("The data must carry the schema passed (load it with that schema).")
    k, levels = len(columns), _levels(grid) + 1
    sens = math.sqrt(k * levels) if neighbouring == "add-remove" else math.sqrt(2.0 * k * levels)
    sigma = noise_multiplier_for(epsilon, delta)
    event = dp_event([sigma])
    gate.admit(event, delta=delta, neighbouring=neighbouring)

    starts, pos = {}, 0
    for c, (kind, size, _) in zip(schema.features, schema.layout()):
        starts[c.name] = (pos, kind == BINNED_MISSING)
        pos += size
    width = 2 * grid  # tree nodes (2·grid − 1) and the missing count
    counts = torch.zeros(k, width, dtype=torch.int64)
    for x, _ in gate.batches():
        x = x.reshape(len(x), -1).to(torch.float64)
        for j, name in enumerate(columns):
            at, may_miss = starts[name]
            cell = (x[:, at].clamp(0.0, 1.0) * grid).long().clamp(max=grid - 1)
            if may_miss:
                cell = torch.where(x[:, at + 1] > 0.5, grid, cell)
            counts[j] += tree_counts(cell, grid)
    noisy = gaussian_mechanism(counts.to(torch.float64).reshape(-1), noise_multiplier=sigma, sensitivity=sens)
    noisy = noisy.reshape(k, width).numpy()

    new_cols, per_column = list(schema.columns), {}
    for j, name in enumerate(columns):
        c = schema.features[names.index(name)]
        t = knots_from_cdf(cdf_from_tree(noisy[j, : width - 1], grid), bins)
        values = np.asarray(c.unscale_raw(t), dtype=np.float64)
        values[0], values[-1] = c.low, c.high
        values = np.unique(values)  # float rounding could merge two knots; still from low to high
        note = (f"knots: private discretisation (noisy {grid}-cell histogram on the declared "
                f"{'log ' if c.transform == 'log' else ''}axis, epsilon={epsilon:g}, delta={delta:g}, {neighbouring})")  # fmt: skip
        description = f"{c.description}; {note}" if c.description else note
        new = dataclasses.replace(c, knots=tuple(float(v) for v in values), bins=None, cells=None, description=description)
        new_cols[[col.name for col in schema.columns].index(name)] = new
        per_column[name] = len(values) - 1
    out = dataclasses.replace(schema, columns=tuple(new_cols))
    Schema.from_dict(out.to_dict())  # the result must be a valid schema
    info = {"stage": "discretise", "epsilon": float(epsilon), "delta": float(delta), "neighbouring": neighbouring,
            "noise_multiplier": sigma, "sensitivity": sens, "columns": columns, "grid": grid, "bins": per_column}
    gate.record_stage(stage="discretise", event=event, epsilon=float(epsilon), delta=float(delta), output=output,
                      neighbouring=neighbouring, noise_multipliers=[sigma],
                      details={"columns": columns, "grid": grid, "bins": per_column})  # fmt: skip
    return out, info
