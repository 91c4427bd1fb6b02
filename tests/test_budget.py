"""The budget record: releases of one data set are counted, composed with dp-accounting, and capped.

Also: an existing release is never overwritten silently, and the private file's path is never published.
"""

from __future__ import annotations

import json
import struct

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant

import mmgen
from mmgen import cli
from mmgen.errors import PrivacyError
from mmgen.privacy import BudgetRecord, dp_event, noise_multiplier_for
from mmgen.release import Release

DELTA = 1e-5


@pytest.fixture
def cohort(tmp_path, digits):
    """A small private npz file in a folder whose name must never be published."""
    folder = tmp_path / "secret-hospital-cohort"
    folder.mkdir()
    path = folder / "cohort.npz"
    np.savez(path, x=digits.x_train[:200].numpy(), y=digits.y_train[:200].numpy(), n_classes=10)
    return path


def _release(spec, out, epsilon=1.0, *extra):
    return cli.main(["release", "--data", spec, "--epsilon", str(epsilon), "--n-features", "50", "--out", str(out), *extra])


def _header(path) -> str:
    """The JSON header of a safetensors file, as raw text."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[8 : 8 + n].decode("utf-8")


def _pld_epsilon(multiplier_lists, delta):
    """Independent composition with dp-accounting's PLD accountant."""
    events = [dp_accounting.GaussianDpEvent(s) for sigmas in multiplier_lists for s in sigmas]
    return PLDAccountant().compose(dp_accounting.ComposedDpEvent(events)).get_epsilon(delta)


def test_release_refuses_to_overwrite_without_force(tmp_path, cohort, capsys):
    out = tmp_path / "bc.mmgen"
    assert _release(f"npz:{cohort}", out) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert _release(f"npz:{cohort}", out) == 2
    err = capsys.readouterr().err
    assert "--force" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == before
    assert _release(f"npz:{cohort}", out, 1.0, "--force") == 0
    assert out.read_bytes() != before  # fresh noise
    record = BudgetRecord.load(str(cohort) + ".mmgen-budget.json")
    assert len(record) == 2  # the overwritten release still counts


def test_demo_refuses_an_out_folder_that_holds_a_release(tmp_path, capsys, monkeypatch):
    (tmp_path / "release.mmgen").write_bytes(b"an earlier demo release")
    monkeypatch.setattr(mmgen.data, "load", lambda *a, **k: pytest.fail("the data must not be read"))
    assert cli.main(["demo", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "release.mmgen").read_bytes() == b"an earlier demo release"


def test_record_grows_by_one_entry_per_release_and_composes_with_dp_accounting(tmp_path, cohort, capsys):
    spec = f"npz:{cohort}"
    record_path = tmp_path / "records" / "cohort.json"
    for i, eps in enumerate([1.0, 0.5, 2.0]):
        assert _release(spec, tmp_path / f"r{i}.mmgen", eps, "--budget-record", str(record_path)) == 0
        record = BudgetRecord.load(record_path)
        assert len(record) == i + 1
        assert record.entries[-1]["output"] == f"r{i}.mmgen" and record.entries[-1]["epsilon"] == eps
    assert not (cohort.parent / "cohort.npz.mmgen-budget.json").exists()  # --budget-record chose the place
    multipliers = [e["noise_multipliers"] for e in record.entries]
    assert multipliers == [Release.load(tmp_path / f"r{i}.mmgen").metadata["privacy"]["noise_multipliers"] for i in range(3)]
    expected = _pld_epsilon(multipliers, DELTA)
    assert record.total_epsilon() == pytest.approx(expected, rel=2e-3)
    assert 2.0 < record.total_epsilon() < 3.5  # composed, not summed
    err = capsys.readouterr().err
    assert "already holds 2 stage(s)" in err  # the third release warned, with totals before and after
    assert cli.main(["budget", str(record_path)]) == 0
    assert f"epsilon={record.total_epsilon():.4g}" in capsys.readouterr().out


def test_record_composes_general_events_like_dp_accounting(tmp_path):
    sigma = noise_multiplier_for(1.0, DELTA)
    sgd = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(0.02, dp_accounting.GaussianDpEvent(1.5)), 50)
    record = BudgetRecord(delta=DELTA)
    record.add(stage="release", event=dp_event([sigma, 2 * sigma]), epsilon=1.0, delta=DELTA, output="a.mmgen")
    record.add(stage="dp-sgd", event=sgd, epsilon=1.0, delta=DELTA, output="vae.ckpt")
    composed = dp_accounting.ComposedDpEvent([dp_event([sigma, 2 * sigma]), sgd])
    assert record.total_epsilon() == pytest.approx(PLDAccountant().compose(composed).get_epsilon(DELTA), rel=1e-6)
    again = BudgetRecord.load(record.save(tmp_path / "r.json"))
    assert again.events() == record.events() and again.total_epsilon() == record.total_epsilon()
    assert record.check(dp_event([sigma]), total_epsilon=100.0) > record.total_epsilon()
    with pytest.raises(PrivacyError, match="declared total"):
        record.check(dp_event([sigma]), total_epsilon=record.total_epsilon() + 0.05)
    with pytest.raises(PrivacyError, match="replace-one"):
        record.add(stage="release", event=dp_event([sigma]), epsilon=1.0, delta=DELTA, neighbouring="replace-one")


def test_release_beyond_the_declared_total_is_refused_before_the_data_is_read(tmp_path, cohort, capsys, monkeypatch):
    spec = f"npz:{cohort}"
    assert _release(spec, tmp_path / "a.mmgen", 1.0, "--total-epsilon", "1.2") == 0
    record_file = cohort.with_name("cohort.npz.mmgen-budget.json")
    saved = record_file.read_text()
    assert json.loads(saved)["total_epsilon"] == 1.2  # the declared total is kept with the record
    capsys.readouterr()
    monkeypatch.setattr(mmgen.data, "load", lambda *a, **k: pytest.fail("the data must not be read"))
    assert _release(spec, tmp_path / "b.mmgen", 1.0) == 2
    err = capsys.readouterr().err
    assert "declared total 1.2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b.mmgen").exists() and record_file.read_text() == saved


def test_the_data_files_path_is_never_published(tmp_path, cohort, capsys):
    out = tmp_path / "public" / "bc.mmgen"
    assert _release(f"npz:{cohort}", out) == 0
    header = _header(out)
    assert "secret-hospital-cohort" not in header and str(tmp_path) not in header and "cohort.npz" not in header
    capsys.readouterr()
    assert cli.main(["inspect", str(out)]) == 0
    assert "secret-hospital-cohort" not in capsys.readouterr().out
    named = tmp_path / "public" / "named.mmgen"
    assert _release(f"npz:{cohort}", named, 1.0, "--name", "study A") == 0
    assert Release.load(named).metadata["data"]["name"] == "study A"
    rel = mmgen.release(mmgen.data.load(f"npz:{cohort}"), features=mmgen.features.create("rff", n_features=20),
                        epsilon=1.0, delta=DELTA, noise_seed=0)  # fmt: skip
    assert "secret-hospital-cohort" not in json.dumps(rel.metadata)


def test_warnings_for_a_large_epsilon_and_the_delta_rule(tmp_path, cohort, capsys):
    assert _release(f"npz:{cohort}", tmp_path / "a.mmgen", 1.0) == 0
    assert "warning" not in capsys.readouterr().err
    assert _release(f"npz:{cohort}", tmp_path / "b.mmgen", 20.0, "--delta", "1e-3") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmgen: warning:")]
    assert any("epsilon=20 is above 10" in w for w in warnings)
    assert any("δ should be much smaller than 1/N (N = number of records; mmgen does not read N" in w for w in warnings)
