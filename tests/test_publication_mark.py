"""A release made with test-only seeded noise keeps its mark downstream (issue 20, minor 3).

``fit`` warns (a Python warning; one console line in the CLI), the checkpoint carries ``for_publication:
false`` and the noise source, ``mmgen sample`` writes them into the samples' ``meta``, and ``mmgen inspect``
reads checkpoints and samples and shows the mark at each step.
"""

from __future__ import annotations


import numpy as np
import pytest

import mmgen
from mmgen import cli
from mmgen.errors import NotForPublicationWarning
from mmgen.files import load_samples, metadata
from mmgen.release import SEEDED_NOISE_SOURCE

FIT = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "20", "--quiet"]


@pytest.fixture(scope="module")
def releases(tmp_path_factory, digits):
    d = tmp_path_factory.mktemp("mark")
    x, y = digits.x_train[:200], digits.y_train[:200]
    out = {}
    for name, seed in (("seeded", 7), ("secure", None)):
        rel = mmgen.release(x, y, n_classes=10, features="rff", epsilon=1.0, delta=1e-5, noise_seed=seed)
        out[name] = rel.save(d / f"{name}.mmgen")
    return d, out


def _chain(tmp_path, rel_path, capsys):
    """release -> fit -> sample through the CLI; what each step printed on stderr, and the files."""
    ckpt, samples = tmp_path / "g.ckpt", tmp_path / "s.npz"
    assert cli.main(["fit", str(rel_path), "--out", str(ckpt), *FIT]) == 0
    fit_err = capsys.readouterr().err
    assert cli.main(["sample", str(ckpt), "--n", "30", "--seed", "1", "--out", str(samples)]) == 0
    sample_err = capsys.readouterr().err
    return ckpt, samples, fit_err, sample_err


def _inspect(path, capsys) -> str:
    assert cli.main(["inspect", str(path)]) == 0
    return capsys.readouterr().out


def test_seeded_release_keeps_its_mark_through_fit_sample_and_inspect(tmp_path, releases, capsys):
    _, rels = releases
    assert "NO (seeded test noise)" in _inspect(rels["seeded"], capsys)
    ckpt, samples, fit_err, sample_err = _chain(tmp_path, rels["seeded"], capsys)
    assert "mmgen: warning:" in fit_err and "for_publication: false" in fit_err, fit_err
    assert "NotForPublicationWarning" not in fit_err  # one console line, not a Python warning's two
    assert "for_publication: false" in sample_err, sample_err
    meta = metadata(ckpt)
    assert meta["for_publication"] is False and meta["noise_source"] == SEEDED_NOISE_SOURCE
    shown = _inspect(ckpt, capsys)
    assert "checkpoint" in shown and "NO (seeded test noise)" in shown and SEEDED_NOISE_SOURCE in shown, shown
    sample_meta = metadata(samples)
    assert sample_meta["format"] == "mmgen.samples"
    assert sample_meta["privacy"]["for_publication"] is False
    assert sample_meta["privacy"]["noise_source"] == SEEDED_NOISE_SOURCE
    assert sample_meta["source"]["release_content_hash"] == meta["release"]["content_hash"]
    shown = _inspect(samples, capsys)
    assert "NO (seeded test noise)" in shown and "epsilon=1" in shown, shown
    x, y = load_samples(samples)  # readers of x and y alone still work
    assert x.shape[0] == 30 and y.shape == (30,)


def test_a_publishable_release_is_shown_so_and_draws_no_warning(tmp_path, releases, capsys):
    _, rels = releases
    ckpt, samples, fit_err, sample_err = _chain(tmp_path, rels["secure"], capsys)
    assert "for_publication" not in fit_err + sample_err
    assert metadata(ckpt)["for_publication"] is True
    assert "publishable  yes" in _inspect(ckpt, capsys)
    assert "publishable  yes" in _inspect(samples, capsys)


def test_fit_warns_in_python(releases):
    _, rels = releases
    rel = mmgen.Release.load(rels["seeded"])
    with pytest.warns(NotForPublicationWarning, match="test-only seeded noise"):
        trained = mmgen.fit("mlp", rel, epochs=1, steps_per_epoch=1, batch_size=10, progress=False)
    assert trained.for_publication is False and trained.noise_source == SEEDED_NOISE_SOURCE


def test_samples_without_meta_still_inspect_with_a_clear_message(tmp_path, capsys):
    old = tmp_path / "old.npz"
    np.savez(old, x=np.zeros((3, 4), np.float32), y=np.zeros(3, np.int64))
    assert cli.main(["inspect", str(old)]) == 2
    assert "without a privacy record" in capsys.readouterr().err
    assert metadata(old) is None
