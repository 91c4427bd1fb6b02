"""Bad input gets one clear error and nothing is written: through the API and through the CLI."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import mmgen
from mmgen import cli
from mmgen.errors import DataError, MMGenError, PrivacyError

EPS, DELTA = 1.0, 1e-5


def _data(n=60, n_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.arange(n) % n_classes


def _rff():
    return mmgen.features.create("rff", n_features=16, seed=0)


def _release(x, y, **kw):
    kw.setdefault("n_classes", 3)
    return mmgen.release(x, y, _rff(), epsilon=kw.pop("epsilon", EPS), delta=kw.pop("delta", DELTA), **kw)


# -- the API ---------------------------------------------------------------------
def _with(x, idx, value):
    x = x.clone()
    x.view(len(x), -1)[idx] = value
    return x


BAD_X = {
    "nan": (lambda x: _with(x, (5, 3), math.nan), "NaN or inf (first at record 5)"),
    "inf": (lambda x: _with(x, (7, 0), math.inf), "NaN or inf (first at record 7)"),
    "-inf": (lambda x: _with(x, (0, 0), -math.inf), "NaN or inf (first at record 0)"),
    "above domain": (lambda x: _with(x, (9, 2), 1.5), "outside the declared domain [0.0, 1.0] (first at record 9)"),
    "below domain": (lambda x: _with(x, (11, 2), -1e-3), "outside the declared domain [0.0, 1.0] (first at record 11)"),
    "integer dtype": (lambda x: (x * 255).to(torch.uint8), "floating-point tensor"),
    "bool dtype": (lambda x: x > 0.5, "floating-point tensor"),
    "1-d x": (lambda x: x.reshape(-1)[: len(x)], "at least 2 dimensions"),
}


@pytest.mark.parametrize("case", sorted(BAD_X))
def test_bad_x_is_refused_with_a_clear_error(case):
    x, y = _data()
    make, message = BAD_X[case]
    with pytest.raises(DataError, match=None) as info:
        _release(make(x), y)
    assert message in str(info.value)


BAD_Y = {
    "label too large": (lambda y: torch.where(y == 2, 3, y), "labels must be in [0, 3)"),
    "negative label": (lambda y: torch.where(y == 0, -1, y), "labels must be in [0, 3)"),
    "float labels": (lambda y: y.float(), "1-d integer tensor"),
    "2-d labels": (lambda y: y[:, None], "y must be (N,)"),
    "too few labels": (lambda y: y[:-1], "one label per record"),
    "too many labels": (lambda y: torch.cat([y, y[:1]]), "one label per record"),
}


@pytest.mark.parametrize("case", sorted(BAD_Y))
def test_bad_labels_are_refused(case):
    x, y = _data()
    make, message = BAD_Y[case]
    with pytest.raises(DataError) as info:
        _release(x, make(y))
    assert message in str(info.value)


def test_more_labels_than_records_is_caught_even_when_batches_would_hide_it():
    # x fills exactly one batch: slicing y per batch would never look at the extra labels.
    x, y = _data(n=8)
    with pytest.raises(DataError, match="one label per record"):
        _release(x, torch.cat([y, y]), batch_size=8)


def test_wrong_record_shape_in_a_batch_stream():
    x, y = _data()
    batches = [(x[:30], y[:30]), (x[30:, :, :2], y[30:])]
    with pytest.raises(DataError, match=r"Expected x of shape \(N, 1, 4, 4\)"):
        mmgen.release(batches, None, _rff(), epsilon=EPS, delta=DELTA, n_classes=3, input_shape=(1, 4, 4))


@pytest.mark.parametrize("bad", [0, -1, "x"])
def test_bad_batch_size(bad):
    x, y = _data()
    with pytest.raises(DataError, match="batch_size"):
        _release(x, y, batch_size=bad)


def test_empty_data_is_refused():
    x, y = _data()
    with pytest.raises(DataError, match="empty"):
        _release(x[:0], y[:0])


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.nan, math.inf, "1"])
def test_bad_epsilon(epsilon):
    x, y = _data()
    with pytest.raises(PrivacyError, match="`epsilon` must be"):
        _release(x, y, epsilon=epsilon)


@pytest.mark.parametrize("delta", [0.0, 1.0, 1.5, -1e-5, math.nan])
def test_bad_delta(delta):
    x, y = _data()
    with pytest.raises(PrivacyError, match=r"`delta` must be in \(0, 1\)"):
        _release(x, y, delta=delta)


def test_unknown_feature_name_lists_the_known_ones():
    x, y = _data()
    with pytest.raises(MMGenError) as info:
        mmgen.release(x, y, "nope", epsilon=EPS, delta=DELTA, n_classes=3)
    assert "Unknown" in str(info.value) and "rff" in str(info.value)


@pytest.mark.parametrize("spec", ["idx:/no/such/folder", "fashion-mnist:/no/such/folder", "npz:/no/such/file.npz", "mnist"])
def test_missing_data_is_a_data_error(spec):
    with pytest.raises(DataError) as info:
        mmgen.data.load(spec)
    assert "/no/such" in str(info.value) or "Unknown data spec" in str(info.value)


def test_undeclared_bounds_that_exclude_the_data_are_refused_but_clip_clips_and_is_recorded():
    x, y = _data()
    x = x * 2 - 0.5  # now in [-0.5, 1.5]
    with pytest.raises(DataError, match="outside the declared domain"):
        _release(x, y, noise_seed=1)
    clipped = _release(x, y, clip=True, noise_seed=1)
    assert clipped.metadata["data"]["clip"] is True
    reference = _release(x.clamp(0, 1), y, noise_seed=1)
    assert reference.metadata["data"]["clip"] is False
    torch.testing.assert_close(clipped.statistics[0].sums, reference.statistics[0].sums, rtol=0, atol=0)


def test_an_empty_class_is_allowed_silently(recwarn):
    """Documented choice (docs/privacy.md): refusing or warning on an empty class would be a
    data-dependent action; the release stays DP and the class's noisy count is ~0."""
    x, y = _data()
    y = torch.where(y == 1, 0, y)  # class 1 is empty
    rel = _release(x, y, noise_seed=3)
    assert not [w for w in recwarn.list if "class" in str(w.message).lower()]
    counts = rel.class_counts()
    std = rel.statistics[0].noise_std / rel.statistics[0].count_weight
    assert abs(float(counts[1])) < 6 * std  # noise only
    assert rel.mean_embeddings().shape == (3, 16)
    assert torch.isfinite(rel.mean_embeddings()).all()


# -- the CLI -----------------------------------------------------------------------------
def _npz(tmp_path, name="d.npz", x=None, y=None, n_classes=3):
    x0, y0 = _data(n=40)
    x = x0.numpy() if x is None else x
    y = y0.numpy() if y is None else y
    path = tmp_path / name
    # an explicit test split, so that every record of x is in the released training split
    np.savez(path, x=x, y=y, x_test=x0.numpy()[:5], y_test=y0.numpy()[:5], n_classes=np.array(n_classes))
    return path


def _run_cli(capsys, argv):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(stderr: str) -> str:
    """The one error line; anything else on stderr may only be the progress bar."""
    lines = [line for line in re.split(r"[\r\n]+", stderr) if line.strip()]
    assert lines, "nothing on stderr"
    assert all(line.startswith("release:") for line in lines[:-1]), stderr
    assert lines[-1].startswith("mmgen: error: "), stderr
    return lines[-1]


def _release_argv(data, out, *extra):
    return ["release", "--data", data, "--epsilon", "1", "--n-features", "16", "--out", str(out), *extra]


def _bad_cli_cases(tmp_path):
    x, y = _data(n=40)
    xn, yn = x.numpy(), y.numpy()
    nan = xn.copy()
    nan[3, 0, 1, 1] = np.nan
    inf = xn.copy()
    inf[2, 0, 0, 0] = np.inf
    big = xn.copy()
    big[4, 0, 2, 2] = 2.0
    cases = {
        "nan": (_release_argv(f"npz:{_npz(tmp_path, 'nan.npz', x=nan)}", "OUT"), "NaN or inf"),
        "inf": (_release_argv(f"npz:{_npz(tmp_path, 'inf.npz', x=inf)}", "OUT"), "NaN or inf"),
        "outside domain": (_release_argv(f"npz:{_npz(tmp_path, 'big.npz', x=big)}", "OUT"), "outside the declared domain"),
        "int64 x": (_release_argv(f"npz:{_npz(tmp_path, 'int.npz', x=xn.astype(np.int64))}", "OUT"), "must be uint8 or float"),
        "float labels": (_release_argv(f"npz:{_npz(tmp_path, 'fy.npz', y=yn.astype(np.float32))}", "OUT"), "integer array"),
        "1-d records": (_release_argv(f"npz:{_npz(tmp_path, '1d.npz', x=xn[:, 0, 0, 0])}", "OUT"), "input_shape"),
        "label outside classes": (_release_argv(f"npz:{_npz(tmp_path, 'lab.npz', n_classes=2)}", "OUT"), "labels 'y' must be in 0..1"),
        "empty": (_release_argv(f"npz:{_npz(tmp_path, 'empty.npz', x=xn[:0], y=yn[:0])}", "OUT"), "empty"),
        "epsilon 0": (["release", "--data", "digits", "--epsilon", "0", "--out", "OUT"], "`epsilon` must be"),
        "epsilon negative": (["release", "--data", "digits", "--epsilon", "-1", "--out", "OUT"], "`epsilon` must be"),
        "epsilon nan": (["release", "--data", "digits", "--epsilon", "nan", "--out", "OUT"], "`epsilon` must be"),
        "delta 0": (["release", "--data", "digits", "--epsilon", "1", "--delta", "0", "--out", "OUT"], "`delta` must be in (0, 1)"),
        "delta 1": (["release", "--data", "digits", "--epsilon", "1", "--delta", "1", "--out", "OUT"], "`delta` must be in (0, 1)"),
        "unknown feature": (_release_argv("digits", "OUT", "--features", "nope"), "'nope'. Known"),
        "bad feature option": (_release_argv("digits", "OUT", "--n-features", "3"), "`n_features` must be an even integer"),
        "missing idx folder": (_release_argv("idx:/no/such/folder", "OUT"), "does not exist"),
        "missing fmnist folder": (_release_argv("fashion-mnist:/no/such/folder", "OUT"), "not found"),
        "missing npz": (_release_argv("npz:/no/such/file.npz", "OUT"), "does not exist"),
        "unknown data spec": (_release_argv("mnist", "OUT"), "Unknown data spec"),
    }
    return cases


CLI_CASES = [
    "nan", "inf", "outside domain", "int64 x", "float labels", "1-d records", "label outside classes", "empty",
    "epsilon 0", "epsilon negative", "epsilon nan", "delta 0", "delta 1", "unknown feature", "bad feature option",
    "missing idx folder", "missing fmnist folder", "missing npz", "unknown data spec",
]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_input_one_line_no_traceback_nothing_written(case, tmp_path, capsys):
    argv, message = _bad_cli_cases(tmp_path)[case]
    out = tmp_path / "out" / "release.safetensors"
    argv = [str(out) if a == "OUT" else a for a in argv]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, stdout, stderr = _run_cli(capsys, argv)
    assert code == 2
    assert message in _error_line(stderr)
    assert "Traceback" not in stderr + stdout
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_cli_clip_is_recorded(tmp_path, capsys):
    x, _ = _data(n=40)
    big = (x.numpy() * 1.5).astype(np.float32)
    out = tmp_path / "r.safetensors"
    code, _, err = _run_cli(capsys, _release_argv(f"npz:{_npz(tmp_path, x=big)}", out, "--clip"))
    assert code == 0, err
    rel = mmgen.Release.load(out)
    assert rel.metadata["data"]["clip"] is True
    code, stdout, _ = _run_cli(capsys, ["inspect", str(out)])
    assert code == 0 and "clipped" in stdout


def test_cli_output_path_that_is_a_folder(tmp_path, capsys):
    code, _, err = _run_cli(capsys, _release_argv(f"npz:{_npz(tmp_path)}", tmp_path))
    assert code == 2
    assert "is a folder" in _error_line(err)
    assert "Traceback" not in err


@pytest.mark.parametrize("content", [b"", b"hello world", b"\x80\x04K\x01."])
def test_cli_inspect_of_a_garbage_file(tmp_path, capsys, content):
    path = tmp_path / "r.safetensors"
    path.write_bytes(content)
    code, _, err = _run_cli(capsys, ["inspect", str(path)])
    assert code == 2
    assert "is not an mmgen release" in _error_line(err)


def test_cli_in_a_real_process_prints_one_line(tmp_path):
    out = tmp_path / "r.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "mmgen.cli", *_release_argv("idx:/no/such/folder", out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"mmgen: error: Data folder /no/such/folder does not exist."]
    assert not out.exists()
