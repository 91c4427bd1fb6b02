"""Herding (mmgen.select): exactness on a constructed case, beats i.i.d. draws on a real table release."""

import inspect

import pytest
import torch

import mmgen
import mmgen.select as select_module
from mmgen.errors import MMGenError
from mmgen.select import (_codes_part, _codes_projections, _gram_from_parts, _norms_and_projections, _table_codes,
                          embedding_error, herd, select_herding)  # fmt: skip

DELTA = 1e-5


def test_constructed_case_is_matched_exactly():
    # pool: 10 copies of each basis vector of R^3; the target is the mean of 5·e0, 3·e1, 2·e2
    pool = torch.eye(3).repeat(10, 1)  # (30, 3)
    target = torch.tensor([0.5, 0.3, 0.2])
    idx = herd(pool, target, 10)
    assert idx.dtype == torch.long and len(idx) == 10
    assert int(idx.min()) >= 0 and int(idx.max()) < 30 and len(set(idx.tolist())) == 10  # valid, distinct
    err = float((pool[idx].mean(0) - target).norm())
    assert err < 1e-12
    gen = torch.Generator().manual_seed(0)
    iid = [float((pool[torch.randint(0, 30, (10,), generator=gen)].mean(0) - target).norm()) for _ in range(50)]
    assert sum(iid) / len(iid) > 0.1  # i.i.d. draws are far off; herding is exact


def test_callable_features_and_replacement():
    gen = torch.Generator().manual_seed(1)
    pool = torch.randn(500, 8, generator=gen, dtype=torch.float64)
    target = pool[:40].mean(0)
    a = herd(pool, target, 40)
    b = herd(lambda s, e: pool[s:e], target, 40, size=500, chunk=64)
    assert torch.equal(a, b)
    assert float((pool[a].mean(0) - target).norm()) < 0.2 * float((pool[40:80].mean(0) - target).norm())
    r = herd(pool, target, 600, replace=True)  # more picks than rows: only with replacement
    assert len(r) == 600 and int(r.max()) < 500
    with pytest.raises(MMGenError, match="distinct"):
        herd(pool, target, 600)
    with pytest.raises(MMGenError, match="`n`"):
        herd(pool, target, 0)
    with pytest.raises(MMGenError, match="shape"):
        herd(pool, torch.zeros(7), 3)


@pytest.fixture(scope="module")
def slid_fit():
    from mmgen.data.examples import example_table

    frame, schema = example_table("carData/SLID")
    rel = mmgen.release(frame.head(1500), schema=schema, features="table-marginals", epsilon=3.0, delta=DELTA)
    trained = mmgen.fit("auto", rel, epochs=2, steps_per_epoch=30, batch_size=256, progress=False, seed=0)
    return rel, trained


def _ratio(rel, trained, x, y):
    """Herded-to-i.i.d. embedding error, summed over classes (the end-to-end threshold's measure)."""
    f, m = rel.feature_map(), rel.mean_embeddings()
    xi, yi = trained.sample(len(y), seed=3, labels=y)
    sel = sum(embedding_error(f, x[y == c], m[c]) for c in y.unique().tolist())
    iid = sum(embedding_error(f, xi[yi == c], m[c]) for c in y.unique().tolist())
    return sel / iid


def test_herding_beats_iid_on_a_real_table_release(slid_fit):
    rel, trained = slid_fit
    x, y = select_herding(trained, rel, 600, pool=4, seed=0)
    assert x.shape == (600, *rel.input_shape) and y.shape == (600,)
    counts = torch.bincount(y, minlength=rel.n_classes).double()
    assert torch.allclose(counts, rel.class_proportions() * 600, atol=1.0)  # rounded noisy proportions
    assert _ratio(rel, trained, x, y) < 0.8


def test_code_gram_equals_dense_gram(slid_fit):
    rel, trained = slid_fit
    f = rel.feature_map()
    x = trained.generator.sample(torch.zeros(200, dtype=torch.long), generator=torch.Generator().manual_seed(0))
    codes = _table_codes(f, x)
    assert codes is not None
    phi = f(x.double())
    sparse = _gram_from_parts([("codes", 2.0, _codes_part(f, codes))], 200)
    dense = _gram_from_parts([("dense", 2.0, phi)], 200)
    for j in (0, 17, 199):
        assert torch.allclose(sparse(j), dense(j), atol=1e-12)


def test_code_projections_equal_dense_ones(slid_fit):
    """Norms and target projections gathered from codes equal a dense pass over the features (fine ≠ coarse codes)."""
    rel, trained = slid_fit
    f, m = rel.feature_map(), rel.mean_embeddings()[0]
    x = trained.generator.sample(torch.zeros(300, dtype=torch.long), generator=torch.Generator().manual_seed(1))
    fine, coarse = _table_codes(f, x)
    assert not torch.equal(fine, coarse)  # SLID's numbers: 129 fine cells inside 16-17 coarse bins
    target = m + 0.01 * torch.randn(len(m), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    norms, h = _codes_projections(f, fine, coarse, target)
    dense_norms, dense_h = _norms_and_projections(f(x.double()), target, 300, 64)
    assert torch.allclose(norms, dense_norms, atol=1e-12) and torch.allclose(h, dense_h, atol=1e-12)
    assert h.std() > 0  # rows differ: a constant would not test the gather
    with pytest.raises(MMGenError, match="entries"):
        _codes_projections(f, fine, coarse, target[:-1])


def test_distinct_rows_herd_as_the_pool_does():
    """Herding distinct rows with their copies picks exactly what herding the pool picks (a pool full of repeats,
    ties between different rows included), every pick a real pool index, each at most once."""
    from mmgen.select import _code_groups, _distinct, _herd_codes_batched

    gen = torch.Generator().manual_seed(0)
    b, k, m, n = 3, 4, 300, 120
    fine = torch.randint(0, 3, (b, k, m), generator=gen, dtype=torch.int16)  # 81 possible rows: many repeats
    coarse = fine // 2
    h = torch.rand(b, m, generator=gen, dtype=torch.float64).round(decimals=1)  # coarse values: exact ties
    key = torch.cat([fine, coarse], dim=1)
    same = (key[:, :, :, None] == key[:, :, None, :]).all(dim=1)  # (B, M, M): rows with the same codes
    h = torch.stack([h[i][same[i].float().argmax(dim=0)] for i in range(b)])  # equal codes -> equal projections
    score, h2 = 1.0 - 2.0 * h, 2.0 * h
    v2, a = [1.0, 0.5, 2.0, 1.0], [1.0, 1.5, 1.0, 0.5]
    plain = _herd_codes_batched(score.clone(), h2, [(1.0, _code_groups(fine, coarse, v2, a), True, 0.3)], n)
    first, left, start, order = _distinct(key)
    assert first.shape[1] < m / 2
    pick = first[:, None, :].expand(-1, k, -1)
    groups = _code_groups(fine.gather(2, pick), coarse.gather(2, pick), v2, a)
    distinct = _herd_codes_batched(torch.where(left > 0, score.gather(1, first), torch.inf), h2.gather(1, first),
                                   [(1.0, groups, True, 0.3)], n, copies=(left, start, order))  # fmt: skip
    assert torch.equal(plain, distinct)
    assert all(len(set(row.tolist())) == n for row in distinct)


def test_takes_a_release_and_a_generator_only(slid_fit):
    rel, trained = slid_fit
    params = list(inspect.signature(select_herding).parameters)
    assert params[:3] == ["trained", "release", "n"]
    from mmgen.data.examples import example_table

    frame, _ = example_table("carData/SLID")
    with pytest.raises(MMGenError, match="Release"):
        select_herding(trained, frame, 10)
    other = mmgen.release(frame.head(300), schema=example_table("carData/SLID")[1], features="table-marginals",
                          epsilon=3.0, delta=DELTA)  # fmt: skip
    with pytest.raises(MMGenError, match="another release"):
        select_herding(trained, other, 10)
    with pytest.raises(MMGenError, match="`pool`"):
        select_herding(trained, rel, 10, pool=0)


def test_a_broken_selector_fails_the_threshold(slid_fit, monkeypatch):
    rel, trained = slid_fit

    def random_indices(features, target, n, *, size=None, **kw):
        m = size if size is not None else len(features)
        return torch.randperm(m, generator=torch.Generator().manual_seed(5))[:n]

    def random_batched(score, h2, parts, n, progress=False, copies=None):
        gen = torch.Generator().manual_seed(5)
        m = score.shape[1] if copies is None else copies[2].shape[1]  # the pool's size
        return torch.stack([torch.randperm(m, generator=gen)[:n] for _ in range(score.shape[0])])

    monkeypatch.setattr(select_module, "herd", random_indices)
    monkeypatch.setattr(select_module, "_herd_codes_batched", random_batched)
    x, y = select_herding(trained, rel, 600, pool=4, seed=0)
    assert _ratio(rel, trained, x, y) >= 0.8


@pytest.mark.parametrize("distinct", [0.0, 1.0])
def test_blocks_herded_together_pick_what_each_would_pick_alone(slid_fit, monkeypatch, distinct):
    """The batched loop (every block of one size at once), on the pools or on their distinct rows with their numbers
    of copies, equals herding each block alone with its Gram columns."""
    rel, trained = slid_fit
    monkeypatch.setattr(select_module, "DISTINCT", distinct)
    together = select_herding(trained, rel, 333, pool=2, seed=3, block=50)  # 7 blocks of 47-48 rows, batched
    monkeypatch.setattr(select_module, "BATCH_BLOCKS", False)
    monkeypatch.setattr(select_module, "_herd_codes_batched", None)  # any use of the batched loop would now fail
    one_by_one = select_herding(trained, rel, 333, pool=2, seed=3, block=50)
    assert torch.equal(together[0], one_by_one[0]) and torch.equal(together[1], one_by_one[1])


def test_image_release_through_the_cli(digits, tmp_path, capsys):
    import numpy as np

    from mmgen.cli import main

    rel = mmgen.release(digits, features=mmgen.features.create("rff", n_features=64, seed=0), epsilon=1.0, delta=DELTA)
    path = rel.save(tmp_path / "digits.mmgen")
    ckpt = tmp_path / "g.ckpt"
    tiny = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16", "--quiet"]
    assert main(["fit", str(path), "--out", str(ckpt), *tiny]) == 0
    out = tmp_path / "s.npz"
    assert main(["sample", str(ckpt), "--n", "50", "--out", str(out), "--select", "herding", "--pool", "3",
                 "--release", str(path)]) == 0  # fmt: skip
    with np.load(out) as z:
        x, y = torch.as_tensor(z["x"]), torch.as_tensor(z["y"])
    assert x.shape == (50, 1, 8, 8) and y.shape == (50,)
    trained = mmgen.Trained.load(ckpt)
    assert _ratio(rel, trained, x, y) < 1.0
    capsys.readouterr()
    assert main(["sample", str(ckpt), "--n", "5", "--out", str(out), "--select", "herding"]) == 2
    assert "--release" in capsys.readouterr().err
    assert main(["sample", str(ckpt), "--n", "5", "--out", str(out), "--select", "herding", "--pool", "0",
                 "--release", str(path)]) == 2  # fmt: skip


def test_table_default_herds_when_the_release_is_given(slid_fit, tmp_path, capsys):
    import pandas as pd

    from mmgen.cli import main

    rel, trained = slid_fit
    path, ckpt = rel.save(tmp_path / "slid.mmgen"), trained.save(tmp_path / "slid.ckpt")
    out = tmp_path / "s.csv"
    assert main(["sample", str(ckpt), "--n", "80", "--out", str(out), "--release", str(path), "--pool", "2"]) == 0
    assert len(pd.read_csv(out)) == 80 and "i.i.d." not in capsys.readouterr().err
    assert main(["sample", str(ckpt), "--n", "80", "--out", str(out)]) == 0  # no release: i.i.d., and it says so
    assert "--release" in capsys.readouterr().err
    assert main(["sample", str(ckpt), "--n", "8", "--out", str(out), "--select", "iid", "--release", str(path)]) == 2


def test_class_sizes_are_the_largest_remainder_rounding_of_the_noisy_proportions():
    """Per class, herding keeps exactly ⌊p_c·n⌋ rows, plus one for the largest remainders: the counts sum to n."""
    from mmgen.data.examples import example_table

    frame, schema = example_table("AER/CPS1988")
    rel = mmgen.release(frame.head(1500), schema=schema, features="table-marginals", epsilon=1.0, delta=DELTA)
    trained = mmgen.fit("auto", rel, epochs=1, steps_per_epoch=10, batch_size=128, progress=False, seed=0)
    for n, block in ((1, 25_000), (7, 25_000), (333, 25_000), (333, 50)):  # blocks of at most 50 rows: the same counts
        _, y = select_herding(trained, rel, n, pool=2, seed=0, block=block)
        exact = rel.class_proportions() * n
        want = exact.floor().long()
        want[torch.argsort(exact - want, descending=True)[: n - int(want.sum())]] += 1
        assert torch.equal(torch.bincount(y, minlength=rel.n_classes), want) and len(y) == n


def test_rounds_toward_the_corrected_target_beat_independent_blocks(slid_fit, monkeypatch):
    """Blocks herded in rounds, each toward the target corrected for the rows picked before, match the release
    better than the same blocks herded independently (the union's error, not each block's)."""
    rel, trained = slid_fit
    f, m = rel.feature_map(), rel.mean_embeddings()

    def error(x, y):
        return sum(embedding_error(f, x[y == c], m[c]) for c in y.unique().tolist())

    rounds = error(*select_herding(trained, rel, 800, pool=2, seed=1, block=100))
    monkeypatch.setattr(select_module, "ROUNDS", 1)
    independent = error(*select_herding(trained, rel, 800, pool=2, seed=1, block=100))
    assert rounds < 0.95 * independent, (rounds, independent)  # measured 0.040 vs 0.046


def test_auto_pool_follows_the_release_noise(slid_fit):
    from mmgen.data.examples import example_table
    from mmgen.select import AUTO_POOL, QUIET_RELEASE, auto_block, auto_pool, release_noise

    frame, schema = example_table("carData/SLID")
    noisy, _ = slid_fit  # 1,500 rows at eps 3: nu above the threshold
    quiet = mmgen.release(frame, schema=schema, features="table-marginals", epsilon=30.0, delta=DELTA, noise_seed=0)
    loud = mmgen.release(frame, schema=schema, features="table-marginals", epsilon=0.1, delta=DELTA, noise_seed=0)
    assert release_noise(loud) > release_noise(noisy) > QUIET_RELEASE > release_noise(quiet) > 0
    assert (auto_pool(loud), auto_pool(noisy), auto_pool(quiet)) == (AUTO_POOL[0], AUTO_POOL[0], AUTO_POOL[1])
    # nu is the noise norm over the mean embedding: ten times the epsilon-scale noise, about ten times nu
    loud = mmgen.release(frame, schema=schema, features="table-marginals", epsilon=3.0, delta=DELTA, noise_seed=0)
    assert 5 < release_noise(loud) / release_noise(quiet) < 15
    images = mmgen.release(torch.rand(200, 1, 8, 8), torch.arange(200) % 2, features="rff", epsilon=1e6, n_classes=2,
                           delta=DELTA, noise_seed=0)  # fmt: skip
    assert auto_pool(images) == AUTO_POOL[0]  # the rule was chosen on table releases only
    assert [auto_block(n, p) for n, p in ((5_000, 8), (200_000, 2), (200_000, 8), (10**7, 8))] == [1000, 1000, 250, 250]


def test_auto_pool_and_block_are_the_defaults(slid_fit, monkeypatch):
    rel, trained = slid_fit
    seen = []
    real = select_module.herd

    def spy(features, target, n, *, size=None, **kw):
        seen.append((n, size))
        return real(features, target, n, size=size, **kw)

    monkeypatch.setattr(select_module, "BATCH_BLOCKS", False)
    monkeypatch.setattr(select_module, "herd", spy)
    x, y = select_herding(trained, rel, 300, seed=0)  # noisy release: pool 2, one block per class
    assert len(y) == 300 and all(size == 2 * n for n, size in seen)
    with pytest.raises(MMGenError, match="`pool`"):
        select_herding(trained, rel, 10, pool="big")
    with pytest.raises(MMGenError, match="`block`"):
        select_herding(trained, rel, 10, block="big")


def test_cli_pool_takes_an_integer_or_auto(capsys):
    from mmgen.cli import build_parser

    parser = build_parser()
    common = ["sample", "g.ckpt", "--n", "5", "--out", "s.csv"]
    assert parser.parse_args(common).pool == "auto"
    assert parser.parse_args([*common, "--pool", "3"]).pool == 3
    with pytest.raises(SystemExit):
        parser.parse_args([*common, "--pool", "big"])
    assert "integer or auto" in capsys.readouterr().err


def test_pool_one_is_the_iid_sample(slid_fit, monkeypatch):
    rel, trained = slid_fit
    monkeypatch.setattr(select_module, "herd", lambda *a, **k: pytest.fail("pool 1 herds nothing"))
    x, y = select_herding(trained, rel, 400, pool=1, seed=5)
    sizes = torch.bincount(y, minlength=rel.n_classes)
    assert int(sizes.sum()) == 400 and bool((y[1:] >= y[:-1]).all())  # class by class
    again = trained.generator.sample(y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x, again.float())  # exactly the generator's draws for those labels
