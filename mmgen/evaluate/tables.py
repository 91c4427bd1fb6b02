"""Fidelity, utility and copying metrics of a synthetic table against the real one.

Every function takes pandas data frames and a public :class:`~mmgen.data.tables.Schema`,
checks each frame with :meth:`Schema.encode` (a bad frame gives mmgen's one-line
:class:`~mmgen.errors.DataError`, prefixed by the argument's name) and returns a plain
dict. Nothing is tuned on the data: bins, scales and one-hot blocks come from the
schema's declared domain.

* :func:`marginal_tvd`: total-variation distance ½ Σ_c |p_c − q_c| between the real and
  synthetic 1-way marginals of every column, the 2-way marginals of every pair of columns
  and the 3-way marginals of every triple (or of a fixed public subset of triples,
  :func:`table_triples`), on the cells of :meth:`Schema.codes` (numbers binned on their
  declared bounds, missing values a cell of their own).
* :func:`numeric_fidelity`: relative errors of the synthetic median and inter-quartile
  range of every number.
* :func:`correlation_difference`: mean and largest |C_real − C_synth| over the
  off-diagonal entries of the Pearson correlation matrices of the encoded columns.
* :func:`ml_efficacy`: "train on synthetic, test on real" (TSTR) accuracy and ROC-AUC of
  a logistic regression and a gradient-boosted tree ensemble, beside the same
  classifiers trained on the real training rows (Xu et al., CTGAN, NeurIPS 2019;
  Jordon et al., "Synthetic data — what, why and how?", 2022).
* :func:`distance_to_closest_record`: distances of synthetic rows to their closest
  training and hold-out rows, and the share of synthetic rows closer to the training
  set (the DCR / "closer to training than to hold-out" test of Platzer & Reutterer 2021).
* :func:`plot_marginals`: real against synthetic 1-way marginals, one panel per column.
* :func:`evaluate_table`: all of the above in one report.

The classifiers run with one BLAS and one OpenMP thread (``threadpoolctl``): on a shared
2-core machine the boosting's OpenMP threads made the same fit several times slower.

Like every metric in :mod:`mmgen.evaluate`, these read real rows in the clear: they are
reporting, not release, and their numbers are not differentially private.
"""

from __future__ import annotations

import math
import os
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from ..data.schema import BINNED_MISSING, CATEGORICAL, Schema
from ..errors import DataError
from ..files import check_picture

__all__ = [
    "marginal_tvd", "table_triples", "numeric_fidelity", "correlation_difference", "ml_efficacy",
    "distance_to_closest_record", "plot_marginals", "evaluate_table", "TABLE_CLASSIFIERS",
]  # fmt: skip

TABLE_CLASSIFIERS = ("logistic", "boosting")


# -- checks and encodings ---------------------------------------------------------

def _check(frame, name: str, schema: Schema) -> tuple[torch.Tensor, torch.Tensor]:
    """Encodes ``frame`` with ``schema`` (the validation), naming the argument in any error."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"`{name}` must be a pandas DataFrame. Got {type(frame).__name__}.")
    if len(frame) == 0:
        raise DataError(f"`{name}` has no rows.")
    try:
        return schema.encode(frame)
    except DataError as exc:
        raise DataError(f"`{name}`: {exc}") from None


def _encoded(x: torch.Tensor, y: torch.Tensor, schema: Schema, category_scale: float = 1.0) -> np.ndarray:
    """The encoded rows with the label's one-hot block appended; one-hot blocks times ``category_scale``.

    Columns: per feature column of the schema, in order, the scaled number in [0, 1] (0 when
    missing) and, when it may be missing, its missingness 0/1; or the one-hot block of its
    declared categories. Then the label's one-hot block (when the schema has a label).
    """
    x = x.numpy().astype(np.float64, copy=True)
    pos, keep = 0, []
    for kind, size, _ in schema.layout():
        if kind == CATEGORICAL:
            x[:, pos : pos + size] *= category_scale
            keep.extend(range(pos, pos + size))
        else:  # a number: its scaled value (and missingness), not its bin one-hot
            keep.extend(range(pos, pos + (2 if kind == BINNED_MISSING else 1)))
        pos += size
    x = x[:, keep]
    if schema.label is None:
        return x
    onehot = np.zeros((len(y), schema.n_classes))
    onehot[np.arange(len(y)), y.numpy()] = category_scale
    return np.concatenate([x, onehot], axis=1)


def _encoded_names(schema: Schema) -> list[str]:
    """Names of the columns of :func:`_encoded`: ``"age"``, ``"age=missing"``, ``"region=north"``."""
    names = []
    for c, (kind, size, _) in zip(schema.features, schema.layout()):
        if kind == CATEGORICAL:
            names.extend(f"{c.name}={n}" for n in schema.cell_names(c))
        else:
            names.append(c.name)
            if kind == BINNED_MISSING:
                names.append(f"{c.name}=(missing)")
    if schema.label is not None:
        names.extend(f"{schema.label}={n}" for n in schema.cell_names(schema.label_column))
    return names


def _marginal(codes: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(codes, minlength=size) / len(codes)


def _tvd(real_cells: np.ndarray, synth_cells: np.ndarray, size: int) -> float:
    """½ Σ_c |p_c − q_c| of two arrays of cell numbers in 0..size−1 (shares of rows per cell).

    Counts by ``np.bincount`` over the ``size`` cells; when there are many more cells than
    rows (a triple of wide categorical columns), only the cells that occur are counted.
    """
    n_r, n_s = len(real_cells), len(synth_cells)
    if size > 4 * (n_r + n_s):  # sparse: number the occurring cells 0..k−1 first
        cells, inverse = np.unique(np.concatenate([real_cells, synth_cells]), return_inverse=True)
        size, real_cells, synth_cells = len(cells), inverse[:n_r], inverse[n_r:]
    p = np.bincount(real_cells, minlength=size) / n_r
    q = np.bincount(synth_cells, minlength=size) / n_s
    return 0.5 * float(np.abs(p - q).sum())


def _unrank_triple(rank: int) -> tuple[int, int, int]:
    """The triple i < j < k of colexicographic rank ``rank``: rank = C(k, 3) + C(j, 2) + C(i, 1)."""
    out = []
    for size in (3, 2, 1):
        top = size - 1
        while math.comb(top + 1, size) <= rank:
            top += 1
        rank -= math.comb(top, size)
        out.append(top)
    k, j, i = out
    return i, j, k


def table_triples(n_columns: int, max_triples: int = 2000, seed: int = 0) -> list[tuple[int, int, int]]:
    """The triples of columns (indices i < j < k, in lexicographic order) that :func:`marginal_tvd` compares.

    All C(n, 3) triples when there are at most ``max_triples`` of them; otherwise
    ``max_triples`` of them drawn uniformly without replacement by
    ``numpy.random.default_rng(seed)``. The choice depends on the number of columns,
    ``max_triples`` and ``seed`` only, never on the data, so every table with the same schema
    is scored on the same triples.

    Example:
        >>> table_triples(4)
        [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
        >>> len(table_triples(25)), table_triples(25) == table_triples(25)
        (2000, True)
    """
    if isinstance(max_triples, bool) or not isinstance(max_triples, int) or max_triples < 1:
        raise DataError(f"`max_triples` must be a positive integer. Got {max_triples!r}.")
    total = math.comb(n_columns, 3)
    if total <= max_triples:
        return list(combinations(range(n_columns), 3))
    ranks = np.random.default_rng(seed).choice(total, size=max_triples, replace=False)
    return sorted(_unrank_triple(int(r)) for r in ranks)


# -- 1. marginals ---------------------------------------------------------------------
def marginal_tvd(real, synth, schema, *, max_triples: int = 2000, seed: int = 0) -> dict:
    """Total-variation distance between real and synthetic 1-way, 2-way and 3-way marginals.

    A column's 1-way marginal is the share of rows in each of its cells (``n_codes`` of
    them, :meth:`Schema.codes`): its declared categories, or ``n_bins`` equal-width bins
    of its (log-)scaled declared range plus a "missing" cell when it may be missing. A
    pair's 2-way marginal is the share of rows in each pair of cells, a triple's 3-way
    marginal the share in each triple of cells. For each marginal TVD = ½ Σ_c |p_c − q_c|
    ∈ [0, 1] (p real, q synthetic; 0: identical shares, 1: no cell in common). Every column
    counts, the label included.

    The 3-way marginals show what pairs cannot: a column that depends on two others jointly
    (c = a XOR b has independent pairs) loses that dependence in a table that keeps every
    pair. Every triple is compared when there are at most ``max_triples`` (C(n, 3) for n
    columns); with more columns, a fixed public subset of ``max_triples`` triples drawn by
    :func:`table_triples` with ``seed`` — chosen from the number of columns alone, never from
    the data — and ``three_way_sampled`` is true.

    Args:
        real: the real table (a data frame with the schema's columns).
        synth: the synthetic table.
        schema: the public :class:`Schema` (or its JSON dict).
        max_triples: compare at most this many triples of columns.
        seed: seed of the subset of triples (used only when there are more than ``max_triples``).

    Returns:
        ``{"one_way_mean", "one_way_max", "two_way_mean", "two_way_max", "three_way_mean",
        "three_way_max", "three_way_triples", "three_way_sampled", "one_way": {column: tvd},
        "two_way": {"a|b": tvd}, "three_way": {"a|b|c": tvd}}`` — means and maxima over the
        columns, the pairs and the triples compared (in schema order; ``three_way_triples``
        counts the triples compared; a schema with fewer than two or three columns has no
        pairs or triples and reports 0 for them).

    Raises:
        DataError: a frame that does not fit the schema (named), an empty frame, ``max_triples`` < 1.

    Example:
        >>> import pandas as pd
        >>> s = Schema.from_dict({"columns": [
        ...     {"name": "a", "type": "categorical", "categories": ["x", "y"]},
        ...     {"name": "b", "type": "categorical", "categories": ["u", "v"]}]})
        >>> real = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": ["u", "v", "u", "v"]})
        >>> synth = pd.DataFrame({"a": ["x", "x", "x", "y"], "b": ["u", "u", "v", "v"]})
        >>> r = marginal_tvd(real, synth, s)
        >>> r["one_way"], r["two_way"], r["three_way_triples"]
        ({'a': 0.25, 'b': 0.0}, {'a|b': 0.25}, 0)
    """
    schema = Schema.coerce(schema)
    _check(real, "real", schema)
    _check(synth, "synth", schema)
    cols = schema.columns
    triples = table_triples(len(cols), max_triples, seed)  # checks max_triples
    cr, cs = schema.codes(real).T.copy(), schema.codes(synth).T.copy()  # (n_columns, N): each column contiguous
    sizes = [c.n_codes for c in cols]
    one = {c.name: _tvd(cr[j], cs[j], sizes[j]) for j, c in enumerate(cols)}
    two = {}
    for i, j in combinations(range(len(cols)), 2):  # cell (a, b) -> a * n_b + b
        two[f"{cols[i].name}|{cols[j].name}"] = _tvd(cr[i] * sizes[j] + cr[j], cs[i] * sizes[j] + cs[j], sizes[i] * sizes[j])
    three = {}
    pair, pr, ps = None, cr[0], cs[0]
    for i, j, k in triples:  # sorted: the pair cells a * n_j + b are computed once per (i, j)
        if pair != (i, j):
            pair, pr, ps = (i, j), cr[i] * sizes[j] + cr[j], cs[i] * sizes[j] + cs[j]
        size = sizes[i] * sizes[j] * sizes[k]  # cell (a, b, c) -> (a * n_j + b) * n_k + c
        three[f"{cols[i].name}|{cols[j].name}|{cols[k].name}"] = _tvd(pr * sizes[k] + cr[k], ps * sizes[k] + cs[k], size)
    ones, twos, threes = list(one.values()), list(two.values()), list(three.values())
    return {
        "one_way_mean": float(np.mean(ones)), "one_way_max": float(np.max(ones)),
        "two_way_mean": float(np.mean(twos)) if twos else 0.0, "two_way_max": float(np.max(twos)) if twos else 0.0,
        "three_way_mean": float(np.mean(threes)) if threes else 0.0,
        "three_way_max": float(np.max(threes)) if threes else 0.0,
        "three_way_triples": len(threes), "three_way_sampled": len(threes) < math.comb(len(cols), 3),
        "one_way": one, "two_way": two, "three_way": three,
    }  # fmt: skip


# -- 1b. numbers: medians and spreads -------------------------------------------------
def _quartiles(frame, column) -> tuple[float, float, float] | None:
    """(Q1, median, Q3) of a column's present values, or None when every value is missing.

    A numeric column: ``numpy.percentile`` (linear interpolation). An integer column: the
    quartiles of its values spread uniformly over ``[v − ½, v + ½)`` (the continuous version
    of a discrete law), so that two samples of the same law do not differ by whole steps.
    """
    import pandas as pd

    v = pd.to_numeric(frame[column.name], errors="coerce").to_numpy(dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return None
    if column.type != "integer":
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        return float(q1), float(med), float(q3)
    values, counts = np.unique(v, return_counts=True)
    below = np.concatenate([[0], np.cumsum(counts)[:-1]])  # rows below each value
    out = []
    for p in (0.25, 0.5, 0.75):
        i = min(int(np.searchsorted(below + counts, p * len(v), side="right")), len(values) - 1)
        out.append(float(values[i] - 0.5 + (p * len(v) - below[i]) / counts[i]))
    return out[0], out[1], out[2]


def numeric_fidelity(real, synth, schema) -> dict:
    """How far the synthetic median and inter-quartile range of every number are from the real ones.

    For each ``numeric`` or ``integer`` column (a label is categorical, so never one of
    them), over its present (non-missing) values of each table: the median and the
    inter-quartile range IQR = Q3 − Q1 (``numpy.percentile``, linear interpolation; for an
    integer column, of its values spread uniformly over ``[v − ½, v + ½)``), and

    * ``median_rel_err`` = |med_synth − med_real| / scale, where scale is |med_real|
      (``median_scale``: ``"median"``); when |med_real| is below 1 % of the declared range
      high − low (zero, or so near it that relative errors would explode), the real IQR
      (``"iqr"``); when that is 0 too, the declared range (``"range"``);
    * ``iqr_rel_err`` = |IQR_synth − IQR_real| / IQR_real (``iqr_scale``: ``"iqr"``), or
      divided by the declared range when the real IQR is 0 (``"range"``).

    A column whose values are all missing in one table and not the other gets infinite
    errors (its statistics ``None``); all missing in both gives 0.

    Args:
        real: the real table (a data frame with the schema's columns).
        synth: the synthetic table.
        schema: the public :class:`Schema` (or its JSON dict).

    Returns:
        ``{"columns": {name: {"real_median", "synth_median", "real_iqr", "synth_iqr",
        "median_rel_err", "iqr_rel_err", "median_scale", "iqr_scale"}}, "max_median_rel_err",
        "max_iqr_rel_err", "within_10pct"}`` — maxima over the columns; ``within_10pct``: every
        column within 10 % (≤ 0.1) on both errors. A schema without numbers gives ``{}``, maxima
        0 and true.

    Raises:
        DataError: a frame that does not fit the schema (named), an empty frame.

    Example:
        >>> import pandas as pd
        >>> s = Schema.from_dict({"columns": [{"name": "x", "type": "numeric", "low": 0, "high": 100}]})
        >>> r = numeric_fidelity(pd.DataFrame({"x": [10.0, 20, 30, 40, 50]}), pd.DataFrame({"x": [11.0, 22, 33, 44, 55]}), s)
        >>> r["columns"]["x"]["real_median"], r["columns"]["x"]["real_iqr"], r["max_median_rel_err"], r["max_iqr_rel_err"]
        (30.0, 20.0, 0.1, 0.1)
    """
    schema = Schema.coerce(schema)
    _check(real, "real", schema)
    _check(synth, "synth", schema)
    cols = {}
    for c in schema.columns:
        if not c.is_numeric:
            continue
        width = c.high - c.low
        qr, qs = _quartiles(real, c), _quartiles(synth, c)
        row: dict = {
            "real_median": None if qr is None else qr[1], "synth_median": None if qs is None else qs[1],
            "real_iqr": None if qr is None else qr[2] - qr[0], "synth_iqr": None if qs is None else qs[2] - qs[0],
        }  # fmt: skip
        if qr is None or qs is None:
            err = 0.0 if qr is None and qs is None else math.inf
            row.update(median_rel_err=err, iqr_rel_err=err, median_scale=None, iqr_scale=None)
        else:
            med, iqr = abs(row["real_median"]), row["real_iqr"]
            if med >= 0.01 * width:
                scale, row["median_scale"] = med, "median"
            elif iqr > 0:
                scale, row["median_scale"] = iqr, "iqr"
            else:
                scale, row["median_scale"] = width, "range"
            row["median_rel_err"] = abs(row["synth_median"] - row["real_median"]) / scale
            row["iqr_scale"] = "iqr" if iqr > 0 else "range"
            row["iqr_rel_err"] = abs(row["synth_iqr"] - iqr) / (iqr if iqr > 0 else width)
        cols[c.name] = row
    max_med = max((r["median_rel_err"] for r in cols.values()), default=0.0)
    max_iqr = max((r["iqr_rel_err"] for r in cols.values()), default=0.0)
    return {
        "columns": cols, "max_median_rel_err": float(max_med), "max_iqr_rel_err": float(max_iqr),
        "within_10pct": bool(max_med <= 0.1 and max_iqr <= 0.1),
    }  # fmt: skip


# -- 2. correlations ------------------------------------------------------------------
def _correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlation matrix of the columns of x; a constant column correlates 0 with every other."""
    centred = x - x.mean(axis=0)
    std = np.sqrt((centred**2).mean(axis=0))
    constant = std < 1e-12
    z = np.where(constant, 0.0, centred / np.where(constant, 1.0, std))
    corr = z.T @ z / len(x)  # (D, D)
    return np.clip(corr, -1.0, 1.0)


def correlation_difference(real, synth, schema) -> dict:
    """How far the synthetic table's pairwise correlations are from the real table's.

    Both tables are encoded as by :meth:`Schema.encode`, with the label's one-hot block
    appended when the schema has a label: one column per number (scaled to [0, 1] by its
    declared bounds, 0 when missing), one 0/1 missingness indicator per number that may be
    missing, one 0/1 column per declared category (label included). For each table the
    D × D Pearson correlation matrix C of these D columns is computed (population
    moments); a column that is constant in a table has correlation 0 with every other
    column of that table. The result compares the D(D − 1)/2 entries above the diagonal:
    ``mean_abs_difference`` = mean |C_real − C_synth|, ``max_abs_difference`` = the
    largest, and ``max_pair`` names that pair ("a|b", encoded-column names such as
    ``wage``, ``wage=(missing)``, ``region=south``). Within a one-hot block the
    correlations are negative by construction and count like any other pair.

    Args:
        real: the real table (a data frame with the schema's columns).
        synth: the synthetic table.
        schema: the public :class:`Schema` (or its JSON dict).

    Returns:
        ``{"mean_abs_difference", "max_abs_difference", "max_pair", "n_encoded_columns"}``;
        the differences lie in [0, 2] (0: the same correlations).

    Raises:
        DataError: a frame that does not fit the schema (named), or an empty frame.
    """
    schema = Schema.coerce(schema)
    xr = _encoded(*_check(real, "real", schema), schema)
    xs = _encoded(*_check(synth, "synth", schema), schema)
    names = _encoded_names(schema)
    d = xr.shape[1]
    if d < 2:
        return {"mean_abs_difference": 0.0, "max_abs_difference": 0.0, "max_pair": None, "n_encoded_columns": d}
    diff = np.abs(_correlation(xr) - _correlation(xs))
    iu, ju = np.triu_indices(d, k=1)
    upper = diff[iu, ju]
    k = int(np.argmax(upper))
    return {
        "mean_abs_difference": float(upper.mean()), "max_abs_difference": float(upper[k]),
        "max_pair": f"{names[iu[k]]}|{names[ju[k]]}", "n_encoded_columns": int(d),
    }  # fmt: skip


# -- 3. machine-learning efficacy -----------------------------------------------------
def _target_schema(schema: Schema, target: str | None) -> Schema:
    """The schema with ``target`` as its label (so that ``encode`` gives the other columns as features)."""
    target = schema.label if target is None else target
    if target is None:
        raise DataError("The schema has no label: pass `target`, the categorical column to predict.")
    if target not in schema.names:
        raise DataError(f"`target` {target!r} is not a column of the schema ({', '.join(schema.names)}).")
    if target == schema.label:
        return schema
    column = schema.columns[schema.names.index(target)]
    if column.type != "categorical":
        raise DataError(f"`target` {target!r} must be a categorical column; it is {column.type}.")
    spec = schema.to_dict()
    spec["label"] = target
    return Schema.from_dict(spec)


def _make(name: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if name == "logistic":
        return LogisticRegression(max_iter=5000, C=1.0)
    return HistGradientBoostingClassifier(random_state=seed)


def _probabilities(name: str, seed: int, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, n_classes: int) -> np.ndarray:
    """(M, n_classes) class probabilities on x_test of a classifier fitted on (x, y); 0 for classes absent from y."""
    from threadpoolctl import threadpool_limits

    out = np.zeros((len(x_test), n_classes))
    present = np.unique(y)
    if len(present) == 1:  # nothing to learn: the constant classifier
        out[:, present[0]] = 1.0
        return out
    clf = _make(name, seed)
    with warnings.catch_warnings(), threadpool_limits(limits=1):  # BLAS and OpenMP: see the module docstring
        warnings.simplefilter("ignore")  # convergence warnings: the iteration cap is part of the protocol
        clf.fit(x, y)
        out[:, clf.classes_] = clf.predict_proba(x_test)
    return out


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float | None:
    """Binary: AUC of class 1 (the second declared category); else one-vs-rest macro over the classes in y."""
    from sklearn.metrics import roc_auc_score

    present = np.unique(y)
    if len(present) < 2:
        return None
    if proba.shape[1] == 2:
        return float(roc_auc_score(y == 1, proba[:, 1]))
    return float(np.mean([roc_auc_score(y == k, proba[:, k]) for k in present]))


def ml_efficacy(train_real, test_real, synth, schema, target: str | None = None, seed: int = 0) -> dict:
    """Accuracy and ROC-AUC on real test rows of classifiers trained on synthetic rows, and on real ones.

    The target is ``schema.label`` unless ``target`` names another categorical column.
    The features are all other columns, encoded by the schema alone (numbers scaled to
    [0, 1] by their declared bounds and 0 when missing, a 0/1 missingness indicator per
    number that may be missing, one-hot categories; no statistic of the data). Two
    scikit-learn classifiers are fitted on the synthetic table and, separately, on the
    real training rows, and each is scored once on the real test rows:

    * ``logistic``: ``LogisticRegression(max_iter=5000, C=1)`` (inputs are already in [0, 1]);
    * ``boosting``: ``HistGradientBoostingClassifier(random_state=seed)`` (defaults; with
      more than 10,000 training rows its early stopping holds out 10 % of *those* rows).

    ``accuracy`` is the share of test rows whose most probable class is right. ``roc_auc``
    is, for a two-category target, the ROC-AUC of the second declared category (the
    positive class); otherwise the one-vs-rest ROC-AUC averaged over the classes present
    in the test rows (macro). A class that a training table lacks gets probability 0; a
    training table with a single class gives the constant classifier (probability 1 for
    that class, ROC-AUC 0.5). ``roc_auc`` is ``None`` when the test rows hold one class.

    Args:
        train_real: the real training rows (the baseline's training set).
        test_real: the real test rows (used only to score).
        synth: the synthetic table.
        schema: the public :class:`Schema` (or its JSON dict).
        target: the column to predict (categorical); default ``schema.label``.
        seed: seed of the boosting's randomness.

    Returns:
        ``{"synthetic": {"logistic": {"accuracy", "roc_auc"}, "boosting": {...}}, "real": {...},
        "target": name}``.

    Raises:
        DataError: no target, a target that is not a categorical column, a frame that does
            not fit the schema (named).
    """
    schema = _target_schema(Schema.coerce(schema), target)
    tables = {}
    for name, frame in (("synth", synth), ("train_real", train_real), ("test_real", test_real)):
        x, y = _check(frame, name, schema)
        tables[name] = (x.numpy(), y.numpy())
    x_test, y_test = tables["test_real"]
    out: dict = {}
    for side, key in (("synthetic", "synth"), ("real", "train_real")):
        x, y = tables[key]
        out[side] = {}
        for clf in TABLE_CLASSIFIERS:
            proba = _probabilities(clf, seed, x, y, x_test, schema.n_classes)
            out[side][clf] = {"accuracy": float((proba.argmax(axis=1) == y_test).mean()), "roc_auc": _roc_auc(y_test, proba)}
    out["target"] = schema.label
    return out


# -- 4. distance to the closest record ------------------------------------------------
def _nearest(a: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Euclidean distance from each row of a to its closest row of b (exact at the chosen neighbour)."""
    bt = torch.from_numpy(b)
    out = np.empty(len(a))
    for start in range(0, len(a), chunk):
        at = torch.from_numpy(a[start : start + chunk])
        idx = torch.cdist(at, bt).argmin(dim=1)  # (chunk, len(b)) by matrix products; the neighbour only
        out[start : start + len(at)] = torch.linalg.vector_norm(at - bt[idx], dim=1).numpy()  # exact distance
    return out


def distance_to_closest_record(synth, train_real, holdout_real, schema, max_rows: int = 20000, seed: int = 0) -> dict:
    """Distances from synthetic rows to the closest real training and hold-out rows (a copying check).

    Rows are encoded as by :meth:`Schema.encode`, label appended: numbers scaled to [0, 1]
    by their declared bounds (0 when missing), a 0/1 missingness indicator per number that
    may be missing, and one-hot categories scaled by 1/√2, so that changing one category
    moves a row by exactly 1, as much as a number crossing its whole declared range. For
    each synthetic row, DCR_train and DCR_holdout are its Euclidean distances to the
    closest training row and the closest hold-out row.

    How to read it: the generator saw the training rows and not the hold-out rows, which
    come from the same population. A generator that does not memorise makes rows no closer
    to the one set than to the other, so with equal-sized sets about half of the synthetic
    rows are strictly closer to the training set (``expected_share`` = 0.5; exact ties,
    ``share_tied``, count for neither side, so the no-copying expectation of
    ``share_closer_to_train`` is really (1 − ``share_tied``)/2). A share far above that, or
    training distances far below the hold-out ones (a 5th percentile of 0 means at least
    5 % of the synthetic rows are exact copies of training rows) suggests copying. To keep
    the 0.5 reading, the larger of the two real sets is subsampled (uniformly, seeded) to
    the size of the smaller one; the synthetic rows are subsampled to ``max_rows``.

    Args:
        synth: the synthetic table.
        train_real: the real rows the generator was trained on.
        holdout_real: real rows it never saw, from the same population.
        schema: the public :class:`Schema` (or its JSON dict).
        max_rows: at most this many synthetic rows are used (a uniform subsample).
        seed: seed of the subsamples.

    Returns:
        ``{"train_median", "train_p5", "holdout_median", "holdout_p5", "share_closer_to_train",
        "share_tied", "expected_share", "n_synthetic", "n_reference"}`` (``n_reference``: rows
        used from each real set; the percentiles interpolate linearly).

    Raises:
        DataError: a frame that does not fit the schema (named), an empty frame, ``max_rows`` < 1.
    """
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise DataError(f"`max_rows` must be a positive integer. Got {max_rows!r}.")
    schema = Schema.coerce(schema)
    scale = 1.0 / math.sqrt(2.0)
    xs = _encoded(*_check(synth, "synth", schema), schema, scale)
    xt = _encoded(*_check(train_real, "train_real", schema), schema, scale)
    xh = _encoded(*_check(holdout_real, "holdout_real", schema), schema, scale)
    rng = np.random.default_rng(seed)
    if len(xs) > max_rows:
        xs = xs[np.sort(rng.choice(len(xs), max_rows, replace=False))]
    n_ref = min(len(xt), len(xh))
    if len(xt) > n_ref:
        xt = xt[np.sort(rng.choice(len(xt), n_ref, replace=False))]
    if len(xh) > n_ref:
        xh = xh[np.sort(rng.choice(len(xh), n_ref, replace=False))]
    d_train, d_hold = _nearest(xs, xt), _nearest(xs, xh)
    return {
        "train_median": float(np.median(d_train)), "train_p5": float(np.percentile(d_train, 5)),
        "holdout_median": float(np.median(d_hold)), "holdout_p5": float(np.percentile(d_hold, 5)),
        "share_closer_to_train": float((d_train < d_hold).mean()), "share_tied": float((d_train == d_hold).mean()),
        "expected_share": 0.5, "n_synthetic": int(len(xs)), "n_reference": int(n_ref),
    }  # fmt: skip


# -- 5. picture -----------------------------------------------------------------------
def plot_marginals(real, synth, schema, path: str | os.PathLike) -> Path:
    """Writes a PNG with one panel per column: real and synthetic 1-way marginals as side-by-side bars.

    The cells are those of :func:`marginal_tvd` (declared categories; bins of the declared
    range, named by their edges, and "(missing)"); each panel's title gives its TVD.

    Args:
        real: the real table.
        synth: the synthetic table.
        schema: the public :class:`Schema` (or its JSON dict).
        path: the picture to write (.png, .pdf, ...).

    Returns:
        The path written.

    Raises:
        DataError: a frame that does not fit the schema (named), an empty frame.
        MMGenError: ``path`` is not a picture file name.
    """
    check_picture(path, "path")
    schema = Schema.coerce(schema)
    _check(real, "real", schema)
    _check(synth, "synth", schema)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cr, cs = schema.codes(real), schema.codes(synth)
    n = len(schema.columns)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    for j, c in enumerate(schema.columns):
        ax = axes[j // ncols][j % ncols]
        p, q = _marginal(cr[:, j], c.n_codes), _marginal(cs[:, j], c.n_codes)
        pos = np.arange(c.n_codes)
        ax.bar(pos - 0.2, p, width=0.4, label="real")
        ax.bar(pos + 0.2, q, width=0.4, label="synthetic")
        names = schema.cell_names(c)
        long = c.n_codes > 6 or max(len(s) for s in names) > 8
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=60 if long else 0, ha="right" if long else "center", fontsize=7 if long else 9)
        suffix = " (label)" if c.name == schema.label else ""
        ax.set_title(f"{c.name}{suffix}: TVD {0.5 * np.abs(p - q).sum():.3f}", fontsize=10)
        ax.set_ylabel("share of rows")
        ax.grid(axis="y", alpha=0.3)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- 6. everything --------------------------------------------------------------------
def evaluate_table(
    synth,
    train_real,
    test_real,
    schema,
    *,
    holdout=None,
    plot: str | os.PathLike | None = None,
    target: str | None = None,
    seed: int = 0,
) -> dict:
    """Runs the table metrics: marginals, numbers, correlations, ML efficacy and (with a hold-out) DCR.

    The fidelity metrics (:func:`marginal_tvd`, :func:`numeric_fidelity`,
    :func:`correlation_difference`, and the picture) compare the synthetic table with ``train_real``, the rows the generator was
    fitted on and whose distribution it imitates; ``test_real`` serves only to score the
    classifiers of :func:`ml_efficacy`, which runs when the schema has a label or
    ``target`` is given. :func:`distance_to_closest_record` runs when ``holdout`` (real
    rows the generator never saw) is given; ``test_real`` itself can be passed as
    ``holdout`` when it was kept out of training.

    Args:
        synth: the synthetic table.
        train_real: the real rows the generator was trained on.
        test_real: real rows kept out of training (for ML efficacy).
        schema: the public :class:`Schema` (or its JSON dict).
        holdout: real rows kept out of training, for the DCR check (optional).
        plot: a picture file to write with :func:`plot_marginals` (optional).
        target: the column ML efficacy predicts; default the schema's label.
        seed: seed of the classifiers and subsamples.

    Returns:
        ``{"tvd": ..., "numeric": ..., "correlation": ..., "ml_efficacy": ...?, "dcr": ...?, "plot": str?,
        "n_synthetic", "n_train", "n_test"}`` (each metric's own dict; keys with ``?`` only
        when that metric ran).

    Raises:
        DataError: a frame that does not fit the schema (named), an empty frame.
        MMGenError: ``plot`` is not a picture file name.
    """
    check_picture(plot, "plot")  # before any work
    schema = Schema.coerce(schema)
    for name, frame in (("synth", synth), ("train_real", train_real), ("test_real", test_real)):
        _check(frame, name, schema)
    if holdout is not None:
        _check(holdout, "holdout", schema)
    out: dict = {"n_synthetic": len(synth), "n_train": len(train_real), "n_test": len(test_real)}
    out["tvd"] = marginal_tvd(train_real, synth, schema)
    out["numeric"] = numeric_fidelity(train_real, synth, schema)
    out["correlation"] = correlation_difference(train_real, synth, schema)
    if target is not None or schema.label is not None:
        out["ml_efficacy"] = ml_efficacy(train_real, test_real, synth, schema, target=target, seed=seed)
    if holdout is not None:
        out["dcr"] = distance_to_closest_record(synth, train_real, holdout, schema, seed=seed)
    if plot is not None:
        out["plot"] = str(plot_marginals(train_real, synth, schema, plot))
    return out
