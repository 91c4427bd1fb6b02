"""The vectorised exact discrete Gaussian (mmgen.privacy.noise.discrete_gaussian) and the release path built on it.

The law: χ² goodness of fit against the exact pmf ``P(z) ∝ exp(−z²/(2σ²))`` at small σ (where it can be
tabulated, and in bins at σ = 1,000), for the vectorised sampler, for its Python-integer reference, and with every rare slow path
forced; moments and tails at the release's σ_g ≈ 2^49. The arithmetic: the table of ``e^(−m/2)`` against
an independent decimal computation, forced ties, and the mechanism's output compared bit for bit with
``round_f64(x̂ + 2^k·z)`` computed in exact rationals. The privacy map: OpenDP's own map of the measurement
sampled never charges more than ``(Δ/s)²/2``. Every statistical check uses ``P_MIN = 1e-6`` (about 36
p-values here: a correct sampler fails this file with probability below 4e-5), and each kind of check is
shown to reject a wrong law.
"""

from __future__ import annotations

import decimal
import math
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats

from mmgen.errors import PrivacyError
from mmgen.privacy import gaussian_mechanism, opendp_rho
from mmgen.privacy import noise as noise_module
from mmgen.privacy.noise import (
    FAST_MIN_COORDINATES,
    MAP_RTOL,
    discrete_gaussian,
    discrete_gaussian_scalar,
    grid_parameters,
    grid_sensitivity,
    sampler_sensitivity,
)

P_MIN = 1e-6


def _pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    """The exact discrete Gaussian pmf on ``support`` (normalised over ±40σ: the rest is below 1e-300)."""
    grid = np.arange(-int(40 * sigma) - 1, int(40 * sigma) + 2)
    norm = math.fsum(math.exp(-float(v) ** 2 / (2 * sigma**2)) for v in grid)
    return np.array([math.exp(-float(v) ** 2 / (2 * sigma**2)) / norm for v in support])


def chi2_pvalue(z: np.ndarray, sigma: float) -> float:
    """χ² goodness of fit of integer draws ``z`` to ``N_Z(0, σ²)``: one cell per value in ``[−h, h]``, the two
    outermost cells holding the tails ``z ≤ −h`` and ``z ≥ h`` (h: the last value with an expected count ≥ 5)."""
    n = len(z)
    h = 0
    while _pmf(sigma, np.array([h + 1]))[0] * n >= 5:
        h += 1
    h = max(h, 1)
    support = np.arange(-h, h + 1)
    p = _pmf(sigma, support)
    tail = (1.0 - p.sum()) / 2  # the pmf is symmetric
    expected = p * n
    expected[0] += tail * n
    expected[-1] += tail * n
    observed = np.array([np.sum(z == v) for v in support], dtype=float)
    observed[0], observed[-1] = np.sum(z <= -h), np.sum(z >= h)
    return float(stats.chisquare(observed, expected * (n / expected.sum())).pvalue)


@pytest.mark.parametrize("sigma", [1, 2, 3, 7])
def test_vectorised_sampler_matches_the_exact_law(sigma):
    z = discrete_gaussian(sigma, 100_000)
    assert z.dtype == np.int64 and z.shape == (100_000,)
    assert chi2_pvalue(z, sigma) > P_MIN


def binned_chi2_pvalue(z: np.ndarray, sigma: int, width: int) -> float:
    """χ² of integer draws against ``N_Z(0, σ²)`` in bins of ``width`` integers over ±4σ (tails pooled), exact bin masses."""
    support = np.arange(-40 * sigma, 40 * sigma + 1)
    weights = np.exp(-(support.astype(np.float64) ** 2) / (2.0 * sigma**2))
    pmf = weights / math.fsum(weights.tolist())
    edges = np.arange(-4 * sigma, 4 * sigma + width, width)  # bin b holds edges[b] <= z < edges[b + 1]; tails apart
    idx = np.searchsorted(edges, support, side="right")  # 0: below -4σ, len(edges): at or above the last edge
    expected = np.bincount(idx, weights=pmf, minlength=len(edges) + 1) * len(z)
    observed = np.bincount(np.searchsorted(edges, z, side="right"), minlength=len(edges) + 1).astype(float)
    return float(stats.chisquare(observed, expected * (len(z) / expected.sum())).pvalue)


def test_vectorised_sampler_matches_the_exact_law_at_a_middle_sigma():
    """σ = 1000: equal digits (the Python-integer fraction comparison) once in a thousand comparisons."""
    z = discrete_gaussian(1000, 200_000)
    assert binned_chi2_pvalue(z, 1000, 100) > P_MIN
    assert binned_chi2_pvalue(z + 30, 1000, 100) < P_MIN  # a 0.03σ shift is seen


def test_the_chi2_check_rejects_a_wrong_law():
    assert chi2_pvalue(discrete_gaussian(7, 100_000), 7.4) < P_MIN  # σ 6 % off
    z = discrete_gaussian(3, 100_000)
    assert chi2_pvalue(np.abs(z), 3) < P_MIN  # folded: no negative values
    assert chi2_pvalue(np.where(z == 0, 1, z), 3) < P_MIN  # zero moved to 1


def test_python_integer_reference_matches_the_exact_law():
    z = np.array([discrete_gaussian_scalar(2) for _ in range(20_000)])
    assert chi2_pvalue(z, 2) > P_MIN


def test_slow_paths_forced_keep_the_law(monkeypatch):
    """Fraction comparisons bit by bit (1-bit chunks: ties every other bit), every k ≥ 1 in Python integers."""
    monkeypatch.setattr(noise_module, "FRACTION_CHUNK_BITS", 1)
    monkeypatch.setattr(noise_module, "_VECTOR_K_MAX", 0)
    calls = []
    real = noise_module._trial_scalar

    def counting(k, sigma):
        calls.append(k)
        return real(k, sigma)

    monkeypatch.setattr(noise_module, "_trial_scalar", counting)
    for sigma in (1, 2, 5):
        assert chi2_pvalue(discrete_gaussian(sigma, 30_000), sigma) > P_MIN
    assert len(calls) > 10_000  # the Python-integer trials really ran


def test_large_sigma_moments_and_tails():
    """At the release's grid scale (σ_g ∈ [2^49, 2^50]): mean, variance, normality and tail frequencies."""
    sigma = 2**49 + 123_457
    n = 1 << 19
    z = discrete_gaussian(sigma, n).astype(np.float64) / sigma  # exact enough: |z| < 2^53, one rounding
    assert 2 * stats.norm.sf(abs(z.mean()) * math.sqrt(n)) > P_MIN
    ss = float((z**2).sum())
    assert 2 * min(stats.chi2.cdf(ss, n), stats.chi2.sf(ss, n)) > P_MIN
    assert stats.kstest(z, "norm").pvalue > P_MIN  # the lattice step is 2^-49 σ: the normal's CDF to 1e-14
    for t in (2.0, 3.0, 4.0):
        beyond = int(np.sum(np.abs(z) > t))
        assert stats.binomtest(beyond, n, 2 * stats.norm.sf(t)).pvalue > P_MIN, t
    assert stats.binomtest(int(np.sum(np.abs(z * 1.02) > 3.0)), n, 2 * stats.norm.sf(3.0)).pvalue < P_MIN  # has power


def test_exp_table_is_exact():
    """Words of e^(−m/2) against an independent 80-digit decimal computation."""
    ctx = decimal.Context(prec=80)
    for m in list(range(1, 65)) + [100, 301]:
        value = ctx.exp(ctx.divide(decimal.Decimal(-m), decimal.Decimal(2)))
        for i in (0, 1):
            scaled = ctx.multiply(value, decimal.Decimal(2 ** (64 * (i + 1))))  # an exact integer
            assert noise_module._exp_half_word(m, i) == int(scaled.to_integral_value(rounding=decimal.ROUND_FLOOR)) % 2**64
    table = noise_module._exp_table()
    assert table.dtype == np.uint64 and bool(np.all(table[1:] > table[:-1]))


def test_ties_with_the_table_are_decided_by_the_next_words(monkeypatch):
    word0, word1 = noise_module._exp_half_word(3, 0), noise_module._exp_half_word(3, 1)
    for nxt, expected in ((word1 - 1, True), (word1 + 1, False)):
        feed = iter([np.array([word0], dtype=np.uint64), np.array([nxt], dtype=np.uint64)])
        monkeypatch.setattr(noise_module, "_words", lambda n, feed=feed: next(feed))
        assert noise_module._bernoulli_exp_half(np.array([3])).tolist() == [expected]
    # the geometric: a first word equal to the threshold of m = 5 gives k = 5 or 4, by the next word
    word0, word1 = noise_module._exp_half_word(5, 0), noise_module._exp_half_word(5, 1)
    for nxt, expected in ((word1 - 1, 5), (word1 + 1, 4)):
        feed = iter([np.array([word0], dtype=np.uint64), np.array([nxt], dtype=np.uint64)])
        monkeypatch.setattr(noise_module, "_words", lambda n, feed=feed: next(feed))
        assert noise_module._geometric_half(1).tolist() == [expected]
    # m above the table (k ≥ 9 in D2): e^(−130/2) = e^(−32)·e^(−32)·e^(−1), one word for each factor, all needed
    for last, expected in ((0, True), (2**64 - 1, False)):
        feed = iter([np.array([w], dtype=np.uint64) for w in (0, 0, last)])
        monkeypatch.setattr(noise_module, "_words", lambda n, feed=feed: next(feed))
        assert noise_module._bernoulli_exp_half(np.array([130])).tolist() == [expected]
        assert next(feed, None) is None  # exactly three words were read
    # a first word below every threshold: k ≥ 64, then 64 + a fresh geometric (here 64 + 0)
    feed = iter([np.array([0], dtype=np.uint64), np.array([2**64 - 1], dtype=np.uint64)])
    monkeypatch.setattr(noise_module, "_words", lambda n: next(feed))
    assert noise_module._geometric_half(1).tolist() == [64]


def test_uniform_below_is_exact_with_rejection(monkeypatch):
    top = 2**64 - 1 - (2**64 % 3)  # the largest word kept for m = 3
    feed = iter([np.array([top + 1, 5], dtype=np.uint64), np.array([7], dtype=np.uint64)])
    monkeypatch.setattr(noise_module, "_words", lambda n: next(feed))
    assert noise_module._uniform_below(3, 2).tolist() == [7 % 3, 5 % 3]  # the first word was redrawn
    # the boundary: the largest word kept (2^64 − 1 − (2^64 mod m)) is kept, the next one is not, per element
    big = 2**63 - 25  # 2^64 mod big = 50
    for m in (3, big):
        top = 2**64 - 1 - (2**64 % m)
        feed = iter([np.array([top], dtype=np.uint64)])
        monkeypatch.setattr(noise_module, "_words", lambda n, feed=feed: next(feed))
        assert noise_module._uniform_below(m, 1).tolist() == [top % m] == [m - 1]
    feed = iter([np.array([2**64 - 51, 2**64 - 50], dtype=np.uint64), np.array([9], dtype=np.uint64)])
    monkeypatch.setattr(noise_module, "_words", lambda n: next(feed))
    assert noise_module._uniform_below(np.array([big, big], dtype=np.uint64), 2).tolist() == [big - 1, 9]
    monkeypatch.undo()
    u = noise_module._uniform_below(np.array([6] * 60_000, dtype=np.uint64), 60_000)
    assert stats.chisquare(np.bincount(u.astype(np.int64), minlength=6)).pvalue > P_MIN


def test_bernoulli_b_has_its_probability():
    """B(k, x) is true with probability exp(−x(2k + x)/(2k + 2)), x = j/σ."""
    sigma, n = 5, 40_000
    for k, j in ((0, 4), (1, 3), (3, 1), (2, 0)):
        hits = int(noise_module._bernoulli_b(np.full(n, k), np.full(n, j), sigma).sum())
        x = j / sigma
        p = math.exp(-x * (2 * k + x) / (2 * k + 2))
        assert stats.binomtest(hits, n, p).pvalue > P_MIN, (k, j)
        scalar = sum(noise_module._bernoulli_b_scalar(k, j, sigma) for _ in range(n // 2))  # the Python-integer B
        assert stats.binomtest(scalar, n // 2, p).pvalue > P_MIN, (k, j, "scalar")


@pytest.mark.parametrize("chunk_bits", [64, 1])
def test_tied_digit_steps_have_their_law(monkeypatch, chunk_bits):
    """Algorithm B continued in Python integers after a tie of digits (:func:`_b_steps_from`).

    At σ = 1 every digit ties, so every comparison of ``z_i < z_(i−1)`` is decided by the lazily revealed
    fractions; a ``z`` that wins keeps the bits already revealed when it becomes the next ``y``. From
    ``steps = 1`` with ``f = (2kσ + j)/((2k + 2)σ)``: ``P(steps ≥ 1 + m) = f^m/(m + 1)!`` (m + 1 ordered
    uniforms). A sampler that forgets the revealed bits gives ``f^m/2^m`` instead (3/2 times too many
    third steps here), one that tests ``r ≤ f`` instead of ``r < f`` gives f = 3/4: both are rejected.
    """
    monkeypatch.setattr(noise_module, "FRACTION_CHUNK_BITS", chunk_bits)
    k, j, sigma, n = 1, 0, 1, 20_000
    f = Fraction(2 * k * sigma + j, (2 * k + 2) * sigma)
    at_least = [float(f**m / math.factorial(m + 1)) for m in range(4)]  # P(steps ≥ 1 + m), m = 0..3
    p = np.array([at_least[0] - at_least[1], at_least[1] - at_least[2], at_least[2] - at_least[3], at_least[3]])
    steps = np.array([noise_module._b_steps_from(k, j, sigma, 1, noise_module._LazyUniform(0),
                                                 noise_module._LazyUniform(0)) for _ in range(n)])  # fmt: skip
    observed = np.bincount(np.minimum(steps, 4), minlength=5)[1:].astype(float)
    assert steps.min() == 1 and stats.chisquare(observed, p * n).pvalue > P_MIN
    forgetful = np.array([1 - f / 2, f / 2 - f**2 / 4, f**2 / 4 - f**3 / 8, f**3 / 8], dtype=float)
    assert stats.chisquare(np.round(forgetful * n), p * n).pvalue < P_MIN  # the test tells the two laws apart


def test_grid_parameters_pay_for_rounding_with_noise_not_rho():
    for sigma, delta, dim in ((3.7306, 1 + 1e-5, 100_010), (0.49989, 1.0, 6_300_000), (20.0, math.sqrt(2), 4096),
                              (1e-3, 1e-2, 10**8)):  # fmt: skip
        std = sigma * delta
        k, sigma_g = grid_parameters(std, delta, dim)
        assert 2.0 ** (k + 49) < std <= 2.0 ** (k + 50) and 2**49 < sigma_g <= 2**50 * (1 + 1e-6) + 1
        scale = Fraction(sigma_g) * Fraction(2) ** k
        assert grid_sensitivity(delta, dim, k) / scale <= Fraction(delta) / Fraction(std)  # exact: ρ' ≤ (Δ/s)²/2
        assert (grid_sensitivity(delta, dim, k) - Fraction(delta)) ** 2 >= Fraction(4) ** k * dim  # 2^k·√d, or more
        # ours ≥ OpenDP's (whose mirror rounds up to the next double)
        assert sampler_sensitivity(delta, dim, k) <= math.nextafter(float(grid_sensitivity(delta, dim, k)), math.inf)
        assert Fraction(opendp_rho(delta, float(scale), dim, k)) <= (Fraction(delta) / Fraction(std)) ** 2 / 2 * (
            1 + Fraction(MAP_RTOL))
        assert float(scale) / std - 1 < (1 + sigma * (math.isqrt(dim) + 2)) * 2.0**-49 + 1e-15  # the extra noise


def _charge_excess(std: float, delta: float, dim: int) -> float:
    """OpenDP's map of the vectorised path's measurement over the exact ``(Δ/s)²/2``, minus 1."""
    k, sigma_g = grid_parameters(std, delta, dim)
    charged = opendp_rho(delta, math.ldexp(sigma_g, k), dim, k)
    return float(Fraction(charged) / ((Fraction(delta) / Fraction(std)) ** 2 / 2) - 1)


def test_the_map_check_leaves_only_float_rounding():
    """OpenDP's charge sits within [−4e-15, MAP_RTOL/10] of the exact (Δ/s)²/2 over σ from 10⁻³ to 10⁶ and d up to
    10⁸, square and not (the grid's √d is OpenDP's, rounded up to a double: ⌈√d⌉ overpaid up to 2.6e-9 at σ = 10⁶)."""
    assert MAP_RTOL <= 1e-14
    for sigma in (1e-3, 0.49989, 3.7306, 1000.0, 1e6):
        for delta in (1e-3, 1.0, math.sqrt(2) * (1 + 1e-5)):
            for dim in (4096, 4097, 100_010, 10**8):
                excess = _charge_excess(sigma * delta, delta, dim)
                assert -4e-15 <= excess <= MAP_RTOL / 10, (sigma, delta, dim, excess)  # σ_g rounded up: ≥ −2^-48


def test_an_uninflated_scale_is_refused_at_4096(monkeypatch):
    """Leaving out the std inflation that pays for rounding to the grid costs 4.5e-13 of ρ at d = 4,096, σ = 3.73:
    small, but not float rounding, so nothing is drawn."""
    monkeypatch.setattr(noise_module, "grid_sensitivity", lambda delta, dim, k: Fraction(float(delta)))
    assert 4e-13 < _charge_excess(3.7306, 1.0, FAST_MIN_COORDINATES) < 5e-13
    drawn = []
    monkeypatch.setattr(noise_module, "discrete_gaussian", lambda *a: drawn.append(a))
    with pytest.raises(PrivacyError, match="charges"):
        noise_module.opendp_gaussian(torch.zeros(FAST_MIN_COORDINATES), std=3.7306, sensitivity=1.0)
    assert not drawn


def _refused_before_drawing(monkeypatch, x: torch.Tensor, std: float, delta: float, match: str) -> None:
    drawn = []
    monkeypatch.setattr(noise_module, "discrete_gaussian", lambda s, n: drawn.append(n) or np.zeros(n, np.int64))
    with pytest.raises(PrivacyError, match=match):
        noise_module.opendp_gaussian(x, std=std, sensitivity=delta)
    assert not drawn


def test_a_grid_scale_of_2_53_or_more_is_refused(monkeypatch):
    """σ_g·2^k must be the exact double OpenDP's map is asked about: σ_g < 2^53, else nothing is drawn."""
    with pytest.raises(PrivacyError, match="2\\^53"):
        grid_parameters(1.0, 5e-15, FAST_MIN_COORDINATES)  # σ = 2·10¹⁴: 2^k·√d = 11Δ, σ_g ≈ 2^53.6
    _refused_before_drawing(monkeypatch, torch.zeros(FAST_MIN_COORDINATES), 1.0, 5e-15, "2\\^53")
    k, sigma_g = grid_parameters(1.0, 1e-14, FAST_MIN_COORDINATES)  # σ_g ≈ 2^52.7: still allowed
    assert sigma_g < 2**53


def test_a_std_beyond_2_1020_is_refused_before_drawing(monkeypatch):
    """k + 53 > 1023 would overflow σ_g·2^k and 2^(k+53) (math.ldexp raised OverflowError): PrivacyError instead."""
    with pytest.raises(PrivacyError, match="2\\^1020"):
        grid_parameters(2.0**1021, 2.0**1020, FAST_MIN_COORDINATES)
    _refused_before_drawing(monkeypatch, torch.zeros(FAST_MIN_COORDINATES), 2.0**1021, 2.0**1020, "2\\^1020")
    _refused_before_drawing(monkeypatch, torch.zeros(FAST_MIN_COORDINATES), 2.0**1020, 2.0**1019, "too large")


def test_values_that_could_overflow_are_refused_before_drawing(monkeypatch):
    """max |x| + 64 noise stds must stay below the largest double; the check is exact and runs before any draw."""
    x = torch.zeros(FAST_MIN_COORDINATES, dtype=torch.float64)
    x[7] = -1.7e308  # + 64·2^1015 = 2^1021 ≈ 2.2e307 passes 1.797e308
    _refused_before_drawing(monkeypatch, x, 2.0**1015, 2.0**1014, "too large")
    x[7] = sys.float_info.max  # at std 1: 64 more is past the largest double, exactly
    _refused_before_drawing(monkeypatch, x, 1.0, 0.25, "too large")
    x[7] = 1e308  # + 64·2^1000 ≈ 6.9e302: fine, drawn, finite
    monkeypatch.undo()
    out = noise_module.opendp_gaussian(x, std=2.0**1000, sensitivity=2.0**999)
    assert bool(torch.isfinite(out).all()) and out[7] != 1e308


def _exact_output(x: float, z: int, k: int) -> float:
    """round_f64(x̂ + 2^k z) in exact rationals: x̂ = x rounded to the nearest multiple of 2^k, ties to even."""
    q = Fraction(x) / Fraction(2) ** k
    lo = math.floor(q)
    rounded = lo + 1 if (q - lo > Fraction(1, 2) or (q - lo == Fraction(1, 2) and lo % 2)) else lo
    return float((rounded + z) * Fraction(2) ** k)


def test_mechanism_output_is_the_exactly_rounded_sum(monkeypatch):
    std, delta = 3.7306, 1.0
    k, sigma_g = grid_parameters(std, delta, FAST_MIN_COORDINATES)
    step = 2.0**k
    specials = [0.0, -0.0, 5e-324, -1e-300, 1e-17, 0.5 * step, 1.5 * step, -2.5 * step, 1e30, -7.25e15, 6000.0,
                2.0 ** (k + 53), 2.0 ** (k + 52) + 3 * step, 0.1, -3.3]  # fmt: skip
    rng = np.random.default_rng(1)  # public test inputs
    x = np.concatenate([specials, rng.normal(0, 50, FAST_MIN_COORDINATES - len(specials))])
    z = rng.integers(-2 * sigma_g, 2 * sigma_g, len(x))
    z[:6] = [2**53 + 1, -(2**53) - 3, 2**60 + 12345, 0, 1, -1]  # beyond 2^53: the exact-rational path
    monkeypatch.setattr(noise_module, "discrete_gaussian", lambda s, n: z[:n].copy() if s == sigma_g else None)
    out = noise_module.opendp_gaussian(torch.from_numpy(x), std=std, sensitivity=delta)
    expected = [_exact_output(float(a), int(b), k) for a, b in zip(x, z)]
    assert out.numpy().tolist() == expected


def test_refuses_to_draw_when_opendp_charges_more(monkeypatch):
    real = noise_module._opendp_measurement

    def coarse(dim, std, k=None):  # a measurement whose rounding charge the scale does not pay for
        return real(dim, std, -10)

    drawn = []
    monkeypatch.setattr(noise_module, "_opendp_measurement", coarse)
    monkeypatch.setattr(noise_module, "discrete_gaussian", lambda *a: drawn.append(a))
    with pytest.raises(PrivacyError, match="charges"):
        gaussian_mechanism(torch.zeros(FAST_MIN_COORDINATES), noise_multiplier=1.0, sensitivity=1.0)
    assert not drawn


def test_release_size_noise_has_the_scale_and_comes_from_os_entropy(monkeypatch):
    n = 200_000
    value = torch.randn(n, dtype=torch.float64) * 100
    torch.manual_seed(0)
    np.random.seed(0)
    a = gaussian_mechanism(value, noise_multiplier=3.0, sensitivity=0.5)
    torch.manual_seed(0)
    np.random.seed(0)
    b = gaussian_mechanism(value, noise_multiplier=3.0, sensitivity=0.5)
    assert not torch.equal(a, b) and a.dtype == torch.float64
    noise = ((a - value) / 1.5).numpy()
    assert stats.kstest(noise, "norm").pvalue > P_MIN and abs(float(noise.std()) - 1) < 0.01

    def forbidden(n):
        raise AssertionError("no OS entropy")

    monkeypatch.setattr(noise_module.os, "urandom", forbidden)
    with pytest.raises(AssertionError, match="no OS entropy"):
        gaussian_mechanism(value[:FAST_MIN_COORDINATES], noise_multiplier=3.0, sensitivity=0.5)


def test_small_vectors_keep_opendps_sampler(monkeypatch):
    made = []
    real = noise_module._opendp_measurement
    monkeypatch.setattr(noise_module, "_opendp_measurement", lambda *a: made.append(a) or real(*a))
    monkeypatch.setattr(noise_module, "discrete_gaussian", lambda *a: (_ for _ in ()).throw(AssertionError("vectorised")))
    gaussian_mechanism(torch.zeros(FAST_MIN_COORDINATES - 1), noise_multiplier=1.0, sensitivity=1.0)
    assert made == [(FAST_MIN_COORDINATES - 1, 1.0)]


def test_bad_sigma_is_refused():
    for bad in (0, -1, 2**60, 1.5, True):
        with pytest.raises(PrivacyError):
            discrete_gaussian(bad, 3)


def test_drawing_noise_does_not_import_opendp_prelude():
    """The release's noise imports only the OpenDP modules it uses: ``opendp.prelude`` pulls in scikit-learn
    (about 1 s of every release, docs/noise.md). Fails if the import comes back on either sampler's path."""
    import subprocess

    code = (
        "import sys, torch\n"
        "from mmgen.privacy.noise import opendp_gaussian, FAST_MIN_COORDINATES\n"
        "for n in (10, FAST_MIN_COORDINATES):\n"
        "    out = opendp_gaussian(torch.zeros(n), std=2.0, sensitivity=1.0)\n"
        "    assert out.shape == (n,) and bool((out != 0).any())\n"
        "print(sorted(m for m in sys.modules if m == 'opendp.prelude' or m.startswith('sklearn'))[:3])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
