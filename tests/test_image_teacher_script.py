"""benchmarks/image_teacher.py: the DP-SGD labeller's step is the mechanism its accounting assumes.

Checked on tiny tensors: every record's contribution to a step's gradient is clipped to C (an
adversarial record with a huge loss moves the summed gradient by at most C), the noise has std σC per
coordinate, the Poisson masks and noise follow the test seed (and differ across seeds), and the budget
split composes to at most the total. No time bound is asserted.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from mmgen.privacy import dp_event, noise_multiplier_for
from mmgen.privacy.ledger import composed_epsilon, dp_sgd_event, noise_multiplier_within
from mmgen.privacy.noise import PrivateStreams

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "image_teacher.py"


@pytest.fixture(scope="module")
def tt():
    spec = importlib.util.spec_from_file_location("image_teacher_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10


def _params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _one_step(tt, x, y, *, sigma, clip=0.1, seed=5, test_seed=1):
    # q = 1: every record is in the batch; lr 1 and no momentum history: the update is the gradient itself
    return tt.train_dp_sgd(x, y, 10, sigma=sigma, q=1.0, steps=1, clip=clip, lr=1.0, divisor=1.0, streams=PrivateStreams(test_seed=test_seed),
                           seed=seed)  # fmt: skip


def test_one_record_moves_the_noiseless_update_by_at_most_the_clip(tt):
    x, y = _data()
    base = _one_step(tt, x, y, sigma=0.0, clip=0.1)
    canary = torch.ones(1, 1, 28, 28) * 1.0
    plus = _one_step(tt, torch.cat([canary, x]), torch.cat([torch.tensor([3]), y]), sigma=0.0, clip=0.1)
    torch.manual_seed(5)
    init = tt.TanhCNN(1, 10)
    init(x[:2])
    # divisor 1 and lr 1: the update is the noisy gradient sum itself
    g_base = _params(init) - _params(base)
    g_plus = _params(init) - _params(plus)
    assert (g_plus - g_base).norm() <= 0.1 * (1 + 1e-4)
    assert (g_plus - g_base).norm() > 0.01  # the canary did contribute (the test can fail both ways)


def test_noise_std_is_sigma_times_clip_and_follows_the_test_seed(tt):
    x, y = _data(n=4)
    torch.manual_seed(5)
    init = tt.TanhCNN(1, 10)
    init(x[:2])
    quiet = _params(_one_step(tt, x, y, sigma=0.0))
    noisy = _params(_one_step(tt, x, y, sigma=50.0))
    again = _params(_one_step(tt, x, y, sigma=50.0))
    other = _params(_one_step(tt, x, y, sigma=50.0, test_seed=2))
    noise = quiet - noisy  # the gradient's noise: σC per coordinate
    assert noise.std().item() == pytest.approx(50.0 * 0.1, rel=0.05)
    assert torch.equal(noisy, again) and not torch.equal(noisy, other)
    assert not torch.equal(_params(init), quiet)


def test_the_split_composes_within_the_total():
    release = dp_event([noise_multiplier_for(0.2, 1e-5)])
    q, steps = 1024 / 49_876, 487
    for total in (1.0, 10.0):
        sigma = noise_multiplier_within(total, 1e-5, steps, [release], "add-remove", sampling_rate=q)
        eps = composed_epsilon([release, dp_sgd_event(sigma, q, steps)], 1e-5, "add-remove")
        assert total * 0.99 < eps <= total
        assert composed_epsilon([release, dp_sgd_event(sigma * 0.95, q, steps)], 1e-5, "add-remove") > total


def test_table_shows_the_composed_epsilon(tt):
    out = {"n_fit": 10, "n_validation": 5, "delta": 1e-5, "release_epsilon": 0.2,
           "dp_sgd": {"network": "TanhCNN", "sampling_rate": 0.02, "divisor": 1000.0, "steps": 487, "clip": 0.1, "lr": 4.0},
           "fit": {"epochs": 6, "steps_per_epoch": 100, "batch_size": 200}, "n_syn": 100, "machine": "m", "started": "t",
           "results": [{"labels": "generator's own (release only)", "total_epsilon": "0.2", "composed_epsilon": 0.2,
                        "lr": 0.7, "cnn": 0.6},
                       {"labels": "DP-SGD labeller", "total_epsilon": "1", "composed_epsilon": 0.9999, "sigma": 1.5,
                        "teacher_accuracy": 0.8, "agreement": 0.7, "teacher_s": 100.0, "lr": 0.72, "cnn": None}]}  # fmt: skip
    text = tt.table(out)
    assert "| 1 (0.9999) | 1.500 | 0.800 | 70.0% | 0.720 | – | 100 |" in text
    assert "| generator's own (release only) | 0.2 (0.2000) | – |" in text


def test_guided_pixels_stay_in_the_domain_and_lower_the_labellers_loss(tt):
    torch.manual_seed(0)
    teacher = tt.TanhCNN(1, 10)
    x, y = _data(32)
    teacher(x[:2])
    teacher.eval()
    with torch.no_grad():
        before = float(torch.nn.functional.cross_entropy(teacher(x), y))
    moved, after = tt.guide(x, y, teacher, steps=5, lr=0.05, low=0.0, high=1.0)
    assert after < before
    assert moved.shape == x.shape and float(moved.min()) >= 0.0 and float(moved.max()) <= 1.0
    assert not torch.equal(moved, x)


def test_guided_generator_is_a_copy_and_the_fitted_one_is_unchanged(tt, digits):
    import mmgen

    ds = digits
    rel = mmgen.release(ds, features=mmgen.features.create("rff", n_features=64, seed=5), epsilon=1.0, delta=1e-5,
                        noise_seed=3)  # fmt: skip
    trained = mmgen.fit(mmgen.generators.for_release(rel, "conv"), rel, epochs=1, steps_per_epoch=2, batch_size=16,
                        seed=0, progress=False)  # fmt: skip
    torch.manual_seed(1)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, ds.n_classes))  # digits are 8×8
    before = _params(trained.generator).clone()
    guided = tt.guide_generator(trained, rel, teacher.eval(), weight=1.0, steps=3, batch=16, lr=1e-2, seed=0)
    assert torch.equal(_params(trained.generator), before)
    assert not torch.equal(_params(guided), before)
