"""The Triton kernels against their torch references, run on the CPU under ``TRITON_INTERPRET=1``.

``TRITON_INTERPRET`` must be set before ``triton`` is first imported, and the
rest of the suite must not run in interpreter mode. So in the normal pytest
process this module holds one driver test that re-runs this very file in a
subprocess with ``TRITON_INTERPRET=1``; there the driver skips and the kernel
tests run. Shapes are small (the interpreter executes every program in numpy).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
in_child = pytest.mark.skipif(not INTERPRET, reason="runs in the TRITON_INTERPRET=1 subprocess (see test_interpreted_kernels)")


@pytest.mark.skipif(INTERPRET, reason="this is the subprocess")
def test_interpreted_kernels():
    """Runs the kernel tests of this file in a subprocess with ``TRITON_INTERPRET=1``."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" in proc.stdout  # the child really ran the kernel tests


if INTERPRET:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    import mmgen
    from mmgen.kernels import (
        rff_class_sums,
        rff_class_sums_reference,
        rff_matching_loss,
        rff_matching_loss_reference,
    )

    @st.composite
    def _problem(draw):
        n = draw(st.integers(0, 80))  # ragged against BLOCK_N = 32, includes empty
        d = draw(st.integers(1, 40))  # ragged against BLOCK_K = 32
        f = draw(st.integers(1, 80))  # ragged against BLOCK_F = 64
        c = draw(st.sampled_from([1, 2, 3, 7, 16, 17]))
        seed = draw(st.integers(0, 2**16))
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand(n, d, generator=gen)
        w = torch.randn(d, f, generator=gen) * 2
        y = torch.randint(0, c, (n,), generator=gen)
        if n and draw(st.booleans()):
            y[-1] = c - 1  # the last class gets a lone record at the ragged tail
            y[y == c - 1] = 0
            y[-1] = c - 1
        return x, w, y, c

    @in_child
    @settings(max_examples=25, deadline=None)
    @given(_problem())
    def test_class_sums_kernel_matches_reference(problem):
        x, w, y, c = problem
        got = rff_class_sums(x, w, y, c, backend="triton")
        want = rff_class_sums_reference(x.double(), w.double(), y, c)
        assert got.shape == want.shape and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-5 * max(1, len(x)) ** 0.5)

    @in_child
    def test_class_sums_kernel_many_classes_and_deterministic():
        """More classes than one launch holds (several launches), bitwise equal on a re-run."""
        gen = torch.Generator().manual_seed(0)
        x, w = torch.rand(90, 9, generator=gen), torch.randn(9, 70, generator=gen)
        y = torch.arange(90) % 70  # 70 classes, 20 of them with two records, 50 with one
        got = rff_class_sums(x, w, y, 70, backend="triton")
        torch.testing.assert_close(got.double(), rff_class_sums_reference(x.double(), w.double(), y, 70), rtol=0, atol=2e-6)
        assert torch.equal(got, rff_class_sums(x, w, y, 70, backend="triton"))

    @in_child
    @settings(max_examples=15, deadline=None)
    @given(_problem(), st.booleans())
    def test_fused_loss_value_and_gradients_match_reference(problem, unbiased):
        x, w, y, c = problem
        if len(x) == 0:
            return
        gen = torch.Generator().manual_seed(len(x))
        t = torch.randn(c, 2 * w.shape[1], generator=gen) * 0.1
        xs = [x.clone().requires_grad_() for _ in range(2)]
        ws = [w.clone().requires_grad_() for _ in range(2)]
        ts = [t.clone().requires_grad_() for _ in range(2)]
        got = rff_matching_loss(xs[0], ws[0], y, ts[0], backend="triton", unbiased=unbiased)
        want = rff_matching_loss_reference(xs[1].double(), ws[1].double(), y, ts[1].double(), unbiased=unbiased)
        torch.testing.assert_close(got.double(), want.detach(), rtol=1e-4, atol=1e-5)
        (got * 1.5).backward()
        (want * 1.5).backward()
        for a, b in ((xs, "x"), (ws, "weights"), (ts, "targets")):
            torch.testing.assert_close(a[0].grad.double(), a[1].grad.double(), rtol=1e-3, atol=1e-4, msg=f"grad of {b}")

    @in_child
    def test_feature_map_uses_the_fused_loss():
        fmap = mmgen.features.create("rff", input_shape=(1, 8, 8), n_features=48, seed=2, backend="triton")
        ref = mmgen.features.create("rff", input_shape=(1, 8, 8), n_features=48, seed=2, backend="torch")
        ds = mmgen.data.load_digits()
        x, y = ds.x_train[:50].clone().requires_grad_(), ds.y_train[:50]
        x2 = x.detach().clone().requires_grad_()
        targets = ref.class_sums(ds.x_train[50:300], ds.y_train[50:300], 10) / 25.0
        got, want = fmap.matching_loss(x, y, targets), ref.matching_loss(x2, y, targets)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        got.backward()
        want.backward()
        torch.testing.assert_close(x.grad, x2.grad, rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(fmap.class_sums(ds.x_train, ds.y_train, 10), ref.class_sums(ds.x_train, ds.y_train, 10), rtol=0, atol=1e-4)

    @in_child
    def test_triton_rejects_float64():
        from mmgen.errors import BackendError

        with pytest.raises(BackendError, match="float32"):
            rff_class_sums(torch.rand(3, 2, dtype=torch.float64), torch.rand(2, 4, dtype=torch.float64), torch.zeros(3, dtype=torch.long), 1, backend="triton")
