"""Fitting: checkpoints, exact resume, sampling in the domain."""

from __future__ import annotations

import pytest
import torch

import mmgen
from mmgen.errors import FormatError, MMGenError


@pytest.fixture(scope="module")
def small_release(digits):
    return mmgen.release(digits, features=mmgen.features.create("rff", n_features=200), epsilon=10, delta=1e-5, noise_seed=0)


CFG = dict(steps_per_epoch=4, batch_size=64)


def test_resume_equals_uninterrupted(small_release, tmp_path):
    full = mmgen.fit("mlp", small_release, mmgen.TrainConfig(epochs=3, **CFG), progress=False)
    mmgen.fit("mlp", small_release, mmgen.TrainConfig(epochs=1, **CFG), progress=False, checkpoint=tmp_path / "c")
    resumed = mmgen.fit("mlp", small_release, mmgen.TrainConfig(epochs=3, **CFG), progress=False, resume=tmp_path / "c")
    assert resumed.losses == full.losses
    for k, v in full.generator.state_dict().items():
        torch.testing.assert_close(resumed.generator.state_dict()[k], v, rtol=0, atol=0)


def test_resume_refuses_other_release(small_release, digits, tmp_path):
    mmgen.fit("mlp", small_release, mmgen.TrainConfig(epochs=1, **CFG), progress=False, checkpoint=tmp_path / "c")
    other = mmgen.release(digits, features=mmgen.features.create("rff", n_features=200), epsilon=10, delta=1e-5, noise_seed=1)
    with pytest.raises(MMGenError, match="another release"):
        mmgen.fit("mlp", other, mmgen.TrainConfig(epochs=2, **CFG), progress=False, resume=tmp_path / "c")


def test_checkpoint_round_trip_and_sampling(small_release, tmp_path):
    trained = mmgen.fit("conv", small_release, mmgen.TrainConfig(epochs=1, **CFG), progress=False)
    path = trained.save(tmp_path / "g.ckpt")
    back = mmgen.Trained.load(path)
    x1, y1 = trained.sample(50, seed=3)
    x2, y2 = back.sample(50, seed=3)
    torch.testing.assert_close(x1, x2)
    assert torch.equal(y1, y2)
    assert x1.shape == (50, 1, 8, 8) and float(x1.min()) >= 0.0 and float(x1.max()) <= 1.0
    assert back.release_info["content_hash"] == small_release.content_hash()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "bad.ckpt").write_bytes(bytes(data))
    with pytest.raises(FormatError):
        mmgen.Trained.load(tmp_path / "bad.ckpt")


def test_fit_takes_only_a_release(digits):
    with pytest.raises(MMGenError, match="takes a Release"):
        mmgen.fit("conv", digits, epochs=1)


def test_loss_decreases(small_release):
    trained = mmgen.fit("mlp", small_release, mmgen.TrainConfig(epochs=4, steps_per_epoch=25, batch_size=128), progress=False)
    assert trained.losses[-1] < 0.5 * trained.losses[0]
