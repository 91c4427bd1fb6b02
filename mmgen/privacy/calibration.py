"""Pure calibration maths of the Gaussian mechanism, through dp-accounting.

The Gaussian mechanism ``M(D) = f(D) + N(0, σ²Δ²I)`` on a function of
L2-sensitivity Δ is characterised by ``μ = 1/σ`` (σ is the *noise multiplier*):
it is (ε, δ)-DP exactly when (Balle & Wang, "Improving the Gaussian mechanism
for differential privacy", ICML 2018, Theorem 8)

    δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2).

Several Gaussian releases of the same data with multipliers σ_k compose
exactly into one Gaussian mechanism with ``μ² = Σ_k μ_k²`` (Dong, Roth & Su,
"Gaussian differential privacy", JRSS-B 2022, Corollary 3.3). Both the
calibration and the conversion back to ε use dp-accounting's analytic
Gaussian routines; no accountant is written here.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import dp_accounting
from dp_accounting.pld import privacy_loss_mechanism

from ..errors import PrivacyError

__all__ = [
    "check_epsilon_delta",
    "noise_multiplier_for",
    "epsilon_for",
    "delta_for",
    "composed_noise_multiplier",
    "split_noise_multipliers",
    "dp_event",
]


def check_epsilon_delta(epsilon: float, delta: float) -> None:
    """Raises PrivacyError unless ``ε > 0`` (finite) and ``0 < δ < 1``."""
    problems = []

    def number(v) -> bool:  # Python and NumPy reals; not bools
        return isinstance(v, numbers.Real) and not isinstance(v, bool)

    if not number(epsilon) or not math.isfinite(epsilon) or epsilon <= 0:
        problems.append(f"`epsilon` must be a finite number > 0. Got {epsilon!r}.")
    if not number(delta) or not (0 < delta < 1):
        problems.append(f"`delta` must be in (0, 1). Got {delta!r}.")
    if problems:
        raise PrivacyError(" ".join(problems))


def delta_for(noise_multiplier: float, epsilon: float) -> float:
    """Exact δ(ε) of one Gaussian mechanism with noise multiplier σ (sensitivity 1, std σ)."""
    return privacy_loss_mechanism.GaussianPrivacyLoss(noise_multiplier, sensitivity=1.0).get_delta_for_epsilon(epsilon)


def noise_multiplier_for(epsilon: float, delta: float) -> float:
    """The smallest noise multiplier σ making one Gaussian mechanism (ε, δ)-DP.

    Example:
        >>> round(noise_multiplier_for(1.0, 1e-5), 4)
        3.7306
    """
    check_epsilon_delta(epsilon, delta)
    epsilon, delta = float(epsilon), float(delta)
    sigma = dp_accounting.get_sigma_gaussian(epsilon, delta)
    # The search returns a bracket end within 1e-12; make sure we sit on the safe side.
    while delta_for(sigma, epsilon) > delta:
        sigma *= 1 + 1e-9
    return float(sigma)


def epsilon_for(noise_multiplier: float, delta: float) -> float:
    """The ε of one Gaussian mechanism with noise multiplier σ at the given δ.

    Example:
        >>> round(epsilon_for(3.7306316, 1e-5), 6)
        1.0
    """
    if not noise_multiplier > 0:
        raise PrivacyError(f"`noise_multiplier` must be > 0. Got {noise_multiplier!r}.")
    check_epsilon_delta(1.0, delta)
    return float(dp_accounting.get_epsilon_gaussian(noise_multiplier, delta))


def composed_noise_multiplier(noise_multipliers: Sequence[float]) -> float:
    """The single noise multiplier equivalent to Gaussian releases with multipliers σ_k.

    ``1/σ² = Σ_k 1/σ_k²`` (μ² = Σ μ_k²).
    """
    if not noise_multipliers or any(not s > 0 for s in noise_multipliers):
        raise PrivacyError(f"noise multipliers must be a non-empty list of numbers > 0. Got {noise_multipliers!r}.")
    return 1.0 / math.sqrt(sum(1.0 / s**2 for s in noise_multipliers))


def split_noise_multipliers(epsilon: float, delta: float, weights: Sequence[float]) -> list[float]:
    """Noise multipliers for several Gaussian statistics sharing one (ε, δ) budget.

    The composed ``μ`` that meets (ε, δ) is split as ``μ_k² = w_k μ² / Σ w``:
    a statistic with a larger weight gets less noise.

    Args:
        epsilon, delta: the total budget.
        weights: positive budget shares, one per statistic.

    Returns:
        One noise multiplier σ_k per statistic.
    """
    if not weights or any(not (w > 0 and math.isfinite(w)) for w in weights):
        raise PrivacyError(f"budget split weights must be positive numbers. Got {list(weights)!r}.")
    sigma = noise_multiplier_for(epsilon, delta)
    total = float(sum(weights))
    return [sigma / math.sqrt(w / total) for w in weights]


def dp_event(noise_multipliers: Sequence[float]) -> dp_accounting.DpEvent:
    """The dp-accounting event of a release: one Gaussian, or their composition."""
    events = [dp_accounting.GaussianDpEvent(float(s)) for s in noise_multipliers]
    return events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(events)
