"""All metrics in one call: ``evaluate(x_syn, y_syn, dataset, metrics=...)`` (what ``mmgen evaluate`` runs).

The real data enters only through ``dataset.x_test`` / ``dataset.y_test`` (the
test split), and only to *score*: classifiers are trained and selected on the
synthetic data, fidelity metrics compare the two samples.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from ..errors import DataError, MMGenError
from .cnn import cnn_accuracy
from .downstream import CLASSIFIERS, downstream_accuracy
from .fidelity import (
    FD_NAME,
    PRDC_NAME,
    efficientnet_lite0_embedding,
    frechet_distance,
    median_bandwidth,
    mmd2_unbiased,
    prdc,
    sinkhorn_divergence,
    subsample,
)

__all__ = ["METRICS", "DEFAULT_METRICS", "evaluate", "parse_metrics"]

# metric name -> what it adds to the report
METRICS = {
    "logistic_regression": "accuracy on the real test split of logistic regression trained on synthetic data",
    "mlp": "accuracy of an MLP (early stopping on a synthetic validation split)",
    "cnn": "accuracy of a small CNN (epoch selected on a synthetic validation split)",
    "fd": f"{FD_NAME}: Fréchet distance of pooled EfficientNet-Lite0 embeddings (not FID)",
    "prdc": f"{PRDC_NAME}: precision/recall/density/coverage (k-NN, Naeem et al. 2020) in the same embedding",
    "mmd": "MMD2-Gaussian: unbiased kernel MMD² on flattened records, σ = median real distance",
    "sinkhorn": "Sinkhorn: geomloss Sinkhorn divergence (p=2) on flattened records in [0, 1]",
}
DEFAULT_METRICS = ("logistic_regression", "mlp")


def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"lr,mlp,fd"`` or ``"all"`` → metric names (``lr`` is short for ``logistic_regression``).

    Raises:
        MMGenError: on an unknown name (listing the known ones).
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names == ["all"]:
        return tuple(METRICS)
    names = ["logistic_regression" if n == "lr" else n for n in names]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise MMGenError(f"Unknown metric(s) {unknown or spec!r}. Known: all, lr, {', '.join(METRICS)}.")
    return tuple(dict.fromkeys(names))


def _tensor(a, name: str) -> torch.Tensor:
    """A Tensor or NumPy array as a Tensor."""
    if isinstance(a, torch.Tensor):
        return a
    if type(a).__module__ == "numpy" and hasattr(a, "dtype") and a.dtype.kind in "fiub":
        return torch.from_numpy(a.copy())  # a copy: C-contiguous, whatever the strides
    raise DataError(f"`{name}` must be a Tensor or a numeric NumPy array. Got {type(a).__name__}.")


def evaluate(
    x_syn: torch.Tensor,
    y_syn: torch.Tensor,
    data,
    *,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    max_samples: int = 2000,
    seed: int = 0,
    embedding: Callable[..., torch.Tensor] | None = None,
    cache: dict | None = None,
    cnn_options: dict | None = None,
) -> dict:
    """Scores labelled synthetic records against a data set's real test split.

    Args:
        x_syn ((N, *input_shape) Tensor or array), y_syn ((N,) Tensor or array): synthetic records in the
            data set's domain and their labels.
        data: a :class:`~mmgen.data.Dataset` (its test split and domain are used).
        metrics: names from :data:`METRICS` (or a comma-separated string, or ``"all"``).
        max_samples: cap on the records of *each* side for FD, PRDC, MMD and Sinkhorn
            (uniform subsample, public seed); the sizes used are reported.
        seed: seed of the classifiers and subsamples.
        embedding: ``f(x, low=, high=) -> (N, F)`` for FD/PRDC; default
            :func:`~mmgen.evaluate.fidelity.efficientnet_lite0_embedding`.
        cache: a dict reused across calls on the same test split (real embeddings,
            the MMD bandwidth): pass the same dict to score many synthetic sets fast.
        cnn_options: options of :func:`~mmgen.evaluate.cnn.train_cnn`.

    Returns:
        A flat report: accuracies as floats under ``"logistic_regression"``, ``"mlp"``,
        ``"cnn"``; ``"FD-EfficientNetLite0"``, ``"MMD2-Gaussian"``, ``"Sinkhorn"`` as
        floats; ``"PRDC-EfficientNetLite0"`` as a dict; ``"settings"`` (sample sizes,
        bandwidths), ``"cnn_selection"`` and ``"seconds"`` per metric.

    Raises:
        DataError: on synthetic records that do not match the data set.
        MMGenError: on unknown metric names.
    """
    names = parse_metrics(metrics)
    x_syn, y_syn = _tensor(x_syn, "x_syn"), _tensor(y_syn, "y_syn")
    if tuple(x_syn.shape[1:]) != tuple(data.x_test.shape[1:]):
        raise DataError(f"synthetic records have shape {tuple(x_syn.shape[1:])}, test records {tuple(data.x_test.shape[1:])}.")
    if y_syn.shape != (len(x_syn),):
        raise DataError(f"Expected {len(x_syn)} synthetic labels. Got shape {tuple(y_syn.shape)}.")
    cache = {} if cache is None else cache
    x_syn, y_syn = x_syn.float(), y_syn.long()
    low, high = float(data.low), float(data.high)
    report: dict = {"n_synthetic": int(len(x_syn)), "n_test": int(len(data.y_test)), "metrics": list(names),
                    "settings": {}, "seconds": {}}  # fmt: skip
    clfs = tuple(n for n in names if n in CLASSIFIERS)
    if clfs:
        acc = downstream_accuracy(x_syn, y_syn, data.x_test, data.y_test, classifiers=clfs, seed=seed)
        for n in clfs:
            report[n] = acc[n]
            report["seconds"][n] = acc["seconds"][n]
    if "cnn" in names:
        out = cnn_accuracy(x_syn, y_syn, data.x_test, data.y_test, n_classes=data.n_classes, seed=seed,
                           **(cnn_options or {}))  # fmt: skip
        report["cnn"], report["cnn_selection"], report["seconds"]["cnn"] = out["cnn"], out["cnn_selection"], out["seconds"]
    real_sub = subsample(data.x_test, max_samples, seed)
    syn_sub = subsample(x_syn, max_samples, seed + 1)
    if "fd" in names or "prdc" in names:
        t0 = time.perf_counter()
        embed = embedding or efficientnet_lite0_embedding
        key = ("embedding", id(embed), len(real_sub), seed)
        if key not in cache:
            cache[key] = embed(real_sub, low=low, high=high)
        real_f, syn_f = cache[key], embed(syn_sub, low=low, high=high)
        t_embed = time.perf_counter() - t0
        sizes = {"n_real": len(real_f), "n_synthetic": len(syn_f), "embedding": getattr(embed, "__name__", str(embed))}
        if "fd" in names:
            t0 = time.perf_counter()
            report[FD_NAME] = frechet_distance(real_f, syn_f)
            report["settings"][FD_NAME] = sizes
            report["seconds"]["fd"] = round(t_embed + time.perf_counter() - t0, 2)
        if "prdc" in names:
            t0 = time.perf_counter()
            report[PRDC_NAME] = prdc(real_f, syn_f, k=5)
            report["settings"][PRDC_NAME] = {**sizes, "k": 5}
            report["seconds"]["prdc"] = round(time.perf_counter() - t0 + (0 if "fd" in names else t_embed), 2)
    scaled_real = (real_sub - low) / (high - low)  # flattened records in [0, 1]
    scaled_syn = (syn_sub - low) / (high - low)
    if "mmd" in names:
        t0 = time.perf_counter()
        key = ("bandwidth", len(real_sub), seed)
        if key not in cache:
            cache[key] = median_bandwidth(scaled_real, seed=seed)
        report["MMD2-Gaussian"] = mmd2_unbiased(scaled_real, scaled_syn, bandwidth=cache[key])
        report["settings"]["MMD2-Gaussian"] = {"bandwidth": cache[key], "space": "records scaled to [0, 1]",
                                               "n_real": len(real_sub), "n_synthetic": len(syn_sub)}  # fmt: skip
        report["seconds"]["mmd"] = round(time.perf_counter() - t0, 2)
    if "sinkhorn" in names:
        t0 = time.perf_counter()
        out = sinkhorn_divergence(scaled_real, scaled_syn)
        report["Sinkhorn"] = out["value"]
        report["settings"]["Sinkhorn"] = {"blur": out["blur"], "p": 2, "space": "records scaled to [0, 1]",
                                          "n_real": len(real_sub), "n_synthetic": len(syn_sub)}  # fmt: skip
        report["seconds"]["sinkhorn"] = round(time.perf_counter() - t0, 2)
    return report
