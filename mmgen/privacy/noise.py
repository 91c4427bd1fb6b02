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
* :func:`discrete_gaussian` (release vectors of 4,096 coordinates or more):
  ``os.urandom`` directly, every bit used once, no generator state at all.
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
``l2_distance(T=float)``, scale ``s`` and discretisation ``k``. For ``x ∈ R^d``
(finite doubles) it returns ``round_f64(x̂ + 2^k · z)``, where, as specified
and proved by OpenDP (``measurements/noise/nature/float``, ``FloatExpFamily``;
proofs at docs.opendp.org):

* ``x̂_i`` is ``x_i`` rounded to a multiple of ``2^k``;
* ``z_i ~ N_Z(0, (s/2^k)²)`` independently: the discrete Gaussian on the
  integers (Canonne, Kamath & Steinke, "The discrete Gaussian for differential
  privacy", NeurIPS 2020);
* ``round_f64``: the exact sum is converted to the nearest double (post-processing).

OpenDP's privacy map (what it proves): for inputs at L2 distance ≤ Δ the
release is ρ-zCDP (Bun & Steinke 2016) with

    ρ = (Δ_k / s)² / 2,    Δ_k = Δ + (2^k − 2^k_min) · √d    (:func:`sampler_sensitivity`),

the second term bounding how much rounding to ``2^k`` can stretch the L2
distance of two float vectors (√d computed rounding up).

Two ways of drawing it, chosen by size only (the sizes are public):

* **below 4,096 coordinates**: OpenDP's own measurement and sampler with
  ``s = σΔ`` and ``k = k_min = −1074`` (the spacing of subnormal doubles, so
  ``x̂ = x`` and ``Δ_k = Δ``: ρ = 1/(2σ²) exactly); exact rational arithmetic,
  random bits from OpenSSL's ``RAND_priv_bytes``; about 48 µs per coordinate.
* **from 4,096 coordinates** (:func:`_grid_gaussian`): the same measurement at
  ``k = ⌈log₂ σΔ⌉ − 50`` and the scale ``s' = σ_g·2^k``, ``σ_g`` the integer
  :func:`grid_parameters` gives, so that ``Δ_k/s' ≤ Δ/(σΔ)``: the rounding of the
  inputs to ``2^k`` is paid for with a noise larger by a factor below
  ``1 + (1 + σ√d↑)·2^-49`` (√d↑: √d rounded up to a double, as OpenDP rounds it;
  below ``1 + 2·10⁻¹¹`` at the DP-NTK paper's width), never with a larger ρ;
  OpenDP's own map of that measurement is asked before any draw, and nothing is
  drawn unless it charges at most the exact ``(Δ/s)²/2`` to a relative 10⁻¹⁴
  (float rounding; :data:`MAP_RTOL`). ``z`` comes from :func:`discrete_gaussian`,
  an exact vectorised discrete Gaussian sampler (Karney 2016, Algorithm D; proof in its docstring)
  on ``os.urandom`` bits, and ``x̂ + 2^k·z`` is formed and rounded to a double
  exactly (one IEEE-754 addition, or exact rationals for ``|z| > 2^53``).
  Under 1 µs per coordinate on one core.

Proved, and by whom: the zCDP bound of the discrete Gaussian (Canonne, Kamath
& Steinke 2020, Theorem 14) and of rounding to ``2^k`` (OpenDP's proof, and the one-line
:func:`grid_sensitivity`); that :func:`discrete_gaussian` draws exactly
``N_Z(0, σ_g²)`` is this module's proof (docstrings of :func:`discrete_gaussian`,
:func:`_block_index`, :func:`_bernoulli_b`, :func:`_bernoulli_exp_half`), backed
by χ² tests against the exact law (``tests/test_noise_exact.py``); it is not
OpenDP's code. ``docs/privacy.md`` §8 has the whole argument.

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

import functools
import math
import os
import sys
from fractions import Fraction

import numpy as np
import torch

from ..errors import PrivacyError

__all__ = [
    "ENTROPY_SOURCE", "PrivateStreams", "NOISE_SOURCE", "SEEDED_NOISE_SOURCE", "K_MIN", "opendp_gaussian", "opendp_rho", "sampler_sensitivity",
    "secure_standard_normal", "seeded_standard_normal", "FAST_MIN_COORDINATES", "GRID_BITS", "discrete_gaussian",
    "discrete_gaussian_scalar", "grid_parameters", "grid_sensitivity", "MAP_RTOL",
]  # fmt: skip

NOISE_SOURCE = ("discrete Gaussian mechanism of OpenDP make_gaussian: OpenDP's sampler (k=-1074, OpenSSL RAND_priv_bytes) "
                "below 4096 coordinates, mmgen's exact sampler (Karney 2016, os.urandom) on a 2^k grid of about 2^-50 std above")
SEEDED_NOISE_SOURCE = "seeded (test only)"
ENTROPY_SOURCE = "os.urandom, 19,968 bits per torch generator (fresh Mersenne-Twister state per purpose and step)"
K_MIN = -1074  # log2 of the smallest gap between doubles (subnormal spacing): OpenDP's default k for f64


def _opendp_measurement(dim: int, std: float, k: int | None = None):
    """OpenDP's Gaussian measurement on a float64 vector of length ``dim`` under L2 distance."""
    # The four modules the mechanism needs, imported when noise is drawn, not with mmgen. Not
    # `opendp.prelude`: it also imports scikit-learn (through `opendp.extras`), about 1 s of a
    # release's time for nothing it uses (docs/noise.md).
    import opendp.domains
    import opendp.measurements
    import opendp.metrics
    import opendp.mod

    opendp.mod.enable_features("contrib")
    domain = opendp.domains.vector_domain(opendp.domains.atom_domain(T=float, nan=False), size=int(dim))
    return opendp.measurements.make_gaussian(domain, opendp.metrics.l2_distance(T=float), scale=float(std), k=k)


def opendp_rho(sensitivity: float, std: float, dim: int, k: int | None = None) -> float:
    """The zCDP ρ that OpenDP's own privacy map charges for L2 sensitivity Δ, noise std ``s``, ``d`` coordinates.

    Example:
        >>> opendp_rho(1.0, 2.0, 10)  # (Δ/s)²/2 at the default k
        0.125
    """
    return float(_opendp_measurement(dim, std, k).map(float(sensitivity)))


def _sqrt_up(dim: int) -> float:
    """``√d`` rounded up to a double, as OpenDP rounds it (the correctly rounded root, stepped up unless exact)."""
    root = math.sqrt(int(dim))
    return math.nextafter(root, math.inf) if Fraction(root) ** 2 < int(dim) else root


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
    exact = Fraction(delta) + (Fraction(2) ** k - Fraction(2) ** K_MIN) * Fraction(_sqrt_up(dim))
    out = float(exact)  # nearest double; step up if that rounded down
    return math.nextafter(out, math.inf) if Fraction(out) < exact else out


def opendp_gaussian(values: torch.Tensor, *, std: float, sensitivity: float) -> torch.Tensor:
    """Returns ``values + noise`` from OpenDP's Gaussian mechanism (``make_gaussian``): the publishable path.

    Two samplers, one mechanism family, no seed in either:

    * fewer than :data:`FAST_MIN_COORDINATES` (4,096) coordinates: OpenDP's own measurement at
      scale ``std`` and the default ``k = −1074``, sampled by OpenDP (OpenSSL's ``RAND_priv_bytes``);
    * more: the same measurement at ``k = ⌈log₂ s⌉ − 50`` and scale ``s' = σ_g·2^k ≥ s``
      (:func:`grid_parameters`: ``s'`` is raised by the factor that pays for rounding the inputs to
      ``2^k``, about 1 + 10⁻¹¹), sampled by :func:`discrete_gaussian` (exact, vectorised, ``os.urandom``)
      in :func:`_grid_gaussian`; about 100× faster (``docs/noise.md``).

    Before sampling, OpenDP's own privacy map of the measurement actually sampled is asked what it
    charges for ``sensitivity``; unless that is at most the ideal Gaussian mechanism's exact
    ``ρ = (Δ/s)²/2`` (to a relative :data:`MAP_RTOL` = 10⁻¹⁴, float rounding), nothing is drawn.

    Args:
        values ((...) Tensor): finite numbers, any shape; used as float64.
        std: s > 0, the noise standard deviation per coordinate (the vectorised path's is at most
            ``s·(1 + (1 + σ√d↑)·2^-49)``, σ = s/Δ, √d↑ = √d rounded up to a double).
        sensitivity: Δ > 0, the L2 sensitivity the caller accounts for.

    Returns:
        float64 Tensor of the same shape, on the CPU.

    Raises:
        PrivacyError: ``std`` or ``sensitivity`` is not a finite number > 0, ``values``
            holds NaN or inf (OpenDP would silently turn NaN into 0 and inf into the
            largest double), or OpenDP's map charges more than ``(Δ/s)²/2``; on the vectorised path
            also ``std > 2^1020``, a grid scale σ_g ≥ 2^53 (:func:`grid_parameters`), or values so large
            that ``max |x| + 64·s'`` exceeds the largest double (the release could overflow). All of
            these are raised before any noise is drawn.
    """
    std, delta = float(std), float(sensitivity)
    if not (math.isfinite(std) and std > 0 and math.isfinite(delta) and delta > 0):
        raise PrivacyError(
            f"`std` and `sensitivity` must be finite numbers > 0. Got std={std!r}, sensitivity={delta!r}."
        )
    x = values.detach().to(device="cpu", dtype=torch.float64)
    if not bool(np.isfinite(x.numpy()).all()):  # NumPy: no wake-up of torch's thread pool for one pass
        raise PrivacyError("the values to noise must be finite; got NaN or inf, so no noise was drawn.")
    if x.numel() == 0:
        return x.clone()
    if x.numel() >= FAST_MIN_COORDINATES:
        return _grid_gaussian(x, std, delta)
    m = _opendp_measurement(x.numel(), std)
    _check_charge(float(m.map(delta)), delta, std, f"std {std!r}")
    out = m(x.reshape(-1).tolist())
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


MAP_RTOL = 1e-14  # how far OpenDP's (outward-rounded) map may sit above the exact (Δ/s)²/2: float rounding only
_MAP_ATOL = Fraction(4, 2**1074)  # a subnormal ρ (s > 4.7·10^153·Δ) is rounded in steps of 2^-1074, not relatively


def _check_charge(charged: float, delta: float, std: float, what: str) -> None:
    """Refuses (before any draw) unless OpenDP's map ``charged`` is at most the exact ``(Δ/s)²/2`` plus float rounding.

    The comparison is in exact rationals against the exact ``(Δ/s)²/2`` of the doubles Δ and s, so the
    only slack needed is for OpenDP's own outward rounding of its map (a few ulps: measured at most
    1.9·10⁻¹⁶ relative over σ from 10⁻³ to 10⁶, Δ from 10⁻³ to 10³, d from 1 to 10⁸, on both paths),
    and, for a subnormal ρ, a few units of 2^-1074. :data:`MAP_RTOL` = 10⁻¹⁴ is 50 times the former;
    it is far below what leaving out the vectorised path's std inflation would cost (4.5·10⁻¹³ at
    d = 4,096, σ = 3.73), so that mistake is refused.
    """
    ideal = Fraction(delta) ** 2 / (2 * Fraction(std) ** 2)
    if not (math.isfinite(charged) and Fraction(charged) <= ideal * (1 + Fraction(MAP_RTOL)) + _MAP_ATOL):
        raise PrivacyError(
            f"OpenDP's privacy map charges rho={charged!r} for sensitivity {delta!r} at {what}, more than the "
            f"Gaussian mechanism's (Δ/s)²/2 = {float(ideal)!r} the accounting assumes (relative tolerance "
            f"{MAP_RTOL!r}); no noise was drawn."
        )


# -- the exact vectorised discrete Gaussian (Karney 2016, Algorithm D) on OpenDP's 2^k grid ------------------------

FAST_MIN_COORDINATES = 4096  # below this, opendp_gaussian draws in-process with OpenDP's own sampler (< 0.2 s)
GRID_BITS = 50  # the grid step 2^k is chosen so that σ_g = s'/2^k lies in [2^49, 2^50]
FRACTION_CHUNK_BITS = 64  # random bits per chunk of a lazily revealed uniform fraction (tests shrink it)
_VECTOR_K_MAX = 1 << 12  # a block index k above this (probability e^(-8·10^6)) finishes in Python integers
_U64_MAX = np.uint64(2**64 - 1)


def _words(n: int) -> np.ndarray:
    """(n,) uint64: 64 fresh bits each from ``os.urandom``."""
    return np.frombuffer(os.urandom(8 * int(n)), dtype=np.uint64)


def _uniform_below(m, n: int) -> np.ndarray:
    """(n,) uint64, each exactly uniform on ``{0, ..., m_i − 1}`` (``m`` an int or (n,) array, 1 ≤ m < 2^63).

    Rejection on 64-bit words: ``u`` is kept when ``u < 2^64 − (2^64 mod m)``, a multiple of m, so
    ``u mod m`` is exactly uniform; a rejected word is replaced by a fresh one (probability < 2^-1 per
    word, < m·2^-64 in fact).
    """
    m = np.broadcast_to(np.asarray(m, dtype=np.uint64), (int(n),))
    top = _U64_MAX - ((_U64_MAX % m) + np.uint64(1)) % m  # 2^64 − 1 − (2^64 mod m): the largest word kept
    u = _words(n).copy()
    bad = np.flatnonzero(u > top)
    while bad.size:
        u[bad] = _words(bad.size)
        bad = bad[u[bad] > top[bad]]
    return u % m


_EXP_TABLE_M = 64  # the table holds the first 64 bits of e^(−m/2) for m = 1..64


@functools.lru_cache(maxsize=None)
def _exp_half_word(m: int, i: int) -> int:
    """Word ``i`` (bits ``64i + 1 .. 64i + 64`` after the binary point) of ``e^(−m/2)``, exactly, for an integer m ≥ 1.

    ``e^(m/2)`` lies in ``[S_N, S_N + t_(N+1)/(1 − γ/(N + 2))]`` (γ = m/2, ``S_N`` its Taylor sum to
    ``N`` terms, ``t_(N+1)`` the next term; every term is positive), so ``2^L·e^(−m/2)`` lies between
    ``2^L`` divided by the two bounds; N doubles until both have the same floor, which is then
    ``⌊2^L·e^(−m/2)⌋`` (L = 64(i + 1)). It terminates: ``e^(−m/2)`` is irrational, never a multiple of ``2^−L``.
    """
    g, scale, n_terms = Fraction(m, 2), 1 << (64 * (i + 1)), 16
    while True:
        term = total = Fraction(1)
        for n in range(1, n_terms + 1):
            term = term * g / n
            total += term
        if n_terms + 2 > g:
            upper = total + term * g / (n_terms + 1) / (1 - g / (n_terms + 2))
            low, high = math.floor(scale / upper), math.floor(scale / total)
            if low == high:
                return low % (1 << 64)
        n_terms *= 2


@functools.lru_cache(maxsize=None)
def _exp_table() -> np.ndarray:
    """(64,) uint64, ascending: word 0 of ``e^(−m/2)`` for m = 64, 63, ..., 1."""
    table = np.array([_exp_half_word(m, 0) for m in range(_EXP_TABLE_M, 0, -1)], dtype=np.uint64)
    if not bool(np.all(table[1:] > table[:-1])):  # distinct words: a word equals at most one threshold
        raise PrivacyError("the table of e^(-m/2) is not strictly increasing; the sampler cannot be used.")
    return table


def _below_exp_half_scalar(m: int) -> bool:
    """Whether a uniform ``U`` whose first word equalled word 0 of ``e^(−m/2)`` is below it: the next words decide."""
    i = 1
    while True:
        word, bound = int(_words(1)[0]), _exp_half_word(m, i)
        if word != bound:
            return word < bound
        i += 1


def _bernoulli_exp_half(m: np.ndarray) -> np.ndarray:
    """(n,) bool, each True with probability exactly ``e^(−m_i/2)`` (m: (n,) int64, ≥ 0).

    ``U < e^(−m/2)`` for a uniform ``U`` read word by word: the first word ``u`` decides it against
    ``T = ⌊2^64·e^(−m/2)⌋`` unless ``u = T`` (probability 2^−64; then :func:`_below_exp_half_scalar`
    compares the next words with the next words of ``e^(−m/2)``). ``m = 0`` is True; an m above the
    table is the conjunction of independent draws for 64, 64, ..., and the remainder.
    """
    m = np.asarray(m, dtype=np.int64).copy()
    out = np.ones(len(m), dtype=bool)
    table = _exp_table()
    idx = np.flatnonzero(m > 0)
    while idx.size:
        part = np.minimum(m[idx], _EXP_TABLE_M)
        bound = table[_EXP_TABLE_M - part]
        u = _words(idx.size)
        ok = u < bound
        for t in np.flatnonzero(u == bound).tolist():
            ok[t] = _below_exp_half_scalar(int(part[t]))
        out[idx[~ok]] = False
        m[idx] -= part
        idx = idx[ok & (m[idx] > 0)]
    return out


def _geometric_half(n: int) -> np.ndarray:
    """(n,) int64, ``P(k) = e^(−k/2)(1 − e^(−1/2))``: ``k = #{m ≥ 1 : U < e^(−m/2)}`` for one uniform U each.

    ``P(k ≥ m) = P(U < e^(−m/2)) = e^(−m/2)``. The first word ``u`` gives k exactly unless it equals
    some ``⌊2^64·e^(−m/2)⌋`` (then k is m − 1 or m, and the next words decide) or k ≥ 64 (then, by
    memorylessness, k = 64 + a fresh draw).
    """
    table = _exp_table()  # ascending: m = 64 .. 1
    u = _words(n)
    above = _EXP_TABLE_M - np.searchsorted(table, u, side="right")  # #{m : T_m > u}, decided as U < e^(−m/2)
    k = above.astype(np.int64)
    for t in np.flatnonzero(np.searchsorted(table, u, side="left") != _EXP_TABLE_M - above).tolist():
        m = int(above[t]) + 1  # u = T_m: U < e^(−(m−1)/2) is decided, U < e^(−m/2) is not
        k[t] = m if _below_exp_half_scalar(m) else m - 1
    deep = np.flatnonzero(k >= _EXP_TABLE_M)
    if deep.size:
        k[deep] = _EXP_TABLE_M + _geometric_half(deep.size)
    return k


def _block_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) int64 block indices ``k ≥ 0`` and (n,) bool acceptances: P(k, accepted) = (1 − e^(−1/2))·e^(−k²/2).

    Karney's steps D1–D2: ``k`` geometric (:func:`_geometric_half`, ``P(k) = e^(−k/2)(1 − e^(−1/2))``),
    kept with probability ``e^(−k(k−1)/2)`` (:func:`_bernoulli_exp_half`): ``e^(−k/2)·e^(−k(k−1)/2) = e^(−k²/2)``.
    """
    k = _geometric_half(n)
    return k, _bernoulli_exp_half(k * (k - 1))


class _LazyUniform:
    """A uniform real ``(a + w)/σ``: its digit ``a`` (uniform below σ) and as many bits of ``w ∈ [0, 1)`` as looked at."""

    __slots__ = ("digit", "chunks")

    def __init__(self, digit: int) -> None:
        self.digit, self.chunks = int(digit), []

    def _chunk(self, i: int) -> int:
        while len(self.chunks) <= i:  # bits never looked at before: fresh and independent of every decision so far
            self.chunks.append(int.from_bytes(os.urandom(8), "little") >> (64 - FRACTION_CHUNK_BITS))
        return self.chunks[i]

    def less_than(self, other: "_LazyUniform") -> bool:
        """Exactly decides ``self < other`` (equality has probability 0 and never ends the comparison)."""
        if self.digit != other.digit:
            return self.digit < other.digit
        i = 0
        while self._chunk(i) == other._chunk(i):
            i += 1
        return self.chunks[i] < other.chunks[i]


def _randbelow(m: int) -> int:
    import secrets

    return secrets.randbelow(int(m))  # exact: rejection on os.urandom bits (random.SystemRandom)


def _b_steps_from(k: int, j: int, sigma: int, steps: int, y: _LazyUniform, z: _LazyUniform) -> int:
    """Algorithm B from a step ``i ≥ 2``, in Python integers: ``steps`` done, ``y = z_(i−1)``, ``z = z_i`` drawn."""
    while True:
        if not z.less_than(y) or not _randbelow((2 * k + 2) * sigma) < 2 * k * sigma + j:
            return steps
        steps, y, z = steps + 1, z, _LazyUniform(_randbelow(sigma))


def _bernoulli_b_scalar(k: int, j: int, sigma: int) -> bool:
    """True with probability ``exp(−x(2k + x)/(2k + 2))``, ``x = j/σ``: Algorithm B in Python integers."""
    a = _randbelow(sigma)
    if not a < j or not _randbelow((2 * k + 2) * sigma) < 2 * k * sigma + j:
        return True  # zero steps
    return _b_steps_from(k, j, sigma, 1, _LazyUniform(a), _LazyUniform(_randbelow(sigma))) % 2 == 0


def _trial_scalar(k: int, sigma: int) -> int | None:
    """Steps D3–D8 for an accepted block ``k``, in Python integers: the sample, or None (rejected)."""
    negative, j = _randbelow(2) == 1, _randbelow(sigma)
    if k == 0 and j == 0 and negative:
        return None
    if all(_bernoulli_b_scalar(k, j, sigma) for _ in range(k + 1)):
        return -(k * sigma + j) if negative else k * sigma + j
    return None


def _bernoulli_exp_half_scalar() -> bool:
    count = 1
    while _randbelow(2 * count) == 0:
        count += 1
    return count % 2 == 1


def discrete_gaussian_scalar(sigma: int) -> int:
    """One draw of the discrete Gaussian ``N_Z(0, σ²)`` in Python integers: the reference for the vectorised sampler."""
    sigma = _check_sigma(sigma)
    while True:
        k = 0
        while _bernoulli_exp_half_scalar():
            k += 1
        if all(_bernoulli_exp_half_scalar() for _ in range(k * (k - 1))):
            out = _trial_scalar(k, sigma)
            if out is not None:
                return out


def _check_sigma(sigma) -> int:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, np.integer)) or not 1 <= int(sigma) < 2**60:
        raise PrivacyError(f"`sigma` must be an integer in [1, 2^60). Got {sigma!r}.")
    return int(sigma)


def _bernoulli_b(k: np.ndarray, j: np.ndarray, sigma: int) -> np.ndarray:
    """(n,) bool, True with probability ``exp(−x(2k + x)/(2k + 2))``, ``x = j/σ`` (Karney 2016, Algorithm B).

    ``z_0 = x``; step i draws a uniform ``z_i`` and a uniform ``r_i`` and succeeds while
    ``z_i < z_(i−1)`` and ``r_i < f = (2k + x)/(2k + 2)``; the result is True iff the number of
    successful steps is even. ``P(at least m steps) = f^m·x^m/m!`` (m ordered uniforms below x), so
    ``P(even) = Σ_m (−fx)^m/m! = e^(−fx)``. Every comparison is exact in integers:
    ``z = (a + w)/σ`` with ``a`` uniform below σ, so ``z_1 < j/σ`` iff ``a_1 < j``; ``r < f`` iff a
    uniform integer below ``(2k + 2)σ`` is below ``2kσ + j``; ``z_i < z_(i−1)`` is decided by the
    digits when they differ, and otherwise (probability 1/σ) this element's call finishes in
    :func:`_b_steps_from`, which compares the fractions bit by bit.
    """
    k, j = np.asarray(k, dtype=np.uint64), np.asarray(j, dtype=np.uint64)
    n, s = len(k), np.uint64(sigma)
    steps = np.zeros(n, dtype=np.int64)
    big_m, below = (np.uint64(2) * k + np.uint64(2)) * s, np.uint64(2) * k * s + j  # r < f iff c < below, c < big_m
    y = _uniform_below(s, n)  # z_1's digit
    live = np.flatnonzero(y < j)
    live = live[_uniform_below(big_m[live], live.size) < below[live]]
    steps[live] = 1
    while live.size:
        a = _uniform_below(s, live.size)  # z_i's digit
        ya = y[live]
        for t in np.flatnonzero(a == ya).tolist():  # equal digits: the fractions decide, in Python integers
            i = int(live[t])
            steps[i] = _b_steps_from(int(k[i]), int(j[i]), sigma, int(steps[i]),
                                     _LazyUniform(int(ya[t])), _LazyUniform(int(a[t])))  # fmt: skip
        go = a < ya
        live, a = live[go], a[go]
        go = _uniform_below(big_m[live], live.size) < below[live]
        live, a = live[go], a[go]
        steps[live] += 1
        y[live] = a
    return steps % 2 == 0


def discrete_gaussian(sigma: int, n: int) -> np.ndarray:
    """``n`` independent draws of the discrete Gaussian ``N_Z(0, σ²)``: ``P(z) ∝ exp(−z²/(2σ²))`` on the integers.

    Karney, "Sampling exactly from the normal distribution", ACM TOMS 42(1), 2016, Algorithm D with
    μ = 0 and an integer σ, vectorised over the draws: every integer is written once as
    ``z = ±(kσ + j)`` with ``k ≥ 0`` and ``0 ≤ j < σ`` (zero only with the + sign). One trial:

    * D1–D2 (:func:`_block_index`): ``k`` with probability ∝ ``e^(−k²/2)``;
    * D3–D6: a fair sign and ``j`` uniform below σ; ``k = j = 0`` with the − sign is rejected;
    * D7: ``k + 1`` independent ``B(k, x)``, ``x = j/σ`` (:func:`_bernoulli_b`), each true with
      probability ``e^(−x(2k + x)/(2k + 2))``; all true accepts, with probability ``e^(−x(2k + x)/2)``.

    So a trial returns ``z`` with probability ∝ ``e^(−k²/2)·e^(−(2kσj + j²)/(2σ²)) = e^(−z²/(2σ²))``,
    the same constant for every z; a rejected trial is repeated with fresh bits, so the output is
    exactly the discrete Gaussian. No floating-point number enters any decision: every Bernoulli is a
    comparison of uniform integers (exact rejection on ``os.urandom`` words, :func:`_uniform_below`)
    or of lazily revealed uniform reals. Every intermediate stays below 2^63 (σ < 2^60 and
    ``k ≤ 4096`` with ``(2k + 2)σ < 2^63``; a larger k finishes in Python integers).

    Args:
        sigma: σ, an integer in [1, 2^60).
        n: the number of draws.

    Returns:
        (n,) int64 array (a value beyond int64 would need ``k ≥ 2^63/σ``; those trials are redone
        in Python integers and such a value raises OverflowError, at probability below e^(−2^20)).
    """
    sigma, n = _check_sigma(sigma), int(n)
    k_max = min(_VECTOR_K_MAX, (2**62 // sigma) - 2)
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        m = todo.size
        k, ok = _block_index(m)
        negative = np.unpackbits(np.frombuffer(os.urandom((m + 7) // 8), dtype=np.uint8), count=m).view(bool)  # fair bits
        j = _uniform_below(np.uint64(sigma), m)
        ok &= ~((k == 0) & (j == 0) & negative)
        for t in np.flatnonzero(ok & (k > k_max)).tolist():  # Python integers for a (vanishingly rare) large k
            ok[t] = False
            value = _trial_scalar(int(k[t]), sigma)
            if value is not None:
                out[todo[t]] = value
                todo[t] = -1
        left = np.where(ok, k + 1, 0)  # B draws still owed by each trial
        idx = np.flatnonzero(left > 0)
        while idx.size:
            b = _bernoulli_b(k[idx], j[idx], sigma)
            ok[idx[~b]] = False
            idx = idx[b]
            left[idx] -= 1
            idx = idx[left[idx] > 0]
        done = np.flatnonzero(ok)
        value = k[done] * sigma + j[done].astype(np.int64)
        out[todo[done]] = np.where(negative[done], -value, value)
        todo[done] = -1
        todo = todo[todo >= 0]
    return out


def grid_parameters(std: float, sensitivity: float, dim: int) -> tuple[int, int]:
    """The grid ``2^k`` and the integer scale ``σ_g`` of :func:`opendp_gaussian`'s vectorised path.

    ``k = ⌈log₂ s⌉ − GRID_BITS``, and ``σ_g = ⌈s·Δ_k/(Δ·2^k)⌉`` with ``Δ_k`` = :func:`grid_sensitivity`
    ``(Δ, d, k)``, computed in exact rationals and rounded up, so the noise std ``s' = σ_g·2^k`` satisfies
    ``Δ_k/s' ≤ Δ/s``: the rounding of the inputs to ``2^k`` is paid for by a noise larger by a factor
    ``Δ_k/Δ`` (below ``1 + σ·√d↑·2^(1−GRID_BITS)``, √d↑ being √d rounded up to a double, e.g.
    ``1 + 2·10⁻¹¹`` at σ = 3.73, d = 6.3·10⁶) plus the rounding up of σ_g (at most ``2^(1−GRID_BITS)``),
    never by a larger ρ.

    Raises:
        PrivacyError: ``k < −1074``; ``k + 53 > 1023`` (``s > 2^1020``: ``σ_g·2^k`` and ``2^(k+53)``, which
            the exact rounding uses, would leave the float64 range); or ``σ_g ≥ 2^53`` (``Δ_k/Δ`` at least 8,
            i.e. σ√d of about 4·10¹⁵ or more: ``σ_g·2^k`` would not be exactly the double OpenDP's map
            is asked about).

    Example:
        >>> k, sigma_g = grid_parameters(3.7306, 1.0, 100_010)
        >>> k, 2**49 <= sigma_g <= 2**50
        (-48, True)
    """
    s, delta = float(std), float(sensitivity)
    mantissa, exponent = math.frexp(s)  # s = mantissa·2^exponent, mantissa in [1/2, 1)
    k = (exponent - 1 if mantissa == 0.5 else exponent) - GRID_BITS  # ⌈log₂ s⌉ − GRID_BITS
    if k < K_MIN:
        raise PrivacyError(f"`std` {std!r} is too small for the {GRID_BITS}-bit grid (k = {k} < {K_MIN}).")
    if k + 53 > 1023:
        raise PrivacyError(
            f"`std` must be at most 2^1020 on the {GRID_BITS}-bit grid. Got std={std!r} (k = {k}, k + 53 > 1023: the "
            f"scale σ_g·2^k would overflow float64); no noise was drawn."
        )
    sigma_g = math.ceil(Fraction(s) * grid_sensitivity(delta, dim, k) / (Fraction(delta) * Fraction(2) ** k))
    if sigma_g >= 2**53:
        raise PrivacyError(
            f"the grid scale σ_g (≥ 2^{sigma_g.bit_length() - 1}) is not below 2^53 (std={std!r}, "
            f"sensitivity={sensitivity!r}, dim={dim!r}: the grid's rounding term 2^k·√d is at least 7Δ), so σ_g·2^k "
            f"is not an exact double; no noise was drawn."
        )
    return k, sigma_g


def grid_sensitivity(sensitivity: float, dim: int, k: int) -> Fraction:
    """``Δ + 2^k·√d↑`` (exact; √d↑ is √d rounded up to a double, as OpenDP rounds it): the L2 distance two
    vectors at distance ≤ Δ can have once rounded to ``2^k``.

    Rounding moves each coordinate by at most ``2^(k−1)``, so two rounded vectors differ from the
    difference of the originals by a vector of coordinates at most ``2^k`` in magnitude, of norm at
    most ``2^k·√d ≤ 2^k·√d↑`` (triangle inequality). It is at least OpenDP's own bound
    :func:`sampler_sensitivity` before that rounds its result up to a double (which adds at most an ulp).

    Example:
        >>> grid_sensitivity(1.0, 16, -3)  # 1 + 4/8
        Fraction(3, 2)
    """
    return Fraction(float(sensitivity)) + Fraction(2) ** int(k) * Fraction(_sqrt_up(int(dim)))


def _grid_gaussian(x: torch.Tensor, std: float, delta: float) -> torch.Tensor:
    """OpenDP's ``make_gaussian(scale=σ_g·2^k, k)`` mechanism on a finite float64 vector, sampled by :func:`discrete_gaussian`.

    Returns ``round_f64(x̂ + 2^k·z)``, ``x̂_i`` = ``x_i`` rounded to the nearest multiple of ``2^k`` (ties to
    even), ``z ~ N_Z(0, σ_g²)`` independently per coordinate. Every step is exact: ``x̂_i`` is a double
    (a multiple of ``2^k`` of magnitude at most ``2^(k+53)``, or ``x_i`` itself when ``|x_i| ≥ 2^(k+53)``,
    which is then already a multiple of ``2^k``); ``2^k·z_i`` is a double when ``|z_i| ≤ 2^53``; and an
    IEEE-754 addition rounds the exact sum once, to nearest. The rare ``|z_i| > 2^53`` (beyond 8
    standard deviations) is summed in exact rationals and rounded by ``float(Fraction)``, also once.

    Before any draw it refuses (PrivacyError) what :func:`grid_parameters` refuses, a map of OpenDP's
    that charges more than ``(Δ/s)²/2`` (:func:`_check_charge`), and values with ``max |x̂_i| + 64·s'``
    above the largest double (the release could overflow; the noise passes 64 of its stds with
    probability below 2^-2900). Like the refusal of NaN and inf, that last check reads the values
    themselves; sums of norm-bounded records never come near it.
    """
    d = x.numel()
    k, sigma_g = grid_parameters(std, delta, d)  # k + 53 ≤ 1023 and σ_g < 2^53, else refused here
    scale = math.ldexp(sigma_g, k)  # σ_g·2^k, exact (σ_g < 2^53) and finite (below 2^(k+53) ≤ 2^1023)
    m = _opendp_measurement(d, scale, k)
    _check_charge(float(m.map(delta)), delta, std, f"scale {scale!r}, k = {k}")
    v = x.reshape(-1).numpy()
    small = np.abs(v) < math.ldexp(1.0, k + 53)
    with np.errstate(over="ignore"):  # entries too large to scale are not small: np.where keeps them as they are
        grid = np.where(small, np.ldexp(np.rint(np.ldexp(v, -k)), k), v)  # x̂: exact (scaling by 2^±k is exact here)
    top = float(np.max(np.abs(grid)))  # max |x̂_i|. Below the largest double (exact sum), every |x̂_i + 2^k z_i| with
    if Fraction(top) + _NOISE_REACH_STDS * Fraction(scale) > Fraction(sys.float_info.max):  # |z_i| ≤ 64σ_g is finite
        raise PrivacyError(
            f"the values to noise are too large for std {std!r}: max |x| = {top!r} plus {_NOISE_REACH_STDS} noise "
            f"stds ({_NOISE_REACH_STDS * scale!r}) exceeds the largest double {sys.float_info.max!r}, so the release "
            f"could overflow; no noise was drawn."
        )
    out = np.empty(d, dtype=np.float64)
    for start in range(0, d, _CHUNK):
        z = discrete_gaussian(sigma_g, min(_CHUNK, d - start))
        part = grid[start : start + len(z)]
        out[start : start + len(z)] = part + np.ldexp(z.astype(np.float64), k)  # z exact when |z| ≤ 2^53
        for t in np.flatnonzero(np.abs(z) > 2**53).tolist():
            out[start + t] = float(Fraction(float(part[t])) + Fraction(int(z[t])) * Fraction(2) ** k)
    if not bool(np.isfinite(out).all()):  # only past 64 noise stds (probability < 2^-2900 per coordinate)
        raise PrivacyError("the noisy values overflowed the float64 range; the inputs are too large to release.")
    return torch.from_numpy(out).reshape(x.shape)


_CHUNK = 1 << 20  # coordinates per batch of the vectorised sampler (bounds its memory)
_NOISE_REACH_STDS = 64  # public bound on |noise| checked before drawing: P(|z| ≥ 64σ_g) ≤ 2e^-2048 < 2^-2900


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
