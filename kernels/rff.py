"""Random-Fourier embedding sums and the RFF matching loss: torch references (the spec) and dispatch.

With frequencies ``W`` (d, F) and ``D = 2F`` (Rahimi & Recht 2007; Harder et
al., DP-MERF, AISTATS 2021, eq. 5 and 7):

    φ(x) = [cos(xW), sin(xW)] / sqrt(F)                      (one record → (D,))
    S[c] = Σ_{i : y_i = c} φ(x_i)                            (class sums, (C, D))
    L    = Σ_{c : n_c > 0} ‖t_c − S[c] / n_c‖²               (matching loss, n_c = #{i : y_i = c})

The class-sum reference streams the records in chunks through one reused
buffer, so the (N, D) feature matrix never exists: peak memory is
O(chunk · F + C · D) whatever N is, and beside the GEMM ``xW`` it only adds
an in-place cos/sin pass and a one-hot GEMM (C rows) that sums per class.

Every op takes ``backend="auto" | "torch" | "triton"`` (see
:mod:`mmgen.kernels.backend`); the Triton kernels live in
:mod:`mmgen.kernels.rff_triton` and are imported only when chosen.
"""

from __future__ import annotations

import math
import threading

import torch

from mmgen.errors import DataError

from .backend import resolve_backend

__all__ = [
    "rff_features",
    "rff_class_sums",
    "rff_class_sums_reference",
    "rff_matching_loss",
    "rff_matching_loss_reference",
    "DEFAULT_CHUNK",
    "clear_workspace",
]

DEFAULT_CHUNK = 4096  # records per chunk of the streamed reference (one release batch)


def rff_features(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """φ(x) for a batch.

    Args:
        x ((N, d) Tensor): records, flattened.
        weights ((d, F) Tensor): frequencies.

    Returns:
        (N, 2F) Tensor: ``[cos(xW), sin(xW)] / sqrt(F)``, rows of norm exactly 1.
    """
    proj = x @ weights  # (N, d) @ (d, F) -> (N, F)
    return torch.cat([torch.cos(proj), torch.sin(proj)], dim=1) / math.sqrt(weights.shape[1])


_workspace = threading.local()


def _work_buffer(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised buffer of ``shape``, reused across calls on CPU (one per thread).

    The release path calls the class sums once per batch; a fresh (2, chunk, F)
    buffer each time costs its page faults every batch (about a quarter of the
    time at F = 5,000). CUDA tensors use the caching allocator instead.
    """
    numel = math.prod(shape)
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    buf = getattr(_workspace, "buf", None)
    if buf is None or buf.dtype != dtype or buf.numel() < numel:
        _workspace.buf = None  # drop the old one before allocating the new one
        buf = _workspace.buf = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(shape)


def clear_workspace() -> None:
    """Frees this thread's reused CPU work buffer (about ``2 · chunk · F`` floats)."""
    _workspace.buf = None


def _check_inputs(x: torch.Tensor, weights: torch.Tensor, y: torch.Tensor, n_classes: int) -> None:
    if x.ndim != 2 or weights.ndim != 2 or x.shape[1] != weights.shape[0]:
        raise DataError(f"Expected x of shape (N, d) and weights of shape (d, F). Got {tuple(x.shape)} and {tuple(weights.shape)}.")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"Expected y of shape ({len(x)},). Got {tuple(y.shape)}.")
    if not isinstance(n_classes, int) or n_classes < 1:
        raise DataError(f"`n_classes` must be a positive integer. Got {n_classes!r}.")


def rff_class_sums_reference(
    x: torch.Tensor, weights: torch.Tensor, y: torch.Tensor, n_classes: int, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """Class-conditional sums ``S[c] = Σ_{y_i = c} φ(x_i)``, streamed over chunks of records.

    Per chunk of ``chunk`` records, with one reused (2, chunk, F) buffer
    ``B``: one GEMM ``B[1] = x_chunk W``, ``B[0] = cos B[1]``, ``sin`` in place
    on ``B[1]``, and the class sums of both halves as one batched one-hot GEMM
    ``E B`` with ``E`` (C, chunk). No clone, no concatenation, no (N, 2F)
    matrix; the buffer is kept for the next call on CPU (see
    :func:`clear_workspace`). Labels must lie in ``[0, n_classes)`` (the release validates
    them). When autograd is recording for ``x`` or ``weights`` the plain
    differentiable formula is used instead.

    Args:
        x ((N, d) Tensor): records, flattened.
        weights ((d, F) Tensor): frequencies.
        y ((N,) Tensor): int64 labels in ``[0, n_classes)``.
        n_classes: C.
        chunk: records per chunk (bounds the peak memory: ``2 · chunk · F`` floats).

    Returns:
        (C, 2F) Tensor in the dtype of ``x``.
    """
    _check_inputs(x, weights, y, n_classes)
    if not isinstance(chunk, int) or chunk < 1:
        raise DataError(f"`chunk` must be a positive integer. Got {chunk!r}.")
    n, f = len(x), weights.shape[1]
    y = y.to(device=x.device, dtype=torch.int64)
    scale = 1.0 / math.sqrt(f)
    out = torch.zeros(n_classes, 2 * f, dtype=x.dtype, device=x.device)
    if torch.is_grad_enabled() and (x.requires_grad or weights.requires_grad):
        return out.index_add(0, y, rff_features(x, weights))  # (C, D) += rows of (N, D) by label
    if n == 0:
        return out
    out2 = out.view(n_classes, 2, f).transpose(0, 1)  # (2, C, F) view: [cos sums, sin sums]
    m = min(chunk, n)
    buf = _work_buffer((2, m, f), x.dtype, x.device)  # reused between calls on CPU
    onehot_buf = torch.zeros(n_classes, m, dtype=x.dtype, device=x.device)
    for start in range(0, n, chunk):
        xb, yb = x[start : start + chunk], y[start : start + chunk]
        nb = len(xb)
        trig = buf[:, :nb]  # (2, n, F)
        torch.mm(xb, weights, out=trig[1])  # (n, d) @ (d, F) -> (n, F) = P
        torch.cos(trig[1], out=trig[0])
        trig[1].sin_()
        onehot = onehot_buf[:, :nb]
        onehot.zero_()
        onehot[yb, torch.arange(nb, device=x.device)] = 1.0  # (C, n) one-hot of the labels
        out2 += torch.matmul(onehot, trig)  # (C, n) @ (2, n, F) -> (2, C, F)
    return out.mul_(scale)


def rff_class_sums(
    x: torch.Tensor,
    weights: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    backend: str = "auto",
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Class-conditional random-Fourier sums, on the chosen backend.

    See :func:`rff_class_sums_reference` for the arguments; ``backend`` is
    ``"auto" | "torch" | "triton"``. The Triton kernel takes float32 inputs and
    returns float32; it is deterministic (no atomics).

    Raises:
        BackendError: ``backend="triton"`` where Triton cannot run, or a dtype it does not take.
    """
    chosen = resolve_backend(backend, x.device, "rff_class_sums")
    if chosen == "triton":
        from .rff_triton import rff_class_sums_triton  # needs triton, an optional dependency

        _check_inputs(x, weights, y, n_classes)
        return rff_class_sums_triton(x, weights, y, n_classes)
    return rff_class_sums_reference(x, weights, y, n_classes, chunk=chunk)


def rff_matching_loss_reference(
    x: torch.Tensor, weights: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, *, unbiased: bool = False
) -> torch.Tensor:
    """The matching loss ``Σ_{c present} ‖t_c − mean_{y_i = c} φ(x_i)‖²`` in plain, differentiable torch.

    The same formula as :func:`mmgen.features.base.class_mean_matching_loss` (biased or
    unbiased) with ``φ`` the random-Fourier map.

    Args:
        x ((B, d) Tensor): generated records, flattened.
        weights ((d, F) Tensor): frequencies.
        y ((B,) Tensor): int64 labels in ``[0, C)``.
        targets ((C, 2F) Tensor): released class-wise mean embeddings.
        unbiased: the unbiased (U-statistic) estimate instead of DP-MERF's biased one.

    Returns:
        A scalar tensor.
    """
    from mmgen.features.base import class_mean_matching_loss  # here, not at the top: mmgen.features.rff imports this module

    return class_mean_matching_loss(rff_features(x, weights), y, targets, unbiased=unbiased)  # features (B, 2F)


class _FusedMatchingLoss(torch.autograd.Function):
    """The matching loss with the Triton class-sum kernel forward and the fused gradient kernel backward."""

    @staticmethod
    def forward(ctx, x, weights, y, targets, unbiased):
        from mmgen.features.base import matching_loss_from_sums  # as in rff_matching_loss_reference (a circle)

        from .rff_triton import rff_class_sums_triton  # needs triton, an optional dependency

        n_classes = targets.shape[0]
        sums = rff_class_sums_triton(x, weights, y, n_classes)  # (C, 2F)
        counts = torch.bincount(y, minlength=n_classes).to(torch.float32)
        present = counts > 0
        t = targets.to(torch.float32)
        residual = torch.zeros_like(sums)  # r_c = S_c/n_c − t_c: ∂L/∂t_c = −2 r_c for both estimates
        residual[present] = sums[present] / counts[present, None] - t[present]
        grad_residual = residual
        if unbiased:
            # every RFF row has norm 1, so Σ‖φ_i‖² = n; ∂L/∂S = (2/n)(S/(n − 1) − t) for n > 1:
            # the backward kernel takes S/(n − 1) − t as its residual.
            many = counts > 1
            grad_residual = residual.clone()
            grad_residual[many] = sums[many] / (counts[many, None] - 1) - t[many]
        value = matching_loss_from_sums(sums, counts, t, squares=counts if unbiased else None)
        ctx.save_for_backward(x, weights, y, residual, grad_residual, counts)
        ctx.targets_dtype = targets.dtype
        return value.to(targets.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        from .rff_triton import rff_loss_grad_triton  # needs triton (only reached after forward ran on Triton)

        x, weights, y, residual, grad_residual, counts = ctx.saved_tensors
        f = weights.shape[1]
        g_scalar = grad_out.to(torch.float32)
        coef = g_scalar * 2.0 / (counts[y] * math.sqrt(f))  # (B,) k_i
        grad_x = grad_w = grad_t = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            g = rff_loss_grad_triton(x, weights, y, grad_residual, coef)  # (B, F) = ∂L/∂(xW)
            if ctx.needs_input_grad[0]:
                grad_x = g @ weights.T  # (B, F) @ (F, d) -> (B, d)
            if ctx.needs_input_grad[1]:
                grad_w = x.T @ g  # (d, B) @ (B, F) -> (d, F)
        if ctx.needs_input_grad[3]:
            grad_t = (-2.0 * g_scalar * residual).to(ctx.targets_dtype)  # zero rows for absent classes
        return grad_x, grad_w, None, grad_t, None


def rff_matching_loss(
    x: torch.Tensor,
    weights: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor,
    *,
    backend: str = "auto",
    unbiased: bool = False,
) -> torch.Tensor:
    """The generator's RFF matching loss, differentiable in ``x`` (and ``weights``, ``targets``).

    ``backend="torch"`` is :func:`rff_matching_loss_reference` (autograd).
    ``backend="triton"`` runs the fused kernels: the forward is the Triton
    class sums (the (B, 2F) features are never stored), the backward
    recomputes ``xW`` tile by tile and writes ``G = ∂L/∂(xW)`` ((B, F)), then
    ``∂L/∂x = G Wᵀ`` is one GEMM. Both are deterministic.

    Args:
        x ((B, d) Tensor): generated records, flattened.
        weights ((d, F) Tensor): frequencies.
        y ((B,) Tensor): int64 labels in ``[0, C)``.
        targets ((C, 2F) Tensor): released class-wise mean embeddings.
        backend: ``"auto" | "torch" | "triton"``.
        unbiased: the unbiased (U-statistic) estimate instead of DP-MERF's biased one
            (see :func:`mmgen.features.base.class_mean_matching_loss`).

    Returns:
        A scalar tensor.

    Raises:
        BackendError: ``backend="triton"`` where Triton cannot run, or non-float32 inputs to it.
    """
    if targets.ndim != 2 or targets.shape[1] != 2 * weights.shape[1]:
        raise DataError(f"Expected targets of shape (C, {2 * weights.shape[1]}). Got {tuple(targets.shape)}.")
    _check_inputs(x, weights, y, targets.shape[0])
    chosen = resolve_backend(backend, x.device, "rff_matching_loss")
    if chosen == "triton":
        return _FusedMatchingLoss.apply(x, weights, y.to(torch.int64), targets, bool(unbiased))
    return rff_matching_loss_reference(x, weights, y, targets, unbiased=unbiased)
