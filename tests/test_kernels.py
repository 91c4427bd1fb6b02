"""The torch references of mmgen.kernels: oracles, gradients, the backend switch, bounded memory.

The Triton kernels themselves are checked against these references in
``test_kernels_interpret.py`` (under ``TRITON_INTERPRET=1``, in a subprocess).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmgen
from mmgen.errors import BackendError, DataError
from mmgen.features.base import FeatureMap
from mmgen.kernels import backend as backend_mod
from mmgen.kernels import (
    rff_class_sums,
    rff_class_sums_reference,
    rff_features,
    rff_matching_loss,
    rff_matching_loss_reference,
)


def _naive_class_sums(x, w, y, c):
    phi = rff_features(x, w)  # (N, 2F), materialised: the oracle
    return torch.zeros(c, phi.shape[1], dtype=phi.dtype).index_add(0, y, phi)


@st.composite
def _problem(draw, max_n=60):
    n = draw(st.integers(0, max_n))
    d = draw(st.integers(1, 12))
    f = draw(st.integers(1, 20))
    c = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=torch.float64)
    w = torch.randn(d, f, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, c, (n,), generator=gen)
    return x, w, y, c


@settings(max_examples=40, deadline=None)
@given(_problem(), st.integers(1, 17))
def test_streamed_reference_matches_materialised_oracle(problem, chunk):
    """Ragged chunks give the same sums as the materialised (N, D) matrix."""
    x, w, y, c = problem
    got = rff_class_sums_reference(x, w, y, c, chunk=chunk)
    assert got.shape == (c, 2 * w.shape[1]) and got.dtype == torch.float64
    torch.testing.assert_close(got, _naive_class_sums(x, w, y, c), rtol=1e-12, atol=1e-12)


def test_one_record_classes_have_unit_norm_rows():
    """A class with one record holds exactly φ(x), of norm 1 (the sensitivity bound)."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.rand(3, 5, generator=gen), torch.randn(5, 7, generator=gen)
    sums = rff_class_sums_reference(x, w, torch.tensor([0, 2, 4]), 5, chunk=2)
    torch.testing.assert_close(sums.norm(dim=1), torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]))


def test_float32_reference_close_to_float64():
    gen = torch.Generator().manual_seed(1)
    x, w, y = torch.rand(500, 30, generator=gen), torch.randn(30, 64, generator=gen), torch.randint(0, 10, (500,), generator=gen)
    got = rff_class_sums_reference(x, w, y, 10, chunk=128)
    want = _naive_class_sums(x.double(), w.double(), y, 10)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-4)


def test_reference_rejects_bad_shapes():
    with pytest.raises(DataError, match="weights of shape"):
        rff_class_sums_reference(torch.rand(3, 4), torch.rand(5, 2), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(DataError, match="y of shape"):
        rff_class_sums_reference(torch.rand(3, 4), torch.rand(4, 2), torch.zeros(2, dtype=torch.long), 2)


def test_class_sums_reference_gradcheck_float64():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 1, 2, 0, 2, 2])
    assert torch.autograd.gradcheck(lambda a, b: rff_class_sums_reference(a, b, y, 3, chunk=3), (x, w))


@pytest.mark.parametrize("unbiased", [False, True])
def test_matching_loss_reference_gradcheck_float64(unbiased):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(10, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    t = (torch.randn(5, 10, generator=gen, dtype=torch.float64) * 0.2).requires_grad_()
    y = torch.tensor([0, 0, 1, 3, 3, 3, 1, 0, 3, 4])  # class 2 absent, class 4 a lone record
    assert torch.autograd.gradcheck(lambda a, b, c: rff_matching_loss_reference(a, b, y, c, unbiased=unbiased), (x, w, t))


# -- the backend switch --------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available() or backend_mod.interpret_mode(), reason="needs a machine without a GPU")
def test_triton_without_gpu_raises():
    x, w, y = torch.rand(4, 3), torch.rand(3, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(BackendError, match="triton"):
        rff_class_sums(x, w, y, 2, backend="triton")
    with pytest.raises(BackendError, match="triton"):
        rff_matching_loss(x, w, y, torch.zeros(2, 4), backend="triton")


def test_unknown_backend_raises():
    with pytest.raises(BackendError, match="backend"):
        rff_class_sums(torch.rand(4, 3), torch.rand(3, 2), torch.zeros(4, dtype=torch.long), 2, backend="cuda")


def test_auto_says_what_it_chose(caplog, monkeypatch):
    monkeypatch.setattr(backend_mod, "_announced", set())
    x, w, y = torch.rand(4, 3), torch.rand(3, 2), torch.zeros(4, dtype=torch.long)
    with caplog.at_level(logging.INFO, logger="mmgen.kernels"):
        out = rff_class_sums(x, w, y, 2, backend="auto")
    assert "rff_class_sums: backend='auto' chose 'torch'" in caplog.text
    torch.testing.assert_close(out, _naive_class_sums(x, w, y, 2))


# -- wiring into the feature map -------------------------------------------------
@pytest.mark.parametrize("unbiased", [False, True])
def test_rff_matching_loss_equals_base_implementation(unbiased):
    """RandomFourierFeatures.matching_loss (torch backend) = FeatureMap.matching_loss: value and gradients."""
    fmap = mmgen.features.create("rff", input_shape=(1, 4, 4), n_features=24, seed=5, backend="torch")
    gen = torch.Generator().manual_seed(6)
    targets = torch.randn(5, 24, generator=gen) * 0.1
    y = torch.tensor([0, 1, 1, 4, 4, 4, 0, 1])  # classes 2 and 3 absent
    x = torch.rand(8, 1, 4, 4, generator=gen)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    t1, t2 = targets.clone().requires_grad_(), targets.clone().requires_grad_()
    got = fmap.matching_loss(x1, y, t1, unbiased=unbiased)
    want = FeatureMap.matching_loss(fmap, x2, y, t2, unbiased=unbiased)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    got.backward()
    want.backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(t1.grad, t2.grad, rtol=1e-5, atol=1e-7)


def test_rff_class_sums_method_matches_oracle():
    fmap = mmgen.features.create("rff", input_shape=(1, 8, 8), n_features=40, seed=1, backend="torch")
    ds = mmgen.data.load_digits()
    x, y = ds.x_train[:300], ds.y_train[:300]
    torch.testing.assert_close(
        fmap.class_sums(x, y, 10), torch.zeros(10, 40).index_add(0, y, fmap(x)), rtol=1e-5, atol=1e-4
    )


# -- bounded memory -----------------------------------------------------------------
_STREAM_SCRIPT = textwrap.dedent(
    """
    import resource, torch
    from mmgen.kernels import rff_class_sums_reference
    def hwm_kb():  # this process's RSS high-water (ru_maxrss would include the parent's RSS at fork)
        try:
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.set_num_threads(1)
    d, f, c, batch = 64, 32, 10, 20_000
    w = torch.randn(d, f)
    def stream(n):
        gen = torch.Generator().manual_seed(0)
        for start in range(0, n, batch):
            m = min(batch, n - start)
            yield torch.rand(m, d, generator=gen), torch.randint(0, c, (m,), generator=gen)
    acc = torch.zeros(c, 2 * f, dtype=torch.float64)
    for xb, yb in stream(2 * batch):  # warm-up: allocator and kernels
        acc += rff_class_sums_reference(xb, w, yb, c).double()
    base = hwm_kb()
    acc.zero_()
    for xb, yb in stream(1_000_000):
        acc += rff_class_sums_reference(xb, w, yb, c).double()
    peak = hwm_kb()
    print(int(acc[:, f:].sum().item() != 0), (peak - base) // 1024, base // 1024)
    """
)


def test_one_million_records_stream_in_bounded_memory():
    """Streaming 1,000,000 records (256 MB of float32 data) raises the RSS high-water by far less."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", _STREAM_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    nonzero, grown_mb, base_mb = proc.stdout.split()
    assert nonzero == "1" and int(base_mb) < 4096  # the high-water is this process's own
    assert int(grown_mb) < 48, f"peak RSS grew by {grown_mb} MB while streaming 1,000,000 records"


def test_unbiased_loss_is_the_pairwise_u_statistic_and_unbiased():
    """The unbiased loss equals ‖t‖² − 2⟨t, mean⟩ + mean_{i≠j} ⟨φ_i, φ_j⟩ per class, and its average over
    batches drawn from a finite population is exactly ‖t − μ‖² (the biased one overshoots by tr Cov / n)."""
    from mmgen.features.base import class_mean_matching_loss

    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    t = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    want = 0.0
    for c in (0, 1):
        p = phi[y == c]
        pairs = [float(p[i] @ p[j]) for i in range(3) for j in range(3) if i != j]
        want += float(t[c] @ t[c]) - 2 * float(t[c] @ p.mean(0)) + sum(pairs) / len(pairs)
    assert float(class_mean_matching_loss(phi, y, t, unbiased=True)) == pytest.approx(want, rel=1e-12)
    # exact expectation over every batch of 3 i.i.d. uniform draws (with replacement) from a population of 5
    import itertools

    pop = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(1, 3, generator=gen, dtype=torch.float64)
    truth = float(((target[0] - pop.mean(0)) ** 2).sum())
    batches = list(itertools.product(range(5), repeat=3))
    lab = torch.zeros(3, dtype=torch.long)
    mean_u = sum(float(class_mean_matching_loss(pop[list(b)], lab, target, unbiased=True)) for b in batches) / len(batches)
    mean_b = sum(float(class_mean_matching_loss(pop[list(b)], lab, target)) for b in batches) / len(batches)
    assert mean_u == pytest.approx(truth, rel=1e-10, abs=1e-12)
    assert mean_b > truth + 1e-3  # the biased estimate is biased upwards
