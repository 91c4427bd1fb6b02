"""The whole path on real data: release → fit → sample → evaluate, via the API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mmgen
from mmgen.cli import main
from mmgen.evaluate import downstream_accuracy


def test_digits_end_to_end(digits):
    fmap = mmgen.features.create("rff", n_features=2000, seed=0)
    rel = mmgen.release(digits, features=fmap, epsilon=10.0, delta=1e-5)
    trained = mmgen.fit("conv", rel, epochs=4, steps_per_epoch=50, batch_size=250, progress=False)
    x, y = trained.sample(3000, seed=0)
    acc = downstream_accuracy(x, y, digits.x_test, digits.y_test)
    # chance is 0.1; a generator that ignores labels or the release cannot reach this
    assert acc["logistic_regression"] > 0.8, acc
    assert acc["mlp"] > 0.8, acc
    # shuffled labels: the same samples are useless, so the test is not passable by accident
    shuffled = downstream_accuracy(x, y[torch.randperm(len(y))], digits.x_test, digits.y_test, classifiers=("logistic_regression",))
    assert shuffled["logistic_regression"] < 0.3


def test_cli_end_to_end(tmp_path, capsys):
    rel, ckpt, smp = tmp_path / "r.mmgen", tmp_path / "g.ckpt", tmp_path / "s.npz"
    assert main(["release", "--data", "digits", "--features", "rff", "--n-features", "1000", "--epsilon", "10",
                 "--delta", "1e-5", "--out", str(rel), "--neighbouring", "replace-one"]) == 0  # fmt: skip
    assert main(["inspect", str(rel)]) == 0
    out = capsys.readouterr().out
    assert "epsilon=10" in out and "replace-one" in out and "rff" in out
    assert main(["inspect", str(rel), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["privacy"]["neighbouring"] == "replace-one" and meta["data"]["n_classes"] == 10
    assert main(["fit", str(rel), "--out", str(ckpt), "--epochs", "3", "--steps-per-epoch", "40", "--quiet"]) == 0
    assert main(["sample", str(ckpt), "--n", "2000", "--out", str(smp), "--grid", str(tmp_path / "g.png"), "--seed", "0"]) == 0
    arrays = np.load(smp)
    assert arrays["x"].shape == (2000, 1, 8, 8) and arrays["y"].shape == (2000,)
    assert (tmp_path / "g.png").stat().st_size > 0
    assert main(["evaluate", str(smp), "--data", "digits", "--out", str(tmp_path / "rep.json")]) == 0
    report = json.loads((tmp_path / "rep.json").read_text())
    assert report["logistic_regression"] > 0.6 and report["mlp"] > 0.6


def test_cli_error_is_one_line(tmp_path, capsys):
    code = main(["release", "--data", "digits", "--epsilon", "-1", "--out", str(tmp_path / "r.mmgen")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmgen: error:") and "epsilon" in err and "Traceback" not in err
    assert not (tmp_path / "r.mmgen").exists()


@pytest.mark.fmnist
def test_fashion_mnist_end_to_end(fmnist):
    fmap = mmgen.features.create("rff", n_features=2000, seed=0)
    rel = mmgen.release(fmnist, features=fmap, epsilon=10.0, delta=1e-5)
    trained = mmgen.fit("conv", rel, epochs=2, steps_per_epoch=50, batch_size=250, progress=False)
    x, y = trained.sample(3000, seed=0)
    acc = downstream_accuracy(x, y, fmnist.x_test[:2000], fmnist.y_test[:2000], classifiers=("logistic_regression",))
    assert acc["logistic_regression"] > 0.6, acc
