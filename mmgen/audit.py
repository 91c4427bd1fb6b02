"""Empirical privacy audit of a release configuration (a lower bound on ε).

A release is (ε, δ)-DP when, for every pair of neighbouring data sets D, D'
and every test that guesses "the data was D'" from the release, the test's
false-positive rate α and false-negative rate β satisfy (Kairouz, Oh &
Viswanath, "The composition theorem for differential privacy", ICML 2015)

    1 − δ − β ≤ e^ε α      and      1 − δ − α ≤ e^ε β.

So any test that does better than this on some pair *proves* the claim wrong.
The audit (Jagielski, Ullman & Oprea, "Auditing differentially private
machine learning", NeurIPS 2020; Nasr et al., "Adversary instantiation",
IEEE S&P 2021) instantiates the strongest adversary it can:

1. **Neighbours.** D is a data set; D' = D ∪ {canary} (add/remove) or D with
   one record replaced by the canary (replace-one). The canary is a corner of
   the declared domain chosen, among a fixed public list of candidates, to
   maximise the norm of its contribution ``v = V(D') − V(D)`` to the release
   vector (the quantity the sensitivity bounds), ties broken by the distance
   of its embedding from the data's mean embedding.
2. **Mechanism.** The exact class-conditional sums of D and D' are computed
   once with :func:`mmgen.release.accumulate`, turned into the release vector
   ``V = [a·S, b·n]`` exactly as :func:`mmgen.release.finalize` does, and each
   trial applies only :func:`mmgen.privacy.simulated_gaussian_mechanism` with the
   release's noise multiplier and sensitivity — the law of the mechanism being
   audited, from a fast sampler (the release's floating-point-safe OpenDP
   sampler is too slow for millions of trials; the audit's outputs are never
   published). Only the rows where V(D) and V(D') differ are noised: the
   mechanism adds independent noise per coordinate, so the other rows are
   independent of the test and have the same law under D and D'.
3. **Test.** The likelihood-ratio (Neyman–Pearson) statistic of Gaussian
   noise, the projection ``T = Σ_k ⟨R_k − V_k(D), v_k⟩ / s_k²`` (s_k the noise
   std of statistic k), normalised, thresholded at t.
4. **Bound.** Trials are split in two halves. The threshold and the direction
   of the test are chosen on the first half — by the bound that half would
   give at a 20× stricter Clopper–Pearson level, which favours thresholds
   with more errors in the tail, whose held-out rates move less (picking the
   plain best threshold of the first half overfits its luck: the halved-noise
   check failed about once in twelve runs at 100,000 trials per half, and in
   none of 100 simulated runs with the stricter choice) — and on the second, Clopper–Pearson
   bounds at level ``1 − (1 − confidence)/2`` each give ``α_u`` and ``β_u``
   (jointly valid with the stated confidence), and

       ε_lb = max(log((1 − δ − β_u)/α_u), log((1 − δ − α_u)/β_u))   (floored at 0)

   is a lower bound on the true ε of the mechanism with that confidence.

A correct release never shows ``ε_lb > ε`` except with probability at most
``1 − confidence``; a release with too little noise is caught when the trials
suffice (ε_lb grows at most like ``log(trials)``). The audit reads the data
it is given many times, so its report is *not* private: run it on public data
(the default is scikit-learn's digits).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Sequence

import numpy as np
import torch

from .data import load
from .data.base import Dataset, iter_batches
from .errors import DataError, MMGenError, PrivacyError
from .features import BUNDLES, FeatureMap, create, default_budget_split, statistics
from .privacy import (
    check_epsilon_delta,
    check_neighbouring,
    epsilon_for,
    simulated_gaussian_mechanism,
    sensitivity,
    split_noise_multipliers,
)
from .release import DEFAULT_COUNT_WEIGHT, _feature_maps, accumulate

__all__ = ["AuditResult", "audit", "release_vectors", "epsilon_lower_bound", "clopper_pearson"]

_CHUNK = 1 << 21  # noisy coordinates per call of the mechanism (memory cap)
_TOLERANCE = 0.02  # in ε: calibration bounds this close to the best count as ties
_SELECTION_STRICTNESS = 20  # the threshold is chosen by the calibration bound at level α / this (see step 4)


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """What an audit found.

    Attributes:
        features: the audited feature-map names.
        epsilon, delta: the claim.
        neighbouring: the neighbouring relation audited.
        epsilon_lower_bound: ε_lb, valid with probability ``confidence``.
        confidence: the confidence level of the bound.
        trials: releases simulated on each of D and D' (half choose the test, half bound it).
        threshold: the chosen threshold of the normalised statistic.
        direction: ``"D' if T > t"`` or ``"D if T ≤ t"`` (which ratio gave the bound).
        false_positive_rate, false_negative_rate: point estimates on the evaluation half.
        fpr_upper, fnr_upper: their Clopper–Pearson upper bounds.
        canary: a description of the canary record.
        canary_norms: ‖v_k‖, the canary's contribution to each statistic (each ≤ its sensitivity).
        sensitivities: Δ_k, the sensitivity each statistic's noise was calibrated with.
        mu_theory: ``sqrt(Σ ‖v_k‖²/s_k²)``, the separation the claimed noise gives the canary.
        mu_hat: the measured separation (mean difference of T over its pooled std).
        epsilon_at_mu_hat: the ε at δ of a Gaussian mechanism with ``mu_hat`` (a parametric
            estimate, not a bound).
        noise_scale: the test hook's factor on the noise (1 for a real audit).
        seconds: wall time.
    """

    features: list[str]
    epsilon: float
    delta: float
    neighbouring: str
    epsilon_lower_bound: float
    confidence: float
    trials: int
    threshold: float
    direction: str
    false_positive_rate: float
    false_negative_rate: float
    fpr_upper: float
    fnr_upper: float
    canary: str
    canary_norms: list[float]
    sensitivities: list[float]
    mu_theory: float
    mu_hat: float
    epsilon_at_mu_hat: float
    noise_scale: float
    seconds: float

    @property
    def violated(self) -> bool:
        """True when the audit proves the claim wrong (``ε_lb > ε``)."""
        return self.epsilon_lower_bound > self.epsilon

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "violated": self.violated}

    def __str__(self) -> str:
        verdict = "VIOLATED" if self.violated else "consistent with the claim"
        return (
            f"audit {'+'.join(self.features)} ({self.neighbouring}): epsilon lower bound "
            f"{self.epsilon_lower_bound:.3f} at {self.confidence:.0%} confidence vs claimed epsilon "
            f"{self.epsilon:g} (delta {self.delta:g}) -> {verdict}\n"
            f"  {self.trials} trials per side; test {self.direction} at t={self.threshold:.3f}: "
            f"FPR {self.false_positive_rate:.3g} (<= {self.fpr_upper:.3g}), "
            f"FNR {self.false_negative_rate:.3g} (<= {self.fnr_upper:.3g})\n"
            f"  canary {self.canary}, contribution norm {', '.join(f'{v:.4f}' for v in self.canary_norms)} "
            f"(sensitivity {', '.join(f'{v:.4f}' for v in self.sensitivities)}); separation mu {self.mu_hat:.4f} measured, "
            f"{self.mu_theory:.4f} claimed (epsilon {self.epsilon_at_mu_hat:.3f} at the measured mu)"
        )


# -- statistics -----------------------------------------------------------------
def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided Clopper–Pearson bounds ``(lower, upper)`` of a binomial proportion, each at level α.

    Example:
        >>> lo, hi = clopper_pearson(0, 100, 0.05)
        >>> lo, round(hi, 4)
        (0.0, 0.0295)
    """
    from scipy.stats import beta

    if n < 1 or not 0 <= k <= n:
        raise MMGenError(f"need 0 ≤ k ≤ n and n ≥ 1. Got k={k}, n={n}.")
    lower = 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha, k + 1, n - k))
    return lower, upper


def epsilon_lower_bound(fpr_upper: float, fnr_upper: float, delta: float) -> tuple[float, str]:
    """``max(log((1−δ−β)/α), log((1−δ−α)/β))`` floored at 0, and which form gave it."""
    forms = {}
    for name, a, b in (("D' if T > t", fpr_upper, fnr_upper), ("D if T <= t", fnr_upper, fpr_upper)):
        num = 1.0 - delta - b
        forms[name] = math.log(num / a) if num > 0 and a > 0 else (math.inf if num > 0 else 0.0)
    name = max(forms, key=forms.get)
    return max(0.0, forms[name]), name


def _bounds_on_grid(s0: torch.Tensor, s1: torch.Tensor, thresholds: torch.Tensor, alpha: float, delta: float):
    """ε lower bound (each form) for every threshold; s0 under D, s1 under D' (sorted)."""
    from scipy.stats import beta

    n0, n1 = len(s0), len(s1)
    fp = n0 - torch.searchsorted(s0, thresholds, right=True)  # D trials with T > t
    fn = torch.searchsorted(s1, thresholds, right=True)  # D' trials with T ≤ t
    fp, fn = fp.numpy(), fn.numpy()
    a_u = np.where(fp == n0, 1.0, beta.ppf(1 - alpha, fp + 1, np.maximum(n0 - fp, 1)))
    b_u = np.where(fn == n1, 1.0, beta.ppf(1 - alpha, fn + 1, np.maximum(n1 - fn, 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.log(np.clip(1 - delta - b_u, 1e-300, None) / a_u)
        e2 = np.log(np.clip(1 - delta - a_u, 1e-300, None) / b_u)
    return e1, e2


# -- the mechanism ----------------------------------------------------------------
def release_vectors(
    sums: Sequence[torch.Tensor], counts: torch.Tensor, fmaps: Sequence[FeatureMap], *, count_weight: float
) -> list[torch.Tensor]:
    """The un-noised release vectors, exactly as :func:`mmgen.release.finalize` builds them.

    Statistic 0 is ``[a·S_0, b·n]`` ((C, D_0 + 1)), later ones ``S_k`` ((C, D_k)), with
    ``a = sqrt(1 − b²)``.
    """
    b = float(count_weight)
    a = math.sqrt(1.0 - b * b)
    out = []
    for k, acc in enumerate(sums):
        out.append(torch.cat([a * acc, (b * counts)[:, None]], dim=1) if k == 0 else acc.clone())
    return out


def _calibration(fmaps, epsilon, delta, neighbouring, budget_split, count_weight):
    """Noise multiplier and sensitivity of every statistic, as finalize computes them."""
    multipliers = split_noise_multipliers(epsilon, delta, budget_split)
    b = float(count_weight)
    a = math.sqrt(1.0 - b * b)
    sens = [
        sensitivity(neighbouring, max_norm=f.max_norm, feature_weight=a if k == 0 else 1.0, count_weight=b if k == 0 else 0.0)
        for k, f in enumerate(fmaps)
    ]
    return multipliers, sens


def _noisy_scores(base, reference, direction, stds, multipliers, sens, noise_scale, trials, seed):
    """Raw T for ``trials`` runs of the mechanism on the support rows ``base`` (one (r, D_k) per statistic).

    ``T = Σ_k ⟨R_k − reference_k, v_k⟩ / s_k²`` with ``reference`` the exact rows of D.
    """
    width = sum(b.numel() for b in base)
    chunk = max(1, _CHUNK // max(width, 1))
    out = []
    done = 0
    call = 0
    while done < trials:
        m = min(chunk, trials - done)
        t = torch.zeros(m, dtype=torch.float64)
        for k, (b, ref, v, s) in enumerate(zip(base, reference, direction, stds)):
            stacked = b.unsqueeze(0).expand(m, *b.shape).contiguous()  # (m, r, D_k): m copies of the exact rows
            noise_seed = None if seed is None else seed + 1000 * call + k
            noisy = simulated_gaussian_mechanism(stacked, noise_multiplier=multipliers[k] * noise_scale,
                                       sensitivity=sens[k], noise_seed=noise_seed)  # fmt: skip
            t += ((noisy - ref) * v).sum(dim=(1, 2)) / (s * s)  # (m,) projections onto v_k
        out.append(t)
        done += m
        call += 1
    return torch.cat(out)


# -- data and canary ----------------------------------------------------------------
def _resolve_data(data, n_records, n_classes, bounds):
    if isinstance(data, str):
        data = load(data)
    if isinstance(data, Dataset):
        x, y = data.x_train, data.y_train
        n_classes = data.n_classes if n_classes is None else n_classes
        bounds = (data.low, data.high) if bounds is None else bounds
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise DataError(f"`data` must be a spec string, a Dataset or an (x, y) pair. Got {type(data).__name__}.")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError("`data` must hold tensors x and y.")
    if n_classes is None:
        raise DataError("`n_classes` must be declared with (x, y) data.")
    if n_records is not None:
        if not isinstance(n_records, int) or n_records < 1:
            raise DataError(f"`n_records` must be a positive integer. Got {n_records!r}.")
        x, y = x[:n_records], y[:n_records]
    if len(x) < 1:
        raise DataError("The audit needs at least one data record.")
    bounds = (0.0, 1.0) if bounds is None else (float(bounds[0]), float(bounds[1]))
    return x, y, int(n_classes), bounds


def _canary_candidates(input_shape, bounds, seed):
    low, high = bounds
    n = math.prod(input_shape)
    idx = torch.arange(n)
    patterns = {
        "all-low corner": torch.zeros(n, dtype=torch.bool),
        "all-high corner": torch.ones(n, dtype=torch.bool),
        "checkerboard corner": idx % 2 == 0,
        "inverse checkerboard corner": idx % 2 == 1,
        "low/high halves corner": idx >= n // 2,
        "high/low halves corner": idx < n // 2,
    }
    gen = torch.Generator().manual_seed(int(seed))
    for i in range(16):
        patterns[f"random corner #{i} (seed {seed})"] = torch.rand(n, generator=gen) < 0.5
    names = list(patterns)
    x = torch.stack([torch.where(patterns[k], high, low) for k in names]).to(torch.float32)
    return names, x.reshape(len(names), *input_shape)


def _choose_canary(fmaps, x, y, n_classes, bounds, neighbouring, count_weight, seed):
    """The candidate (record, label) maximising ‖v‖ (ties: far from the data's mean embedding)."""
    names, cands = _canary_candidates(tuple(x.shape[1:]), bounds, seed)
    b = float(count_weight)
    a = math.sqrt(1.0 - b * b)
    with torch.no_grad():
        phis = [f(cands).to(torch.float64).cpu() for f in fmaps]  # per map: (K, D_k)
        data_mean = [f(x[:512]).to(torch.float64).mean(0).cpu() for f in fmaps]
        x0 = x[:1]
        phi0 = [f(x0).to(torch.float64).cpu()[0] for f in fmaps]
    weights = [(a if k == 0 else 1.0, b if k == 0 else 0.0) for k in range(len(fmaps))]
    best = None
    for i, name in enumerate(names):
        far = sum(float((p[i] - m).norm()) ** 2 for p, m in zip(phis, data_mean))
        if neighbouring == "add-remove":
            norm2 = sum(ak**2 * float(p[i].norm()) ** 2 + bk**2 for p, (ak, bk) in zip(phis, weights))
            options = [(norm2, 0)]
        else:  # replace the first record (label y0) by the canary: same label or another one
            y0 = int(y[0])
            same = sum(ak**2 * float((p[i] - q).norm()) ** 2 for p, q, (ak, _) in zip(phis, phi0, weights))
            other = sum(ak**2 * (float(p[i].norm()) ** 2 + float(q.norm()) ** 2) + 2 * bk**2
                        for p, q, (ak, bk) in zip(phis, phi0, weights))  # fmt: skip
            options = [(same, y0)] + ([(other, (y0 + 1) % n_classes)] if n_classes > 1 else [])
        for norm2, label in options:
            key = (round(norm2, 9), far)
            if best is None or key > best[0]:
                best = (key, name, i, label)
    _, name, i, label = best
    return name, cands[i : i + 1], torch.tensor([label], dtype=torch.int64)


# -- the audit ------------------------------------------------------------------------
def audit(
    features: str | FeatureMap | Sequence[str | FeatureMap] = "rff",
    *,
    epsilon: float,
    delta: float,
    data: str | Dataset | tuple[torch.Tensor, torch.Tensor] = "digits",
    n_records: int | None = 500,
    n_classes: int | None = None,
    bounds: tuple[float, float] | None = None,
    feature_options: dict[str, Any] | None = None,
    neighbouring: str = "add-remove",
    budget_split: Sequence[float] | None = None,
    count_weight: float = DEFAULT_COUNT_WEIGHT,
    trials: int = 50_000,
    confidence: float = 0.95,
    noise_scale: float = 1.0,
    seed: int = 0,
    noise_seed: int | None = None,
) -> AuditResult:
    """Empirically lower-bounds the ε of a release configuration (see the module docstring).

    Args:
        features: a registered feature-map name, a statistics spec (a bundle such as ``"hermite"``
            or a comma-separated list, see :func:`mmgen.features.statistics`), an instance, or a
            list of instances (as in :func:`mmgen.release`).
        epsilon, delta: the claimed budget the release is calibrated to.
        data: the data set D (public data: the audit's output is not private): a data
            spec such as ``"digits"``, a :class:`Dataset`, or an ``(x, y)`` pair.
        n_records: use the first ``n_records`` training records (None: all).
        n_classes: the declared number of classes (required with an ``(x, y)`` pair).
        bounds: the declared domain (default: the data set's, else ``(0, 1)``).
        feature_options: hyper-parameters for a feature map given by name.
        neighbouring: ``"add-remove"`` or ``"replace-one"``.
        budget_split, count_weight: as in :func:`mmgen.release`.
        trials: simulated releases on each of D and D' (≥ 200).
        confidence: confidence level of the bound, in (0, 1).
        noise_scale: TEST HOOK: multiplies the noise multiplier the mechanism uses
            (not the claim). 1 audits the real mechanism; 0.5 simulates a bug
            that halves the noise, which the audit should catch.
        seed: public seed of the canary candidates.
        noise_seed: reproducible (seeded, non-cryptographic) trial noise; None uses OS entropy.

    Returns:
        The :class:`AuditResult`.

    Raises:
        PrivacyError: bad ε, δ, relation, confidence or noise scale.
        DataError: bad data.
    """
    t0 = time.perf_counter()
    check_epsilon_delta(epsilon, delta)
    check_neighbouring(neighbouring)
    if not isinstance(trials, int) or trials < 200:
        raise MMGenError(f"`trials` must be an integer ≥ 200. Got {trials!r}.")
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise PrivacyError(f"`confidence` must be a number in (0, 1). Got {confidence!r}.")
    if not (noise_scale > 0 and math.isfinite(noise_scale)):
        raise PrivacyError(f"`noise_scale` must be > 0. Got {noise_scale!r}.")
    if not (0 < count_weight < 1):
        raise PrivacyError(f"`count_weight` must be in (0, 1). Got {count_weight!r}.")
    x, y, n_classes, bounds = _resolve_data(data, n_records, n_classes, bounds)
    input_shape = tuple(x.shape[1:])
    default_split = default_budget_split(features)  # as mmgen.release: a bundle name brings its own split
    if isinstance(features, str):
        if "," in features or features in BUNDLES:  # a statistics spec: several Gaussian statistics
            features = statistics(features, input_shape=input_shape, bounds=bounds, options={"*": dict(feature_options or {})})
        else:
            features = create(features, input_shape=input_shape, bounds=bounds, **(feature_options or {}))
    elif feature_options:
        raise MMGenError("`feature_options` applies only when `features` is given by name.")
    fmaps = _feature_maps(features, input_shape, bounds)
    if budget_split is not None:
        shares = [float(w) for w in budget_split]
    else:
        shares = default_split
    if len(shares) != len(fmaps):
        raise PrivacyError(f"`budget_split` needs one weight per statistic ({len(fmaps)}). Got {len(shares)}.")
    multipliers, sens = _calibration(fmaps, epsilon, delta, neighbouring, shares, count_weight)
    stds = [s * d for s, d in zip(multipliers, sens)]

    canary_name, cx, cy = _choose_canary(fmaps, x, y, n_classes, bounds, neighbouring, count_weight, seed)
    # D and D' share every batch but the last: the rows the canary does not touch are bitwise equal.
    if neighbouring == "add-remove":
        common, last_d, last_d1 = (x, y), None, (cx, cy)
    else:
        common, last_d, last_d1 = (x[1:], y[1:]), (x[:1], y[:1]), (cx, cy)

    def exact(last):
        batches = list(iter_batches(*common, 4096)) + ([last] if last is not None else [])
        sums, counts = accumulate(batches, fmaps, n_classes, input_shape, bounds)
        return release_vectors(sums, counts, fmaps, count_weight=count_weight)

    v_d, v_d1 = exact(last_d), exact(last_d1)
    diff = [b1 - b0 for b0, b1 in zip(v_d, v_d1)]
    rows = torch.zeros(n_classes, dtype=torch.bool)
    for d in diff:
        rows |= d.ne(0).any(dim=1)
    if not rows.any():
        raise MMGenError("The canary does not change the release vector; nothing to audit.")
    base0 = [v[rows] for v in v_d]
    base1 = [v[rows] for v in v_d1]
    direction = [d[rows] for d in diff]
    mu = math.sqrt(sum(float((d * d).sum()) / s**2 for d, s in zip(direction, stds)))
    canary_norms = [float(d.norm()) for d in direction]

    seeds = (None, None) if noise_seed is None else (noise_seed, noise_seed + 7_777_777)
    s0 = _noisy_scores(base0, base0, direction, stds, multipliers, sens, noise_scale, trials, seeds[0]) / mu
    s1 = _noisy_scores(base1, base0, direction, stds, multipliers, sens, noise_scale, trials, seeds[1]) / mu
    mu_hat = float((s1.mean() - s0.mean()) / torch.sqrt((s0.var() + s1.var()) / 2))

    alpha = (1.0 - confidence) / 2  # for each of the two rates (union bound)
    half = trials // 2
    c0, c1 = s0[:half].sort().values, s1[:half].sort().values
    e0, e1 = s0[half:].sort().values, s1[half:].sort().values
    pooled = torch.cat([c0, c1]).sort().values
    qs = torch.linspace(0, 1, 2001, dtype=torch.float64)
    grid = torch.unique(torch.quantile(pooled, qs))
    f1, f2 = _bounds_on_grid(c0, c1, grid, alpha / _SELECTION_STRICTNESS, delta)  # selection only (step 4)
    # Among thresholds within _TOLERANCE of the best, take the one farthest into the tail that the
    # test's false positives (form 1) or false negatives (form 2) come from: a threshold at the very
    # edge of the calibration sample would often be crossed by a held-out trial.
    if f1.max() >= f2.max():
        t = float(grid[int(np.nonzero(f1 >= f1.max() - _TOLERANCE)[0].max())])
    else:
        t = float(grid[int(np.nonzero(f2 >= f2.max() - _TOLERANCE)[0].min())])
    # the chosen threshold, evaluated on the held-out half
    n0, n1 = len(e0), len(e1)
    fp = n0 - int(torch.searchsorted(e0, torch.tensor([t], dtype=torch.float64), right=True))
    fn = int(torch.searchsorted(e1, torch.tensor([t], dtype=torch.float64), right=True))
    fpr_u = clopper_pearson(fp, n0, alpha)[1]
    fnr_u = clopper_pearson(fn, n1, alpha)[1]
    eps_lb, form = epsilon_lower_bound(fpr_u, fnr_u, delta)
    try:
        eps_mu = epsilon_for(1.0 / mu_hat, delta) if mu_hat > 0 else 0.0
    except (MMGenError, ValueError, OverflowError):
        eps_mu = math.inf
    return AuditResult(
        features=[f.name for f in fmaps], epsilon=float(epsilon), delta=float(delta), neighbouring=neighbouring,
        epsilon_lower_bound=eps_lb, confidence=float(confidence), trials=trials, threshold=t, direction=form,
        false_positive_rate=fp / n0, false_negative_rate=fn / n1, fpr_upper=fpr_u, fnr_upper=fnr_u,
        canary=f"{canary_name}, label {int(cy)}", canary_norms=canary_norms, sensitivities=list(sens),
        mu_theory=mu, mu_hat=mu_hat, epsilon_at_mu_hat=float(eps_mu), noise_scale=float(noise_scale),
        seconds=time.perf_counter() - t0,
    )  # fmt: skip
