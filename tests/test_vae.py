"""The Lipschitz VAE trained with DP-SGD (mmgen.vae): the Lipschitz constraint by construction (spectral norms,
power iteration, adversarial input pairs), per-record clipping and the Gaussian noise of DP-SGD measured against
an independent computation, the accounting against dp-accounting, the per-record mechanism's sensitivity and its
refusals, the warm start's composition and budget record, an exact resume, the file format, and an end-to-end
bar on digits.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import sys

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import PLDAccountant
from torch.func import functional_call, grad, vmap

import mmgen
from mmgen.errors import FormatError, MMGenError, PrivacyError
from mmgen.privacy import BudgetRecord, dp_event, noise_multiplier_for
from mmgen.privacy.mechanism import NORM_SLACK
from mmgen.privacy.ledger import composed_epsilon, dp_sgd_event, noise_multiplier_within
from mmgen.vae import (DPSGD, VAEConfig, TrainedVAE, domain_diameter, lipschitz_bound, per_record_samples,
                       per_record_sensitivity, project_, train_vae)  # fmt: skip

train_module = sys.modules["mmgen.vae.train"]
perrecord_module = sys.modules["mmgen.vae.perrecord"]
DELTA = 1e-5
TINY = dict(latent_dim=4, hidden=(32,))  # small nets: every test stays fast on two cores
RELATIONS = {"add-remove": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
             "replace-one": dp_accounting.NeighboringRelation.REPLACE_ONE}  # fmt: skip

# opacus's ghost clipping warns about full backward hooks on inputs that need no gradient: harmless here
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


@pytest.fixture(autouse=True)
def _one_thread(_few_threads):
    # these nets are tiny: one thread is fastest, and far faster than two on a loaded two-core machine
    torch.set_num_threads(1)
    yield


# ---------------------------------------------------------------------------------------------------------------
# helpers and fixtures
# ---------------------------------------------------------------------------------------------------------------
def _first(ds, n):
    """The data set restricted to its first ``n`` training records."""
    return dataclasses.replace(ds, x_train=ds.x_train[:n].clone(), y_train=ds.y_train[:n].clone())


@pytest.fixture(scope="module")
def small(digits):
    return _first(digits, 300)


def _scale_(model, factor):
    with torch.no_grad():
        for layer in [*model.encoder, *model.decoder]:
            layer.weight.mul_(factor)


def _power_norm(w: torch.Tensor, iters: int = 200, seed: int = 0) -> float:
    """The largest singular value of ``w`` by power iteration on WᵀW (independent of torch.linalg)."""
    w = w.detach().double()
    v = torch.randn(w.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for _ in range(iters):
        v = w.T @ (w @ v)
        v = v / v.norm()
    return float((w @ v).norm())


def _max_ratio(f, dim: int, *, starts: int = 8, steps: int = 300, seed: int = 0) -> float:
    """max ‖f(a) − f(b)‖ / ‖a − b‖ found by gradient ascent over pairs (a, b) in R^dim (``starts`` at once)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(starts, dim, generator=g, dtype=torch.float64).requires_grad_()
    b = (a.detach() + 0.3 * torch.randn(starts, dim, generator=g, dtype=torch.float64)).requires_grad_()
    opt = torch.optim.Adam([a, b], lr=0.01)
    best = 0.0
    for _ in range(steps):
        ratio = (f(a) - f(b)).norm(dim=1) / (a - b).norm(dim=1)
        best = max(best, float(ratio.detach().max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    return best


def _encoder64(model):
    m = copy.deepcopy(model).double()
    d = model.input_dim
    return lambda h: m.encode(h[:, :d], h[:, d:])


def _trained(data, **kw):
    """A short DP-SGD run with a given noise multiplier (no calibration) and seeded noise."""
    kw.setdefault("noise_multiplier", 1.0)
    kw.setdefault("noise_seed", 0)
    for key, value in {**TINY, "epochs": 1.0, "sampling_rate": 0.2}.items():
        kw.setdefault(key, value)
    return train_vae(data, **kw)


def _recomposed(events, delta, relation):
    """ε of the composition of ``events`` by dp-accounting's PLD accountant directly."""
    acc = PLDAccountant(neighboring_relation=RELATIONS[relation])
    return float(acc.compose(dp_accounting.ComposedDpEvent(list(events))).get_epsilon(delta))


def _sgd(sigma, q, steps):
    step = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    return dp_accounting.SelfComposedDpEvent(step, steps)


# ---------------------------------------------------------------------------------------------------------------
# 1. the Lipschitz constraint by construction
# ---------------------------------------------------------------------------------------------------------------
def test_projection_bounds_every_layer_and_the_product_after_an_adversarial_scale_up():
    config = VAEConfig(latent_dim=4, hidden=(32, 16), encoder_lipschitz=3.0, decoder_lipschitz=20.0)
    torch.manual_seed(0)
    model = config.build(64, 10)
    _scale_(model, 50.0)
    assert lipschitz_bound(model, "encoder") > 100 * config.encoder_lipschitz  # the scale-up broke the bound
    project_(model)
    for part, declared in (("encoder", 3.0), ("decoder", 20.0)):
        assert lipschitz_bound(model, part) <= declared * (1 + 1e-6)
        layers = getattr(model, part)
        c = declared ** (1 / len(layers))
        for layer in layers:
            est = _power_norm(layer.weight)
            # at most c; and, scaled up 50×, every layer was projected onto the sphere ‖W‖₂ = c
            assert c * (1 - 1e-4) <= est <= c * (1 + 1e-6), (part, est, c)
    assert len(model.constrained()) == 6


def test_adversarial_input_pairs_stay_within_the_declared_encoder_constant():
    config = VAEConfig(latent_dim=4, hidden=(32,), encoder_lipschitz=4.0)
    torch.manual_seed(1)
    model = config.build(64, 10)
    _scale_(model, 50.0)
    raw = copy.deepcopy(model)
    project_(model)
    found = _max_ratio(_encoder64(model), 74)
    assert found <= 4.0 * (1 + 1e-6)
    assert found > 0.25 * 4.0  # the search does climb
    # control: the same search on the unprojected network breaks the declared constant (it has power)
    assert _max_ratio(_encoder64(raw), 74) > 10 * 4.0


def test_training_keeps_the_constraint_and_the_unconstrained_baseline_has_none(small):
    # tiny constants and a large learning rate: without the projection the bounds would be exceeded
    opts = dict(encoder_lipschitz=0.5, decoder_lipschitz=0.5, lr=0.05)
    vae = _trained(small, **opts)
    enc, dec = lipschitz_bound(vae.model, "encoder"), lipschitz_bound(vae.model, "decoder")
    assert enc <= 0.5 * (1 + 1e-6) and dec <= 0.5 * (1 + 1e-6)
    assert vae.lipschitz()["encoder_measured"] == enc
    free = _trained(small, lipschitz=False, **opts)
    assert free.model.constrained() == []
    assert free.lipschitz() is None
    assert lipschitz_bound(free.model, "encoder") > 0.5 and lipschitz_bound(free.model, "decoder") > 0.5


# ---------------------------------------------------------------------------------------------------------------
# 2. DP-SGD: each record's gradient clipped to C, then summed
# ---------------------------------------------------------------------------------------------------------------
def _batch(digits, n=12, seed=0):
    u = digits.x_train[:n].reshape(n, -1).float()
    y = digits.y_train[:n]
    xi = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    return u, y, xi


def _clipped_sum(ref, u, y, xi, clip):
    """Σ_i clip_C(∇ℓ_i) with per-record gradients from torch.func (functional_call + vmap(grad))."""
    params = {k: v.detach().clone() for k, v in ref.named_parameters()}
    e = torch.nn.functional.one_hot(y, ref.n_classes).float()

    def loss(p, ui, ei, xii):
        return functional_call(ref, p, (ui[None], ei[None], xii[None]))[0]

    per = vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, u, e, xi)
    norms = torch.sqrt(sum(g.flatten(1).double().pow(2).sum(1) for g in per.values()))
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    return {k: torch.einsum("i,i...->...", factor, g.double()) for k, g in per.items()}, norms


@pytest.mark.parametrize("clip", [0.05, 1e6])
def test_noisy_gradient_without_noise_is_the_sum_of_clipped_per_record_gradients(digits, clip):
    torch.manual_seed(0)
    model = VAEConfig(**TINY).build(64, 10)
    ref = copy.deepcopy(model)
    u, y, xi = _batch(digits)
    expected, norms = _clipped_sum(ref, u, y, xi, clip)
    if clip < 1:
        assert bool((norms > 2 * clip).all())  # clipping binds for every record
    else:
        plain = {k: torch.zeros_like(p) for k, p in ref.named_parameters()}  # the plain sum, by autograd
        ref.zero_grad()
        ref(u, ref.onehot(y), xi).sum().backward()
        for k, p in ref.named_parameters():
            torch.testing.assert_close(expected[k].float(), p.grad, rtol=1e-4, atol=1e-6)
            plain[k] = p.grad
    dpsgd = DPSGD(model, noise_multiplier=0.0, clip_norm=clip, lr=1e-3, secure=False)
    try:
        dpsgd.noisy_gradient(u, y, xi, torch.Generator().manual_seed(0))
        got = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    finally:
        dpsgd.close()
    assert set(got) == set(expected)
    for k in expected:
        torch.testing.assert_close(got[k].double(), expected[k], rtol=1e-4, atol=1e-7)
    if clip < 1:  # the clipped sum has norm at most n·C, far below the unclipped one
        total = math.sqrt(sum(float(g.double().pow(2).sum()) for g in got.values()))
        assert total <= len(y) * clip * (1 + 1e-5)


# ---------------------------------------------------------------------------------------------------------------
# 3. DP-SGD: the Gaussian noise, measured
# ---------------------------------------------------------------------------------------------------------------
def _noise(model, sigma, clip, seed, secure, batch=None):
    dpsgd = DPSGD(model, noise_multiplier=sigma, clip_norm=clip, lr=1e-3, secure=secure)
    try:
        if batch is None:
            batch = (torch.zeros(0, model.input_dim), torch.zeros(0, dtype=torch.int64), torch.zeros(0, model.latent_dim))
        dpsgd.noisy_gradient(*batch, torch.Generator().manual_seed(seed))
        return torch.cat([p.grad.detach().reshape(-1).clone() for p in model.parameters()])
    finally:
        dpsgd.close()


@pytest.mark.parametrize("secure", [False, True])
def test_an_empty_batch_gives_gaussian_noise_of_std_sigma_c_reproducible_by_seed(digits, secure):
    torch.manual_seed(0)
    model = VAEConfig(latent_dim=4, hidden=(256,)).build(64, 10)
    sigma, clip = 1.3, 0.7
    a = _noise(model, sigma, clip, seed=5, secure=secure)
    assert len(a) > 40_000
    assert abs(float(a.std()) / (sigma * clip) - 1) < 0.03
    assert abs(float(a.mean())) < 5 * sigma * clip / math.sqrt(len(a))
    assert abs(float((a / (sigma * clip)).pow(4).mean()) - 3) < 0.15  # Gaussian kurtosis
    assert torch.equal(a, _noise(model, sigma, clip, seed=5, secure=secure))
    b = _noise(model, sigma, clip, seed=6, secure=secure)
    assert int((a == b).sum()) < 5  # two generators: no coordinate shared but by chance
    assert not torch.allclose(a, b)
    # on a real batch the same generator adds the same noise on top of the clipped sum
    u, y, xi = _batch(digits)
    noisy = _noise(copy.deepcopy(model), sigma, clip, seed=5, secure=secure, batch=(u, y, xi))
    clean = _noise(copy.deepcopy(model), 0.0, clip, seed=5, secure=secure, batch=(u, y, xi))
    torch.testing.assert_close(noisy - clean, a, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# 4. accounting against dp-accounting
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("relation", ["add-remove", "replace-one"])
def test_calibrated_dp_sgd_matches_dp_accounting_and_sigma_is_the_smallest(small, relation):
    total = 1.0
    vae = _trained(small, epsilon=total, noise_multiplier=None, neighbouring=relation, sampling_rate=0.2, epochs=1.0)
    p = vae.privacy
    assert p["neighbouring"] == relation and p["delta"] == DELTA
    (stage,) = p["stages"]
    assert stage["stage"] == "dp-sgd" and stage["sampling_rate"] == 0.2 and stage["steps"] == 5 == vae.config.steps
    sigma = stage["noise_multiplier"]
    eps = _recomposed([_sgd(sigma, 0.2, 5)], DELTA, relation)
    assert total * 0.99 <= eps <= total * (1 + 1e-9)
    assert math.isclose(p["epsilon"], eps, rel_tol=1e-9) and math.isclose(stage["epsilon"], eps, rel_tol=1e-9)
    assert _recomposed([_sgd(sigma * (1 - 1e-3), 0.2, 5)], DELTA, relation) > total  # no smaller σ fits
    assert vae.steps_done == 5 and vae.finished


def _in_dp_accounting_convention(sigma, relation):
    """A plain (unsampled) Gaussian of mmgen's σ (relative to the sensitivity under ``relation``) as dp-accounting
    reads a GaussianDpEvent: under REPLACE_ONE it takes sensitivity 2 in units of σ, so the event is GaussianDpEvent(2σ)."""
    return dp_accounting.GaussianDpEvent(2.0 * sigma if relation == "replace-one" else sigma)


@pytest.mark.parametrize("relation", ["add-remove", "replace-one"])
def test_composed_epsilon_of_a_release_and_dp_sgd_matches_dp_accounting(relation):
    events = [dp_accounting.GaussianDpEvent(4.0), dp_sgd_event(1.5, 0.3, 6)]
    ours = composed_epsilon(events, DELTA, relation)
    theirs = _recomposed([_in_dp_accounting_convention(4.0, relation), _sgd(1.5, 0.3, 6)], DELTA, relation)
    assert math.isclose(ours, theirs, rel_tol=1e-9)
    # a plain Gaussian alone: ε of μ = 1/σ under either relation (σ relative to that relation's sensitivity)
    assert math.isclose(composed_epsilon(events[:1], DELTA, relation),
                        _recomposed([_in_dp_accounting_convention(4.0, relation)], DELTA, relation), rel_tol=1e-3)


def test_noise_multiplier_within_with_sampling_rate_matches_dp_accounting():
    relation, total, q, steps = "replace-one", 1.5, 0.5, 4
    spent = [dp_accounting.GaussianDpEvent(4.0)]
    sigma = noise_multiplier_within(total, DELTA, steps, spent, relation, sampling_rate=q)
    spent_theirs = [_in_dp_accounting_convention(4.0, relation)]
    eps = _recomposed(spent_theirs + [_sgd(sigma, q, steps)], DELTA, relation)
    assert total * 0.99 <= eps <= total * (1 + 1e-9)
    assert _recomposed(spent_theirs + [_sgd(sigma * (1 - 1e-3), q, steps)], DELTA, relation) > total
    assert dp_sgd_event(sigma, q, steps) == _sgd(sigma, q, steps)
    with pytest.raises(PrivacyError, match="Nothing is left"):  # a spent stage above the total
        noise_multiplier_within(0.9, DELTA, steps, [dp_accounting.GaussianDpEvent(noise_multiplier_for(1.0, DELTA))],
                                sampling_rate=q)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# 5. the per-record mechanism
# ---------------------------------------------------------------------------------------------------------------
def _v64(model, L, d):
    """v(u, e) = [μ(u, e); a·e], a = L·R/√2, in float64."""
    m = copy.deepcopy(model).double()
    a = L * domain_diameter(d) / math.sqrt(2.0)
    return lambda u, e: torch.cat([m.encode(u, e), a * e], dim=1)


def _max_record_distance(v, d, K, *, steps=300, seed=0) -> float:
    """max ‖v(u_a, e_a) − v(u_b, e_b)‖ by gradient ascent over u_a, u_b ∈ [0, 1]^d, for every label pair."""
    ya, yb = torch.cartesian_prod(torch.arange(K), torch.arange(K)).T
    ea = torch.nn.functional.one_hot(ya, K).double()
    eb = torch.nn.functional.one_hot(yb, K).double()
    g = torch.Generator().manual_seed(seed)
    pa = torch.randn(len(ya), d, generator=g, dtype=torch.float64).requires_grad_()
    pb = torch.randn(len(ya), d, generator=g, dtype=torch.float64).requires_grad_()
    opt = torch.optim.Adam([pa, pb], lr=0.1)
    best = 0.0
    for _ in range(steps):
        dist = (v(torch.sigmoid(pa), ea) - v(torch.sigmoid(pb), eb)).norm(dim=1)
        best = max(best, float(dist.detach().max()))
        opt.zero_grad()
        (-dist.sum()).backward()
        opt.step()
    return best


def test_per_record_sensitivity_holds_on_adversarial_record_pairs():
    L, d, K = 4.0, 64, 10
    torch.manual_seed(2)
    model = VAEConfig(latent_dim=4, hidden=(32,), encoder_lipschitz=L).build(d, K)
    _scale_(model, 50.0)
    raw = copy.deepcopy(model)
    project_(model)
    bound = per_record_sensitivity(L, d)
    assert NORM_SLACK < 1e-4 and math.isclose(bound, math.sqrt(2) * L * math.sqrt(d + 2) * (1 + NORM_SLACK), rel_tol=1e-12)
    found = _max_record_distance(_v64(model, L, d), d, K)
    assert found <= bound
    assert found > L * domain_diameter(d)  # the label part alone gives L·R between two labels: the search climbs
    assert _max_record_distance(_v64(raw, L, d), d, K) > bound  # control: the unprojected encoder breaks it


def _save_npz(path, x, y, x_test, y_test):
    np.savez(path, x=x.numpy().astype(np.float32), y=y.numpy().astype(np.int64), x_test=x_test.numpy(),
             y_test=y_test.numpy(), n_classes=10)  # fmt: skip
    return f"npz:{path}"


def test_per_record_outputs_of_replace_one_neighbours_differ_in_one_record(tmp_path, digits, monkeypatch):
    n = 120
    x, y = digits.x_train[:n].clone(), digits.y_train[:n].clone()
    x2, y2 = x.clone(), y.clone()
    x2[0] = 1.0 - x[0]  # the first record replaced by a far one, with another label
    y2[0] = (y[0] + 5) % 10
    a = mmgen.data.load(_save_npz(tmp_path / "a.npz", x, y, digits.x_test[:20], digits.y_test[:20]))
    b = mmgen.data.load(_save_npz(tmp_path / "b.npz", x2, y2, digits.x_test[:20], digits.y_test[:20]))
    assert a.name == b.name == "npz" and torch.equal(a.x_train[1:], b.x_train[1:]) and not torch.equal(a.x_train, b.x_train)
    vae = _trained(a, neighbouring="replace-one", encoder_lipschitz=4.0)
    seen = []
    real = perrecord_module.gaussian_mechanism

    def spy(v, **kw):
        seen.append((v.clone(), kw["sensitivity"]))
        return real(v, **kw)

    monkeypatch.setattr(perrecord_module, "gaussian_mechanism", spy)
    out_a = per_record_samples(vae, a, epsilon=1.0, noise_seed=3)
    out_b = per_record_samples(vae, b, epsilon=1.0, noise_seed=3)
    assert out_a["x"].shape == (n, 1, 8, 8) and len(out_a["y"]) == n
    # the mechanism's input: one row apart, by at most Δ
    (va, sens), (vb, _) = seen
    assert sens == per_record_sensitivity(4.0, 64)
    assert torch.equal(va[1:], vb[1:]) and 0 < float((va[0] - vb[0]).norm()) <= sens
    # the outputs (same noise, same permutation): exactly one record differs
    differs = (out_a["x"] != out_b["x"]).flatten(1).any(1) | (out_a["y"] != out_b["y"])
    assert int(differs.sum()) == 1
    p = out_a["privacy"]
    assert [s["stage"] for s in p["stages"]] == ["dp-sgd", "per-record"] and p["neighbouring"] == "replace-one"
    assert p["records_public"] is True and p["for_publication"] is False
    # the stage's noise is calibrated to Δ
    st = p["stages"][-1]
    assert math.isclose(st["noise_multiplier"], noise_multiplier_for(1.0, DELTA), rel_tol=1e-12)
    assert math.isclose(st["noise_std"], st["noise_multiplier"] * sens, rel_tol=1e-12)
    sgd = p["stages"][0]
    theirs = _recomposed([_sgd(sgd["noise_multiplier"], sgd["sampling_rate"], sgd["steps"]),
                          _in_dp_accounting_convention(st["noise_multiplier"], "replace-one")], DELTA, "replace-one")
    assert math.isclose(p["epsilon"], theirs, rel_tol=1e-9) and p["epsilon"] > max(st["epsilon"], sgd["epsilon"])
    # and a different noise seed gives different outputs (the noise is applied)
    out_c = per_record_samples(vae, a, epsilon=1.0, noise_seed=4)
    assert not torch.equal(out_c["x"], out_a["x"])


def test_per_record_mode_refuses_add_remove_and_unconstrained_models(small):
    with pytest.raises(PrivacyError, match="replace-one"):
        per_record_samples(_trained(small), small, epsilon=1.0, noise_seed=0)  # add-remove
    with pytest.raises(PrivacyError, match="Lipschitz"):
        per_record_samples(_trained(small, lipschitz=False, neighbouring="replace-one"), small, epsilon=1.0,
                           noise_seed=0)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# 6. warm start from a release's generator; composition and the budget record
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def warm(small):
    torch.set_num_threads(1)
    rel = mmgen.release(small, features=mmgen.features.create("rff", n_features=200), epsilon=0.7, delta=DELTA,
                        noise_seed=0)  # fmt: skip
    return mmgen.fit("conv", rel, mmgen.TrainConfig(epochs=1, steps_per_epoch=10, batch_size=64, seed=0),
                     progress=False)  # fmt: skip


WARM = dict(pretrain_epochs=1, pretrain_samples=256)


def _release_entry(record, warm):
    p = warm.release_info["privacy"]
    record.add(stage="release", event=dp_event(p["noise_multipliers"]), epsilon=p["epsilon"], delta=p["delta"],
               neighbouring=p["neighbouring"], details={"content_hash": warm.release_info["content_hash"]})  # fmt: skip


def test_warm_start_composes_the_release_with_dp_sgd(small, warm):
    record = BudgetRecord(delta=DELTA)
    vae = _trained(small, warm_start=warm, record=record, noise_multiplier=2.0, **WARM)
    p = vae.privacy
    assert [s["stage"] for s in p["stages"]] == ["release", "dp-sgd"]
    assert p["stages"][0]["content_hash"] == warm.release_info["content_hash"] == p["warm_start"]
    release_sigmas = warm.release_info["privacy"]["noise_multipliers"]
    events = [dp_accounting.GaussianDpEvent(s) for s in release_sigmas] + [_sgd(2.0, 0.2, 5)]
    assert math.isclose(p["epsilon"], _recomposed(events, DELTA, "add-remove"), rel_tol=1e-3)
    assert p["epsilon"] > p["stages"][1]["epsilon"] and p["epsilon"] > warm.release_info["privacy"]["epsilon"]
    # the release was not in the record: it is added, once, with the DP-SGD stage
    assert [e["stage"] for e in record.entries] == ["release", "dp-sgd"]
    assert record.entries[0]["details"]["content_hash"] == warm.release_info["content_hash"]
    assert math.isclose(record.total_epsilon(), p["epsilon"], rel_tol=1e-9)
    # the noisy class proportions of the release are used, not uniform ones
    assert torch.allclose(vae.class_proportions, warm.class_proportions.double())


def test_warm_start_within_a_total_counts_a_recorded_release_once(small, warm):
    total = 1.2
    record = BudgetRecord(delta=DELTA)
    _release_entry(record, warm)
    vae = _trained(small, warm_start=warm, record=record, epsilon=total, noise_multiplier=None, **WARM)
    p = vae.privacy
    assert [s["stage"] for s in p["stages"]] == ["release", "dp-sgd"]
    assert [e["stage"] for e in record.entries] == ["release", "dp-sgd"]  # the release is not added again
    sigma = p["stages"][1]["noise_multiplier"]
    events = [dp_accounting.GaussianDpEvent(s) for s in warm.release_info["privacy"]["noise_multipliers"]]
    eps = _recomposed(events + [_sgd(sigma, 0.2, 5)], DELTA, "add-remove")
    # counted twice, σ would leave a good part of the total unspent
    assert total * 0.99 <= eps <= total * (1 + 1e-6)
    assert p["epsilon"] <= total * (1 + 1e-9) and record.total_epsilon() <= total * (1 + 1e-9)


def test_warm_start_and_budget_refusals_come_before_training(small, warm, monkeypatch):
    def no_training(*a, **kw):
        raise AssertionError("training started after a refusal")

    monkeypatch.setattr(train_module, "DPSGD", no_training)
    monkeypatch.setattr(train_module, "_pretrain", no_training)
    # a record already spent to the total
    spent = BudgetRecord(delta=DELTA)
    spent.add(stage="dp-sgd", event=dp_accounting.GaussianDpEvent(noise_multiplier_for(1.0, DELTA)), epsilon=1.0,
              delta=DELTA)  # fmt: skip
    with pytest.raises(PrivacyError, match="Nothing is left"):
        _trained(small, warm_start=warm, record=spent, epsilon=0.9, noise_multiplier=None, **WARM)
    assert len(spent) == 1
    # a declared total that the stage would exceed
    capped = BudgetRecord(delta=DELTA, total_epsilon=0.5)
    _release_entry(capped, warm)
    with pytest.raises(PrivacyError, match="Refused"):
        _trained(small, warm_start=warm, record=capped, noise_multiplier=1.0, **WARM)
    assert len(capped) == 1
    # a record of the other neighbouring relation
    other = BudgetRecord(delta=DELTA, neighbouring="replace-one")
    with pytest.raises(PrivacyError, match="relation"):
        _trained(small, record=other, noise_multiplier=1.0)
    assert len(other) == 0
    # a release made under another relation than DP-SGD's
    with pytest.raises(PrivacyError, match="add-remove"):
        _trained(small, warm_start=warm, neighbouring="replace-one", noise_multiplier=1.0, **WARM)


# ---------------------------------------------------------------------------------------------------------------
# 7. an interrupted run resumes exactly
# ---------------------------------------------------------------------------------------------------------------
def test_an_interrupted_run_resumed_from_its_checkpoint_ends_with_the_same_weights(small, tmp_path, monkeypatch):
    # 20 steps, a checkpoint every 2; small constants and a large learning rate: the projection binds at every step
    opts = dict(epochs=2.0, sampling_rate=0.1, noise_seed=7, neighbouring="replace-one", encoder_lipschitz=0.5,
                decoder_lipschitz=0.5, lr=0.05)  # fmt: skip
    whole = _trained(small, **opts)
    assert whole.config.steps == 20 and whole.finished
    path = tmp_path / "run.vae"
    calls = {"n": 0}
    real = DPSGD.step

    def interrupting(self):  # interrupt the run before its 7th optimiser step: the last checkpoint is at step 6
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(DPSGD, "step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        _trained(small, checkpoint=path, **opts)
    monkeypatch.setattr(DPSGD, "step", real)
    ck = TrainedVAE.load(path)
    assert ck.steps_done == 6 and not ck.finished and ck.optimizer_state is not None
    with pytest.raises(MMGenError, match="unfinished"):
        per_record_samples(ck, small, epsilon=1.0)
    resumed = train_vae(small, resume=ck, noise_seed=7, neighbouring="replace-one", checkpoint=path)
    assert resumed.finished and resumed.steps_done == 20 and resumed.run_id == ck.run_id
    assert resumed.privacy == ck.privacy
    assert whole.privacy["epsilon"] == resumed.privacy["epsilon"]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    # BUG (mmgen/vae/train.py, uncommitted Projector change): FAILS. The per-step Projector keeps warm-started
    # power-iteration vectors that the checkpoint does not save; a resumed run starts fresh vectors
    # (Projector(model, seed=config.seed + 1)), so the projection's scale factors, and then the weights,
    # differ from the uninterrupted run's (max |Δw| ≈ 3.5e-3 here; ≈ 1.5e-6 with 50 power iterations).
    # Fix: save `project.vectors` with the checkpoint (like the optimiser state) and restore them on resume.
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # control: the weights did move between the checkpoint and the end
    assert not torch.equal(TrainedVAE.load(path).model.encoder[0].weight, b["encoder.0.weight"])


# ---------------------------------------------------------------------------------------------------------------
# 8. the file
# ---------------------------------------------------------------------------------------------------------------
def _numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _numbers(v)


def _keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v)


def test_file_round_trip_kind_no_private_count_and_damage(digits, tmp_path):
    data = _first(digits, 337)
    vae = _trained(data, noise_multiplier=1.5)
    path = vae.save(tmp_path / "model.vae")
    assert mmgen.files.sniff(path) == "vae"
    back = TrainedVAE.load(path)
    assert back.privacy == vae.privacy and back.config == vae.config and back.data == vae.data
    assert back.run_id == vae.run_id and back.steps_done == vae.steps_done and back.optimizer_state is None
    assert torch.equal(back.class_proportions, vae.class_proportions)
    sa, sb = vae.model.state_dict(), back.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    xa, ya = vae.sample(50, seed=1)
    xb, yb = back.sample(50, seed=1)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # the metadata: no private record count anywhere, no loss
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    meta = json.loads(header["mmgen"])
    numbers = list(_numbers(meta))
    assert numbers and 337 not in numbers and 337.0 not in numbers
    assert not any("loss" in str(k).lower() for k in _keys(meta))
    # not as a number or inside a string either (digits of a measured float may spell 337 by chance)
    assert not re.search(r"(?<![\d.])337(?![\d])", json.dumps(meta))
    # damage: one byte of the weights altered, and a truncated file
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x40
    bad = tmp_path / "altered.vae"
    bad.write_bytes(bytes(raw))
    with pytest.raises(FormatError):
        TrainedVAE.load(bad)
    cut = tmp_path / "cut.vae"
    cut.write_bytes(path.read_bytes()[: len(raw) // 2])
    with pytest.raises(FormatError):
        TrainedVAE.load(cut)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros((2, 3), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(FormatError):
        TrainedVAE.load(other)


# ---------------------------------------------------------------------------------------------------------------
# 9. end to end on digits
# ---------------------------------------------------------------------------------------------------------------
def test_digits_at_epsilon_10_beats_a_bar_that_shuffled_labels_cannot(digits):
    vae = train_vae(digits, epsilon=10.0, delta=DELTA, noise_seed=0)
    assert vae.epsilon <= 10.0 and vae.privacy["neighbouring"] == "add-remove"
    x, y = vae.sample(2000, seed=1)
    assert x.shape == (2000, 1, 8, 8) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    score = mmgen.evaluate.evaluate(x, y, digits, metrics=("lr",))["logistic_regression"]
    assert score > 0.70
    # control: the same run on labels shuffled (the same σ): the classes carry nothing
    perm = torch.randperm(len(digits.y_train), generator=torch.Generator().manual_seed(0))
    shuffled = dataclasses.replace(digits, y_train=digits.y_train[perm])
    sigma = vae.privacy["stages"][-1]["noise_multiplier"]
    ctrl = train_vae(shuffled, noise_multiplier=sigma, delta=DELTA, noise_seed=0)
    xs, ys = ctrl.sample(2000, seed=1)
    assert mmgen.evaluate.evaluate(xs, ys, digits, metrics=("lr",))["logistic_regression"] < 0.5


@pytest.mark.parametrize("canary_value", [0.0, 1.0])
def test_a_record_added_at_the_front_moves_the_noisy_step_by_at_most_c(digits, tmp_path, canary_value):
    """Adjacent npz files (one record added at the front, so every index shifts) through the real loader:
    with the same batch otherwise and the noise fixed, DP-SGD's noisy gradient moves by at most C."""
    from mmgen.vae.train import _private_records

    x, y = digits.x_train[:120].numpy(), digits.y_train[:120].numpy()
    canary = np.full((1, *x.shape[1:]), canary_value, np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y, n_classes=10)
    np.savez(tmp_path / "d1.npz", x=np.concatenate([canary, x]), y=np.concatenate([[3], y]), n_classes=10)
    cfg = VAEConfig(hidden=(32,), latent_dim=4)
    torch.manual_seed(0)
    base = cfg.build(64, 10)
    grads = []
    for spec in ("d.npz", "d1.npz"):
        u, labels = _private_records(mmgen.data.load(f"npz:{tmp_path / spec}"), clip=False)
        model = copy.deepcopy(base)
        dp = DPSGD(model, noise_multiplier=2.0, clip_norm=0.5, lr=1e-3, secure=False)
        xi = torch.randn(120, 4, generator=torch.Generator().manual_seed(1))
        if len(labels) == 121:  # the canary draws its own latent; the others keep theirs
            xi = torch.cat([torch.randn(1, 4, generator=torch.Generator().manual_seed(2)), xi])
        dp.noisy_gradient(u, labels, xi, torch.Generator().manual_seed(7))  # the same noise for both
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
        dp.close()
    moved = float((grads[0] - grads[1]).norm())
    assert 0 < moved <= 0.5 * (1 + 1e-4), moved
