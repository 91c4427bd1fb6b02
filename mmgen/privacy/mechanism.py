"""Sensitivity of the class-conditional release vector and the Gaussian mechanism.

Each record ``(x, y)`` contributes the vector ``v(x, y) = [a·φ(x), b] ⊗ e_y``
(the class-``y`` row holds the weighted features and, in the last column, the
count weight ``b``; every other row is zero). With ``‖φ(x)‖ ≤ m`` and
``a² + b² = 1``:

* add/remove one record (default): ``Δ = max ‖v(x, y)‖ = sqrt(a²m² + b²) ≤ 1``;
* replace one record: ``v(x, y) − v(x', y')`` has norm at most
  ``sqrt(2(a²m² + b²))`` when ``y ≠ y'`` (disjoint rows) and ``2am`` when
  ``y = y'`` (the counts cancel), so ``Δ = max(sqrt(2(a²m²+b²)), 2am)``.

Features are computed in float32, so a norm "exactly 1" may come out as
1 + 1e-7. The sensitivity therefore uses ``m·(1 + NORM_SLACK)`` with
``NORM_SLACK = 1e-5``, a bound on that rounding far above its size.

The mechanism returns ``Σ_i v(x_i, y_i) + z`` with ``z ~ N(0, (σΔ)² I)``,
σ being the noise multiplier; it is (ε, δ)-DP for the relation whose Δ is used
exactly when σ meets :func:`~mmgen.privacy.calibration.noise_multiplier_for`.
"""

from __future__ import annotations

import math

import torch

from ..errors import PrivacyError
from .noise import secure_standard_normal, seeded_standard_normal, snap

__all__ = ["NORM_SLACK", "NEIGHBOURING", "sensitivity", "gaussian_mechanism", "check_neighbouring"]

NEIGHBOURING = ("add-remove", "replace-one")
NORM_SLACK = 1e-5  # covers float32 rounding of ‖φ(x)‖ (relative error ~1e-7)


def check_neighbouring(neighbouring: str) -> str:
    if neighbouring not in NEIGHBOURING:
        raise PrivacyError(f"`neighbouring` must be one of {NEIGHBOURING}. Got {neighbouring!r}.")
    return neighbouring


def sensitivity(neighbouring: str, *, max_norm: float, feature_weight: float, count_weight: float = 0.0) -> float:
    """L2-sensitivity of the summed record vector ``[a·φ(x), b] ⊗ e_y``.

    Args:
        neighbouring: ``"add-remove"`` or ``"replace-one"``.
        max_norm: m, the feature map's bound ``‖φ(x)‖ ≤ m`` (at most 1).
        feature_weight: a.
        count_weight: b (0 when the vector carries no count).
    """
    check_neighbouring(neighbouring)
    a, b, m = float(feature_weight), float(count_weight), float(max_norm)
    if not (0 < m <= 1) or a < 0 or b < 0 or a * a + b * b > 1 + 1e-12:
        raise PrivacyError(f"need 0 < max_norm ≤ 1, a, b ≥ 0, a² + b² ≤ 1. Got m={m}, a={a}, b={b}.")
    m = m * (1.0 + NORM_SLACK)
    record = math.sqrt(a * a * m * m + b * b)
    if neighbouring == "add-remove":
        return record
    return max(math.sqrt(2.0) * record, 2.0 * a * m)


def gaussian_mechanism(
    value: torch.Tensor, *, noise_multiplier: float, sensitivity: float, noise_seed: int | None = None
) -> torch.Tensor:
    """Returns ``value + z``, ``z ~ N(0, (noise_multiplier · sensitivity)² I)``, in float64.

    The noise is from OS entropy unless ``noise_seed`` is given (tests only).
    The result is snapped to a coarse grid (floating-point attack mitigation).
    """
    std = float(noise_multiplier) * float(sensitivity)
    if not std > 0:
        raise PrivacyError(f"noise standard deviation must be > 0. Got {std!r}.")
    shape = tuple(value.shape)
    z = secure_standard_normal(shape) if noise_seed is None else seeded_standard_normal(shape, noise_seed)
    return snap(value.to(torch.float64).cpu() + std * z, std)
