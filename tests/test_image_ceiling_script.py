"""benchmarks/image_ceiling.py: invocations merge into the JSON file and keep the section's reading.

Pure bookkeeping on hand-made rows: no data set is loaded, nothing is fitted or timed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "image_ceiling.py"


@pytest.fixture(scope="module")
def ic():
    spec = importlib.util.spec_from_file_location("image_ceiling_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _header(**over):
    head = {
        "benchmark": "image_ceiling", "data": "fashion-mnist", "evaluated_on": "validation split of the training records",
        "n_fit": 100, "n_validation": 20, "delta": 1e-5, "neighbouring": "add-remove", "ceiling_epsilon": 1e7,
        "fit_defaults": {"epochs": 6, "steps_per_epoch": 100, "batch_size": 200, "conv_width": 32},
        "n_syn": 10_000, "machine": "x86_64, 2 CPU cores, torch threads 2",
    }  # fmt: skip
    head.update(over)
    return head


def _row(spec="rff", gen="conv", length=1.0, eps="1", seed=0, lr=0.7, cnn=0.6, **extra):
    return {"spec": spec, "generator": gen, "length": length, "epochs": 6, "steps": 600, "epsilon": eps,
            "seed": seed, "lr": lr, "cnn": cnn, "final_loss": 0.3, "fit_s": 50.0, "eval_s": 20.0, **extra}  # fmt: skip


def test_merge_keeps_old_rows_and_replaces_remeasured_ones(ic):
    old = [_row(eps="ceiling"), _row(eps="1"), _row(eps="10")]
    new = [_row(eps="1", lr=0.9), _row(length=4.0, eps="1"), _row(eps="1", seed=1)]
    merged = ic.merge(old, new)
    assert [(r["length"], r["epsilon"], r["seed"]) for r in merged] == [
        (1.0, "ceiling", 0), (1.0, "1", 0), (1.0, "10", 0), (4.0, "1", 0), (1.0, "1", 1)]  # fmt: skip
    assert merged[1]["lr"] == 0.9  # replaced in place
    assert ic.merge(old, []) == old


def test_merge_treats_integer_and_float_lengths_alike(ic):
    merged = ic.merge([_row(length=4)], [_row(length=4.0, lr=0.1)])
    assert len(merged) == 1 and merged[0]["lr"] == 0.1


def test_load_previous_backfills_machine_fields_and_drops_other_runs(ic, tmp_path):
    path = tmp_path / "ceiling.json"
    assert ic.load_previous(path, _header()) == []
    path.write_text(json.dumps({**_header(), "results": [_row()]}))
    (row,) = ic.load_previous(path, _header(machine="elsewhere"))
    assert row["threads"] == 2 and row["n_syn"] == 10_000 and row["machine"].startswith("x86_64")
    assert ic.load_previous(path, _header(n_validation=21)) == []  # another split: not comparable
    path.write_text("{not json")
    assert ic.load_previous(path, _header()) == []


def test_write_markdown_replaces_the_table_and_keeps_the_reading(ic, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\n## Other\n\ntext\n\n" + ic.HEADING + "\n\nold note\n\n| old | table |\n\n"
        "Reading (earlier): the gap is in the fit.\nSecond line.\n\n## Next section\n\nkept\n"
    )
    out = {**_header(), "results": [_row(eps="ceiling", lr=0.8, threads=1, load_before=1.0, load_after=2.5),
                                    _row(eps="1", lr=0.7, threads=1), _row(eps="1", seed=1, lr=0.72, threads=1)]}  # fmt: skip
    ic.write_markdown(out, doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\n## Other\n\ntext\n\n" + ic.HEADING)
    assert "old note" not in text and "| old | table |" not in text
    assert "Reading (earlier): the gap is in the fit.\nSecond line.\n\n## Next section\n\nkept\n" in text
    assert "| rff | conv | 1× | ceiling | 0.800 | 0.600 | 50 | 1 | 1.0–2.5 | 1 |" in text
    assert "| rff | conv | 1× | 1 | 0.710 (0.700–0.720) |" in text
    assert text.index("| ceiling |") < text.index("| 1 | 0.710")
    ic.write_markdown(out, doc)  # idempotent
    assert doc.read_text() == text


def test_write_markdown_appends_a_missing_section(ic, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    ic.write_markdown({**_header(), "results": [_row()]}, doc)
    assert doc.read_text().startswith("# Benchmarks\n\n" + ic.HEADING)
