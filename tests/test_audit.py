"""The empirical privacy audit: it never contradicts a correct release and catches too little noise.

Trial counts are chosen so that each run takes about a second and the outcome is
far from the decision line: a correct release shows ε_lb > ε with probability
below 1 − confidence (and, for Gaussian noise, astronomically less), while the
halved-noise case at ε = 1 has an expected bound near 1.5 with a spread ~0.07.
"""

from __future__ import annotations

import math

import pytest
import torch

import mmgen
from mmgen.audit import audit, clopper_pearson, epsilon_lower_bound, release_vectors
from mmgen.errors import MMGenError, PrivacyError
from mmgen.privacy import gaussian_mechanism
from mmgen.release import accumulate, finalize

DELTA = 1e-5


@pytest.fixture(scope="module")
def small():
    g = torch.Generator().manual_seed(0)
    return torch.rand(200, 1, 4, 4, generator=g), torch.arange(200) % 2


def _audit(small, epsilon, trials, **kw):
    kw.setdefault("feature_options", {"n_features": 8})
    return audit("rff", epsilon=epsilon, delta=DELTA, data=small, n_classes=2, trials=trials, confidence=0.99, **kw)


@pytest.mark.parametrize("epsilon, trials", [(1.0, 200_000), (10.0, 300_000)])
def test_a_correct_release_never_beats_its_claim(small, epsilon, trials):
    result = _audit(small, epsilon, trials)
    assert 0 <= result.epsilon_lower_bound <= epsilon
    assert not result.violated
    # the canary reaches the sensitivity and the measured separation is the calibrated one
    assert result.canary_norms[0] == pytest.approx(result.sensitivities[0], rel=1e-4)
    assert result.mu_hat == pytest.approx(result.mu_theory, rel=0.05)


def test_halved_noise_is_caught_at_epsilon_1(small):
    result = _audit(small, 1.0, 1_000_000, noise_scale=0.5)
    assert result.violated and result.epsilon_lower_bound > 1.0, str(result)


def test_too_little_noise_is_caught_at_epsilon_10(small):
    # Shows the ε = 10 check above can fail: with 150,000 held-out trials per side the audit can
    # prove ε up to log(150000 / 3.7) ≈ 10.6, and a fifth of the noise is caught.
    result = _audit(small, 10.0, 300_000, noise_scale=0.2)
    assert result.violated, str(result)


def test_replace_one(small):
    result = _audit(small, 1.0, 100_000, neighbouring="replace-one")
    assert not result.violated
    assert result.canary_norms[0] <= result.sensitivities[0] * (1 + 1e-6)
    bad = _audit(small, 1.0, 1_000_000, neighbouring="replace-one", noise_scale=0.4)
    assert bad.violated, str(bad)


# options that keep each map small, applied where the map has the field
SMALL = {"n_features": 64, "order": 4, "n_subsets": 4, "width": 8, "image_size": 32, "bins": 2, "two_way": False}


@pytest.mark.parametrize("name", mmgen.features.list())
def test_every_registered_feature_map_can_be_audited(name):
    # any map registered now or later is covered: a small public data set, small options
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(20, 3, 8, 8, generator=g), torch.arange(20) % 2
    fields = mmgen.features.get_class(name).Config.__dataclass_fields__
    try:
        fmap = mmgen.features.create(name, **{k: v for k, v in SMALL.items() if k in fields})
        result = audit(fmap, epsilon=1.0, delta=DELTA, data=(x, y), n_classes=2, trials=20_000, confidence=0.99)
    except MMGenError as exc:  # e.g. weights of a pretrained network that are not installed
        pytest.skip(f"{name} cannot be built here: {exc}")
    assert not result.violated
    assert 0 < result.canary_norms[0] <= result.sensitivities[0] * (1 + 1e-6)
    # μ̂ is a difference of two means of 20,000 unit-variance scores: its standard error is
    # sqrt(2 / 20,000) = 0.01; five of them bound a correct run (halved noise doubles μ).
    assert abs(result.mu_hat - result.mu_theory) < 5 * math.sqrt(2 / result.trials) * math.sqrt(1 + result.mu_theory**2 / 4)


def test_a_multi_statistic_bundle_is_audited_as_one_composed_release(small):
    result = audit("rff,rff", epsilon=1.0, delta=DELTA, data=small, n_classes=2, trials=100_000,
                   feature_options={"n_features": 8}, confidence=0.99)  # fmt: skip
    assert len(result.sensitivities) == 2 and not result.violated
    # composition: the two statistics together separate D and D' as one mechanism with μ² = Σ μ_k²
    assert result.mu_theory == pytest.approx(1 / mmgen.privacy.noise_multiplier_for(1.0, DELTA), rel=0.02)


def test_the_audited_mechanism_is_the_release_mechanism(small):
    """release_vectors + gaussian_mechanism reproduce finalize bit for bit (same seeded noise)."""
    x, y = small
    fmap = mmgen.features.create("rff", input_shape=(1, 4, 4), n_features=8)
    sums, counts = accumulate([(x, y)], [fmap], 2, (1, 4, 4), (0.0, 1.0))
    rel = finalize(sums, counts, [fmap], epsilon=1.0, delta=DELTA, neighbouring="add-remove", budget_split=[1.0],
                   count_weight=0.3, noise_seed=5, schema={})  # fmt: skip
    stat = rel.statistics[0]
    (vec,) = release_vectors(sums, counts, [fmap], count_weight=0.3)
    noisy = gaussian_mechanism(vec, noise_multiplier=stat.noise_multiplier, sensitivity=stat.sensitivity, noise_seed=5)
    assert torch.equal(noisy[:, :-1], stat.sums) and torch.equal(noisy[:, -1], stat.counts)


def test_bound_formula_and_clopper_pearson():
    lo, hi = clopper_pearson(5, 100, 0.025)
    assert 0.01 < lo < 0.05 < hi < 0.12
    assert clopper_pearson(0, 10, 0.05) == (0.0, pytest.approx(1 - 0.05 ** (1 / 10)))
    assert clopper_pearson(10, 10, 0.05)[1] == 1.0
    eps, form = epsilon_lower_bound(0.01, 0.5, 1e-5)
    assert eps == pytest.approx(math.log((1 - 1e-5 - 0.5) / 0.01)) and form.startswith("D'")
    eps, form = epsilon_lower_bound(0.5, 0.01, 1e-5)
    assert eps == pytest.approx(math.log((1 - 1e-5 - 0.5) / 0.01)) and form.startswith("D if")
    assert epsilon_lower_bound(0.6, 0.6, 1e-5)[0] == 0.0


@pytest.mark.parametrize("kw, error", [
    ({"epsilon": 0.0}, PrivacyError), ({"delta": 1.0}, PrivacyError), ({"noise_scale": 0.0}, PrivacyError),
    ({"confidence": 1.0}, PrivacyError), ({"trials": 10}, MMGenError), ({"neighbouring": "swap"}, PrivacyError),
])  # fmt: skip
def test_bad_arguments(small, kw, error):
    args = {"epsilon": 1.0, "delta": DELTA, "data": small, "n_classes": 2, "trials": 1000, **kw}
    with pytest.raises(error):
        audit("rff", **args)


def test_cli_audit(tmp_path, capsys):
    from mmgen import cli

    out = tmp_path / "audit.json"
    code = cli.main(["audit", "--epsilon", "1", "--n-features", "8", "--n-records", "100", "--trials", "20000",
                     "--out", str(out)])  # fmt: skip
    stdout = capsys.readouterr().out
    assert code == 0 and "epsilon lower bound" in stdout
    import json

    report = json.loads(out.read_text())
    assert report["epsilon"] == 1.0 and report["violated"] is False and report["trials"] == 20000
    code = cli.main(["audit", "--epsilon", "-1"])
    assert code == 2 and capsys.readouterr().err.startswith("mmgen: error: `epsilon` must be")
