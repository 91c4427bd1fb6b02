"""Random-Fourier embedding sums: the pure-torch reference (the specification).

With frequencies ``W`` (d, F) and ``D = 2F``:

    φ(x) = [cos(xW), sin(xW)] / sqrt(F)                     (one record → (D,))
    S[c] = Σ_{i : y_i = c} φ(x_i)                           (class sums, (C, D))

The reference streams the records in chunks so the (N, D) feature matrix never
exists; peak memory is O(chunk · D + C · D) whatever N is.
"""

from __future__ import annotations

import math

import torch

from .backend import resolve_backend

__all__ = ["rff_features", "rff_class_sums", "rff_class_sums_reference", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 2048


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


def rff_class_sums_reference(
    x: torch.Tensor, weights: torch.Tensor, y: torch.Tensor, n_classes: int, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """Class-conditional sums ``S[c] = Σ_{y_i = c} φ(x_i)``, streamed over chunks of records.

    Args:
        x ((N, d) Tensor): records, flattened.
        weights ((d, F) Tensor): frequencies.
        y ((N,) Tensor): int64 labels in ``[0, n_classes)``.
        n_classes: C.
        chunk: records per chunk (bounds the peak memory).

    Returns:
        (C, 2F) Tensor in the dtype of ``x``.
    """
    f = weights.shape[1]
    out = torch.zeros(n_classes, 2 * f, dtype=x.dtype, device=x.device)
    scale = 1.0 / math.sqrt(f)
    for start in range(0, len(x), chunk):
        xb, yb = x[start : start + chunk], y[start : start + chunk]
        proj = xb @ weights  # (n, d) @ (d, F) -> (n, F)
        onehot = torch.zeros(n_classes, len(yb), dtype=x.dtype, device=x.device)
        onehot[yb, torch.arange(len(yb), device=x.device)] = scale  # (C, n), scaled one-hot
        out[:, :f] += onehot @ torch.cos_(proj.clone())  # (C, n) @ (n, F) -> (C, F)
        out[:, f:] += onehot @ torch.sin_(proj)
    return out


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
    ``"auto" | "torch" | "triton"``.
    """
    chosen = resolve_backend(backend, x.device, "rff_class_sums")
    if chosen == "triton":
        from .rff_triton import rff_class_sums_triton

        return rff_class_sums_triton(x, weights, y, n_classes)
    return rff_class_sums_reference(x, weights, y, n_classes, chunk=chunk)
