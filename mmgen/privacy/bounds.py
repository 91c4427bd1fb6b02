"""Per-record norm bound and exact summation of the release's class sums.

Every record contributes one feature vector ``φ(x)`` to the class sums, and the
release's sensitivity rests on ``‖φ(x)‖₂ ≤ m`` (the map's ``max_norm``). The
maps keep that bound in exact arithmetic; in floating point a float32 norm of a
long vector (an NTK Jacobian has millions of coordinates) can come out above
``m`` by far more than float32's unit round-off, and float32 sums of many
batches drift by more than the slack the sensitivity allows. The release path
therefore trusts neither:

1. **Cap** (:func:`cap_norms`): each record's norm is recomputed in float64 and
   its row divided by ``max(1, ‖φ(x)‖/m)`` in float64.
2. **Round per record** (:func:`fixed_point`): each capped row is rounded to the
   fixed-point grid ``2^-FRACTION_BITS`` (``FRACTION_BITS = 32``) and held as
   int64. A record's rounded row depends on that record alone; its norm is at
   most ``m + √D·2^-33`` (half a grid step per coordinate).
3. **Sum exactly** (:func:`fixed_point_class_sums`): the rounded rows are
   integers (in units of the grid), summed without rounding — in float64 within a
   chunk of at most 2^20 records (every partial sum stays below 2^53), in int64
   across chunks — so the sums are independent of the order and the batching of
   the records, and adding or removing one record changes them by exactly that
   record's rounded row. No overflow while every class holds fewer than ``2^31`` records.
   The same pass refuses a row holding NaN or inf (:class:`NonFiniteFeatures`): such a
   row's float64 norm is NaN or inf, so only the rare chunk with a non-finite norm is
   searched entry by entry.
4. **Convert once** (:func:`from_fixed_point`): the int64 totals become float64
   with a relative rounding of at most 2⁻⁵³ per coordinate, i.e. at most
   ``2⁻⁵³·N`` in L2 for N records (below 2.4e-7 for N < 2^31).

Steps 2 and 4 together move one record's effect by at most
``√D·2^-33 + 2·2⁻⁵³·2^31 < 1e-6`` for any ``D ≤ 10⁷``, which
:data:`~mmgen.privacy.mechanism.NORM_SLACK` (a relative 1e-5 on the
sensitivity) covers; :func:`check_rounding_budget` refuses a map too long for it.

What this does not cover: a record's float64 features themselves are computed
by the map on a batch, and a library routine (a matrix product, a convolution)
may round one row differently depending on the other rows of the batch. In
float64 such differences are of order 1e-16 per coordinate, far below half a
grid step (1.2e-10), so the rounded rows almost never differ; the tests put a
canary at the front of the data (every later batch shifts) and check that the
sums move by no more than the sensitivity. The release path
(:func:`mmgen.release.accumulate_fixed_point`) narrows this further: the maps
built on matrix products get chunks of one shape only, the last one padded, so
the product that computes a record's row has the same shape wherever it sits.
"""

from __future__ import annotations

import math

import torch

from ..errors import DataError, PrivacyError

__all__ = [
    "FRACTION_BITS", "cap_norms", "fixed_point", "fixed_point_class_sums", "from_fixed_point",
    "check_rounding_budget", "rounding_bound", "NonFiniteFeatures",
]  # fmt: skip

FRACTION_BITS = 32
_ROUNDING_BUDGET = 1e-6  # of NORM_SLACK = 1e-5: what per-record rounding may add to a record's norm
_MAX_RECORDS = 2**31


class NonFiniteFeatures(DataError):
    """A feature row holds NaN or inf; :func:`fixed_point_class_sums` refuses it before anything is summed."""


def cap_norms(phi: torch.Tensor, max_norm: float = 1.0) -> torch.Tensor:
    """Rows of ``phi`` in float64, each divided by ``max(1, ‖row‖₂ / max_norm)``.

    Args:
        phi ((N, D) Tensor): per-record features, any float dtype.
        max_norm: m, the bound every row must keep.

    Returns:
        (N, D) float64 Tensor whose rows have norm ≤ m (up to float64 rounding).

    Example:
        >>> import torch
        >>> cap_norms(torch.tensor([[3.0, 4.0], [0.3, 0.4]])).tolist()
        [[0.6, 0.8], [0.30000001192092896, 0.4000000059604645]]
    """
    if not 0 < max_norm <= 1:
        raise PrivacyError(f"`max_norm` must be in (0, 1]. Got {max_norm!r}.")
    phi = phi.to(torch.float64)
    norms = torch.linalg.vector_norm(phi, dim=1)  # (N,) in float64
    return phi / (norms / max_norm).clamp(min=1.0)[:, None]


def rounding_bound(dim: int, max_records: int = _MAX_RECORDS) -> float:
    """The most that per-record rounding and the final conversion can add to one record's effect (L2)."""
    return math.sqrt(dim) * 2.0 ** -(FRACTION_BITS + 1) + 2.0 * 2.0**-53 * max_records


def check_rounding_budget(dim: int) -> None:
    """Raises PrivacyError if a map of ``dim`` features is too long for the rounding budget."""
    if rounding_bound(dim) > _ROUNDING_BUDGET:
        raise PrivacyError(
            f"A feature map with D = {dim} features is too long for the release's fixed-point sums "
            f"(rounding bound {rounding_bound(dim):.3g} > {_ROUNDING_BUDGET:g}); use fewer features."
        )


def fixed_point(phi: torch.Tensor, max_norm: float = 1.0) -> torch.Tensor:
    """Capped rows rounded to the grid ``2^-FRACTION_BITS``, as int64 (see the module docstring).

    Args:
        phi ((N, D) Tensor): per-record features.
        max_norm: m.

    Returns:
        (N, D) int64 Tensor: ``round(cap(φ_i) · 2^FRACTION_BITS)``.
    """
    return _scaled_grid_rows(phi.to(torch.float64, copy=True), max_norm).to(torch.int64)


def _scaled_grid_rows(phi: torch.Tensor, max_norm: float, *, refuse_non_finite: bool = False) -> torch.Tensor:
    """In place on a float64 (N, D) tensor: cap each row, scale by 2^FRACTION_BITS, round to integers.

    Computes, bit for bit, ``round(phi / max(1, ‖phi_i‖/m) · 2^FRACTION_BITS)`` row by row, as one
    broadcast division would, but on the CPU divides only the rows whose factor is not 1 (dividing by
    exactly 1.0 changes no bit, NaN and inf included): a float64 row that a map normalised to norm 1
    comes out with a norm a few units of 2⁻⁵² on either side of 1, so only some rows need the division.
    On a GPU every row is divided by its factor (one kernel; finding the capped rows would synchronise).

    Args:
        phi ((N, D) float64 Tensor): overwritten with the rounded rows.
        max_norm: m.
        refuse_non_finite: raise :class:`NonFiniteFeatures` if a row holds NaN or inf (its norm is
            then NaN or inf; the entries themselves are searched only in that case).
    """
    if not 0 < max_norm <= 1:
        raise PrivacyError(f"`max_norm` must be in (0, 1]. Got {max_norm!r}.")
    scale = torch.linalg.vector_norm(phi, dim=1).div_(max_norm)  # (N,) float64 norms / m, as the broadcast cap has them
    if refuse_non_finite and not bool(torch.isfinite(scale).all()) and not bool(torch.isfinite(phi).all()):
        raise NonFiniteFeatures("The feature map produced NaN or inf for some records.")
    n, dim = phi.shape
    if phi.device.type != "cpu":  # one broadcast division, no synchronisation (dividing by 1.0 changes no bit)
        phi.div_(scale.clamp_(min=1.0)[:, None])
    else:
        capped = (~(scale <= 1.0)).nonzero().flatten()  # rows whose factor max(1, scale) is not 1 (NaN included)
        if len(capped) * (dim + _ROW_CALL) < n * dim:  # the same quotients, capped rows only
            for i in capped.tolist():
                phi[i].div_(scale[i])
        elif len(capped):
            phi.div_(scale.clamp_(min=1.0)[:, None])
    phi.mul_(2.0**FRACTION_BITS)  # multiplying by a power of two is exact
    return phi.round_()


_MAX_CHUNK = 1 << 20  # records per exact float64 class sum (integers ≤ 2^32 · 2^20 < 2^53)
_ROW_CALL = 4096  # the cost of one call on a row, in divided entries: capped rows go one by one while that is cheaper


def fixed_point_class_sums(phi: torch.Tensor, y: torch.Tensor, n_classes: int, max_norm: float = 1.0) -> torch.Tensor:
    """Exact per-class sums of the rounded, capped rows: ``Σ_{i: y_i = c} fixed_point(φ_i)``.

    The rounded rows are integers of magnitude ≤ 2^32 held in float64, so adding
    at most 2^20 of them in float64 — ``index_add_`` into the class rows on the
    CPU, a one-hot matrix product elsewhere — makes no rounding (every partial
    sum is an integer below 2^53), in whatever order the library adds them; the
    (C, D) result then converts to int64 exactly.

    Args:
        phi ((N, D) Tensor): per-record features. A float64 ``phi`` is consumed: it is overwritten in place.
        y ((N,) Tensor): int64 labels in ``[0, n_classes)``.
        n_classes: C.
        max_norm: m.

    Returns:
        (C, D) int64 Tensor (add the sums of several batches as integers; see :func:`from_fixed_point`).

    Raises:
        NonFiniteFeatures: a row of ``phi`` holds NaN or inf (nothing is summed).
    """
    out = None
    for start in range(0, len(phi), _MAX_CHUNK):
        rows = _scaled_grid_rows(phi[start : start + _MAX_CHUNK].to(torch.float64), max_norm, refuse_non_finite=True)
        labels = y[start : start + _MAX_CHUNK].to(rows.device)
        if rows.device.type == "cpu":  # adds each row into its class's row: 4x faster than the product below on CPU
            part = torch.zeros(n_classes, rows.shape[1], dtype=torch.float64).index_add_(0, labels, rows)
        else:  # a GPU's index_add_ is atomic (the order varies; the integer sums do not); the product is one GEMM
            onehot = torch.zeros(n_classes, len(rows), dtype=torch.float64, device=rows.device)
            onehot[labels, torch.arange(len(rows), device=rows.device)] = 1.0  # (C, n) one-hot of the labels
            part = onehot @ rows  # (C, n) @ (n, D) -> (C, D)
        part = part.to(torch.int64)  # exact integer sums, in whatever order they were added
        out = part if out is None else out.add_(part)
    return torch.zeros(n_classes, phi.shape[1], dtype=torch.int64, device=phi.device) if out is None else out


def from_fixed_point(sums: torch.Tensor) -> torch.Tensor:
    """int64 fixed-point sums → float64 values (one rounding per coordinate)."""
    return sums.to(torch.float64) * 2.0**-FRACTION_BITS
