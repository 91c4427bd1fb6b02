"""The budget record is advisory, so edits to it must be detectable (issue 20, minor 5).

Its entries form a hash chain (an entry edited, removed or reordered: the record no longer loads), and every
output a stage writes carries the record's stamp (length, head hash), so a record truncated after the fact
no longer holds an output's head: ``mmgen inspect`` says so. A data file whose outputs exist while its record
does not draws a warning.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from mmgen import cli
from mmgen.errors import FormatError
from mmgen.files import budget_stamp
from mmgen.privacy import BudgetRecord


@pytest.fixture
def cohort(tmp_path, digits):
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "cohort.npz"
    np.savez(path, x=digits.x_train[:200].numpy(), y=digits.y_train[:200].numpy(), n_classes=10)
    return path


def _release(cohort, out, *extra):
    return cli.main(["release", "--data", f"npz:{cohort}", "--epsilon", "1", "--n-features", "50", "--out", str(out), *extra])


def _record_path(cohort):
    return cohort.with_name(cohort.name + ".mmgen-budget.json")


@pytest.fixture
def two_releases(tmp_path, cohort, capsys):
    outs = [tmp_path / "a.mmgen", tmp_path / "b.mmgen"]
    for out in outs:
        assert _release(cohort, out) == 0
    capsys.readouterr()
    return outs


def test_entries_are_chained_and_outputs_carry_the_head(cohort, two_releases):
    record = BudgetRecord.load(_record_path(cohort))
    a, b = record.entries
    assert a["prev"] is None and b["prev"] == a["hash"]
    assert budget_stamp(two_releases[0]) == {"entries": 1, "head": a["hash"], "first": a["hash"]}
    assert budget_stamp(two_releases[1]) == record.stamp() == {"entries": 2, "head": b["hash"], "first": a["hash"]}
    assert record.stamp_problem(budget_stamp(two_releases[0])) is None
    # the stamp sits outside the content hash: the release still verifies, and the record's entry names that hash
    from mmgen.release import Release

    assert Release.load(two_releases[1]).content_hash() == b["details"]["content_hash"]


def test_an_edited_entry_makes_the_record_fail_to_load(cohort, two_releases, capsys):
    path = _record_path(cohort)
    d = json.loads(path.read_text())
    d["entries"][0]["epsilon"] = 0.1  # the owner "forgets" most of the first release
    path.write_text(json.dumps(d, indent=2))
    with pytest.raises(FormatError, match=r"entry 1 of 2 .*edited after it was written"):
        BudgetRecord.load(path)
    assert cli.main(["budget", f"npz:{cohort}"]) == 2
    assert "edited after it was written" in capsys.readouterr().err
    # and no stage runs on the data while the record is broken
    assert _release(cohort, two_releases[0].with_name("c.mmgen")) == 2
    assert "hash" in capsys.readouterr().err


def test_a_removed_middle_entry_breaks_the_chain(cohort, two_releases, capsys):
    assert _release(cohort, two_releases[0].with_name("c.mmgen")) == 0
    path = _record_path(cohort)
    d = json.loads(path.read_text())
    del d["entries"][1]
    path.write_text(json.dumps(d))
    with pytest.raises(FormatError, match=r"entry 2 of 2 .*removed, inserted or reordered"):
        BudgetRecord.load(path)


def test_a_truncated_record_no_longer_holds_the_outputs_head(cohort, two_releases, capsys):
    path = _record_path(cohort)
    d = json.loads(path.read_text())
    d["entries"] = d["entries"][:-1]  # the last release dropped: the chain itself is still valid
    path.write_text(json.dumps(d))
    record = BudgetRecord.load(path)
    problem = record.stamp_problem(budget_stamp(two_releases[1]))
    assert problem is not None and "truncated" in problem
    assert record.stamp_problem(budget_stamp(two_releases[0])) is None
    assert cli.main(["inspect", str(two_releases[1]), "--budget-record", f"npz:{cohort}"]) == 0
    shown = capsys.readouterr().out
    assert "written after entry 2" in shown and "does NOT hold it" in shown and "truncated" in shown, shown
    assert cli.main(["inspect", str(two_releases[0]), "--budget-record", str(path)]) == 0
    assert "holds it (entry 1 of 1)" in capsys.readouterr().out


def test_inspect_finds_a_record_beside_the_output(tmp_path, cohort, capsys):
    out = cohort.with_name("r.mmgen")  # output and data (so its record) in one folder
    assert _release(cohort, out) == 0
    capsys.readouterr()
    assert cli.main(["inspect", str(out)]) == 0
    assert f"record       {_record_path(cohort)} holds it (entry 1 of 1)" in capsys.readouterr().out
    path = _record_path(cohort)
    d = json.loads(path.read_text())
    d["entries"][0]["hash"] = "0" * 64  # a rewritten chain: another head at the same place
    d["entries"][0]["epsilon"] = 0.5
    from mmgen.privacy.ledger import entry_hash

    d["entries"][0]["hash"] = entry_hash(d["entries"][0])
    path.write_text(json.dumps(d))
    assert cli.main(["inspect", str(out), "--budget-record", str(path)]) == 0
    assert "does NOT hold it" in capsys.readouterr().out


def test_evolved_samples_carry_the_records_stamp(tmp_path, cohort, capsys):
    rel, ckpt, out = tmp_path / "r.mmgen", tmp_path / "g.ckpt", tmp_path / "pe.npz"
    assert _release(cohort, rel) == 0
    assert cli.main(["fit", str(rel), "--out", str(ckpt), "--epochs", "1", "--steps-per-epoch", "2",
                     "--batch-size", "20", "--quiet"]) == 0  # fmt: skip
    assert cli.main(["evolve", str(ckpt), "--data", f"npz:{cohort}", "--epsilon", "20", "--rounds", "1",
                     "--population", "100", "--samples", "50", "--out", str(out)]) == 0  # fmt: skip
    record = BudgetRecord.load(_record_path(cohort))
    assert [e["stage"] for e in record.entries] == ["release", "private-evolution"]
    assert budget_stamp(out) == record.stamp()
    assert budget_stamp(ckpt) == budget_stamp(rel)  # a checkpoint carries its release's stamp
    capsys.readouterr()
    assert cli.main(["inspect", str(out), "--budget-record", f"npz:{cohort}"]) == 0
    assert "holds it (entry 2 of 2)" in capsys.readouterr().out


def test_outputs_without_their_record_draw_a_warning(tmp_path, cohort, capsys):
    out = tmp_path / "a.mmgen"
    assert _release(cohort, out) == 0
    _record_path(cohort).unlink()  # the record deleted; the release remains
    capsys.readouterr()
    assert _release(cohort, out, "--force") == 0
    err = capsys.readouterr().err
    assert "no record at" in err and "deleted or moved" in err, err


def test_version_1_records_load_with_a_warning_and_keep_their_heads(cohort, two_releases):
    path = _record_path(cohort)
    d = json.loads(path.read_text())
    d["version"] = 1
    for e in d["entries"]:
        del e["prev"], e["hash"]
    path.write_text(json.dumps(d))
    with pytest.warns(UserWarning, match="version-1 budget record"):
        record = BudgetRecord.load(path)
    assert record.chained_from == 2 and "chained later" in str(record)
    assert record.stamp_problem(budget_stamp(two_releases[1])) is None  # the same hashes as when chained first
    record.save()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = BudgetRecord.load(path)  # version 2 now: no warning
    assert again.chained_from == 2 and json.loads(path.read_text())["version"] == 2
