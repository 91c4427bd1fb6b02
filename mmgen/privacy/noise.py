"""Private randomness: every random draw that touches private data comes from this module.

Release noise, Private Evolution's histogram noise, the per-record mechanism's
noise (all through :func:`opendp_gaussian`), DP-SGD's Poisson masks, its
gradient noise and the VAE's latent draws on private records
(:class:`PrivateStreams`), and the order in which per-record outputs are
written (:meth:`PrivateStreams.permutation`). Randomness that never meets a
private record (feature frequencies, network initialisation, a generator's
latents) is public, reproducible from a seed stored in the file, and lives
with its component. ``tests/test_randomness.py`` lists every ``manual_seed``,
``Generator(`` and ``default_rng(`` call in the modules that read private data
and fails on one outside this module that it does not know to be public.

Entropy sources, with their bit counts:

* OpenDP's samplers: OpenSSL's ``RAND_priv_bytes`` (a CSPRNG seeded by the OS;
  256-bit security strength).
* :class:`PrivateStreams`: one **fresh** torch CPU generator per purpose and
  per step, whose whole Mersenne-Twister state (624 words, 19,968 bits) is read
  from ``os.urandom``. Never ``manual_seed``: torch's CPU generator keeps only
  the low 32 bits of a seed, so two seeds that agree on them replay one stream
  (this made DP-SGD's noise replay its Poisson sample's stream once). The
  purposes (``"poisson-mask"``, ``"latent"``, ``"dp-sgd-noise"``, ...) never
  share a state, so the streams are independent.
* Test-only streams (``test_seed`` given): the full state is derived from
  NumPy's ``SeedSequence`` of the seed, the purpose and the step (so seeds
  that differ above bit 32 differ); outputs are marked unfit for publication.

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
    "ENTROPY_SOURCE", "PrivateStreams", "NOISE_SOURCE", "SEEDED_NOISE_SOURCE", "K_MIN", "opendp_gaussian", "opendp_rho", "sampler_sensitivity",
    "secure_standard_normal", "seeded_standard_normal",
]  # fmt: skip

NOISE_SOURCE = "opendp discrete Gaussian (k=-1074, OpenSSL RAND_priv_bytes)"
SEEDED_NOISE_SOURCE = "seeded (test only)"
ENTROPY_SOURCE = "os.urandom, 19,968 bits per torch generator (fresh Mersenne-Twister state per purpose and step)"
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


_MT_WORDS = 624  # the Mersenne-Twister state: 624 words of 32 bits
_MT_OFFSET = 24  # bytes before the state words in torch's CPU generator state (seed, left, seeded, next)


def _purpose_code(purpose: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")


class PrivateStreams:
    """Independent random streams for one stage's draws on private data (DP-SGD's masks, noise and latents).

    Each call of :meth:`generator` returns a new torch CPU generator whose whole
    Mersenne-Twister state (19,968 bits) is read from ``os.urandom``, so draws
    for different purposes or steps share no state and a run's randomness is
    not fixed by any short seed. With ``test_seed`` the state is derived from
    ``numpy.random.SeedSequence((test_seed, purpose, *index))`` instead:
    reproducible, for tests and benchmarks only (``publishable`` is False).

    Args:
        test_seed: None (OS entropy: the publishable path) or an integer ≥ 0 (reproducible, not for publication).

    Example:
        >>> a, b = PrivateStreams(test_seed=1), PrivateStreams(test_seed=1 + 2**32)
        >>> bool(torch.equal(torch.rand(4, generator=a.generator("x", 0)), torch.rand(4, generator=b.generator("x", 0))))
        False
    """

    def __init__(self, *, test_seed: int | None = None) -> None:
        if test_seed is not None and (isinstance(test_seed, bool) or not isinstance(test_seed, int) or test_seed < 0):
            raise PrivacyError(f"`test_seed` must be None or an integer ≥ 0. Got {test_seed!r}.")
        self.test_seed = test_seed

    @property
    def publishable(self) -> bool:
        """True when the draws come from OS entropy (no seed exists anywhere)."""
        return self.test_seed is None

    @property
    def source(self) -> str:
        """The entropy source, as written into files."""
        return ENTROPY_SOURCE if self.publishable else "numpy SeedSequence of a test seed (reproducible; not for publication)"

    def _words(self, purpose: str, index: tuple[int, ...]) -> np.ndarray:
        if self.test_seed is None:
            return np.frombuffer(os.urandom(4 * _MT_WORDS), dtype=np.uint32)
        key = (int(self.test_seed), _purpose_code(purpose), *(int(i) for i in index))
        return np.random.SeedSequence(key).generate_state(_MT_WORDS, np.uint32)

    def generator(self, purpose: str, *index: int) -> torch.Generator:
        """A fresh torch CPU generator for ``purpose`` (and e.g. the step ``index``), its full state set at once."""
        words = self._words(purpose, tuple(index))
        if not words.any():  # the one invalid Mersenne-Twister state (probability 2^-19968)
            words = words.copy()
            words[0] = 1
        gen = torch.Generator()
        gen.manual_seed(0)  # only to get a well-formed state whose caches are empty; every state word is replaced
        state = gen.get_state().numpy().copy()
        state[:8] = 0  # the "initial seed" field: no seed exists
        state[_MT_OFFSET : _MT_OFFSET + 8 * _MT_WORDS] = np.frombuffer(words.astype(np.uint64).tobytes(), np.uint8)
        gen.set_state(torch.from_numpy(state))
        return gen

    def poisson_mask(self, n: int, rate: float, step: int) -> torch.Tensor:
        """(n,) bool: each of ``n`` records joins step ``step``'s batch independently with probability ``rate``."""
        return torch.rand(int(n), generator=self.generator("poisson-mask", step), dtype=torch.float64) < float(rate)

    def normal(self, shape: tuple[int, ...], purpose: str, step: int) -> torch.Tensor:
        """Standard normal float32 draws for ``purpose`` at ``step`` (e.g. a VAE's latents on private records)."""
        return torch.randn(shape, generator=self.generator(purpose, step))

    def permutation(self, n: int, purpose: str = "output-order") -> torch.Tensor:
        """A uniformly random permutation of ``range(n)`` (the order in which private outputs are written)."""
        return torch.randperm(int(n), generator=self.generator(purpose))
