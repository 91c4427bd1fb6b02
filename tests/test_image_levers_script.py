"""benchmarks/image_levers.py: the benchmark-only patch map keeps ‖φ‖ ≤ 1, the noise floor is the
release's expected noise energy, refinement is post-processing that lowers the loss, and the table
renders every lever's row.

No time bound is asserted; the smoke run uses a few hundred records and no real fit.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

import mmgen

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "image_levers.py"


@pytest.fixture(scope="module")
def lv():
    spec = importlib.util.spec_from_file_location("image_levers_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass config resolves its module by name
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def patch_map(lv):
    return lv.PatchRFF(n_features=64, patch=7, stride=3, grid=2).setup((1, 28, 28), (0.0, 1.0))


def test_patch_map_is_not_registered_by_importing_the_script(lv):
    assert lv.PatchRFF.name not in mmgen.features.list_feature_maps()


def test_patch_map_norm_is_at_most_one_on_adversarial_images(patch_map):
    g = torch.Generator().manual_seed(0)
    images = torch.cat([
        torch.zeros(1, 1, 28, 28), torch.ones(1, 1, 28, 28),  # constant images: every patch equal, norm exactly 1
        torch.rand(8, 1, 28, 28, generator=g),
        (torch.rand(8, 1, 28, 28, generator=g) > 0.5).float(),  # corners of the domain
        torch.linspace(0, 1, 784).reshape(1, 1, 28, 28),
    ])  # fmt: skip
    norms = patch_map.release_features(images).norm(dim=1)
    assert patch_map.output_dim == 4 * 64
    assert torch.all(norms <= 1 + 1e-12)
    assert torch.allclose(norms[:2], torch.ones(2, dtype=norms.dtype))


def test_patch_map_regions_see_their_own_quarter(patch_map):
    x = torch.zeros(2, 1, 28, 28)
    x[1, 0, :6, :6] = 1.0  # only the top-left quarter's patches change
    phi = patch_map(x).reshape(2, 4, -1)
    changed = (phi[0] - phi[1]).abs().amax(dim=1)
    assert changed[0] > 1e-3 and torch.all(changed[1:] == 0)


def _release(eps: float, n: int = 400):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 4
    fmap = mmgen.features.create("rff", n_features=128)
    return mmgen.release(x, y, fmap, epsilon=eps, delta=1e-5, n_classes=4, bounds=(0.0, 1.0), noise_seed=3)


def test_noise_floor_matches_the_noise_actually_drawn(lv):
    rel = _release(1.0)
    stat = rel.statistics[0]
    counts = rel.class_counts().clamp(min=1.0).double()
    expected = stat.sums.shape[1] * float(((stat.noise_std / (stat.feature_weight * counts)) ** 2).sum())
    assert lv.noise_floor(rel) == pytest.approx(expected)
    assert lv.noise_floor(_release(10.0)) < lv.noise_floor(rel) / 50  # std ~10× smaller: energy ~100×


def test_refine_lowers_the_loss_stays_in_the_domain_and_stops_at_the_floor(lv):
    rel = _release(1.0)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(40, 1, 8, 8, generator=g), torch.arange(40) % 4
    start = lv.refine(x, y, rel, steps=0, floor=None, lr=0.05, low=0.0, high=1.0)
    moved, steps, loss = lv.refine(x, y, rel, steps=20, floor=None, lr=0.05, low=0.0, high=1.0)
    assert steps == 20 and loss < start[2] and start[1] == 0
    assert moved.min() >= 0 and moved.max() <= 1 and torch.equal(x, start[0])  # the input is not changed in place
    _, stopped, loss_at = lv.refine(x, y, rel, steps=20, floor=start[2] * 0.99, lr=0.05, low=0.0, high=1.0)
    assert stopped < 20 and loss_at <= start[2] * 0.99


def test_table_renders_every_row_and_its_notes(lv):
    out = {"n_fit": 100, "n_validation": 20, "fit": {"epochs": 6, "steps_per_epoch": 100, "batch_size": 200},
           "n_syn": 50, "teacher": {"validation_accuracy": 0.8}, "machine": "m", "started": "t",
           "results": [{"lever": "iid", "epsilon": "1", "seed": 0, "lr": 0.7, "cnn": 0.6, "n": 50, "seconds": 3.0, "load": 1.0},
                       {"lever": "refine to the noise floor", "epsilon": "1", "seed": 0, "lr": 0.71, "cnn": None, "n": 50,
                        "seconds": 1.0, "load": None, "steps": 4, "loss": 0.01, "noise_floor": 0.02},
                       {"lever": "teacher filter (non-private)", "epsilon": "10", "seed": 0, "lr": None, "cnn": None,
                        "n": 3, "seconds": 0.0, "load": 0.5, "error": "one class"}]}  # fmt: skip
    text = lv.table(out)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 3
    assert "| 0.700 | 0.600 |" in rows[0] and "4 steps" in rows[1] and "| – |" in rows[1]
    assert "not scored: one class" in rows[2]
    assert not math.isnan(out["teacher"]["validation_accuracy"])
