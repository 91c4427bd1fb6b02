"""Noise sources: OpenDP's floating-point-safe Gaussian for releases, fast samplers for simulations and tests.

**Publishable noise** (:func:`opendp_gaussian`) is OpenDP's Gaussian mechanism
on a float vector, ``opendp.measurements.make_gaussian`` over
``vector_domain(atom_domain(T=float, nan=False), size=d)`` with
``l2_distance(T=float)``, ``scale=s`` and ``k=None``. For ``x ∈ R^d`` (finite
doubles) it returns ``round_f64(x + 2^k · z)``, where, as implemented in OpenDP
(``measurements/noise/nature/float``, ``FloatExpFamily``; proofs at
docs.opendp.org):

* ``k`` is the discretisation: each ``x_i`` is first rounded to the nearest
  multiple of ``2^k``. With ``k=None`` OpenDP takes ``k = k_min = −1074``, the
  spacing of subnormal doubles; every double is a multiple of it, so this step
  is the identity;
* ``z_i ~ N_Z(0, (s/2^k)²)`` independently: the discrete Gaussian on the
  integers (Canonne, Kamath & Steinke, "The discrete Gaussian for differential
  privacy", NeurIPS 2020, exact sampler in exact rational arithmetic, random
  bits from OpenSSL's ``RAND_priv_bytes``). At ``s/2^k`` grid steps per
  standard deviation (``s·2^1074`` here) its distribution function and
  variance match N(0, s²) far below double precision;
* ``round_f64``: the exact rational sum is converted to the nearest double
  (post-processing).

OpenDP's privacy map (what it proves): for inputs at L2 distance ≤ Δ the
release is ρ-zCDP (Bun & Steinke 2016) with

    ρ = (Δ_k / s)² / 2,    Δ_k = Δ + (2^k − 2^k_min) · √d    (:func:`sampler_sensitivity`),

the second term bounding how much rounding to ``2^k`` can stretch the L2
distance of two float vectors (√d computed rounding up). With the default
``k = k_min`` it is zero: OpenDP charges exactly Δ, so with ``s = σΔ`` (σ the
noise multiplier) ``ρ = 1/(2σ²)`` and the effective sensitivity a release
must account for is Δ itself. A coarser ``k`` (e.g. ``⌈log₂ s⌉ − 40``) makes
sampling about 3.5× faster but charges ``Δ_k > Δ``; it is not used.

What this protects: the output depends on ``x`` only through exact arithmetic
on the exact input doubles followed by one rounding of the exact noisy value, so
the floating-point attacks of Mironov (CCS 2012), which read the irregular
set of values a textbook float sample ``x + s·z`` can take, have no channel
to read. Note: the guarantee is about the float64 vector handed in; the
sensitivity Δ must bound the distance of those vectors (float rounding of the
sums included).

**Simulation noise** (:func:`secure_standard_normal`): Box–Muller in float64
on ``os.urandom`` bits (53 bits per uniform, ``u = (k + 1)·2⁻⁵³ ∈ (0, 1]``,
``z = sqrt(−2 ln u₁) · cos(2π u₂)``). Unpredictable and N(0, 1) to double
precision, but *not* floating-point safe; over 100× faster than OpenDP. For
audits and simulations whose outputs are never published.

**Test noise** (:func:`seeded_standard_normal`): a seeded NumPy generator; a
release made with it is marked ``for_publication = false``.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
import torch

from ..errors import PrivacyError

__all__ = [
    "NOISE_SOURCE", "SEEDED_NOISE_SOURCE", "K_MIN", "opendp_gaussian", "opendp_rho", "sampler_sensitivity",
    "secure_standard_normal", "seeded_standard_normal",
]  # fmt: skip

NOISE_SOURCE = "opendp discrete Gaussian (k=-1074, OpenSSL RAND_priv_bytes)"
SEEDED_NOISE_SOURCE = "seeded (test only)"
K_MIN = -1074  # log2 of the smallest gap between doubles (subnormal spacing): OpenDP's default k for f64


def _opendp_measurement(dim: int, std: float, k: int | None = None):
    """OpenDP's Gaussian measurement on a float64 vector of length ``dim`` under L2 distance."""
    import opendp.prelude as dp  # heavy (~1-3 s): imported when noise is drawn, not with mmgen

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=int(dim)), dp.l2_distance(T=float)
    return dp.m.make_gaussian(*space, scale=float(std), k=k)


def opendp_rho(sensitivity: float, std: float, dim: int, k: int | None = None) -> float:
    """The zCDP ρ that OpenDP's own privacy map charges for L2 sensitivity Δ, noise std ``s``, ``d`` coordinates.

    Example:
        >>> opendp_rho(1.0, 2.0, 10)  # (Δ/s)²/2 at the default k
        0.125
    """
    return float(_opendp_measurement(dim, std, k).map(float(sensitivity)))


def sampler_sensitivity(sensitivity: float, dim: int, k: int | None = None) -> float:
    """The L2 sensitivity OpenDP charges for a ``dim``-vector rounded to ``2^k``: ``Δ + (2^k − 2^-1074)·√d``.

    Pure mirror of OpenDP's ``get_rounding_distance`` (float vector, L2): its
    map is ``ρ = (sampler_sensitivity(Δ, d, k) / s)² / 2``. With ``k=None``
    (OpenDP's default, the one :func:`opendp_gaussian` uses) it is Δ exactly.
    The result is rounded up, never down.

    Args:
        sensitivity: Δ, the L2 sensitivity of the exact float64 vectors.
        dim: d, the number of coordinates released in one call.
        k: the discretisation exponent; None for OpenDP's default ``k = -1074``.

    Example:
        >>> sampler_sensitivity(1.0, 100_010)
        1.0
        >>> round(sampler_sensitivity(1.0, 100, k=-20), 9)  # 1 + 10 · 2^-20
        1.000009537
    """
    delta, dim, k = float(sensitivity), int(dim), K_MIN if k is None else int(k)
    if not (math.isfinite(delta) and delta >= 0) or dim < 0 or k < K_MIN:
        raise PrivacyError(
            f"need a finite sensitivity ≥ 0, dim ≥ 0 and k ≥ {K_MIN}. "
            f"Got sensitivity={sensitivity!r}, dim={dim!r}, k={k!r}."
        )
    if k == K_MIN or dim == 0:
        return delta
    root = math.sqrt(dim)  # correctly rounded; OpenDP rounds √d up, so step up unless exact
    if Fraction(root) ** 2 < dim:
        root = math.nextafter(root, math.inf)
    exact = Fraction(delta) + (Fraction(2) ** k - Fraction(2) ** K_MIN) * Fraction(root)
    out = float(exact)  # nearest double; step up if that rounded down
    return math.nextafter(out, math.inf) if Fraction(out) < exact else out


def opendp_gaussian(values: torch.Tensor, *, std: float, sensitivity: float) -> torch.Tensor:
    """Returns ``values + noise`` from OpenDP's Gaussian mechanism (std ``std``, default k): the publishable path.

    There is no seed: the noise comes from OpenSSL inside OpenDP. Before
    sampling, OpenDP's own privacy map is asked what the measurement charges
    for ``sensitivity``; unless that is the ideal Gaussian mechanism's
    ``ρ = (Δ/s)²/2`` (to 1e-12, float rounding), nothing is drawn.

    Args:
        values ((...) Tensor): finite numbers, any shape; used as float64.
        std: s > 0, the noise standard deviation per coordinate.
        sensitivity: Δ > 0, the L2 sensitivity the caller accounts for.

    Returns:
        float64 Tensor of the same shape, on the CPU.

    Raises:
        PrivacyError: ``std`` or ``sensitivity`` is not a finite number > 0, ``values``
            holds NaN or inf (OpenDP would silently turn NaN into 0 and inf into the
            largest double), or OpenDP's map charges more than ``(Δ/s)²/2``.
    """
    std, delta = float(std), float(sensitivity)
    if not (math.isfinite(std) and std > 0 and math.isfinite(delta) and delta > 0):
        raise PrivacyError(
            f"`std` and `sensitivity` must be finite numbers > 0. Got std={std!r}, sensitivity={delta!r}."
        )
    x = values.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise PrivacyError("the values to noise must be finite; got NaN or inf, so no noise was drawn.")
    if x.numel() == 0:
        return x.clone()
    m = _opendp_measurement(x.numel(), std)
    charged, ideal = float(m.map(delta)), (delta / std) ** 2 / 2
    if not charged <= ideal * (1 + 1e-12):
        raise PrivacyError(
            f"OpenDP's privacy map charges rho={charged!r} for sensitivity {delta!r} and std {std!r}, more than the "
            f"Gaussian mechanism's (Δ/s)²/2 = {ideal!r} the accounting assumes; no noise was drawn."
        )
    out = m(x.reshape(-1).tolist())
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


def _uniform_open_closed(n: int) -> np.ndarray:
    bits = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)  # 53 random bits each
    return (bits.astype(np.float64) + 1.0) * 2.0**-53


def secure_standard_normal(shape: tuple[int, ...]) -> torch.Tensor:
    """Independent N(0, 1) float64 samples from OS entropy (Box–Muller on ``os.urandom`` bits).

    Unpredictable, but not floating-point safe: for simulations and audits, never for a release.
    """
    n = int(np.prod(shape)) if shape else 1
    u1, u2 = _uniform_open_closed(n), _uniform_open_closed(n)
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return torch.from_numpy(z.reshape(shape))


def seeded_standard_normal(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Reproducible N(0, 1) float64 samples, for tests only (never for a publishable release)."""
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))
