"""Triton kernels for the random-Fourier class sums and the matching-loss gradient.

With frequencies ``W`` (d, F), records ``x`` (N, d), labels ``y`` (N,) and
``P = xW`` (N, F), the two kernels compute, tile by tile, without ever holding
the (N, 2F) feature matrix:

* :func:`rff_class_sums_triton` — ``S[c] = Σ_{y_i = c} [cos P_i, sin P_i] / sqrt(F)``
  ((C, 2F)). Program ``(j, s)`` owns frequency tile ``j`` and record split ``s``;
  it loops over its records in blocks, forms ``P`` for the tile with
  ``tl.dot`` over ``d``, takes cos/sin in registers and adds them to its
  class accumulators with a one-hot ``tl.dot``. Each program writes its own
  partial ``(C, tile)`` block; the splits are then summed by ``torch.sum``
  over a fixed axis. No atomics, so the result is bitwise reproducible on one
  device for given shapes.

* :func:`rff_loss_grad_triton` — the gradient of the matching loss with
  respect to ``P``: with the residual ``r_c = mean_c − t_c`` ((C, 2F)) and
  ``k_i = 2 / (n_{y_i} sqrt(F))``,

      G_if = k_i (r^sin_{y_i f} cos P_if − r^cos_{y_i f} sin P_if)      ((N, F))

  recomputing ``P`` tile by tile (``P`` is never stored); ``∂L/∂x = G Wᵀ`` is
  one cuBLAS GEMM in the caller.

Both use ``input_precision="ieee"`` (true float32 products, no TF32) so they
agree with the torch reference to float32 rounding.

Tiles are fixed per call, never autotuned: a :class:`TileConfig` (default
:data:`DEFAULT_TILES`, the module's ``BLOCK_N``/``BLOCK_F``/``BLOCK_K`` and
Triton's default ``num_warps``/``num_stages``) fixes the tile shapes, hence the
order of every reduction, so for given shapes, tiles and device the result is
the same bits on every call. Another tile configuration sums in another order
(the same sums to float32 rounding, not bit for bit).

This module imports ``triton``; import it only through :mod:`mmgen.kernels.rff`
(the backend switch), which needs a CUDA device or ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import triton
import triton.language as tl

from mmgen.config import Config
from mmgen.errors import BackendError

__all__ = ["TileConfig", "DEFAULT_TILES", "rff_class_sums_triton", "rff_loss_grad_triton"]

# Default tile sizes. Small enough for the interpreter, large enough for a GPU (chosen without one;
# benchmarks/kernels_gpu.py's `sweep` section times other TileConfigs on a GPU).
BLOCK_N = 32
BLOCK_F = 64
BLOCK_K = 32
MAX_BLOCK_C = 64  # classes per launch; more classes are handled by several launches


def _is_pow2(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0 and v & (v - 1) == 0


@dataclasses.dataclass(frozen=True)
class TileConfig(Config):
    """The fixed tiles of one launch of the RFF kernels (no autotuning: they fix the reduction order).

    Args:
        block_n: records per tile (a power of two ≥ 16: ``tl.dot`` needs 16 on each side).
        block_f: frequencies per tile (power of two ≥ 16).
        block_k: input dimensions per step of the ``xW`` product (power of two ≥ 16).
        num_warps: warps per program (power of two), or None for Triton's default.
        num_stages: software-pipelining stages (≥ 1), or None for Triton's default.

    Raises:
        BackendError: a field out of range (all problems named at once).
    """

    block_n: int = BLOCK_N
    block_f: int = BLOCK_F
    block_k: int = BLOCK_K
    num_warps: int | None = None
    num_stages: int | None = None

    def __post_init__(self):
        problems = [f"`{k}` must be a power of two >= 16. Got {getattr(self, k)!r}."
                    for k in ("block_n", "block_f", "block_k")
                    if not (_is_pow2(getattr(self, k)) and getattr(self, k) >= 16)]  # fmt: skip
        if self.num_warps is not None and not _is_pow2(self.num_warps):
            problems.append(f"`num_warps` must be None or a power of two. Got {self.num_warps!r}.")
        if self.num_stages is not None and not (isinstance(self.num_stages, int) and self.num_stages >= 1):
            problems.append(f"`num_stages` must be None or an integer >= 1. Got {self.num_stages!r}.")
        if problems:
            raise BackendError("Invalid TileConfig: " + " ".join(problems))

    def launch_options(self) -> dict:
        """The keyword arguments of a kernel launch: the block sizes, and warps/stages where set."""
        out = {"BLOCK_N": self.block_n, "BLOCK_F": self.block_f, "BLOCK_K": self.block_k}
        if self.num_warps is not None:
            out["num_warps"] = self.num_warps
        if self.num_stages is not None:
            out["num_stages"] = self.num_stages
        return out


DEFAULT_TILES = TileConfig()  # BLOCK_N, BLOCK_F, BLOCK_K above; Triton's default warps and stages


@triton.jit
def _class_sums_kernel(
    x_ptr, w_ptr, y_ptr, out_ptr,
    N, D, F, c0, n_per_split, scale,
    stride_xn, stride_xd, stride_wd, stride_wf, stride_os, stride_oc,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid_f = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
    offs_c = tl.arange(0, BLOCK_C)
    mask_f = offs_f < F
    acc_cos = tl.zeros((BLOCK_C, BLOCK_F), dtype=tl.float32)
    acc_sin = tl.zeros((BLOCK_C, BLOCK_F), dtype=tl.float32)
    n_start = pid_s * n_per_split
    n_stop = tl.minimum(n_start + n_per_split, N)
    for n0 in range(n_start, n_stop, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < n_stop
        proj = tl.zeros((BLOCK_N, BLOCK_F), dtype=tl.float32)
        for k0 in range(0, D, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < D
            xt = tl.load(
                x_ptr + offs_n[:, None] * stride_xn + offs_k[None, :] * stride_xd,
                mask=mask_n[:, None] & mask_k[None, :], other=0.0,
            )  # (BLOCK_N, BLOCK_K)
            wt = tl.load(
                w_ptr + offs_k[:, None] * stride_wd + offs_f[None, :] * stride_wf,
                mask=mask_k[:, None] & mask_f[None, :], other=0.0,
            )  # (BLOCK_K, BLOCK_F)
            proj = tl.dot(xt, wt, proj, input_precision="ieee")  # (BLOCK_N, BLOCK_F)
        yb = tl.load(y_ptr + offs_n, mask=mask_n, other=-1) - c0
        onehot = tl.where(yb[None, :] == offs_c[:, None], 1.0, 0.0).to(tl.float32)  # (BLOCK_C, BLOCK_N)
        acc_cos = tl.dot(onehot, tl.cos(proj), acc_cos, input_precision="ieee")  # (C, n) @ (n, F)
        acc_sin = tl.dot(onehot, tl.sin(proj), acc_sin, input_precision="ieee")
    out = out_ptr + pid_s * stride_os + offs_c[:, None] * stride_oc + offs_f[None, :]
    mask = (offs_c[:, None] < BLOCK_C) & mask_f[None, :]
    tl.store(out, acc_cos * scale, mask=mask)
    tl.store(out + F, acc_sin * scale, mask=mask)


@triton.jit
def _loss_grad_kernel(
    x_ptr, w_ptr, y_ptr, r_ptr, k_ptr, g_ptr,
    N, D, F,
    stride_xn, stride_xd, stride_wd, stride_wf, stride_rc, stride_gn,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_f = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_n = offs_n < N
    mask_f = offs_f < F
    proj = tl.zeros((BLOCK_N, BLOCK_F), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < D
        xt = tl.load(
            x_ptr + offs_n[:, None] * stride_xn + offs_k[None, :] * stride_xd,
            mask=mask_n[:, None] & mask_k[None, :], other=0.0,
        )
        wt = tl.load(
            w_ptr + offs_k[:, None] * stride_wd + offs_f[None, :] * stride_wf,
            mask=mask_k[:, None] & mask_f[None, :], other=0.0,
        )
        proj = tl.dot(xt, wt, proj, input_precision="ieee")  # (BLOCK_N, BLOCK_F)
    yb = tl.load(y_ptr + offs_n, mask=mask_n, other=0)
    kb = tl.load(k_ptr + offs_n, mask=mask_n, other=0.0)  # 2 / (n_{y_i} sqrt(F))
    mask = mask_n[:, None] & mask_f[None, :]
    r_rows = r_ptr + yb[:, None] * stride_rc + offs_f[None, :]
    r_cos = tl.load(r_rows, mask=mask, other=0.0)  # residual rows gathered by label
    r_sin = tl.load(r_rows + F, mask=mask, other=0.0)
    g = kb[:, None] * (r_sin * tl.cos(proj) - r_cos * tl.sin(proj))
    tl.store(g_ptr + offs_n[:, None] * stride_gn + offs_f[None, :], g, mask=mask)


def _check(x: torch.Tensor, weights: torch.Tensor, y: torch.Tensor) -> None:
    if x.dtype != torch.float32 or weights.dtype != torch.float32:
        raise BackendError(
            f"The Triton RFF kernels take float32 x and weights. Got {x.dtype} and {weights.dtype}; "
            "use backend='torch' for other dtypes."
        )
    if x.device != weights.device or x.device != y.device:
        raise BackendError(f"x, weights and y must be on one device. Got {x.device}, {weights.device}, {y.device}.")


def _tiles(tiles: TileConfig | None) -> TileConfig:
    if tiles is None:
        return DEFAULT_TILES
    if not isinstance(tiles, TileConfig):
        raise BackendError(f"`tiles` must be a TileConfig or None. Got {type(tiles).__name__}.")
    return tiles


def _n_splits(n: int, n_f_tiles: int, device: torch.device, block_n: int = BLOCK_N) -> int:
    """Record splits so that the grid fills the device (at most 4 in the interpreter; deterministic per
    shape, tiles and device: ``block_n`` is the launch's records per tile)."""
    if device.type != "cuda":
        return max(1, min(4, triton.cdiv(n, 4 * block_n)))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    want = max(1, (4 * sms) // max(n_f_tiles, 1))
    return max(1, min(want, triton.cdiv(n, 8 * block_n)))


def rff_class_sums_triton(
    x: torch.Tensor, weights: torch.Tensor, y: torch.Tensor, n_classes: int, *, tiles: TileConfig | None = None
) -> torch.Tensor:
    """``S[c] = Σ_{y_i = c} [cos(x_i W), sin(x_i W)] / sqrt(F)`` with the fused Triton kernel.

    Args:
        x ((N, d) Tensor): float32 records.
        weights ((d, F) Tensor): float32 frequencies.
        y ((N,) Tensor): int64 labels in ``[0, n_classes)``.
        n_classes: C.
        tiles: the launch's fixed tiles; None for :data:`DEFAULT_TILES`.

    Returns:
        (C, 2F) float32 Tensor.

    Raises:
        BackendError: non-float32 inputs, tensors on several devices, or ``tiles`` not a TileConfig.
    """
    _check(x, weights, y)
    tiles = _tiles(tiles)
    n, d = x.shape
    f = weights.shape[1]
    y = y.to(torch.int64).contiguous()
    n_f_tiles = triton.cdiv(f, tiles.block_f)
    splits = _n_splits(n, n_f_tiles, x.device, tiles.block_n)
    n_per_split = max(1, triton.cdiv(max(n, 1), splits))
    out = torch.empty(n_classes, 2 * f, dtype=torch.float32, device=x.device)
    scale = 1.0 / math.sqrt(f)
    for c0 in range(0, n_classes, MAX_BLOCK_C):
        nc = min(MAX_BLOCK_C, n_classes - c0)
        block_c = max(16, triton.next_power_of_2(nc))
        partial = torch.zeros(splits, block_c, 2 * f, dtype=torch.float32, device=x.device)
        if n:
            _class_sums_kernel[(n_f_tiles, splits)](
                x, weights, y, partial,
                n, d, f, c0, n_per_split, scale,
                x.stride(0), x.stride(1), weights.stride(0), weights.stride(1), partial.stride(0), partial.stride(1),
                BLOCK_C=block_c, **tiles.launch_options(),
            )  # fmt: skip
        out[c0 : c0 + nc] = partial[:, :nc].sum(dim=0)  # fixed-order reduction over splits
    return out


def rff_loss_grad_triton(
    x: torch.Tensor,
    weights: torch.Tensor,
    y: torch.Tensor,
    residual: torch.Tensor,
    coef: torch.Tensor,
    *,
    tiles: TileConfig | None = None,
) -> torch.Tensor:
    """``G = ∂L/∂(xW)`` of the matching loss, recomputing ``xW`` tile by tile.

    Args:
        x ((N, d) Tensor): float32 records.
        weights ((d, F) Tensor): float32 frequencies.
        y ((N,) Tensor): int64 labels.
        residual ((C, 2F) Tensor): ``mean_c − t_c`` (zero rows for absent classes).
        coef ((N,) Tensor): ``k_i = 2 / (n_{y_i} sqrt(F))`` (times the upstream gradient).
        tiles: the launch's fixed tiles; None for :data:`DEFAULT_TILES`.

    Returns:
        (N, F) float32 Tensor G with ``∂L/∂x = G Wᵀ`` and ``∂L/∂W = xᵀ G``.

    Raises:
        BackendError: non-float32 inputs, tensors on several devices, or ``tiles`` not a TileConfig.
    """
    _check(x, weights, y)
    tiles = _tiles(tiles)
    n, d = x.shape
    f = weights.shape[1]
    residual = residual.to(torch.float32).contiguous()
    coef = coef.to(torch.float32).contiguous()
    y = y.to(torch.int64).contiguous()
    g = torch.empty(n, f, dtype=torch.float32, device=x.device)
    if n:
        grid = (triton.cdiv(n, tiles.block_n), triton.cdiv(f, tiles.block_f))
        _loss_grad_kernel[grid](
            x, weights, y, residual, coef, g,
            n, d, f,
            x.stride(0), x.stride(1), weights.stride(0), weights.stride(1), residual.stride(0), g.stride(0),
            **tiles.launch_options(),
        )  # fmt: skip
    return g
