"""The noise: OpenDP's sampler on the release path, its accounting pinned to OpenDP's own map,
the right law, independent draws, the fast simulation sampler and the seeded test mode.

Every statistical check uses the fixed level ``P_MIN = 1e-6``: with the checks below
(three samples of six p-values each), a correct generator fails this file with
probability below 2e-5. Each check is also shown to reject a broken generator, so
none of them is a tautology.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from scipy import stats

from mmgen.errors import PrivacyError
from mmgen.privacy import (
    gaussian_mechanism,
    opendp_gaussian,
    opendp_rho,
    sampler_sensitivity,
    secure_standard_normal,
    seeded_standard_normal,
    simulated_gaussian_mechanism,
)
from mmgen.privacy import noise as noise_module

P_MIN = 1e-6
N = 200_000
N_OPENDP = 50_000  # OpenDP draws ~10^4 coordinates per second on one core: a smaller sample


def _run_lengths(signs: np.ndarray) -> np.ndarray:
    change = np.flatnonzero(np.diff(signs.astype(np.int8))) + 1
    edges = np.concatenate([[0], change, [len(signs)]])
    return np.diff(edges)


def p_values(z: np.ndarray) -> dict[str, float]:
    """p-values of the normality and independence checks of a sample meant to be iid N(0, 1)."""
    n = len(z)
    out = {
        "kolmogorov-smirnov": stats.kstest(z, "norm").pvalue,
        "cramer-von mises": stats.cramervonmises(z, "norm").pvalue,
        # (Anderson–Darling is left out: scipy's `anderson` estimates the parameters and gives
        # tabulated critical values only, none near 1e-6. Cramér–von Mises is the same EDF
        # family with the law fully specified.) Exact checks of the first two moments:
        "mean": 2 * stats.norm.sf(abs(z.mean()) * math.sqrt(n)),
        "variance": 2 * min(stats.chi2.cdf((z**2).sum(), n), stats.chi2.sf((z**2).sum(), n)),
    }
    r1 = float(np.corrcoef(z[:-1], z[1:])[0, 1])
    out["lag-1 autocorrelation"] = 2 * stats.norm.sf(abs(r1) * math.sqrt(n))
    # sign runs: for iid symmetric draws, run lengths are geometric, P(L = k) = 2^-k
    lengths = _run_lengths(z > 0)
    k_max = 12
    observed = np.array([np.sum(lengths == k) for k in range(1, k_max)] + [np.sum(lengths >= k_max)])
    probs = np.array([2.0**-k for k in range(1, k_max)] + [2.0 ** -(k_max - 1)])
    out["sign-run lengths (chi-square)"] = stats.chisquare(observed, probs * len(lengths)).pvalue
    return out


def test_secure_noise_passes_normality_and_independence():
    z = secure_standard_normal((N,)).numpy()
    assert z.dtype == np.float64
    failed = {k: p for k, p in p_values(z).items() if not p > P_MIN}
    assert not failed, failed


def _broken_generators(rng):
    n = N
    u1, u2 = rng.random(n), rng.random(n)
    ar = np.empty(n)
    e = rng.standard_normal(n)
    ar[0] = e[0]
    for i in range(1, n):  # AR(1) with rho = 0.05, unit variance
        ar[i] = 0.05 * ar[i - 1] + math.sqrt(1 - 0.05**2) * e[i]
    signs = np.repeat(rng.choice([-1.0, 1.0], n // 2), 2)  # each sign repeated: runs too long
    return {
        "uniform, scaled to unit variance": (rng.random(n) - 0.5) * math.sqrt(12),
        "Box-Muller with 8-bit uniforms": np.sqrt(-2 * np.log((np.floor(u1 * 256) + 1) / 256)) * np.cos(2 * np.pi * u2),
        "variance 1.02": rng.standard_normal(n) * math.sqrt(1.02),
        "mean 0.02": rng.standard_normal(n) + 0.02,
        "AR(1), rho 0.05": ar,
        "paired signs": signs * np.abs(rng.standard_normal(n)),
    }


@pytest.mark.parametrize("name", [
    "uniform, scaled to unit variance", "Box-Muller with 8-bit uniforms", "variance 1.02", "mean 0.02",
    "AR(1), rho 0.05", "paired signs",
])  # fmt: skip
def test_the_checks_reject_broken_noise(name):
    z = _broken_generators(np.random.default_rng(7))[name]
    assert min(p_values(z).values()) < P_MIN


def test_noise_comes_from_os_entropy_not_a_seeded_generator(monkeypatch):
    torch.manual_seed(0)
    np.random.seed(0)
    a = secure_standard_normal((1000,))
    torch.manual_seed(0)
    np.random.seed(0)
    b = secure_standard_normal((1000,))
    assert not torch.equal(a, b)  # library seeds do not reproduce it
    calls = []
    real = noise_module.os.urandom

    def spy(n):
        calls.append(n)
        return real(n)

    monkeypatch.setattr(noise_module.os, "urandom", spy)
    secure_standard_normal((10,))
    assert sum(calls) == 2 * 8 * 10  # 64 bits per uniform, two uniforms per normal


def test_uniforms_are_in_the_half_open_interval_with_53_bits(monkeypatch):
    monkeypatch.setattr(noise_module.os, "urandom", lambda n: b"\0" * n)
    assert noise_module._uniform_open_closed(4).tolist() == [2.0**-53] * 4  # never 0: log is finite
    monkeypatch.setattr(noise_module.os, "urandom", lambda n: b"\xff" * n)
    assert noise_module._uniform_open_closed(4).tolist() == [1.0] * 4
    z = secure_standard_normal((3,))  # all-ones bits: u1 = 1 gives z = 0 exactly
    assert torch.equal(z, torch.zeros(3, dtype=torch.float64))


def _std_matches(noise: np.ndarray, std: float, rel: float = 0.02) -> bool:
    """The sample std is within ``rel`` of ``std`` (a 6-sigma band at 50,000 draws)."""
    return abs(float(np.sqrt(np.mean(noise**2))) / std - 1) < rel


def test_mechanism_noise_has_the_calibrated_scale_and_law():
    value = torch.randn(N_OPENDP, dtype=torch.float64) * 100  # non-zero inputs: the exact sum is rounded once
    out = gaussian_mechanism(value, noise_multiplier=3.0, sensitivity=0.5)
    assert out.dtype == torch.float64 and out.shape == value.shape
    noise = (out - value).numpy()
    assert _std_matches(noise, 1.5)
    assert not _std_matches(noise * 1.03, 1.5) and not _std_matches(noise, 3.0)  # the band rejects a wrong scale
    failed = {k: p for k, p in p_values(noise / 1.5).items() if not p > P_MIN}
    assert not failed, failed


class _Spy:
    """Wraps an OpenDP measurement: records what is asked of it."""

    def __init__(self, inner):
        self.inner, self.draws, self.maps = inner, 0, []

    def map(self, d_in):
        self.maps.append(d_in)
        return self.inner.map(d_in)

    def __call__(self, arg):
        self.draws += 1
        return self.inner(arg)


def test_release_noise_is_drawn_by_opendp_and_nothing_else(monkeypatch):
    made = []
    real = noise_module._opendp_measurement

    def spying(dim, std, k=None):
        made.append((dim, std, k))
        made.append(_Spy(real(dim, std, k)))
        return made[-1]

    def forbidden(*args, **kwargs):
        raise AssertionError("the release path drew noise outside OpenDP")

    monkeypatch.setattr(noise_module, "_opendp_measurement", spying)
    monkeypatch.setattr(noise_module.os, "urandom", forbidden)  # no Box–Muller
    monkeypatch.setattr(noise_module.np.random, "default_rng", forbidden)  # no seeded NumPy
    value = torch.zeros(10, 7, dtype=torch.float32)
    out = gaussian_mechanism(value, noise_multiplier=2.0, sensitivity=1.25)
    assert out.shape == (10, 7) and out.dtype == torch.float64
    (dim, std, k), spy = made
    assert (dim, std, k) == (70, 2.5, None)  # one vector, std = σΔ, OpenDP's default k
    assert spy.draws == 1 and spy.maps == [1.25]  # its map was asked about Δ before the single draw
    assert torch.all(out != 0)


def test_release_noise_has_no_seed_and_ignores_library_seeds():
    assert list(inspect.signature(opendp_gaussian).parameters) == ["values", "std", "sensitivity"]
    with pytest.raises(TypeError):
        opendp_gaussian(torch.zeros(3), std=1.0, sensitivity=1.0, seed=3)  # type: ignore[call-arg]
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        np.random.seed(0)
        outs.append(gaussian_mechanism(torch.zeros(100), noise_multiplier=1.0, sensitivity=1.0))
    assert not torch.equal(*outs)


def test_accounting_is_opendps_own_map():
    """OpenDP charges ρ = 1/(2σ²) for Δ: the ρ of the Gaussian mechanism with μ = 1/σ that calibration assumes."""
    for sigma in (0.49989, 3.7306316, 20.0):
        for delta in (1.0, math.sqrt(2) * (1 + 1e-5)):
            for dim in (1, 10 * 10_001, 10 * 20_001):
                rho = opendp_rho(delta, sigma * delta, dim)
                assert math.isclose(rho, 1 / (2 * sigma**2), rel_tol=1e-12), (sigma, delta, dim, rho)


@pytest.mark.parametrize("k", [None, -1074, -1073, -1000, -60, -40, -20, 0, 5])
def test_sampler_sensitivity_is_pinned_to_opendps_map(k):
    for dim in (1, 2, 100, 10 * 10_001, 10 * 20_001):
        for delta, std in ((1.0, 3.0), (0.3, 0.7)):
            ours = (sampler_sensitivity(delta, dim, k) / std) ** 2 / 2
            theirs = opendp_rho(delta, std, dim, k)
            assert math.isclose(ours, theirs, rel_tol=1e-12), (k, dim, delta, ours, theirs)
            assert sampler_sensitivity(delta, dim, k) >= delta
    assert sampler_sensitivity(0.7, 10 * 10_001) == 0.7  # default k: no inflation at all
    # a coarse grid costs a visible amount, so the pin above is not vacuous
    assert sampler_sensitivity(1.0, 100_010, -20) > 1 + 3e-4
    assert opendp_rho(1.0, 1.0, 100_010, -20) > 0.5 * (1 + 6e-4)


def test_sampler_sensitivity_refuses_what_opendp_refuses():
    for bad in (dict(sensitivity=-1.0, dim=3), dict(sensitivity=math.inf, dim=3), dict(sensitivity=1.0, dim=-1),
                dict(sensitivity=1.0, dim=3, k=-1075)):  # fmt: skip
        with pytest.raises(PrivacyError):
            sampler_sensitivity(**bad)
    with pytest.raises(Exception, match="k"):
        opendp_rho(1.0, 1.0, 3, k=-1075)


def test_opendp_rounds_inputs_to_its_grid_when_k_is_coarse():
    """What k means: inputs and outputs on multiples of 2^k (here 2^-10). The release uses k = -1074."""
    out = noise_module._opendp_measurement(3, 2.0, k=-10)([0.1, 1e6, -3.3])
    assert all(float(v * 1024).is_integer() for v in out)


def test_refuses_to_draw_when_opendp_charges_more_than_the_accounting(monkeypatch):
    real = noise_module._opendp_measurement
    spies = []

    def coarse(dim, std, k=None):  # a measurement whose map inflates Δ for rounding
        spies.append(_Spy(real(dim, std, -10)))
        return spies[-1]

    monkeypatch.setattr(noise_module, "_opendp_measurement", coarse)
    with pytest.raises(PrivacyError, match="charges"):
        gaussian_mechanism(torch.zeros(1000), noise_multiplier=1.0, sensitivity=1.0)
    assert spies[0].draws == 0


class _Charging(_Spy):
    """An OpenDP measurement whose map charges ``factor`` times the exact (Δ/s)²/2 (float rounding at most)."""

    def __init__(self, inner, factor):
        super().__init__(inner)
        self.factor = factor

    def map(self, d_in):
        self.maps.append(d_in)
        return float(self.inner.map(d_in)) * self.factor


@pytest.mark.parametrize("factor, refused", [(1 + 3e-14, True), (1 + 2e-15, False)])
def test_small_path_map_check_tolerates_float_rounding_only(monkeypatch, factor, refused):
    """OpenDP's map rounds up by a few ulps (measured ≤ 1.9e-16 relative); a charge 3e-14 over (Δ/s)²/2 is no rounding."""
    real = noise_module._opendp_measurement
    spies = []
    charging = lambda *a: spies.append(_Charging(real(*a), factor)) or spies[-1]  # noqa: E731
    monkeypatch.setattr(noise_module, "_opendp_measurement", charging)
    if refused:
        with pytest.raises(PrivacyError, match="charges"):
            gaussian_mechanism(torch.zeros(50), noise_multiplier=3.7306, sensitivity=1.0)
    else:
        gaussian_mechanism(torch.zeros(50), noise_multiplier=3.7306, sensitivity=1.0)
    assert spies[0].draws == (0 if refused else 1)


def test_a_subnormal_rho_is_compared_in_its_own_steps():
    """At s = 10¹⁶⁰·Δ, ρ = 5e-321 is subnormal: OpenDP's map sits one step of 2^-1074 (here 0.1 %) above the exact
    value. That is float rounding, not a larger ρ, so the noise is drawn."""
    assert opendp_rho(1.0, 1e160, 5) > (1 / 1e160) ** 2 / 2 * (1 + 1e-4)
    out = opendp_gaussian(torch.zeros(5), std=1e160, sensitivity=1.0)
    assert bool(torch.isfinite(out).all()) and bool((out != 0).all())


@pytest.mark.parametrize("seed", [None, 0])
def test_non_finite_values_and_bad_scales_are_refused(seed):
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(PrivacyError, match="finite"):
            gaussian_mechanism(torch.tensor([1.0, bad]), noise_multiplier=1.0, sensitivity=1.0, noise_seed=seed)
    for sigma, delta in ((0.0, 1.0), (-1.0, 1.0), (math.inf, 1.0), (1.0, 0.0), (math.nan, 1.0), (-1.0, -1.0)):
        with pytest.raises(PrivacyError):
            gaussian_mechanism(torch.zeros(3), noise_multiplier=sigma, sensitivity=delta, noise_seed=seed)


def test_empty_input_gives_empty_output():
    out = gaussian_mechanism(torch.zeros(0, 5), noise_multiplier=1.0, sensitivity=1.0)
    assert out.shape == (0, 5) and out.dtype == torch.float64


def test_seeded_mode_is_exactly_value_plus_scaled_seeded_noise():
    value = torch.linspace(-3, 3, 50, dtype=torch.float64)
    a = gaussian_mechanism(value, noise_multiplier=2.0, sensitivity=0.5, noise_seed=0)  # 0 is a seed, not "none"
    b = gaussian_mechanism(value, noise_multiplier=2.0, sensitivity=0.5, noise_seed=0)
    assert torch.equal(a, b)
    assert torch.equal(a, value + 1.0 * seeded_standard_normal((50,), 0))
    assert torch.equal(a, simulated_gaussian_mechanism(value, noise_multiplier=2.0, sensitivity=0.5, noise_seed=0))


def test_simulated_mechanism_has_the_calibrated_scale_and_law():
    value = torch.zeros(N)
    out = simulated_gaussian_mechanism(value, noise_multiplier=3.0, sensitivity=0.5).numpy()
    failed = {k: p for k, p in p_values(out / 1.5).items() if not p > P_MIN}
    assert not failed, failed


def test_seeded_mode_is_reproducible_and_distinct_from_secure():
    a, b = seeded_standard_normal((100,), 3), seeded_standard_normal((100,), 3)
    assert torch.equal(a, b)
    assert not torch.equal(a, secure_standard_normal((100,)))
