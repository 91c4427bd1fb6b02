"""A user error is one line, `mmgen: error: ...`, exit status 2, and writes nothing; the API raises MMGenError.

Also: mmgen's own file kinds are recognised from their headers (`mmgen.files.sniff`), and what a
newcomer reaches for first works (NumPy arrays, label lists, `print(release)`, `--help` defaults).
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import mmgen
from mmgen.cli import build_parser, main
from mmgen.errors import MMGenError

FIT = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16}


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    """A tiny digits release, checkpoint and samples; a vector release and checkpoint; a pickle."""
    d = tmp_path_factory.mktemp("files")
    rff = mmgen.features.create("rff", n_features=64, seed=0)
    rel = mmgen.release(digits, features=rff, epsilon=1.0, delta=1e-5, noise_seed=0)
    rel.save(d / "d.mmgen")
    trained = mmgen.fit("auto", rel, progress=False, **FIT)
    trained.save(d / "d.ckpt")
    x, y = trained.sample(60, seed=0)
    np.savez_compressed(d / "s.npz", x=x.numpy(), y=y.numpy())
    rng = np.random.default_rng(0)
    xv, yv = torch.from_numpy(rng.random((90, 30), dtype=np.float32)), torch.from_numpy(rng.integers(0, 3, 90))
    rff = mmgen.features.create("rff", n_features=64, seed=0)
    vrel = mmgen.release(xv, yv, features=rff, epsilon=1.0, delta=1e-5, n_classes=3, noise_seed=0)
    vrel.save(d / "v.mmgen")
    mmgen.fit("auto", vrel, progress=False, **FIT).save(d / "v.ckpt")
    (d / "p.pkl").write_bytes(pickle.dumps({"x": 1}))
    return d


def cli(argv, capsys, cwd) -> str:
    """Runs the command; asserts status 2, one `mmgen: error:` line on stderr and no new file in ``cwd``."""
    before = sorted(p.name for p in cwd.iterdir())
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mmgen: error: "), err
    assert sorted(p.name for p in cwd.iterdir()) == before
    return err[0]


# -- item 4: mmgen's own file kinds ------------------------------------------
def test_sniff_recognises_each_kind_from_headers_only(files):
    from mmgen.files import sniff

    assert sniff(files / "d.mmgen") == "release"
    assert sniff(files / "d.ckpt") == "checkpoint"
    assert sniff(files / "s.npz") == "samples"
    for other in ("p.pkl", "no-such-file"):
        assert sniff(files / other) == "unknown"


@pytest.mark.parametrize("given, kind", [("d.mmgen", "release"), ("d.ckpt", "checkpoint"), ("p.pkl", None)])
def test_evaluate_names_the_file_kind_and_never_suggests_unpickling(files, capsys, given, kind):
    err = cli(["evaluate", files / given, "--data", "digits", "--metrics", "lr"], capsys, files)
    assert "allow_pickle" not in err and "pickle" not in err.lower()
    if kind == "release":
        assert "is an mmgen release" in err and "`mmgen fit`" in err
    elif kind == "checkpoint":
        assert "is an mmgen generator checkpoint" in err and "`mmgen sample`" in err
    else:
        assert "not an .npz file" in err


@pytest.mark.parametrize("given, says", [("s.npz", "`mmgen evaluate`")])  # checkpoints: inspected (test_publication_mark.py)
def test_inspect_names_the_file_kind(files, capsys, given, says):
    err = cli(["inspect", files / given], capsys, files)
    assert "header length" not in err and says in err


@pytest.mark.parametrize("given, says", [("d.mmgen", "`mmgen fit`"), ("s.npz", "`mmgen evaluate`")])
def test_sample_names_the_file_kind(files, capsys, given, says):
    err = cli(["sample", files / given, "--n", "5", "--out", files / "q.npz"], capsys, files)
    assert "header length" not in err and says in err


def test_evaluate_checkpoint_option_names_the_file_kind(files, capsys):
    err = cli(["evaluate", files / "s.npz", "--data", "digits", "--checkpoint", files / "d.mmgen",
               "--out", files / "r.json"], capsys, files)  # fmt: skip
    assert "`mmgen evaluate --checkpoint` takes a checkpoint" in err and "is an mmgen release" in err


def test_plot_names_the_file_kind(files, capsys):
    err = cli(["plot", files / "s.npz", "--out", files / "p.png"], capsys, files)
    assert "utf-8" not in err and "`mmgen evaluate`" in err


def test_trained_load_names_the_file_kind(files):
    with pytest.raises(MMGenError, match="Trained.load takes a checkpoint; .* is an .npz with arrays x and y"):
        mmgen.Trained.load(files / "s.npz")


# -- item 5: one line, not a traceback ------------------------------------------
def test_sample_grid_on_vectors_refused_before_writing(files, capsys):
    err = cli(["sample", files / "v.ckpt", "--n", "5", "--out", files / "vs.npz", "--grid", files / "g.png"], capsys, files)
    assert "`--grid` needs image records" in err and "(30,)" in err


def test_save_grid_on_vectors_is_an_mmgen_error(files, tmp_path):
    from mmgen.evaluate import save_grid

    with pytest.raises(MMGenError, match="image records"):
        save_grid(mmgen.Trained.load(files / "v.ckpt"), tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("argv", [
    ["sample", "{d}/d.ckpt", "--n", "5", "--out", "{d}/q.npz", "--grid", "{d}/g.csv"],
    ["evaluate", "{d}/s.npz", "--data", "digits", "--metrics", "lr", "--grid", "{d}/g.txt"],
    ["evaluate", "{d}/s.npz", "--data", "digits", "--metrics", "lr", "--plot", "{d}/g.txt"],
    ["sample", "{d}/d.ckpt", "--n", "5", "--out", "{d}/q.npz", "--seed", "-1"],
])  # fmt: skip
def test_cli_bad_options_refused_in_one_line(files, capsys, argv):
    cli([a.format(d=files) for a in argv], capsys, files)


def test_plot_to_a_non_picture_refused_in_one_line(files, capsys):
    report = files / "rep.json"
    report.write_text('{"epsilon": 1.0, "logistic_regression": 0.5, "method": "rff"}')
    err = cli(["plot", report, "--out", files / "p.csv"], capsys, files)
    report.unlink()
    assert "`--out` must name a picture file" in err


def test_downstream_accuracy_accepts_numpy(files, digits):
    from mmgen.evaluate import downstream_accuracy

    with np.load(files / "s.npz") as f:
        x, y = f["x"], f["y"]
    out = downstream_accuracy(x, y, digits.x_test.numpy(), digits.y_test.numpy(), classifiers=("logistic_regression",))
    assert 0 <= out["logistic_regression"] <= 1
    with pytest.raises(MMGenError, match="`x_syn` must be a Tensor or a NumPy array"):
        downstream_accuracy(x.tolist(), y, digits.x_test, digits.y_test)
    with pytest.raises(MMGenError, match="`y_syn` must be 60 integer labels"):
        downstream_accuracy(x, y[:5], digits.x_test, digits.y_test)


def test_evaluate_suite_accepts_numpy(files, digits):
    with np.load(files / "s.npz") as f:
        report = mmgen.evaluate.evaluate(f["x"], f["y"], digits, metrics="lr")
    assert 0 <= report["logistic_regression"] <= 1


def test_sample_accepts_label_lists_and_refuses_labels_out_of_range(files):
    trained = mmgen.Trained.load(files / "d.ckpt")
    x, y = trained.sample(3, seed=0, labels=[0, 4, 9])
    assert x.shape == (3, 1, 8, 8) and y.tolist() == [0, 4, 9] and y.dtype == torch.int64
    x2, _ = trained.sample(3, seed=0, labels=np.array([0, 4, 9], dtype=np.int32))
    torch.testing.assert_close(x, x2)
    with pytest.raises(MMGenError, match=r"0\.\.9 \(this generator has 10 classes\). Got 10"):
        trained.sample(2, labels=[0, 10])
    with pytest.raises(MMGenError, match="Got -1"):
        trained.sample(2, labels=torch.tensor([-1, 0]))
    with pytest.raises(MMGenError, match="must be 3 integers"):
        trained.sample(3, labels=[0, 1])
    for bad in (0, 2.5):
        with pytest.raises(MMGenError, match="`n` must be a positive integer"):
            trained.sample(bad)
    with pytest.raises(MMGenError, match="`seed`"):
        trained.sample(2, seed="a")


# -- item 6: --out names the file written ---------------------------------------
def test_sample_out_with_another_suffix_refused(files, capsys):
    err = cli(["sample", files / "d.ckpt", "--n", "5", "--out", files / "s.csv"], capsys, files)
    assert "`--out` must be an .npz file" in err


# -- item 7 (part) ----------------------------------------------------------------
def test_release_accepts_numpy(digits):
    rff = mmgen.features.create("rff", n_features=64, seed=0)
    kw = {"features": rff, "epsilon": 1.0, "delta": 1e-5, "n_classes": 10, "noise_seed": 0}
    from_numpy = mmgen.release(digits.x_train.numpy(), digits.y_train.numpy().astype(np.int32), **kw)
    from_torch = mmgen.release(digits.x_train, digits.y_train, **kw)
    torch.testing.assert_close(from_numpy.statistics[0].sums, from_torch.statistics[0].sums)


def test_release_repr_is_a_summary(files):
    text = repr(mmgen.Release.load(files / "d.mmgen"))
    assert "tensor(" not in text and len(text) < 300
    for part in ("epsilon=1", "delta=1e-05", "add-remove", "classes=10", "rff (10, 64)"):
        assert part in text


def test_trained_has_epsilon_and_delta(files):
    trained = mmgen.Trained.load(files / "d.ckpt")
    assert (trained.epsilon, trained.delta) == (1.0, 1e-5)


def test_evaluate_reachable_after_import_mmgen():
    code = "import mmgen; print(mmgen.evaluate.downstream_accuracy.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "downstream_accuracy", out.stderr[-500:]


def test_every_sub_command_help_shows_defaults():
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in sub.choices.items():
        for action in parser._actions:
            d = action.default
            if not action.option_strings or d is None or d is False or d == [] or d == argparse.SUPPRESS:
                continue
            if "default" not in (action.help or "").lower():
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, missing
    assert "default: 0.001" in sub.choices["fit"].format_help()


def test_fit_given_samples_says_what_it_got(tmp_path, capsys):
    path = tmp_path / "s.npz"
    np.savez(path, x=np.zeros((3, 4), np.float32), y=np.zeros(3, np.int64))
    assert main(["fit", str(path), "--out", str(tmp_path / "g.ckpt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`mmgen fit` takes a release" in err[0] and "header" not in err[0]
