"""Embedding-sum kernels (imported as ``mmgen.kernels``): torch references and Triton kernels.

``import mmgen.kernels`` works without a GPU or Triton; the Triton launchers
(:mod:`mmgen.kernels.rff_triton`) are imported only when ``backend="triton"``
(or ``"auto"`` on a GPU) is used.
"""

from .backend import resolve_backend, triton_available
from .rff import (
    rff_class_sums,
    rff_class_sums_reference,
    rff_features,
    rff_matching_loss,
    rff_matching_loss_reference,
)

__all__ = [
    "resolve_backend",
    "triton_available",
    "rff_features",
    "rff_class_sums",
    "rff_class_sums_reference",
    "rff_matching_loss",
    "rff_matching_loss_reference",
]
