"""`mmgen fit` for a newcomer: a generator picked by the release's shape, the expected duration, the backend shown."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

import mmgen
from mmgen.cli import FIT_DEFAULTS, main
from mmgen.kernels import backend
from mmgen.train import _about

TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16", "--quiet"]


@pytest.fixture()
def vector_release(tmp_path):
    """A release of 120 records of shape (30,) in [0, 1], 3 classes (from an npz, as a user would make it)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "vectors.npz"
    np.savez(path, x=rng.random((120, 30), dtype=np.float32), y=rng.integers(0, 3, 120), n_classes=3)
    data = mmgen.data.load(f"npz:{path}")
    rel = mmgen.release(data, features=mmgen.features.create("rff", n_features=64, seed=0), epsilon=1.0, delta=1e-5)
    return rel.save(tmp_path / "vectors.mmgen")


@pytest.fixture()
def digits_release(tmp_path, digits):
    rel = mmgen.release(digits, features=mmgen.features.create("rff", n_features=64, seed=0), epsilon=1.0, delta=1e-5)
    return rel.save(tmp_path / "digits.mmgen")


def test_auto_generator_is_mlp_for_vectors(vector_release, tmp_path, capsys):
    ckpt = tmp_path / "g.ckpt"
    assert main(["fit", str(vector_release), "--out", str(ckpt), *TINY]) == 0  # --generator auto is the default
    err = capsys.readouterr().err
    assert "generator 'auto' chose 'mlp' for records of shape (30,)" in err
    trained = mmgen.Trained.load(ckpt)
    assert trained.generator.config.kind == "mlp" and trained.generator.config.input_shape == (30,)
    x, _ = trained.sample(5, seed=0)
    assert x.shape == (5, 30)


def test_auto_generator_is_conv_for_images_with_the_cli_width(digits_release, tmp_path, capsys):
    ckpt = tmp_path / "g.ckpt"
    assert main(["fit", str(digits_release), "--out", str(ckpt), "--generator", "auto", *TINY]) == 0
    assert "generator 'auto' chose 'conv' for records of shape (1, 8, 8)" in capsys.readouterr().err
    cfg = mmgen.Trained.load(ckpt).generator.config
    assert cfg.kind == "conv" and cfg.width == FIT_DEFAULTS["conv_width"]
    assert main(["fit", str(digits_release), "--out", str(ckpt), "--width", "8", *TINY]) == 0
    assert mmgen.Trained.load(ckpt).generator.config.width == 8
    assert main(["fit", str(digits_release), "--out", str(ckpt), "--width", "1", *TINY]) == 2
    assert "--width" in capsys.readouterr().err


def test_explicit_conv_on_vectors_still_refused(vector_release, tmp_path, capsys):
    assert main(["fit", str(vector_release), "--out", str(tmp_path / "g.ckpt"), "--generator", "conv", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmgen: error:") and "'mlp'" in err and "'auto'" in err


def test_fit_prints_expected_duration_and_backend(digits_release, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(backend, "_announced", set())  # announced once per process: another test may have used it
    assert main(["fit", str(digits_release), "--out", str(tmp_path / "g.ckpt"), "--epochs", "2", "--steps-per-epoch",
                 "4", "--batch-size", "16", "--quiet"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("mmgen: fit:")]
    assert len(lines) == 1 and re.match(r"mmgen: fit: about \d+ (s|min) for 8 steps \(", lines[0]), lines
    assert "mmgen: rff_matching_loss: backend='auto' chose 'torch' for tensors on cpu" in captured.err
    assert "after 8 steps" in captured.out


def test_expected_duration_of_a_resumed_run_counts_the_remaining_steps(digits_release, tmp_path, capsys):
    ckpt = tmp_path / "g.ckpt"
    assert main(["fit", str(digits_release), "--out", str(ckpt), "--epochs", "1", *TINY[2:]]) == 0
    capsys.readouterr()
    assert main(["fit", str(digits_release), "--out", str(ckpt), "--epochs", "3", *TINY[2:], "--resume"]) == 0
    assert "for the remaining 4 of 6 steps (" in capsys.readouterr().err


def test_library_stays_quiet_outside_the_cli(digits_release, tmp_path, capsys, monkeypatch):
    logger = logging.getLogger("mmgen")
    handlers, level = list(logger.handlers), logger.level
    assert main(["fit", str(digits_release), "--out", str(tmp_path / "g.ckpt"), *TINY]) == 0
    assert logger.handlers == handlers and logger.level == level  # the CLI undoes its logging set-up
    capsys.readouterr()
    monkeypatch.setattr(backend, "_announced", set())
    rel = mmgen.Release.load(digits_release)
    mmgen.fit(mmgen.generators.for_release(rel), rel, epochs=1, steps_per_epoch=2, batch_size=16, progress=False)
    assert capsys.readouterr().err == ""


def test_python_api_auto_generator(vector_release, digits_release, caplog):
    vectors, images = mmgen.Release.load(vector_release), mmgen.Release.load(digits_release)
    with caplog.at_level(logging.INFO, logger="mmgen"):
        assert mmgen.generators.for_release(vectors).config.kind == "mlp"  # "auto" is for_release's default
        trained = mmgen.fit("auto", images, epochs=1, steps_per_epoch=2, batch_size=16, progress=False)
    assert trained.generator.config.kind == "conv"
    assert "generator 'auto' chose 'mlp'" in caplog.text and "fit: about" in caplog.text


def test_about():
    assert (_about(0.2), _about(40.4), _about(89), _about(95), _about(300)) == (
        "about 1 s", "about 40 s", "about 89 s", "about 2 min", "about 5 min")  # fmt: skip


def test_threads_option(digits_release, tmp_path, capsys):
    import torch

    assert main(["fit", str(digits_release), "--out", str(tmp_path / "g.ckpt"), "--threads", "1", *TINY]) == 0
    assert torch.get_num_threads() == 1
    assert main(["fit", str(digits_release), "--out", str(tmp_path / "g.ckpt"), "--threads", "0", *TINY]) == 2
    assert "--threads" in capsys.readouterr().err
