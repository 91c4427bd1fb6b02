"""Fidelity, utility and copying metrics of a synthetic table against the real one.

Every function takes pandas data frames and a public :class:`~mmgen.data.tables.Schema`,
checks each frame with :meth:`Schema.encode` (a bad frame gives mmgen's one-line
:class:`~mmgen.errors.DataError`, prefixed by the argument's name) and returns a plain
dict. Nothing is tuned on the data: bins, scales and one-hot blocks come from the
schema's declared domain.

* :func:`marginal_tvd`: total-variation distance ½ Σ_c |p_c − q_c| between the real and
  synthetic 1-way marginals of every column and the 2-way marginals of every pair of
  columns, on the cells of :meth:`Schema.codes` (numbers binned on their declared bounds,
  missing values a cell of their own).
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
    "marginal_tvd", "correlation_difference", "ml_efficacy", "distance_to_closest_record",
    "plot_marginals", "evaluate_table", "TABLE_CLASSIFIERS",
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


# -- 1. marginals ---------------------------------------------------------------------
def marginal_tvd(real, synth, schema) -> dict:
    """Total-variation distance between real and synthetic 1-way and 2-way marginals.

    A column's 1-way marginal is the share of rows in each of its cells (``n_codes`` of
    them, :meth:`Schema.codes`): its declared categories, or ``n_bins`` equal-width bins
    of its (log-)scaled declared range plus a "missing" cell when it may be missing. A
    pair's 2-way marginal is the share of rows in each pair of cells. For each marginal
    TVD = ½ Σ_c |p_c − q_c| ∈ [0, 1] (p real, q synthetic; 0: identical shares, 1: no
    cell in common). Every column counts, the label included.

    Args:
        real: the real table (a data frame with the schema's columns).
        synth: the synthetic table.
        schema: the public :class:`Schema` (or its JSON dict).

    Returns:
        ``{"one_way_mean", "one_way_max", "two_way_mean", "two_way_max", "one_way": {column: tvd},
        "two_way": {"a|b": tvd}}`` — means and maxima over the columns and over the pairs
        (pairs in schema order; a one-column schema has no pairs and reports 0 for them).

    Raises:
        DataError: a frame that does not fit the schema (named), or an empty frame.

    Example:
        >>> import pandas as pd
        >>> s = Schema.from_dict({"columns": [
        ...     {"name": "a", "type": "categorical", "categories": ["x", "y"]},
        ...     {"name": "b", "type": "categorical", "categories": ["u", "v"]}]})
        >>> real = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": ["u", "v", "u", "v"]})
        >>> synth = pd.DataFrame({"a": ["x", "x", "x", "y"], "b": ["u", "u", "v", "v"]})
        >>> r = marginal_tvd(real, synth, s)
        >>> r["one_way"], r["two_way"]
        ({'a': 0.25, 'b': 0.0}, {'a|b': 0.25})
    """
    schema = Schema.coerce(schema)
    _check(real, "real", schema)
    _check(synth, "synth", schema)
    cr, cs = schema.codes(real), schema.codes(synth)
    cols = schema.columns
    one = {}
    for j, c in enumerate(cols):
        one[c.name] = 0.5 * float(np.abs(_marginal(cr[:, j], c.n_codes) - _marginal(cs[:, j], c.n_codes)).sum())
    two = {}
    for i, j in combinations(range(len(cols)), 2):
        size = cols[i].n_codes * cols[j].n_codes
        pr = _marginal(cr[:, i] * cols[j].n_codes + cr[:, j], size)  # cell (a, b) -> a * n_b + b
        ps = _marginal(cs[:, i] * cols[j].n_codes + cs[:, j], size)
        two[f"{cols[i].name}|{cols[j].name}"] = 0.5 * float(np.abs(pr - ps).sum())
    ones, twos = list(one.values()), list(two.values())
    return {
        "one_way_mean": float(np.mean(ones)), "one_way_max": float(np.max(ones)),
        "two_way_mean": float(np.mean(twos)) if twos else 0.0, "two_way_max": float(np.max(twos)) if twos else 0.0,
        "one_way": one, "two_way": two,
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
    """Runs the table metrics: marginals, correlations, ML efficacy and (with a hold-out) DCR.

    The fidelity metrics (:func:`marginal_tvd`, :func:`correlation_difference`, and the
    picture) compare the synthetic table with ``train_real``, the rows the generator was
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
        ``{"tvd": ..., "correlation": ..., "ml_efficacy": ...?, "dcr": ...?, "plot": str?,
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
    out["correlation"] = correlation_difference(train_real, synth, schema)
    if target is not None or schema.label is not None:
        out["ml_efficacy"] = ml_efficacy(train_real, test_real, synth, schema, target=target, seed=seed)
    if holdout is not None:
        out["dcr"] = distance_to_closest_record(synth, train_real, holdout, schema, seed=seed)
    if plot is not None:
        out["plot"] = str(plot_marginals(train_real, synth, schema, plot))
    return out
