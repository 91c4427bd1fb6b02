"""Release construction, streaming, validation and the file format."""

from __future__ import annotations

import pytest
import torch

import mmgen
from mmgen.errors import DataError, FormatError, PrivacyError


@pytest.fixture(scope="module")
def rel(digits):
    return mmgen.release(digits, features=mmgen.features.create("rff", n_features=128, seed=5),
                         epsilon=2.0, delta=1e-5, noise_seed=11)  # fmt: skip


def test_release_contents(rel, digits):
    stat = rel.statistics[0]
    assert stat.sums.shape == (10, 128) and stat.counts.shape == (10,)
    assert stat.feature_weight**2 + stat.count_weight**2 == pytest.approx(1.0)
    assert rel.schema == {"name": "digits", "input_shape": [1, 8, 8], "n_classes": 10, "low": 0.0, "high": 1.0, "clip": False}
    assert rel.feature_map().spec()["config"]["seed"] == 5
    # the noisy means are close to the exact ones (noise std / class size is small at ε = 2)
    fmap = rel.feature_map()
    exact = torch.stack([fmap(digits.x_train[digits.y_train == c]).double().mean(0) for c in range(10)])
    err = (rel.mean_embeddings() - exact).norm(dim=1) / exact.norm(dim=1)
    assert err.max() < 0.5
    assert rel.class_proportions().sum() == pytest.approx(1.0)


def test_round_trip(rel, tmp_path):
    path = rel.save(tmp_path / "r.mmgen")
    back = mmgen.Release.load(path)
    assert back.metadata == {**rel.metadata, "content_hash": rel.content_hash()}
    for a, b in zip(rel.statistics, back.statistics):
        torch.testing.assert_close(a.sums.float(), b.sums)
        torch.testing.assert_close(a.counts.float(), b.counts)
        assert a.noise_multiplier == b.noise_multiplier and a.sensitivity == b.sensitivity
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_truncated_and_altered_files_fail(rel, tmp_path):
    path = rel.save(tmp_path / "r.mmgen")
    data = path.read_bytes()
    (tmp_path / "trunc.mmgen").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="truncated|damaged"):
        mmgen.Release.load(tmp_path / "trunc.mmgen")
    altered = bytearray(data)
    altered[-5] ^= 0x01  # one bit of one noisy value
    (tmp_path / "alt.mmgen").write_bytes(bytes(altered))
    with pytest.raises(FormatError, match="altered"):
        mmgen.Release.load(tmp_path / "alt.mmgen")
    (tmp_path / "foreign.mmgen").write_bytes(b"PK\x03\x04 not a release at all" * 10)
    with pytest.raises(FormatError, match="not an mmgen release|truncated"):
        mmgen.Release.load(tmp_path / "foreign.mmgen")
    with pytest.raises(FormatError, match="does not exist"):
        mmgen.Release.load(tmp_path / "missing.mmgen")


def test_streamed_batches_equal_tensor_path(digits):
    fmap = mmgen.features.create("rff", n_features=64)
    whole = mmgen.release(digits.x_train, digits.y_train, fmap, epsilon=1, delta=1e-5, n_classes=10, noise_seed=1)
    batches = ((digits.x_train[i : i + 100], digits.y_train[i : i + 100]) for i in range(0, len(digits.y_train), 100))
    streamed = mmgen.release(batches, None, fmap, epsilon=1, delta=1e-5, n_classes=10, input_shape=(1, 8, 8), noise_seed=1)
    torch.testing.assert_close(whole.statistics[0].sums, streamed.statistics[0].sums, atol=1e-5, rtol=0)


def test_validation_errors(digits):
    f = mmgen.features.create("rff", n_features=16)
    x, y = digits.x_train[:50].clone(), digits.y_train[:50].clone()
    kw = dict(epsilon=1.0, delta=1e-5, n_classes=10)
    bad = x.clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN or inf"):
        mmgen.release(bad, y, f, **kw)
    with pytest.raises(DataError, match="outside the declared domain"):
        mmgen.release(x * 2, y, f, **kw)
    clipped = mmgen.release(x * 2, y, f, clip=True, noise_seed=0, **kw)
    assert clipped.schema["clip"] is True
    with pytest.raises(DataError, match=r"labels must be in \[0, 10\)"):
        mmgen.release(x, y + 10, f, **kw)
    with pytest.raises(DataError, match="Expected x of shape"):
        mmgen.release(x, y, "rff", input_shape=(1, 4, 4), **kw)
    with pytest.raises(DataError, match="set up for shape"):
        mmgen.release(x, y, f, input_shape=(1, 4, 4), **kw)
    with pytest.raises(DataError, match="floating-point"):
        mmgen.release((x * 16).long(), y, "rff", **kw)
    with pytest.raises(DataError, match="must be declared"):
        mmgen.release(x, y, f, epsilon=1.0, delta=1e-5)
    with pytest.raises(DataError, match="empty"):
        mmgen.release(x[:0], y[:0], f, **kw)
    with pytest.raises(PrivacyError, match="epsilon"):
        mmgen.release(x, y, f, epsilon=0, delta=1e-5, n_classes=10)
    with pytest.raises(PrivacyError, match="neighbouring"):
        mmgen.release(x, y, f, neighbouring="swap", **kw)


def test_finalize_refuses_a_budget_split_that_does_not_cover_every_statistic(digits):
    """A split shorter than the statistics would silently drop (or mis-calibrate) a statistic."""
    from mmgen.release import accumulate, finalize

    maps = [mmgen.features.create("rff", input_shape=(1, 8, 8), n_features=16, seed=s) for s in (0, 1)]
    sums, counts = accumulate([(digits.x_train[:20], digits.y_train[:20])], maps, 10, (1, 8, 8), (0.0, 1.0))
    with pytest.raises(PrivacyError, match="one budget weight per statistic"):
        finalize(sums, counts, maps, epsilon=1.0, delta=1e-5, neighbouring="add-remove", budget_split=[1.0],
                 count_weight=0.3, noise_seed=0, schema={})  # fmt: skip
