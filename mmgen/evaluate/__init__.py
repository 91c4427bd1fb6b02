"""Utility and fidelity metrics of synthetic data against the real test split.

* downstream accuracy: :func:`downstream_accuracy` (logistic regression, MLP),
  :func:`cnn_accuracy` (a small CNN selected on a synthetic validation split);
* fidelity: :func:`frechet_distance` and :func:`prdc` in EfficientNet-Lite0
  features (``"FD-EfficientNetLite0"``, not FID), :func:`mmd2_unbiased`,
  :func:`sinkhorn_divergence`;
* everything at once: :func:`evaluate`; pictures: :func:`save_grid`,
  :func:`save_sample_grid`, :func:`plot_accuracy_curve`;
* tables: :func:`marginal_tvd` (1-, 2- and 3-way), :func:`numeric_fidelity`, :func:`correlation_difference`, :func:`ml_efficacy`,
  :func:`distance_to_closest_record`, :func:`plot_marginals`, all at once :func:`evaluate_table`.

See ``docs/evaluation.md`` for the definitions and the protocol.
"""

from .cnn import SmallCNN, cnn_accuracy, train_cnn
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
from .grid import image_grid, save_grid, save_sample_grid
from .plots import accuracy_table, load_reports, plot_accuracy_curve
from .suite import DEFAULT_METRICS, METRICS, evaluate, parse_metrics
from .tables import (
    TABLE_CLASSIFIERS,
    correlation_difference,
    distance_to_closest_record,
    evaluate_table,
    marginal_tvd,
    ml_efficacy,
    numeric_fidelity,
    plot_marginals,
    table_triples,
)

__all__ = [
    "CLASSIFIERS", "downstream_accuracy", "SmallCNN", "train_cnn", "cnn_accuracy",
    "FD_NAME", "PRDC_NAME", "efficientnet_lite0_embedding", "frechet_distance", "prdc",
    "mmd2_unbiased", "median_bandwidth", "sinkhorn_divergence", "subsample",
    "image_grid", "save_grid", "save_sample_grid", "load_reports", "accuracy_table", "plot_accuracy_curve",
    "METRICS", "DEFAULT_METRICS", "evaluate", "parse_metrics",
    "marginal_tvd", "correlation_difference", "ml_efficacy", "distance_to_closest_record", "plot_marginals",
    "evaluate_table", "TABLE_CLASSIFIERS", "numeric_fidelity", "table_triples",
]  # fmt: skip
