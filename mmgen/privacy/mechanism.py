"""Sensitivity of the class-conditional release vector and the Gaussian mechanism.

Each record ``(x, y)`` contributes the vector ``v(x, y) = [a·φ(x), b] ⊗ e_y``
(the class-``y`` row holds the weighted features and, in the last column, the
count weight ``b``; every other row is zero). With ``‖φ(x)‖ ≤ m`` and
``a² + b² = 1``:

* add/remove one record (default): ``Δ = max ‖v(x, y)‖ = sqrt(a²m² + b²) ≤ 1``;
* replace one record: ``v(x, y) − v(x', y')`` has norm at most
  ``sqrt(2(a²m² + b²))`` when ``y ≠ y'`` (disjoint rows) and ``2am`` when
  ``y = y'`` (the counts cancel), so ``Δ = max(sqrt(2(a²m²+b²)), 2am)``.

The release sums are not exact real numbers: each record's row is capped in
float64 and rounded to a fixed-point grid, the integer sums are converted to
float64 once, and ``finalize`` scales them by ``a`` in float64
(:mod:`mmgen.privacy.bounds`). Together these move one record's effect by
less than ``1e-6`` (``rounding_bound`` plus one more float64 rounding of the
sums, at most ``2⁻⁵³·N``). The sensitivity therefore uses
``m·(1 + NORM_SLACK)`` with ``NORM_SLACK = 1e-5``, ten times that bound.

The mechanism (:func:`gaussian_mechanism`) returns ``Σ_i v(x_i, y_i) + z``
with ``z`` of standard deviation ``σΔ`` per coordinate, σ being the noise
multiplier, drawn by OpenDP's floating-point-safe Gaussian mechanism (see
:mod:`mmgen.privacy.noise`): the input rounded to a grid ``2^k``, plus ``2^k``
times a discrete Gaussian on the integers, the exact sum rounded once to a
double. Below 4,096 coordinates OpenDP samples it at ``k = −1074`` (scale
``σΔ·2^1074`` grid steps); from 4,096 coordinates mmgen's exact vectorised
sampler draws it at ``k = ⌈log₂ σΔ⌉ − 50`` (about 2^49.5 grid steps per
standard deviation), with a std raised by a factor at most
``1 + (1 + σ√d↑)·2^-49`` (√d↑: √d rounded up to a double; below
``1 + 2·10⁻¹¹`` at σ = 3.73 and 6.3 million coordinates) so that the rounding
of the inputs to ``2^k`` costs no ρ.

Guarantee. OpenDP proves ρ-zCDP with ``ρ = (Δ_k/s)²/2`` for the measurement
sampled (scale s, discretisation k, :func:`~mmgen.privacy.noise.sampler_sensitivity`
``Δ_k``), from Canonne, Kamath & Steinke (arXiv 2004.00010), Theorem 14 (the
multivariate discrete Gaussian is ``ε²/2``-zCDP when the sum of squared
differences over ``σ_j²`` is at most ε²); at every call its own map must charge
at most ``(Δ/(σΔ))²/2 = 1/(2σ²)`` (to 10⁻¹⁴ relative, float rounding) for the
relation whose Δ is used. That is the Rényi curve of the continuous Gaussian
mechanism with ``μ = 1/σ``. Proved (ε, δ): the zCDP bound converted by the same
paper's §2.3, ε = 1.092 at σ = 3.7306, δ = 1e-5 (dp-accounting's RDP accountant
on the same ``GaussianDpEvent``: 1.093), and 10.73 at σ = 0.49989. The (ε, δ) a
release records is the continuous Gaussian's exact profile
(:mod:`mmgen.privacy.calibration`): 1.000 and 10.00 there. That the
d-dimensional discrete mechanism has that profile, or one within a stated
distance of it, is not proved by any theorem checked (the paper's exact
(ε, δ) formula, Theorem 7 of arXiv v3, is one-dimensional); the recorded ε is
an approximation, the proved one is the zCDP figure (``docs/privacy.md`` §8).
"""

from __future__ import annotations

import math

import torch

from ..errors import PrivacyError
from .noise import opendp_gaussian, secure_standard_normal, seeded_standard_normal

__all__ = [
    "NORM_SLACK", "NEIGHBOURING", "sensitivity", "gaussian_mechanism", "simulated_gaussian_mechanism",
    "check_neighbouring",
]  # fmt: skip

NEIGHBOURING = ("add-remove", "replace-one")
NORM_SLACK = 1e-5  # covers the release path's rounding (< 1e-6 per record, see mmgen.privacy.bounds)


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


def _noise_std(noise_multiplier: float, sensitivity: float) -> float:
    sigma, delta = float(noise_multiplier), float(sensitivity)
    std = sigma * delta
    if not (sigma > 0 and delta > 0 and math.isfinite(std) and std > 0):
        raise PrivacyError(
            f"`noise_multiplier` and `sensitivity` must be > 0 with a finite product > 0. "
            f"Got noise_multiplier={sigma!r}, sensitivity={delta!r}."
        )
    return std


def gaussian_mechanism(
    value: torch.Tensor, *, noise_multiplier: float, sensitivity: float, noise_seed: int | None = None
) -> torch.Tensor:
    """Returns ``value + z`` with ``z`` of std ``noise_multiplier · sensitivity`` per coordinate, in float64.

    Publishable path (``noise_seed=None``): OpenDP's Gaussian mechanism on the
    float vector (:func:`~mmgen.privacy.noise.opendp_gaussian`): ``value``
    rounded to a grid ``2^k`` plus ``2^k`` times a discrete Gaussian, rounded
    once to a double; OpenDP's sampler at ``k = −1074`` below 4,096
    coordinates, mmgen's exact vectorised sampler on ``os.urandom`` bits at
    ``k = ⌈log₂ σΔ⌉ − 50`` above. OpenDP's map must charge at most
    ``ρ = 1/(2σ²)`` for ``sensitivity`` (checked). It has no seed and nothing
    about the noise is logged or returned.

    Test path (``noise_seed`` an int): ``value + σΔ·N(0, 1)`` from a seeded
    NumPy generator, reproducible, not floating-point safe; a release made so
    must be marked not for publication.

    Args:
        value ((...) Tensor): the exact statistic; finite.
        noise_multiplier: σ > 0.
        sensitivity: Δ > 0, the L2 sensitivity of ``value`` under the relation accounted for.
        noise_seed: None for release noise; an int only in tests.

    Returns:
        float64 Tensor of ``value``'s shape, on the CPU.

    Raises:
        PrivacyError: σΔ is not a finite number > 0, or ``value`` holds NaN or inf.
    """
    std = _noise_std(noise_multiplier, sensitivity)
    if noise_seed is None:
        return opendp_gaussian(value, std=std, sensitivity=float(sensitivity))
    x = value.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise PrivacyError("the values to noise must be finite; got NaN or inf, so no noise was drawn.")
    return x + std * seeded_standard_normal(tuple(x.shape), noise_seed)


def simulated_gaussian_mechanism(
    value: torch.Tensor, *, noise_multiplier: float, sensitivity: float, noise_seed: int | None = None
) -> torch.Tensor:
    """The same law as :func:`gaussian_mechanism` from a fast float sampler: for audits and simulations only.

    Returns ``value + σΔ·z``, ``z`` by Box–Muller on ``os.urandom`` bits
    (or a seeded NumPy generator when ``noise_seed`` is given). N(0, (σΔ)²)
    to double precision and unpredictable, but not floating-point safe
    (Mironov 2012): its outputs must never be published. Over 100× faster
    than the OpenDP path, which is what makes millions of audit trials possible.
    """
    std = _noise_std(noise_multiplier, sensitivity)
    x = value.detach().to(device="cpu", dtype=torch.float64)
    shape = tuple(x.shape)
    z = secure_standard_normal(shape) if noise_seed is None else seeded_standard_normal(shape, noise_seed)
    return x + std * z
