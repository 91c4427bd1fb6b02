"""Downstream accuracy: train classifiers on synthetic data, test them on real data.

The protocol of DP-MERF and DP-HP (Harder et al. 2021; Vinaroz et al. 2022):
scikit-learn classifiers are fitted on the labelled synthetic records
(flattened) and scored once on the real test split. The real data is never
used to select anything; the MLP's early stopping uses a shuffled split of the
*synthetic* data.

The fits run with one BLAS thread (``threadpoolctl``): for these problem sizes
a multi-threaded OpenBLAS only adds synchronisation, and on a shared 2-core
machine its spinning threads made a logistic regression on digits ~100× slower.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..errors import DataError

__all__ = ["downstream_accuracy", "CLASSIFIERS"]

CLASSIFIERS = ("logistic_regression", "mlp")


def _make(name: str, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if name == "logistic_regression":
        return LogisticRegression(max_iter=1000, C=1.0)
    if name == "mlp":
        return MLPClassifier(hidden_layer_sizes=(100,), max_iter=200, early_stopping=True,
                             validation_fraction=0.1, random_state=seed)  # fmt: skip
    raise DataError(f"Unknown classifier {name!r}. Known: {', '.join(CLASSIFIERS)}.")


def _numpy(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return a
    raise DataError(f"`{name}` must be a Tensor or a NumPy array. Got {type(a).__name__}.")


def _records(a, name: str) -> np.ndarray:
    a = _numpy(a, name)
    if a.ndim < 2 or len(a) == 0 or a.dtype.kind not in "fiub":
        raise DataError(f"`{name}` must be numeric records of shape (N, ...) with N ≥ 1. Got {a.dtype} of shape {a.shape}.")
    return a


def _labels(a, name: str, n: int) -> np.ndarray:
    a = _numpy(a, name)
    if a.shape != (n,) or a.dtype.kind not in "iu":
        raise DataError(f"`{name}` must be {n} integer labels, one per record. Got {a.dtype} of shape {a.shape}.")
    return a


def downstream_accuracy(
    x_syn: torch.Tensor,
    y_syn: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    classifiers: tuple[str, ...] = CLASSIFIERS,
    seed: int = 0,
) -> dict:
    """Accuracy on the real test set of classifiers trained on synthetic data.

    Args:
        x_syn ((N, ...) Tensor), y_syn ((N,) Tensor): the synthetic training data.
        x_test ((M, ...) Tensor), y_test ((M,) Tensor): the real test split.
        classifiers: names from :data:`CLASSIFIERS`.
        seed: seed of the classifiers' randomness.

    Each of the four may be a Tensor or a NumPy array.

    Returns:
        ``{"logistic_regression": acc, "mlp": acc, "seconds": {...}, ...}``.

    Raises:
        DataError: shapes that do not match, labels that are not integers, unknown classifiers.
    """
    x_syn, x_test = _records(x_syn, "x_syn"), _records(x_test, "x_test")
    y_syn, y_test = _labels(y_syn, "y_syn", len(x_syn)), _labels(y_test, "y_test", len(x_test))
    if x_syn.shape[1:] != x_test.shape[1:]:
        raise DataError(f"synthetic records have shape {tuple(x_syn.shape[1:])}, test records {tuple(x_test.shape[1:])}.")
    for name in classifiers:
        _make(name, seed)  # an unknown name fails before any fit
    xs = x_syn.reshape(len(x_syn), -1).astype(np.float64)
    ys = y_syn
    xt = x_test.reshape(len(x_test), -1).astype(np.float64)
    yt = y_test
    if len(np.unique(ys)) < 2:
        raise DataError("The synthetic data has fewer than two classes; no classifier can be trained.")
    perm = np.random.default_rng(seed).permutation(len(xs))  # shuffled: no class-sorted validation split
    xs, ys = xs[perm], ys[perm]
    out: dict = {"n_synthetic": int(len(xs)), "n_test": int(len(xt)), "seconds": {}}
    for name in classifiers:
        clf = _make(name, seed)
        t0 = time.perf_counter()
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore")  # convergence warnings: the iteration cap is part of the protocol
            clf.fit(xs, ys)
        out[name] = float((clf.predict(xt) == yt).mean())
        out["seconds"][name] = round(time.perf_counter() - t0, 2)
    return out
