"""Evaluation metrics: sanity of FD, PRDC, MMD, Sinkhorn; the CNN protocol; the CLI paths."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from mmgen.cli import main
from mmgen.errors import MMGenError
from mmgen.evaluate import (
    FD_NAME,
    PRDC_NAME,
    cnn_accuracy,
    efficientnet_lite0_embedding,
    evaluate,
    frechet_distance,
    mmd2_unbiased,
    parse_metrics,
    prdc,
    sinkhorn_divergence,
    train_cnn,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # Small models on a shared 2-core machine: one torch thread is several times faster than two.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gauss(n, d, seed, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


# -- Fréchet distance ------------------------------------------------------------------------------------------
def test_fd_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    a = _gauss(300, 16, 0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    fds = [frechet_distance(a, a + s) for s in (0.5, 1.0, 2.0)]
    assert fds == pytest.approx([16 * s**2 for s in (0.5, 1.0, 2.0)], rel=1e-6)  # a pure shift: ‖Δμ‖²
    b = _gauss(300, 16, 1)  # same law, another sample: small but > 0
    assert 0 < frechet_distance(a, b) < frechet_distance(a, b + 0.5)


@pytest.mark.parametrize("n,m,d", [(40, 60, 100), (200, 150, 10)])  # both branches: N, M below and above D
def test_fd_matches_the_matrix_square_root_formula(n, m, d):
    from scipy import linalg

    a, b = _gauss(n, d, 2), 1.5 * _gauss(m, d, 3) + 0.1
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(ca + cb) - 2 * np.trace(linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


# -- precision / recall / density / coverage ------------------------------------------------------------------
def test_prdc_identical_sets_score_one():
    x = _gauss(300, 8, 0)
    r = prdc(x, x.clone(), k=5)
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["coverage"] == 1.0
    assert r["density"] >= 1.0  # every point lies in its own ball and in ≥ k others'


def test_prdc_same_law_is_high_and_disjoint_sets_score_zero():
    x, y = _gauss(400, 4, 0), _gauss(400, 4, 1)
    r = prdc(x, y)
    assert r["precision"] > 0.8 and r["recall"] > 0.8 and r["coverage"] > 0.8 and 0.6 < r["density"] < 1.4
    far = prdc(x, y + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0, "k": 5}


def test_prdc_sees_mode_collapse_in_recall_and_coverage():
    x = _gauss(400, 4, 0)
    collapsed = x[:20].repeat(20, 1) + 1e-3 * _gauss(400, 4, 5)  # all mass on 20 real points
    r = prdc(x, collapsed)
    assert r["precision"] > 0.9 and r["recall"] < 0.3 and r["coverage"] < 0.3


def test_prdc_rejects_a_bad_k():
    with pytest.raises(MMGenError, match="`k`"):
        prdc(_gauss(5, 2, 0), _gauss(5, 2, 1), k=5)


# -- MMD -----------------------------------------------------------------------------------------------------------
def test_mmd_unbiased_is_near_zero_for_one_law_and_positive_for_two():
    x, y = _gauss(500, 5, 0), _gauss(500, 5, 1)
    same = mmd2_unbiased(x, y, bandwidth=2.0)
    diff = mmd2_unbiased(x, y + 1.0, bandwidth=2.0)
    assert abs(same) < 0.01 and diff > 0.1
    assert mmd2_unbiased(x, y + 2.0, bandwidth=2.0) > diff


def test_mmd_chunking_does_not_change_the_value():
    x, y = _gauss(130, 3, 0), _gauss(90, 3, 1) + 0.3
    assert mmd2_unbiased(x, y, bandwidth=1.0, chunk=7) == pytest.approx(mmd2_unbiased(x, y, bandwidth=1.0), rel=1e-10)


def test_mmd_matches_the_explicit_formula():
    x, y, s = _gauss(30, 2, 0), _gauss(20, 2, 1) + 0.5, 0.8
    k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * s * s))  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    ref = (kxx.sum() - kxx.trace()) / (30 * 29) + (kyy.sum() - kyy.trace()) / (20 * 19) - 2 * kxy.mean()
    assert mmd2_unbiased(x, y, bandwidth=s) == pytest.approx(float(ref), rel=1e-9)


# -- Sinkhorn ----------------------------------------------------------------------------------------------------
def test_sinkhorn_is_zero_on_identical_sets_and_grows_with_a_shift():
    x, y = _gauss(300, 4, 0).float() * 0.1 + 0.5, _gauss(300, 4, 1).float() * 0.1 + 0.5
    assert sinkhorn_divergence(x, x.clone(), blur=0.05)["value"] == pytest.approx(0.0, abs=1e-5)
    same = sinkhorn_divergence(x, y, blur=0.05)["value"]
    shifted = sinkhorn_divergence(x, y + 0.3, blur=0.05)["value"]
    assert same < 0.02 < shifted
    assert shifted == pytest.approx(0.5 * 4 * 0.3**2, rel=0.3)  # ½‖Δμ‖² for a translation (p = 2)


# -- CNN protocol ----------------------------------------------------------------------------------------------
def test_train_cnn_takes_synthetic_data_only():
    params = set(inspect.signature(train_cnn).parameters)
    assert {"x_syn", "y_syn"} <= params
    assert not any("test" in p or "real" in p for p in params)


def test_cnn_on_real_digits_beats_chance_and_selection_ignores_the_test_set(digits):
    opts = dict(max_epochs=4, patience=2, seed=0)
    r = cnn_accuracy(digits.x_train, digits.y_train, digits.x_test, digits.y_test, n_classes=10, **opts)
    assert r["cnn"] > 0.6  # chance is 0.1
    assert 1 <= r["cnn_selection"]["best_epoch"] <= r["cnn_selection"]["epochs_run"] <= 4
    # Scrambled test labels and noise test images: the same selection, a chance-level score.
    y_bad = digits.y_test[torch.randperm(len(digits.y_test), generator=torch.Generator().manual_seed(1))]
    x_bad = torch.rand_like(digits.x_test)
    r_bad = cnn_accuracy(digits.x_train, digits.y_train, x_bad, y_bad, n_classes=10, **opts)
    assert r_bad["cnn_selection"] == r["cnn_selection"]
    assert r_bad["cnn"] < 0.3


# -- the whole suite and the embedding -----------------------------------------------------------------------
def test_evaluate_with_the_efficientnet_embedding(digits):
    x = digits.x_test[:60]
    f = efficientnet_lite0_embedding(x)
    assert f.shape == (60, 1280) and torch.isfinite(f).all()
    import dataclasses

    small = dataclasses.replace(digits, x_test=digits.x_test[:60], y_test=digits.y_test[:60])
    r = evaluate(small.x_test, small.y_test, small, metrics="fd,prdc", max_samples=60)
    assert r[FD_NAME] == pytest.approx(0.0, abs=1e-3)  # the synthetic set *is* the reference subsample
    assert r[PRDC_NAME]["precision"] == 1.0 and r[PRDC_NAME]["coverage"] == 1.0
    noise = evaluate(torch.rand(60, 1, 8, 8), small.y_test, small, metrics="fd,prdc", max_samples=60)
    assert noise[FD_NAME] > 10 * max(r[FD_NAME], 1.0) and noise[PRDC_NAME]["precision"] < 0.2


def test_parse_metrics():
    assert parse_metrics("lr, mlp") == ("logistic_regression", "mlp")
    assert "sinkhorn" in parse_metrics("all")
    with pytest.raises(MMGenError, match="Unknown metric"):
        parse_metrics("fid")


# -- CLI -------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def samples_npz(tmp_path, digits):
    path = tmp_path / "samples.npz"
    np.savez_compressed(path, x=digits.x_train[:400].numpy(), y=digits.y_train[:400].numpy())
    return path


def test_cli_evaluate_metrics_grid_and_report(tmp_path, samples_npz, capsys):
    out, grid = tmp_path / "report.json", tmp_path / "grid.png"
    rc = main(["evaluate", str(samples_npz), "--data", "digits", "--metrics", "lr,mmd,sinkhorn",
               "--max-samples", "200", "--label", "real-digits", "--grid", str(grid), "--out", str(out)])  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["logistic_regression"] > 0.8 and "mlp" not in report
    assert abs(report["MMD2-Gaussian"]) < 0.01 and report["Sinkhorn"] >= 0
    assert report["settings"]["MMD2-Gaussian"]["n_real"] == 200 and report["method"] == "real-digits"
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "MMD2-Gaussian" in capsys.readouterr().out


def test_cli_evaluate_unknown_metric_is_a_one_line_error(samples_npz, capsys):
    assert main(["evaluate", str(samples_npz), "--data", "digits", "--metrics", "fid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmgen: error: Unknown metric") and "\n" not in err


def test_cli_plot_accuracy_against_epsilon(tmp_path, capsys):
    paths = []
    for i, (eps, acc) in enumerate([(0.2, 0.3), (1.0, 0.5), (1.0, 0.6), (10.0, 0.8)]):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps({"epsilon": eps, "method": "rff", "data": "digits", "mlp": acc}))
        paths.append(str(p))
    assert main(["plot", *paths, "--out", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    from mmgen.evaluate import accuracy_table, load_reports

    table = accuracy_table(load_reports(paths), "mlp")["rff (digits)"]
    assert [r[0] for r in table] == [0.2, 1.0, 10.0] and table[1][1] == pytest.approx(0.55) and table[1][3] == 2
    (tmp_path / "none.json").write_text(json.dumps({"mlp": 0.5}))  # no epsilon: nothing to plot
    assert main(["plot", str(tmp_path / "none.json"), "--out", str(tmp_path / "x.png")]) == 2
    assert "epsilon" in capsys.readouterr().err


@pytest.fixture()
def checkpoint_and_samples(tmp_path, digits):
    """A generator briefly fitted to an ε = 2 digits release, its checkpoint and 200 of its samples."""
    import mmgen

    rel = mmgen.release(digits, features=mmgen.features.create("rff", n_features=200, seed=0), epsilon=2.0,
                        delta=1e-5, progress=False)  # fmt: skip
    trained = mmgen.fit("mlp", rel, epochs=1, steps_per_epoch=2, batch_size=50, progress=False)
    ckpt = tmp_path / "g.ckpt"
    trained.save(ckpt)
    x, y = trained.sample(200, seed=0)
    npz = tmp_path / "s.npz"
    np.savez_compressed(npz, x=x.numpy(), y=y.numpy())
    return ckpt, npz


def test_cli_evaluate_records_the_checkpoint_privacy(tmp_path, checkpoint_and_samples):
    ckpt, npz = checkpoint_and_samples
    out = tmp_path / "r.json"
    assert main(["evaluate", str(npz), "--data", "digits", "--metrics", "mmd", "--checkpoint", str(ckpt),
                 "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["epsilon"] == 2.0 and report["delta"] == 1e-5 and report["method"] == "rff"


def test_cli_evaluate_plot_writes_the_grid_and_the_curve_with_compared_reports(tmp_path, checkpoint_and_samples, capsys):
    ckpt, npz = checkpoint_and_samples
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"epsilon": 0.5, "method": "rff", "data": "digits", "logistic_regression": 0.2}))
    png = tmp_path / "plot.png"
    assert main(["evaluate", str(npz), "--data", "digits", "--metrics", "lr", "--checkpoint", str(ckpt),
                 "--plot", str(png), "--compare", str(other), "--out", str(tmp_path / "r.json")]) == 0  # fmt: skip
    curve = tmp_path / "plot-accuracy.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and curve.read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "r.json").read_text())["accuracy_plot"] == str(curve)
    capsys.readouterr()
    # --compare without --plot, and --plot --compare without a checkpoint (no epsilon), are one-line errors
    assert main(["evaluate", str(npz), "--data", "digits", "--compare", str(other)]) == 2
    assert main(["evaluate", str(npz), "--data", "digits", "--plot", str(png), "--compare", str(other)]) == 2
    assert capsys.readouterr().err.count("mmgen: error:") == 2
