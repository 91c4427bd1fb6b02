"""`mmgen vae` through the command line: runs, records, inspects, samples, resumes, refuses in one line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import mmgen
from mmgen import cli
from mmgen.privacy.ledger import BudgetRecord
from mmgen.vae import TrainedVAE, VAEConfig

FAST = ["--epochs", "1", "--sampling-rate", "0.2", "--hidden", "32", "--latent-dim", "4", "--quiet"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    ds = mmgen.data.load("digits")
    path = tmp_path_factory.mktemp("vae-cli") / "private.npz"
    np.savez(path, x=ds.x_train[:400].numpy(), y=ds.y_train[:400].numpy(), n_classes=10)
    return path


def _one_line_error(capsys, argv, *needles):
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("mmgen: error:") or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("mmgen: error:"), err
    for n in needles:
        assert n in err, err


def test_cli_defaults_are_the_config_defaults():
    d = VAEConfig()
    for key, value in cli.VAE_DEFAULTS.items():
        assert getattr(d, key) == value, key


def test_vae_inspect_sample_evaluate_and_the_budget_record(spec, tmp_path, capsys):
    out = tmp_path / "m.vae"
    assert cli.main(["vae", "--data", f"npz:{spec}", "--epsilon", "3", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: epsilon=3, delta=1e-05, add-remove" in printed
    assert mmgen.files.sniff(out) == "vae"
    vae = TrainedVAE.load(out)
    assert vae.finished and vae.epsilon <= 3 * (1 + 1e-9) and vae.privacy["for_publication"] is True
    record = BudgetRecord.load(spec.with_name(spec.name + ".mmgen-budget.json"))  # default: beside the npz
    mine = [e for e in record.entries if (e.get("details") or {}).get("run_id") == vae.run_id]
    assert [e["stage"] for e in mine] == ["dp-sgd"] and mine[0]["output"] == out.name  # the file it wrote
    assert cli.main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "dp-sgd: 5 steps, Poisson sampling rate 0.2" in shown and "epsilon=3" in shown
    assert "lipschitz    encoder" in shown
    assert cli.main(["inspect", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["format"] == "mmgen.vae" and meta["lipschitz"]["encoder_measured"] <= 4.0 * (1 + 1e-6)
    samples = tmp_path / "s.npz"
    assert cli.main(["sample", str(out), "--n", "60", "--out", str(samples)]) == 0
    with np.load(samples) as arrays:
        assert arrays["x"].shape == (60, 1, 8, 8) and arrays["x"].min() >= 0 and arrays["x"].max() <= 1
    assert cli.main(["evaluate", str(samples), "--data", "digits", "--metrics", "lr"]) == 0
    # the same output again: refused unless --force; a finished model cannot be resumed
    _one_line_error(capsys, ["vae", "--data", f"npz:{spec}", "--epsilon", "3", "--out", str(out), *FAST], "--force")
    _one_line_error(capsys, ["vae", "--data", f"npz:{spec}", "--epsilon", "3", "--out", str(out), "--resume", *FAST],
                    "finished")  # fmt: skip


def test_a_declared_total_refuses_before_training(spec, tmp_path, capsys):
    rec = tmp_path / "rec.json"
    r = BudgetRecord(rec, delta=1e-5, neighbouring="add-remove", total_epsilon=1.0)
    r.save()
    out = tmp_path / "m.vae"
    _one_line_error(capsys, ["vae", "--data", f"npz:{spec}", "--epsilon", "2", "--out", str(out),
                             "--budget-record", str(rec), *FAST], "above the declared total")  # fmt: skip
    assert not out.exists() and len(BudgetRecord.load(rec)) == 0


def test_per_record_mode_through_the_cli(spec, tmp_path, capsys):
    out, pr = tmp_path / "m.vae", tmp_path / "pr.npz"
    argv = ["vae", "--data", f"npz:{spec}", "--epsilon", "12", "--out", str(out), "--neighbouring", "replace-one",
            "--per-record-epsilon", "4", "--per-record-out", str(pr), "--encoder-lipschitz", "0.1",
            "--budget-record", str(tmp_path / "rec.json"), *FAST]  # fmt: skip
    assert cli.main(argv) == 0
    with np.load(pr, allow_pickle=False) as arrays:
        assert arrays["x"].shape == (400, 1, 8, 8)  # one per private record: N is public under replace-one
        meta = json.loads(str(arrays["meta"]))
    p = meta["privacy"]
    assert [s["stage"] for s in p["stages"]] == ["dp-sgd", "per-record"]
    assert p["epsilon"] <= 12 * (1 + 1e-6) and p["neighbouring"] == "replace-one"
    assert p["stages"][-1]["epsilon"] == pytest.approx(4.0, rel=1e-6)
    # the posterior std the model was trained with is the one that gives the per-record guarantee
    from mmgen.vae import per_record_std

    assert TrainedVAE.load(out).config.posterior_std == pytest.approx(per_record_std(0.1, 64, 4.0, 1e-5))
    record = BudgetRecord.load(tmp_path / "rec.json")
    assert [e["stage"] for e in record.entries] == ["dp-sgd", "per-record"]
    assert [e["output"] for e in record.entries] == [out.name, pr.name]
    assert record.total_epsilon() == pytest.approx(p["epsilon"], rel=1e-6)
    assert cli.main(["inspect", str(pr)]) == 0
    assert "per-record: noise multiplier" in capsys.readouterr().out


def test_bad_inputs_are_one_line_errors_and_nothing_is_written(spec, tmp_path, capsys):
    base = ["vae", "--data", f"npz:{spec}", "--epsilon", "3", *FAST, "--budget-record", str(tmp_path / "r.json")]
    m = str(tmp_path / "m.vae")
    _one_line_error(capsys, [*base, "--out", m, "--per-record-epsilon", "1", "--per-record-out", str(tmp_path / "p.npz")],
                    "replace-one")  # fmt: skip
    _one_line_error(capsys, [*base, "--out", m, "--per-record-epsilon", "1"], "go together")
    _one_line_error(capsys, [*base, "--out", m, "--neighbouring", "replace-one", "--per-record-epsilon", "1",
                             "--per-record-out", str(tmp_path / "p.csv")], ".npz")  # fmt: skip
    _one_line_error(capsys, [*base, "--out", m, "--hidden", "a,b"], "--hidden")
    _one_line_error(capsys, [*base, "--out", m, "--sampling-rate", "1.5"], "sampling_rate")
    _one_line_error(capsys, [*base, "--out", m, "--resume"], "no model")
    _one_line_error(capsys, [*base, "--out", m, "--warm-start", str(spec)], "checkpoint")
    _one_line_error(capsys, ["vae", "--data", "csv:x.csv", "--epsilon", "1", "--out", m], "tables")
    with np.load(spec) as arrays:
        x = arrays["x"].copy()
        x[7] = 2.0  # outside the declared domain [0, 1]: refused, and the budget record spends nothing
        np.savez(tmp_path / "bad.npz", x=x, y=arrays["y"], n_classes=10)
    _one_line_error(capsys, ["vae", "--data", f"npz:{tmp_path / 'bad.npz'}", "--epsilon", "3", *FAST,
                             "--budget-record", str(tmp_path / "r.json"), "--out", m], "record 7")  # fmt: skip
    assert not list(tmp_path.glob("m.vae*"))
    assert not (tmp_path / "r.json").exists() or len(BudgetRecord.load(tmp_path / "r.json")) == 0


def test_resume_continues_an_unfinished_model_without_a_second_charge(spec, tmp_path, capsys):
    out = tmp_path / "m.vae"
    assert cli.main(["vae", "--data", f"npz:{spec}", "--epsilon", "3", "--out", str(out), *FAST]) == 0
    vae = TrainedVAE.load(out)
    unfinished = dataclasses.replace(vae, steps_done=2)  # as a run stopped after 2 of 5 steps leaves its file
    unfinished.optimizer_state = None
    unfinished.save(out)
    assert cli.main(["inspect", str(out)]) == 0
    assert "UNFINISHED" in capsys.readouterr().out
    _one_line_error(capsys, ["sample", str(out), "--n", "5", "--out", str(tmp_path / "s.npz")], "unfinished")
    assert cli.main(["vae", "--data", f"npz:{spec}", "--epsilon", "3", "--out", str(out), "--resume", *FAST]) == 0
    resumed = TrainedVAE.load(out)
    assert resumed.finished and resumed.run_id == vae.run_id and resumed.privacy == vae.privacy
    record = BudgetRecord.load(spec.with_name(spec.name + ".mmgen-budget.json"))
    assert [e["details"]["run_id"] for e in record.entries].count(vae.run_id) == 1


def test_resume_checks_the_total_with_the_later_stages_it_adds(tmp_path, capsys):
    """Issue 20 (minor 2): `--resume --per-record-epsilon` once took a data set to epsilon 1.461 under --epsilon 1."""
    ds = mmgen.data.load("digits")
    data = tmp_path / "own.npz"  # its own budget record, beside it
    np.savez(data, x=ds.x_train[:300].numpy(), y=ds.y_train[:300].numpy(), n_classes=10)
    out, samples = tmp_path / "m.vae", tmp_path / "p.npz"
    base = ["vae", "--data", f"npz:{data}", "--epsilon", "1", "--out", str(out), "--neighbouring", "replace-one", *FAST]
    assert cli.main(base) == 0
    vae = TrainedVAE.load(out)
    assert vae.epsilon == pytest.approx(1.0, rel=1e-3)  # the whole total went to DP-SGD
    unfinished = dataclasses.replace(vae, steps_done=2)
    unfinished.optimizer_state = None
    unfinished.save(out)
    _one_line_error(capsys, [*base, "--resume", "--per-record-epsilon", "0.5", "--per-record-out", str(samples)],
                    "above --epsilon 1")  # fmt: skip
    assert not samples.exists() and TrainedVAE.load(out).steps_done == 2
    record = BudgetRecord.load(data.with_name(data.name + ".mmgen-budget.json"))
    assert [e["stage"] for e in record.entries] == ["dp-sgd"] and record.total_epsilon() <= 1 * (1 + 1e-9)
    # a lower --epsilon than already spent is refused too; the same total resumes
    lower = list(base)
    lower[lower.index("--epsilon") + 1] = "0.5"
    _one_line_error(capsys, [*lower, "--resume"], "above --epsilon 0.5")
    assert cli.main([*base, "--resume"]) == 0 and TrainedVAE.load(out).finished
