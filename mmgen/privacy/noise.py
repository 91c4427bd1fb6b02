"""Gaussian noise from the operating system's cryptographically secure source.

Release noise is built from ``os.urandom`` bits (the kernel CSPRNG), never
from a seeded pseudo-random generator, so nobody — not even someone who knows
the library's state — can reproduce or subtract it. Construction:

* 53 random bits per uniform: ``u = (k + 1) · 2⁻⁵³`` with ``k`` uniform in
  ``[0, 2⁵³)``, so ``u ∈ (0, 1]`` and ``log u`` is finite;
* Box–Muller in float64: ``z = sqrt(−2 ln u₁) · cos(2π u₂)``.

Floating-point side channels (Mironov, CCS 2012) exploit the irregular set
of floating-point values a noisy output can take. As mitigation, the noisy
sums are rounded onto a coarse power-of-two grid (see :func:`snap`) whose
spacing is far above float64 resolution and far below the noise scale.

A *test* mode draws from a seeded NumPy generator instead; a release made so
is marked ``for_publication = false``.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

__all__ = ["secure_standard_normal", "seeded_standard_normal", "snap"]


def _uniform_open_closed(n: int) -> np.ndarray:
    bits = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)  # 53 random bits each
    return (bits.astype(np.float64) + 1.0) * 2.0**-53


def secure_standard_normal(shape: tuple[int, ...]) -> torch.Tensor:
    """Independent N(0, 1) float64 samples from OS entropy (Box–Muller on ``os.urandom`` bits)."""
    n = int(np.prod(shape)) if shape else 1
    u1, u2 = _uniform_open_closed(n), _uniform_open_closed(n)
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return torch.from_numpy(z.reshape(shape))


def seeded_standard_normal(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Reproducible N(0, 1) float64 samples, for tests only (never for a publishable release)."""
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))


def snap(values: torch.Tensor, noise_std: float, bits_below: int = 20) -> torch.Tensor:
    """Rounds ``values`` to the grid of spacing ``2^(⌈log2 σ⌉ − bits_below)``.

    A post-processing step (privacy is kept) that removes the low-order bits
    through which floating-point attacks distinguish inputs.
    """
    step = 2.0 ** (math.ceil(math.log2(noise_std)) - bits_below)
    return torch.round(values / step) * step
