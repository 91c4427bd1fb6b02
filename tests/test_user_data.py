"""A user's own npz file through the real loader and CLI: exactly the records given, classes declared.

Two files that differ by one record (appended, or a canary at the front so that
every batch shifts) give releases — with the noise held fixed — that differ by
at most the sensitivity. (Before, a file without test records was split by a
permutation of N, and one appended record moved the noiseless sums by ~12.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mmgen
from mmgen import cli
from mmgen.data import holdout_mask, load_npz
from mmgen.errors import DataError
from mmgen.release import Release

EPS, DELTA = 1.0, 1e-5


def _save(path, x, y, **extra):
    np.savez(path, x=x, y=y, **extra)
    return f"npz:{path}"


@pytest.fixture
def fixed_noise(monkeypatch):
    """Every Gaussian mechanism of the release draws the same seeded noise (tests only)."""
    import sys

    release_module = sys.modules["mmgen.release"]  # the module (mmgen.release is also the function)
    real = release_module.gaussian_mechanism
    monkeypatch.setattr(release_module, "gaussian_mechanism", lambda v, **kw: real(v, **{**kw, "noise_seed": 0}))


def _vectors(rel: Release) -> list[torch.Tensor]:
    """The released vector ``[a·S, b·n]`` of each statistic, flattened (noisy sums as stored)."""
    return [torch.cat([s.sums.reshape(-1)] + ([s.counts.reshape(-1)] if s.counts is not None else [])) for s in rel.statistics]


def _release(tmp_path, spec, name, features="rff", extra=()):
    out = tmp_path / f"{name}.mmgen"
    argv = ["release", "--data", spec, "--epsilon", str(EPS), "--features", features, "--out", str(out), *extra]
    argv += ["--n-features", "1000"] if features == "rff" else []
    assert cli.main(argv) == 0
    return Release.load(out)


@pytest.mark.parametrize("where", ["appended", "front"])
@pytest.mark.parametrize("features", ["rff", "rff-gaussian", "hermite"])
def test_neighbouring_files_through_the_cli_differ_by_at_most_the_sensitivity(tmp_path, digits, fixed_noise, where, features):
    x = (digits.x_train[:1000].numpy() * 255).astype(np.uint8)
    y = digits.y_train[:1000].numpy()
    canary_x, canary_y = np.full((1, *x.shape[1:]), 255, np.uint8), np.array([3])
    if where == "appended":
        x2, y2 = np.concatenate([x, canary_x]), np.concatenate([y, canary_y])
    else:
        x2, y2 = np.concatenate([canary_x, x]), np.concatenate([canary_y, y])
    extra = {"hermite": ("--feature-option", "hermite.order=10"),
             "rff-gaussian": ("--feature-option", "rff.frequencies=gaussian")}.get(features, ())
    frequencies = {"rff": "lattice", "rff-gaussian": "gaussian"}.get(features)
    features = "rff" if features == "rff-gaussian" else features  # gaussian: the float64 product, not the default
    a = _release(tmp_path, _save(tmp_path / "a.npz", x, y, n_classes=10), "a", features, extra)
    b = _release(tmp_path, _save(tmp_path / "b.npz", x2, y2, n_classes=10), "b", features, extra)
    for va, vb, stat in zip(_vectors(a), _vectors(b), a.statistics):  # each statistic is its own Gaussian mechanism
        diff = float((vb - va).norm())
        # output rounding of the noisy values is at most half a grid step per coordinate: far below 1e-3 in L2
        assert 0.5 < diff <= stat.sensitivity + 1e-3, (stat.name, diff)
    assert a.metadata["data"]["n_classes"] == 10
    if frequencies:
        assert a.statistics[0].feature_spec["config"]["frequencies"] == frequencies


def test_every_record_is_released_without_a_test_split(tmp_path, digits):
    x, y = digits.x_train[:200].numpy(), digits.y_train[:200].numpy()
    _save(tmp_path / "f.npz", x, y, n_classes=10)
    ds = load_npz(tmp_path / "f.npz")
    assert len(ds.y_train) == 200 and len(ds.y_test) == 0
    assert torch.equal(ds.x_train, torch.from_numpy(x))


def test_file_without_n_classes_is_refused_in_one_line_naming_the_flag(tmp_path, digits, capsys):
    spec = _save(tmp_path / "f.npz", digits.x_train[:50].numpy(), digits.y_train[:50].numpy())
    with pytest.raises(DataError, match="--n-classes K"):
        mmgen.data.load(spec)
    assert cli.main(["release", "--data", spec, "--epsilon", "1", "--out", str(tmp_path / "r.mmgen")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--n-classes K" in err[0]
    assert not (tmp_path / "r.mmgen").exists()
    # with the flag it works, and labels outside 0..K-1 are refused
    assert cli.main(["release", "--data", spec, "--n-classes", "10", "--epsilon", "1", "--n-features", "100",
                     "--out", str(tmp_path / "r.mmgen")]) == 0  # fmt: skip
    assert Release.load(tmp_path / "r.mmgen").n_classes == 10
    assert cli.main(["release", "--data", spec, "--n-classes", "5", "--epsilon", "1", "--out", str(tmp_path / "s.mmgen")]) == 2
    assert "0..4" in capsys.readouterr().err


def test_declared_n_classes_must_agree(tmp_path, digits):
    spec = _save(tmp_path / "f.npz", digits.x_train[:50].numpy(), digits.y_train[:50].numpy(), n_classes=10)
    with pytest.raises(DataError, match="must agree"):
        mmgen.data.load(spec, n_classes=12)
    assert mmgen.data.load(spec, n_classes=10).n_classes == 10


def test_holdout_depends_on_each_record_alone(digits):
    x, y = digits.x_train.numpy(), digits.y_train.numpy()
    m = holdout_mask(x, y, 0.2)
    assert 0.15 < m.mean() < 0.25
    # one record added at the front: every other record keeps its side
    m2 = holdout_mask(np.concatenate([x[-1:], x]), np.concatenate([y[-1:], y]), 0.2)
    assert np.array_equal(m2[1:], m) and m2[0] == m[-1]
    # order does not matter
    perm = np.random.default_rng(1).permutation(len(x))
    assert np.array_equal(holdout_mask(x[perm], y[perm], 0.2), m[perm])


def _sides(ds):
    """Each side of a split as a multiset of records (bytes of x and y), so records are matched by content."""
    from collections import Counter

    def side(x, y):
        return Counter(xi.numpy().tobytes() + yi.numpy().tobytes() for xi, yi in zip(x, y))

    return side(ds.x_train, ds.y_train), side(ds.x_test, ds.y_test)


@pytest.mark.parametrize("seed", [0, 5])
def test_validation_split_moves_no_other_record_when_one_is_added_at_the_front(tmp_path, digits, seed):
    """A record at the front of an npz file (every index shifts), through the loader: the validation split's
    sides differ by that record alone. (A permutation of N moved hundreds of records between the sides.)"""
    x, y = digits.x_train.numpy(), digits.y_train.numpy()
    canary = np.full((1, 1, 8, 8), 0.5, np.float32)
    a = load_npz(_save(tmp_path / "a.npz", x, y, n_classes=10)[4:]).validation_split(0.25, seed=seed)
    b = load_npz(_save(tmp_path / "b.npz", np.concatenate([canary, x]), np.concatenate([[3], y]), n_classes=10)[4:])
    b = b.validation_split(0.25, seed=seed)
    (a_kept, a_held), (b_kept, b_held) = _sides(a), _sides(b)
    assert 0.2 < len(a.y_test) / len(y) < 0.3
    added = (b_kept - a_kept) + (b_held - a_held)
    moved = sum(((a_kept - b_kept) + (a_held - b_held)).values())  # records of a that left their side
    assert moved == 0, f"{moved} records moved between the sides"
    assert sum(added.values()) == 1 and next(iter(added)) == canary.tobytes() + np.int64(3).tobytes()
    other = digits.validation_split(0.25, seed=seed + 1)  # the seed is part of the salt: another split
    assert _sides(other) != _sides(digits.validation_split(0.25, seed=seed))


def test_evaluate_needs_test_records_and_takes_a_second_file(tmp_path, digits, capsys):
    x, y = digits.x_train.numpy(), digits.y_train.numpy()
    spec = _save(tmp_path / "train.npz", x, y, n_classes=10)
    test_spec = _save(tmp_path / "test.npz", digits.x_test.numpy(), digits.y_test.numpy(), n_classes=10)
    samples = tmp_path / "s.npz"
    np.savez(samples, x=x[:300], y=y[:300])  # stand-in synthetic records: real ones, only to exercise the path
    assert cli.main(["evaluate", str(samples), "--data", spec, "--metrics", "lr"]) == 2
    assert "--test-data" in capsys.readouterr().err
    assert cli.main(["evaluate", str(samples), "--test-data", test_spec, "--metrics", "lr"]) == 0
    out = capsys.readouterr().out
    assert f"{len(digits.y_test)} real test records" in out
    assert cli.main(["evaluate", str(samples), "--data", spec, "--holdout", "0.2", "--metrics", "lr"]) == 0


def test_holdout_release_and_evaluate_use_the_same_records(tmp_path, digits):
    x, y = digits.x_train.numpy(), digits.y_train.numpy()
    spec = _save(tmp_path / "f.npz", x, y, n_classes=10)
    ds = mmgen.data.load(spec, holdout=0.25)
    m = holdout_mask(x, y, 0.25)
    assert len(ds.y_test) == int(m.sum()) and len(ds.y_train) == len(y) - int(m.sum())
    assert torch.equal(ds.x_test, torch.from_numpy(x[m]))


def test_console_shows_batches_not_the_number_of_records(tmp_path, digits, capsys):
    n = 1337  # a count that would stand out
    x, y = digits.x_train[:n], digits.y_train[:n]
    mmgen.release(x, y, mmgen.features.create("rff", n_features=100), epsilon=EPS, delta=DELTA, n_classes=10,
                  batch_size=500, progress=True, noise_seed=0)  # fmt: skip
    err = capsys.readouterr().err
    assert "3 batches" in err and "1337" not in err and "rec" not in err
    spec = _save(tmp_path / "f.npz", x.numpy(), y.numpy(), n_classes=10)
    assert cli.main(["release", "--data", spec, "--epsilon", "1", "--n-features", "100",
                     "--out", str(tmp_path / "r.mmgen")]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "1337" not in captured.out + captured.err and " s)" not in captured.out


def test_domain_is_declared_from_the_cli_and_the_advice_never_says_min_max(tmp_path, digits, capsys):
    x = digits.x_train[:100].numpy() * 16.0  # pixel values 0..16, as scikit-learn stores them
    spec = _save(tmp_path / "f.npz", x, digits.y_train[:100].numpy(), n_classes=10)
    out = tmp_path / "r.mmgen"
    assert cli.main(["release", "--data", spec, "--epsilon", "1", "--n-features", "100", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--low/--high" in err and "never with the data's own min/max" in err and not out.exists()
    assert cli.main(["release", "--data", spec, "--low", "0", "--high", "16", "--epsilon", "1", "--n-features", "100",
                     "--out", str(out)]) == 0  # fmt: skip
    meta = Release.load(out).metadata["data"]
    assert (meta["low"], meta["high"]) == (0.0, 16.0)
    # bounds stored in the file work the same; uint8 values are then used as stored
    spec2 = _save(tmp_path / "g.npz", x.astype(np.uint8), digits.y_train[:100].numpy(), n_classes=10, low=0, high=16)
    ds = mmgen.data.load(spec2)
    assert (ds.low, ds.high) == (0.0, 16.0) and float(ds.x_train.max()) == 16.0
    with pytest.raises(DataError, match="both bounds"):
        mmgen.data.load(spec, low=0.0)


def test_neighbouring_files_with_a_holdout_differ_by_at_most_the_sensitivity(tmp_path, digits, fixed_noise):
    """--holdout through the CLI: the canary at the front is either released (the sums move by its row)
    or held out (they do not move); no other record changes side."""
    x = (digits.x_train[:800].numpy() * 255).astype(np.uint8)
    y = digits.y_train[:800].numpy()
    canaries = [np.full((1, *x.shape[1:]), v, np.uint8) for v in (255, 0, 128, 64)]
    sides = {bool(holdout_mask(c, np.array([3]), 0.2)[0]) for c in canaries}
    assert sides == {True, False}  # both sides are exercised below
    a = _release(tmp_path, _save(tmp_path / "a.npz", x, y, n_classes=10), "a", extra=("--holdout", "0.2"))
    for i, c in enumerate(canaries):
        spec = _save(tmp_path / f"b{i}.npz", np.concatenate([c, x]), np.concatenate([[3], y]), n_classes=10)
        b = _release(tmp_path, spec, f"b{i}", extra=("--holdout", "0.2"))
        (va,), (vb,), stat = _vectors(a), _vectors(b), a.statistics[0]
        diff = float((vb - va).norm())
        held = bool(holdout_mask(c, np.array([3]), 0.2)[0])
        assert diff <= 1e-3 if held else 0.5 < diff <= stat.sensitivity + 1e-3, (i, held, diff)


def _write_idx(path, array):
    import struct

    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_neighbouring_idx_folders_through_the_cli_differ_by_at_most_the_sensitivity(tmp_path, digits, fixed_noise):
    x = (digits.x_train[:600, 0].numpy() * 255).astype(np.uint8)  # (N, 8, 8) as IDX images
    y = digits.y_train[:600].numpy()
    releases = []
    for name, (xs, ys) in {"a": (x, y), "b": (np.concatenate([np.full((1, 8, 8), 255), x]), np.concatenate([[3], y]))}.items():
        folder = tmp_path / name
        folder.mkdir()
        _write_idx(folder / "train-images-idx3-ubyte", xs)
        _write_idx(folder / "train-labels-idx1-ubyte", ys)
        _write_idx(folder / "t10k-images-idx3-ubyte", x[:5])
        _write_idx(folder / "t10k-labels-idx1-ubyte", y[:5])
        releases.append(_release(tmp_path, f"idx:{folder}", name))
    (va,), (vb,) = _vectors(releases[0]), _vectors(releases[1])
    assert 0.5 < float((vb - va).norm()) <= releases[0].statistics[0].sensitivity + 1e-3
    assert str(tmp_path) not in str(releases[0].metadata)  # the folder's path is not published
