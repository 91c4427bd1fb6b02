"""Private Evolution (mmgen.evolve): the vote histogram's sensitivity and noise, thresholding, the composed
guarantee, the budget record, class sizes from the release, the output file and an end-to-end bar on digits.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import PLDAccountant

import mmgen
from mmgen import cli
from mmgen.data.base import Dataset, iter_batches
from mmgen.errors import DataError, MMGenError, PrivacyError
from mmgen.evolve import (
    CallableAPI, EvolveConfig, Evolved, class_sizes, evolve, histogram_sensitivity, make_embedding, nearest,
    noisy_histogram, plan, read_meta, vote_counts,
)  # fmt: skip
from mmgen.privacy import BudgetRecord, dp_event, epsilon_for
from mmgen.privacy.ledger import composed_epsilon, noise_multiplier_within, rounds_event

loop_module = sys.modules["mmgen.evolve.loop"]
DELTA = 1e-5
HISTORY_KEYS = {"round", "candidates", "kept", "classes_without_votes", "strength"}  # no timing: it grows with N


# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def val(digits):
    return digits.validation_split(0.25)


@pytest.fixture(scope="module")
def release(val):
    return mmgen.release(val, features=mmgen.features.create("rff", n_features=500), epsilon=5.0, delta=DELTA,
                         noise_seed=0)  # fmt: skip


@pytest.fixture(scope="module")
def trained(release):
    torch.set_num_threads(2)
    return mmgen.fit("conv", release, mmgen.TrainConfig(epochs=1, steps_per_epoch=30, batch_size=64, seed=0),
                     progress=False)  # fmt: skip


def _with_release_multipliers(trained, multipliers):
    """A copy of ``trained`` whose release info states other noise multipliers (for exact accounting checks)."""
    info = copy.deepcopy(trained.release_info)
    info["privacy"]["noise_multipliers"] = list(multipliers)
    return dataclasses.replace(trained, release_info=info)


def _save_npz(path, x, y):
    np.savez(path, x=np.asarray(x, np.float32), y=np.asarray(y, np.int64), n_classes=10)
    return f"npz:{path}"


def _capture_histograms(monkeypatch):
    """Records every noisy histogram evolve releases (the only thing that leaves the private data)."""
    seen = []
    real = loop_module.noisy_histogram

    def wrapped(*a, **kw):
        out = real(*a, **kw)
        seen.append(out.clone())
        return out

    monkeypatch.setattr(loop_module, "noisy_histogram", wrapped)
    return seen


# ---------------------------------------------------------------------------------------------------------------
# 1. sensitivity on adjacent data sets
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_adjacent_data_sets_give_histograms_one_vote_vector_apart(digits, k):
    embed = make_embedding("pixels", low=0.0, high=1.0)
    x, y = digits.x_train[:200], digits.y_train[:200]
    cand_x, cand_y = digits.x_train[1000:1200], digits.y_train[1000:1200]
    cand = embed.codes(cand_x)
    canary_x, canary_y = digits.x_train[1300:1301], digits.y_train[1300:1301]
    x2, y2 = torch.cat([canary_x, x]), torch.cat([canary_y, y])  # at the front: every batch of 16 shifts by one
    counts_a = vote_counts(iter_batches(x, y, 16), cand, cand_y, embed, k=k)
    counts_b = vote_counts(iter_batches(x2, y2, 16), cand, cand_y, embed, k=k)
    assert int(counts_a.sum()) == k * len(y) and int(counts_b.sum()) == k * (len(y) + 1)
    ha = noisy_histogram(counts_a, k=k, noise_multiplier=2.0, noise_seed=7)
    hb = noisy_histogram(counts_b, k=k, noise_multiplier=2.0, noise_seed=7)
    diff = hb - ha
    assert 0.999 < float(diff.norm()) <= histogram_sensitivity("add-remove")
    changed = (diff.abs() > 1e-9).nonzero().squeeze(1)
    assert len(changed) == k
    assert torch.allclose(diff[changed], torch.full((k,), 1 / math.sqrt(k), dtype=torch.float64), atol=1e-9)
    # exactly the canary's own k nearest same-class candidates
    same = (cand_y == canary_y[0]).nonzero().squeeze(1)
    expected = same[nearest(embed.codes(canary_x), cand[same], k)[0]]
    assert sorted(changed.tolist()) == sorted(expected.tolist())
    assert bool((cand_y[changed] == canary_y[0]).all())


@pytest.mark.parametrize("name", ["pixels", "release"])
def test_votes_do_not_depend_on_the_batching_even_at_exact_ties(digits, trained, name):
    """A record's votes are a function of the record and the candidates only: batches of 1, 7 and 4096 give the same.

    Half the records sit exactly halfway between two candidates (an exact tie in real arithmetic), where a
    floating-point search may pick either depending on its blocking; the exact search always takes the lower index.
    """
    embed = make_embedding(name, low=0.0, high=1.0, release_features=trained.release_info["statistics"][0]["features"])
    n = 300
    cand_x = torch.cat([torch.full((1, 1, 8, 8), 0.25), torch.full((1, 1, 8, 8), 0.75), digits.x_train[:40]])
    cand_y = torch.zeros(len(cand_x), dtype=torch.long)
    x = torch.cat([torch.full((n // 2, 1, 8, 8), 0.5), digits.x_train[100 : 100 + n // 2]])
    y = torch.zeros(n, dtype=torch.long)
    cand = embed.codes(cand_x)
    per_record = torch.stack([vote_counts([(x[i : i + 1], y[i : i + 1])], cand, cand_y, embed, k=1) for i in range(n)])
    for batch in (7, 4096):
        counts = vote_counts(iter_batches(x, y, batch), cand, cand_y, embed, k=1)
        assert torch.equal(counts, per_record.sum(dim=0))
    if name == "pixels":  # the tied records vote for the lower index, every one of them
        assert torch.equal(per_record[: n // 2].argmax(dim=1), torch.zeros(n // 2, dtype=torch.long))


def test_a_record_equidistant_to_many_candidates_still_gives_exactly_k_votes():
    k = 3
    embed = make_embedding("pixels", low=0.0, high=1.0)
    # 8 candidates on a circle around the record, plus 4 identical copies of it
    angles = torch.arange(8) * (math.pi / 4)
    ring = torch.stack([0.5 + 0.25 * torch.cos(angles), 0.5 + 0.25 * torch.sin(angles)], 1)
    copies = torch.full((4, 2), 0.5)
    cand = embed.codes(torch.cat([ring, copies]))
    cand_y = torch.zeros(len(cand), dtype=torch.long)
    record = torch.tensor([[0.5, 0.5]])
    counts = vote_counts([(record, torch.tensor([0]))], cand, cand_y, embed, k=k)
    assert counts.nonzero().squeeze(1).tolist() == [8, 9, 10]  # the tied copies at distance 0, lowest indices first
    # only the ring: a k-subset of the eight, never a repeat
    counts = vote_counts([(record, torch.tensor([0]))], cand[:8], cand_y[:8], embed, k=k)
    assert int(counts.sum()) == k and int(counts.max()) == 1
    # the released vector of one record has norm 1 whatever the ties
    assert float((counts.double() / math.sqrt(k)).norm()) == pytest.approx(1.0, abs=1e-12)


def test_records_of_a_class_with_fewer_than_k_candidates_are_refused():
    embed = make_embedding("pixels", low=0.0, high=1.0)
    cand, cand_y = embed.codes(torch.rand(5, 2)), torch.tensor([0, 0, 0, 1, 1])
    with pytest.raises(DataError, match="fewer than k=3"):
        vote_counts([(torch.rand(2, 2), torch.tensor([0, 1]))], cand, cand_y, embed, k=3)


def test_adjacent_npz_files_through_the_loader_give_evolve_histograms_within_the_sensitivity(
        tmp_path, val, trained, monkeypatch):  # fmt: skip
    x, y = val.x_train[:600].numpy(), val.y_train[:600].numpy()
    canary_x, canary_y = val.x_train[700:701].numpy(), val.y_train[700:701].numpy()
    a = mmgen.data.load(_save_npz(tmp_path / "a.npz", x, y))
    b = mmgen.data.load(_save_npz(tmp_path / "b.npz", np.concatenate([canary_x, x]), np.concatenate([canary_y, y])))
    assert len(b.y_train) == len(a.y_train) + 1
    seen = _capture_histograms(monkeypatch)
    cfg = EvolveConfig(rounds=1, population=300, samples=100, batch_size=32, threshold=0.0)
    ev_a = evolve(trained, a, noise_multiplier=3.0, config=cfg, noise_seed=11)
    ev_b = evolve(trained, b, noise_multiplier=3.0, config=cfg, noise_seed=11)
    assert len(seen) == 2
    diff = seen[1] - seen[0]
    assert 0.999 < float(diff.norm()) <= histogram_sensitivity()
    assert int((diff.abs() > 1e-9).sum()) == 1  # k = 1: one candidate got the canary's vote
    assert ev_a.privacy == ev_b.privacy and ev_a.config == ev_b.config


# ---------------------------------------------------------------------------------------------------------------
# 2. noise level
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("neighbouring", ["add-remove", "replace-one"])
def test_seeded_histogram_noise_has_the_stated_standard_deviation(neighbouring):
    sigma = 3.0
    noisy = noisy_histogram(torch.zeros(200_000, dtype=torch.int64), k=4, noise_multiplier=sigma,
                            neighbouring=neighbouring, noise_seed=3)  # fmt: skip
    expected = sigma * histogram_sensitivity(neighbouring)
    assert histogram_sensitivity(neighbouring) == pytest.approx(1.0 if neighbouring == "add-remove" else math.sqrt(2),
                                                                rel=2e-5)  # fmt: skip
    assert float(noisy.std()) == pytest.approx(expected, rel=0.02)
    assert abs(float(noisy.mean())) < 0.05 * expected
    # votes shift the mean by counts/sqrt(k), not the spread
    shifted = noisy_histogram(torch.full((200_000,), 8, dtype=torch.int64), k=4, noise_multiplier=sigma,
                              neighbouring=neighbouring, noise_seed=3)  # fmt: skip
    assert torch.allclose(shifted - noisy, torch.full_like(noisy, 4.0), atol=1e-9)


def test_opendp_histogram_noise_has_the_stated_standard_deviation():
    noisy = noisy_histogram(torch.zeros(2000, dtype=torch.int64), k=1, noise_multiplier=4.0)
    assert noisy.dtype == torch.float64 and noisy.shape == (2000,)
    assert float(noisy.std()) == pytest.approx(4.0, rel=0.1)
    assert abs(float(noisy.mean())) < 0.4
    assert len(noisy.unique()) > 1900  # real noise, not a constant or a few values


# ---------------------------------------------------------------------------------------------------------------
# 3. thresholding
# ---------------------------------------------------------------------------------------------------------------
def _id_api():
    """Candidate i is the point (i/100, 0.5); variation returns the same points (so output = selected candidates)."""

    def random_fn(labels):
        i = torch.arange(len(labels), dtype=torch.float32)
        return torch.stack([i / 100, torch.full_like(i, 0.5)], 1)

    return CallableAPI(random_fn, lambda x, y, s: x.clone())


def _threshold_data():
    # 40 records on candidate 3, 30 on candidate 12 (heavily voted), 2 records on candidate 7 (weakly voted);
    # all of class 0; candidates 0..19 are class 0 (population 20, one class)
    pts = [3] * 40 + [12] * 30 + [7] * 2
    x = torch.tensor([[p / 100, 0.5] for p in pts], dtype=torch.float32)
    y = torch.zeros(len(pts), dtype=torch.long)
    return Dataset("threshold-test", x, y, x[:0], y[:0], n_classes=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_candidates_below_the_threshold_are_never_selected(seed):
    data = _threshold_data()
    cfg = EvolveConfig(rounds=1, population=20, samples=300, threshold=4.0, seed=seed)
    ev = evolve(_id_api(), data, noise_multiplier=1.0, config=cfg, class_proportions=torch.ones(1), noise_seed=seed)
    chosen = set(torch.round(ev.x[:, 0] * 100).long().tolist())
    assert chosen <= {3, 12} and chosen == {3, 12}
    assert ev.history[0]["kept"] == 2 and ev.history[0]["classes_without_votes"] == []
    assert ev.privacy["stages"][-1]["threshold"] == pytest.approx(4.0 * histogram_sensitivity())
    # control: without the threshold the weakly voted candidate 7 (2 votes) is drawn among 300
    ev0 = evolve(_id_api(), data, noise_multiplier=1.0, config=dataclasses.replace(cfg, threshold=0.0),
                 class_proportions=torch.ones(1), noise_seed=seed)  # fmt: skip
    assert 7 in set(torch.round(ev0.x[:, 0] * 100).long().tolist())
    assert ev0.history[0]["kept"] > 2


def test_a_class_without_votes_above_the_threshold_is_drawn_uniformly_and_reported():
    data = _threshold_data()
    cfg = EvolveConfig(rounds=1, population=20, samples=300, threshold=100.0)
    ev = evolve(_id_api(), data, noise_multiplier=1.0, config=cfg, class_proportions=torch.ones(1), noise_seed=0)
    assert ev.history[0]["kept"] == 0 and ev.history[0]["classes_without_votes"] == [0]
    assert len(set(torch.round(ev.x[:, 0] * 100).long().tolist())) > 10


# ---------------------------------------------------------------------------------------------------------------
# 4. the composed guarantee
# ---------------------------------------------------------------------------------------------------------------


def test_composed_epsilon_is_pinned_and_matches_dp_accounting():
    expected = epsilon_for(1 / math.sqrt(1 / 5.0**2 + 10 / 20.0**2), DELTA)
    got = composed_epsilon([dp_event([5.0]), rounds_event(20.0, 10)], DELTA)
    assert got == pytest.approx(expected, rel=1e-9)
    event = dp_accounting.ComposedDpEvent(
        [dp_accounting.GaussianDpEvent(5.0), dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(20.0), 10)]
    )
    assert got == pytest.approx(PLDAccountant().compose(event).get_epsilon(DELTA), abs=1e-3)
    assert round(got, 4) == 0.9465


def test_evolve_states_the_composed_epsilon_of_release_and_rounds(val, trained):
    tr = _with_release_multipliers(trained, [5.0])
    cfg = EvolveConfig(rounds=10, population=50, samples=50)
    ev = evolve(tr, val, noise_multiplier=20.0, config=cfg, noise_seed=0)
    assert ev.epsilon == pytest.approx(epsilon_for(1 / math.sqrt(1 / 5.0**2 + 10 / 20.0**2), DELTA), rel=1e-9)
    assert round(ev.epsilon, 4) == 0.9465
    pe = ev.privacy["stages"][-1]
    assert pe["rounds"] == 10 and pe["noise_multiplier"] == 20.0
    assert pe["epsilon"] == pytest.approx(epsilon_for(20.0 / math.sqrt(10), DELTA), rel=1e-9)
    assert ev.privacy["stages"][0]["noise_multipliers"] == [5.0]
    assert len(ev.history) == 10


@pytest.mark.parametrize("total", [6.0, 12.0])
def test_evolve_picks_the_smallest_sigma_within_the_total(val, trained, total):
    cfg = EvolveConfig(rounds=4, population=50, samples=50)
    ev = evolve(trained, val, epsilon=total, config=cfg, noise_seed=0)
    assert total - 1e-6 <= ev.epsilon <= total
    sigma = ev.privacy["stages"][-1]["noise_multiplier"]
    release_sigmas = trained.release_info["privacy"]["noise_multipliers"]
    events = [dp_accounting.GaussianDpEvent(s) for s in release_sigmas]
    events.append(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), 4))
    assert PLDAccountant().compose(dp_accounting.ComposedDpEvent(events)).get_epsilon(DELTA) == pytest.approx(total, abs=1e-3)
    smaller = composed_epsilon([dp_event(release_sigmas), rounds_event(sigma * (1 - 1e-4), 4)], DELTA)
    assert smaller > total  # any less noise would exceed the total


def test_evolve_refuses_a_total_the_release_already_spent(val, trained):
    release_eps = trained.release_info["privacy"]["epsilon"]
    with pytest.raises(PrivacyError, match="Nothing is left"):
        evolve(trained, lambda: pytest.fail("the data must not be read"), epsilon=release_eps * 0.99,
               config=EvolveConfig(rounds=2, population=50, samples=50))  # fmt: skip


@pytest.mark.parametrize("share", [0.3, 0.7])
def test_plan_splits_the_total_between_release_and_rounds(share):
    total, rounds = 1.0, 5
    p = plan(total, DELTA, rounds, share)
    assert set(p) == {"release_epsilon", "release_noise_multiplier", "noise_multiplier", "pe_epsilon"}
    composed = composed_epsilon([dp_event([p["release_noise_multiplier"]]), rounds_event(p["noise_multiplier"], rounds)],
                                DELTA)  # fmt: skip
    assert total - 1e-6 <= composed <= total
    assert epsilon_for(p["release_noise_multiplier"], DELTA) == pytest.approx(p["release_epsilon"], rel=1e-3)
    assert p["pe_epsilon"] == pytest.approx(epsilon_for(p["noise_multiplier"] / math.sqrt(rounds), DELTA), rel=1e-9)
    # the release's share of mu^2
    mu2_release = p["release_noise_multiplier"] ** -2
    mu2_total = mu2_release + rounds * p["noise_multiplier"] ** -2
    assert mu2_release / mu2_total == pytest.approx(share, rel=1e-2)
    assert 0 < p["release_epsilon"] < total and 0 < p["pe_epsilon"] < total
    with pytest.raises(MMGenError, match="release_share"):
        plan(total, DELTA, rounds, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# 5. the budget record
# ---------------------------------------------------------------------------------------------------------------
def _record_with_release(trained, with_hash: bool, **kw):
    p = trained.release_info["privacy"]
    record = BudgetRecord(delta=DELTA, **kw)
    details = {"content_hash": trained.release_info["content_hash"]} if with_hash else None
    record.add(stage="release", event=dp_event(p["noise_multipliers"]), epsilon=p["epsilon"], delta=p["delta"],
               details=details)  # fmt: skip
    return record


def test_a_release_already_in_the_record_is_not_counted_twice(val, trained):
    cfg = EvolveConfig(rounds=3, population=50, samples=50)
    plain = evolve(trained, val, epsilon=10.0, config=cfg, noise_seed=0)
    record = _record_with_release(trained, with_hash=True)
    ev = evolve(trained, val, epsilon=10.0, config=cfg, noise_seed=0, record=record)
    sigma = ev.privacy["stages"][-1]["noise_multiplier"]
    assert sigma == pytest.approx(plain.privacy["stages"][-1]["noise_multiplier"], rel=1e-9)
    assert len(record) == 2 and record.entries[-1]["stage"] == "private-evolution"
    assert record.entries[-1]["noise_multipliers"] == [sigma] * 3
    assert record.total_epsilon() == pytest.approx(ev.epsilon, rel=1e-9)
    assert ev.privacy["data_set_total_epsilon"] == pytest.approx(10.0, abs=1e-6)
    # control: the same release recorded without its hash is (conservatively) counted again -> more noise
    other = evolve(trained, val, epsilon=10.0, config=cfg, noise_seed=0, record=_record_with_release(trained, False))
    assert other.privacy["stages"][-1]["noise_multiplier"] > sigma * 1.01


def test_a_record_that_would_be_exceeded_refuses_before_the_data_is_read(trained):
    record = _record_with_release(trained, with_hash=True, total_epsilon=trained.release_info["privacy"]["epsilon"] + 0.1)
    before = copy.deepcopy(record.entries)

    def data():
        raise AssertionError("the private data must not be read")

    with pytest.raises(PrivacyError, match="declared total"):
        evolve(trained, data, noise_multiplier=2.0, config=EvolveConfig(rounds=3, population=50, samples=50),
               record=record)  # fmt: skip
    assert record.entries == before
    # and a total given to evolve that earlier stages in the record already spent
    record2 = _record_with_release(trained, with_hash=True)
    record2.add(stage="release", event=dp_event([0.5]), epsilon=20.0, delta=DELTA)
    with pytest.raises(PrivacyError, match="Nothing is left"):
        evolve(trained, data, epsilon=10.0, config=EvolveConfig(rounds=3, population=50, samples=50), record=record2)


class _Interrupted(Exception):
    pass


def test_an_interrupted_run_is_already_in_the_saved_record(val, trained, tmp_path, monkeypatch):
    """A run stopped in round 2 has drawn a noisy histogram: its stage and the release are in the file already."""
    real, calls = loop_module.noisy_histogram, []

    def stop_in_round_two(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise _Interrupted("killed in round 2")
        return real(*a, **kw)

    monkeypatch.setattr(loop_module, "noisy_histogram", stop_in_round_two)
    path = tmp_path / "data.mmgen-budget.json"
    record = BudgetRecord(path, delta=DELTA)  # the release is not in it yet
    with pytest.raises(_Interrupted):
        evolve(trained, val, epsilon=10.0, config=EvolveConfig(rounds=3, population=50, samples=50), noise_seed=0,
               record=record, output="x.npz")  # fmt: skip
    assert len(calls) == 2  # one noisy histogram was computed before the interruption
    saved = BudgetRecord.load(path)
    assert [e["stage"] for e in saved.entries] == ["release", "private-evolution"]
    pe = saved.entries[-1]
    assert pe["output"] == "x.npz" and pe["details"]["rounds"] == 3 and len(pe["noise_multipliers"]) == 3
    assert saved.entries[0]["details"]["content_hash"] == trained.release_info["content_hash"]
    assert saved.total_epsilon() == pytest.approx(10.0, abs=1e-6)  # the whole run is counted, not one round


def test_data_refused_by_the_domain_checks_spends_nothing(val, trained, tmp_path):
    bad = val.x_train[:200].clone()
    bad[-1] = 2.0  # the last record is outside the declared domain [0, 1]: refused in the first pass
    path = tmp_path / "bad.mmgen-budget.json"
    record = BudgetRecord(path, delta=DELTA)
    with pytest.raises(DataError):
        evolve(trained, (bad, val.y_train[:200]), epsilon=10.0, record=record,
               config=EvolveConfig(rounds=2, population=50, samples=50, batch_size=64))  # fmt: skip
    assert len(record) == 0 and not path.exists()


def test_a_public_generator_costs_nothing_on_this_data(val, trained):
    cfg = EvolveConfig(rounds=4, population=50, samples=50)
    ev = evolve(trained, val, epsilon=3.0, config=cfg, noise_seed=0, generator_public=True)
    assert [s["stage"] for s in ev.privacy["stages"]] == ["private-evolution"] and ev.privacy["generator_public"]
    sigma = ev.privacy["stages"][-1]["noise_multiplier"]
    assert ev.epsilon == pytest.approx(epsilon_for(sigma / 2.0, DELTA), rel=1e-9) and 3.0 - 1e-6 <= ev.epsilon <= 3.0
    # counted, the release (epsilon 5) alone is above 3; at a total of 8 it leaves less for the rounds
    with pytest.raises(PrivacyError, match="Nothing is left"):
        evolve(trained, val, epsilon=3.0, config=cfg, noise_seed=0)
    public8 = evolve(trained, val, epsilon=8.0, config=cfg, noise_seed=0, generator_public=True)
    counted8 = evolve(trained, val, epsilon=8.0, config=cfg, noise_seed=0)
    assert counted8.privacy["stages"][-1]["noise_multiplier"] > public8.privacy["stages"][-1]["noise_multiplier"] * 1.01
    # a public generator's release proportions are not this data's: uniform classes
    assert torch.bincount(ev.y, minlength=10).tolist() == [5] * 10


def test_a_relation_other_than_the_releases_is_refused(val, trained):
    cfg = EvolveConfig(rounds=2, population=50, samples=50)
    with pytest.raises(PrivacyError, match="add-remove"):
        evolve(trained, lambda: pytest.fail("read"), noise_multiplier=5.0, config=cfg, neighbouring="replace-one")
    record = BudgetRecord(delta=DELTA, neighbouring="replace-one")
    with pytest.raises(PrivacyError, match="replace-one"):
        evolve(trained, lambda: pytest.fail("read"), noise_multiplier=5.0, config=cfg, record=record)


# ---------------------------------------------------------------------------------------------------------------
# 6. class sizes come from the release
# ---------------------------------------------------------------------------------------------------------------
def test_class_sizes_follow_the_release_not_the_private_labels(val, trained):
    x = val.x_train[:400]
    y = torch.full((400,), 4, dtype=torch.long)  # every private label is class 4
    cfg = EvolveConfig(rounds=2, population=200, samples=500)
    ev = evolve(trained, (x, y), noise_multiplier=2.0, config=cfg, noise_seed=0)
    expected = class_sizes(trained.class_proportions, 500)
    assert torch.bincount(ev.y, minlength=10).tolist() == expected.tolist()
    assert int(expected[4]) < 100  # the release's proportions (about 1/10 each), not the skewed labels
    assert all(4 not in h["classes_without_votes"] for h in ev.history)  # the only class that voted
    assert any(h["classes_without_votes"] for h in ev.history)  # the others had (almost) only noise
    skewed = torch.tensor([0.4, 0.2, 0.12] + [0.04] * 7)
    ev2 = evolve(trained, (x, y), noise_multiplier=2.0, config=cfg, noise_seed=0, class_proportions=skewed)
    assert torch.bincount(ev2.y, minlength=10).tolist() == [200, 100, 60] + [20] * 7
    assert class_sizes(torch.tensor([0.5, 0.3, 0.2]), 10).tolist() == [5, 3, 2]
    with pytest.raises(MMGenError, match="one entry per class"):
        evolve(trained, (x, y), noise_multiplier=2.0, config=cfg, class_proportions=torch.ones(3))


# ---------------------------------------------------------------------------------------------------------------
# 7. end to end on digits
# ---------------------------------------------------------------------------------------------------------------
def _lr(x, y, data):
    return mmgen.evaluate.evaluate(x, y, data, metrics=("lr",))["logistic_regression"]


def test_evolve_on_digits_beats_the_generator_and_a_broken_vote(val, trained, monkeypatch):
    # measured (seeds 0-2): PE 0.75-0.80, the release-only generator 0.54-0.62, shuffled votes 0.21-0.37
    cfg = EvolveConfig(rounds=3, population=500, samples=500)
    ev = evolve(trained, val, epsilon=20.0, config=cfg, noise_seed=0)
    assert 19.99 < ev.epsilon <= 20.0
    pe = _lr(ev.x, ev.y, val)
    x0, y0 = trained.sample(500, seed=0)
    generator_only = _lr(x0, y0, val)
    assert pe > 0.68, pe
    assert pe > generator_only + 0.08, (pe, generator_only)
    real = loop_module.vote_counts

    def shuffled(*a, **kw):  # a broken pipeline: votes land on the wrong candidates
        c = real(*a, **kw)
        return c[torch.randperm(len(c), generator=torch.Generator().manual_seed(0))]

    monkeypatch.setattr(loop_module, "vote_counts", shuffled)
    broken = _lr(*(lambda e: (e.x, e.y))(evolve(trained, val, epsilon=20.0, config=cfg, noise_seed=0)), val)
    assert broken < 0.6 < pe, (broken, pe)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, val, trained, release):
    d = tmp_path_factory.mktemp("evolve-cli")
    ckpt = d / "g.ckpt"
    trained.save(ckpt)
    rel_path = d / "r.mmgen"
    release.save(rel_path)
    spec = _save_npz(d / "private.npz", val.x_train.numpy(), val.y_train.numpy())
    return d, ckpt, rel_path, spec


def test_cli_evolve_inspect_and_evaluate(cli_files, capsys):
    d, ckpt, _, spec = cli_files
    out = d / "x.npz"
    argv = ["evolve", str(ckpt), "--data", spec, "--epsilon", "20", "--rounds", "2", "--population", "200",
            "--samples", "300", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 300 samples; epsilon=20" in printed
    record = BudgetRecord.load(d / "private.npz.mmgen-budget.json")  # default: beside the npz file
    assert [e["stage"] for e in record.entries] == ["release", "private-evolution"]  # the release, not yet recorded, is added
    assert record.entries[-1]["output"] == out.name  # the samples file PE wrote (the release's file is not known here)
    meta = read_meta(out)
    assert meta["privacy"]["epsilon"] == pytest.approx(20.0, abs=1e-6)
    from mmgen.privacy.noise import NOISE_SOURCE

    assert meta["privacy"]["noise_source"] == NOISE_SOURCE  # the CLI's histograms: OpenDP noise
    assert meta["privacy"]["for_publication"] is False  # ... but this test's release used seeded noise
    assert cli.main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "epsilon=20" in shown and "delta=1e-05" in shown and "T=2 histograms" in shown
    assert meta["privacy"]["stages"][0]["content_hash"] in shown
    assert cli.main(["evaluate", str(out), "--data", "digits", "--metrics", "lr"]) == 0
    assert "logistic" in capsys.readouterr().out.lower()
    # the same data again within a smaller total: the release and the recorded run already spent more
    assert cli.main(argv[:4] + ["--epsilon", "19"] + argv[6:-1] + [str(d / "y.npz")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.strip().splitlines() if line.startswith("mmgen: error:")]
    assert len(errors) == 1 and "Nothing is left" in errors[0], err
    assert all(line.startswith("mmgen: ") for line in err.strip().splitlines())  # no traceback
    assert not (d / "y.npz").exists()


def _one_line_error(capsys, argv, *needles):
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("mmgen: warning:")]
    assert len(lines) == 1 and lines[0].startswith("mmgen: error:"), err
    for n in needles:
        assert n in err, err


def test_cli_evolve_bad_inputs_are_one_line_errors(cli_files, capsys, tmp_path, val):
    d, ckpt, rel_path, spec = cli_files
    base = ["--epsilon", "20", "--rounds", "1", "--population", "100", "--samples", "100",
            "--budget-record", str(tmp_path / "rec.json")]  # fmt: skip
    _one_line_error(capsys, ["evolve", str(ckpt), "--data", spec, *base], "--out")
    _one_line_error(capsys, ["evolve", str(rel_path), "--data", spec, *base, "--out", str(tmp_path / "a.npz")],
                    "checkpoint")  # fmt: skip
    bad = val.x_train[:200].numpy().copy()
    bad[5] = 2.0  # outside the declared domain [0, 1]
    bad_spec = _save_npz(tmp_path / "bad.npz", bad, val.y_train[:200].numpy())
    _one_line_error(capsys, ["evolve", str(ckpt), "--data", bad_spec, *base, "--out", str(tmp_path / "b.npz")])
    _one_line_error(capsys, ["evolve", str(ckpt), "--data", spec, *base[:-2], "--epsilon", "0.5",
                             "--budget-record", str(tmp_path / "rec2.json"), "--out", str(tmp_path / "c.npz")],
                    "Nothing is left")  # fmt: skip
    assert not any((tmp_path / n).exists() for n in ("a.npz", "b.npz", "c.npz"))


# ---------------------------------------------------------------------------------------------------------------
# 8. the output file
# ---------------------------------------------------------------------------------------------------------------
def test_output_file_round_trip_and_its_metadata(tmp_path, val, trained):
    cfg = EvolveConfig(rounds=2, population=100, samples=120, threshold=1.5, k=2)
    ev = evolve(trained, val, epsilon=6.0, config=cfg, noise_seed=0)
    path = ev.save(tmp_path / "s.npz")
    assert mmgen.files.sniff(path) == "samples"
    with np.load(path, allow_pickle=False) as arrays:
        assert set(arrays.files) == {"x", "y", "latents", "meta"}
        assert np.array_equal(arrays["x"], ev.x.numpy()) and np.array_equal(arrays["y"], ev.y.numpy())
        assert np.array_equal(arrays["latents"], ev.state.numpy())
    meta = read_meta(path)
    assert meta == json.loads(json.dumps(ev.metadata()))
    p = meta["privacy"]
    assert p["epsilon"] == ev.epsilon and p["delta"] == DELTA and p["neighbouring"] == "add-remove"
    release_stage, pe = p["stages"]
    assert release_stage["content_hash"] == trained.release_info["content_hash"]
    assert release_stage["noise_multipliers"] == trained.release_info["privacy"]["noise_multipliers"]
    assert pe["rounds"] == 2 and pe["k"] == 2 and pe["threshold"] == pytest.approx(1.5 * pe["noise_std"])
    assert pe["noise_std"] == pytest.approx(pe["noise_multiplier"] * histogram_sensitivity())
    assert p["for_publication"] is False  # seeded noise
    assert meta["evolve"] == cfg.to_dict()
    assert [set(h) for h in meta["history"]] == [HISTORY_KEYS, HISTORY_KEYS]
    # samples without metadata
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=ev.x.numpy(), y=ev.y.numpy())
    assert read_meta(plain) is None


def test_metadata_holds_no_unnoised_count(val, trained):
    x, y = val.x_train[:500], val.y_train[:500]
    canary_x, canary_y = val.x_train[600:601], val.y_train[600:601]
    cfg = EvolveConfig(rounds=2, population=200, samples=100)
    a = evolve(trained, (x, y), noise_multiplier=2.0, config=cfg, noise_seed=5)
    b = evolve(trained, (torch.cat([canary_x, x]), torch.cat([canary_y, y])), noise_multiplier=2.0, config=cfg,
               noise_seed=5)  # fmt: skip
    ma, mb = a.metadata(), b.metadata()
    assert ma["privacy"] == mb["privacy"] and ma["evolve"] == mb["evolve"]
    for h in ma["history"] + mb["history"]:
        assert set(h) == HISTORY_KEYS
        assert h["candidates"] == 200  # public: the population size
    text = json.dumps(ma)
    assert '"500"' not in text and ": 500" not in text and ": 501" not in json.dumps(mb)  # N appears nowhere


# ---------------------------------------------------------------------------------------------------------------
# 9. nearest neighbours
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 5])
def test_exact_search_agrees_with_float64_brute_force_and_refuses_inexact_codes(k):
    gen = torch.Generator().manual_seed(0)
    embed = make_embedding("pixels", low=0.0, high=1.0)
    queries, keys = embed.codes(torch.rand(700, 16, generator=gen)), embed.codes(torch.rand(300, 16, generator=gen))
    a = nearest(queries, keys, k, chunk=256)
    assert a.shape == (700, k) and a.dtype == torch.int64
    assert torch.equal(a, nearest(queries, keys, k, chunk=7))  # the chunking changes nothing
    brute = torch.cdist(queries, keys).argsort(dim=1, stable=True)[:, :k]
    assert torch.equal(a, brute)
    with pytest.raises(MMGenError):
        nearest(queries, keys, 301)
    with pytest.raises(MMGenError, match="integer codes"):
        nearest(torch.rand(5, 16), torch.rand(6, 16), 1)  # raw floats: distances not exact


@pytest.mark.parametrize("total", [2.0, 20.0])
def test_a_budget_spent_to_the_last_rounding_is_refused_not_divided_by_zero(total):
    from mmgen.privacy import noise_multiplier_for

    release = [dp_event([noise_multiplier_for(total, 1e-5) * 2**0.5])]
    sigma = noise_multiplier_within(total, 1e-5, 2, release)
    with pytest.raises(PrivacyError, match="Nothing is left"):
        noise_multiplier_within(total, 1e-5, 2, release + [rounds_event(sigma, 2)])


def test_the_cli_defaults_are_the_librarys():
    defaults = EvolveConfig().to_dict()
    assert cli.EVOLVE_DEFAULTS == {k: defaults[k] for k in cli.EVOLVE_DEFAULTS}
