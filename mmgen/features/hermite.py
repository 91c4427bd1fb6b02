"""Hermite polynomial features of the Gaussian kernel via Mehler's formula (DP-HP).

Vinaroz, Charusaie, Harder, Adamczewski & Park, "Hermite polynomial features for
private data generation", ICML 2022, Sec. 3 (eq. 4–6 for the Mehler expansion,
Sec. 3.2 for the sum and product kernels).

Per coordinate. Each value is first mapped affinely from the declared domain
``[low, high]`` to ``u ∈ [−1, 1]`` (public, data-independent). With the
orthonormal Hermite functions ``ψ_n(u) = (2ⁿ n! √π)^{-1/2} H_n(u) e^{−u²/2}``,
Mehler's formula reads, for ``0 < ρ < 1``,

    M_ρ(u, v) = Σ_{n≥0} ρⁿ ψ_n(u) ψ_n(v)
              = (π(1−ρ²))^{-1/2} exp(−(1−ρ)(u+v)²/(4(1+ρ)) − (1+ρ)(u−v)²/(4(1−ρ))).

Normalising it, ``M_ρ(u, v) / sqrt(M_ρ(u, u) M_ρ(v, v)) = exp(−γ (u − v)²)`` with
``γ = ρ / (1 − ρ²)``: the normalised Mehler kernel *is* a Gaussian kernel. The
per-coordinate feature vector truncated at order K is

    h(u) = [ρ^{n/2} ψ_n(u)]_{n=0..K} / ‖[ρ^{n/2} ψ_n(u)]_{n=0..K}‖₂           (K + 1 entries)

so ``h(u)ᵀh(v) → exp(−γ(u − v)²)`` as K grows (the truncation error is
O(ρ^K)). ψ_n is computed by the stable three-term recurrence of the
*normalised* functions,

    ψ_0 = π^{-1/4} e^{−u²/2},  ψ_1 = √2 u ψ_0,
    ψ_{n+1} = sqrt(2/(n+1)) u ψ_n − sqrt(n/(n+1)) ψ_{n−1},

never through explicit polynomials or factorials, so orders in the hundreds
stay finite and accurate.

Norm bound (the privacy contract). ``‖h(u)‖₂ = 1`` for every u by explicit
normalisation, and the denominator never vanishes: its n = 0 term is
``ψ_0(u)² ≥ π^{-1/2} e^{−1} > 0`` on ``[−1, 1]`` (the domain is declared and
inputs outside it are refused or clipped by the release). Hence

* sum kernel (``hermite``): ``φ(x) = [h(u_1), …, h(u_d)] / √d`` has
  ``‖φ(x)‖² = Σ_j ‖h(u_j)‖² / d = 1``; its kernel is
  ``(1/d) Σ_j exp(−γ(u_j − v_j)²)`` (DP-HP's sum kernel, which matches the
  per-coordinate marginals);
* product kernel (``hermite-product``): for each of m public random
  coordinate subsets S_1..S_m of size s (drawn from ``seed``),
  ``φ(x) = [⊗_{j∈S_1} h(u_j), …, ⊗_{j∈S_m} h(u_j)] / √m``; a tensor product of
  unit vectors is a unit vector, so ``‖φ(x)‖ = 1`` again, and the kernel is
  ``(1/m) Σ_k exp(−γ ‖u_{S_k} − v_{S_k}‖²)``, a Gaussian kernel on each subset
  (DP-HP's product kernel on subsampled dimensions).

Both are released together by ``mmgen.features.statistics("hermite")`` as two
Gaussian statistics with a recorded budget split.

The length-scale is fixed by the public ρ alone (no data-dependent bandwidth).
The defaults were chosen on scikit-learn's digits, never on the data set reported.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..config import Config
from ..errors import DataError, MMGenError
from .base import FeatureMap, register

__all__ = [
    "HermiteConfig",
    "HermiteProductConfig",
    "HermiteSumFeatures",
    "HermiteProductFeatures",
    "hermite_functions",
    "mehler_kernel",
    "gaussian_gamma",
]


def hermite_functions(u: torch.Tensor, order: int) -> torch.Tensor:
    """The orthonormal Hermite functions ψ_0..ψ_K at ``u`` by the stable recurrence.

    Args:
        u ((...) Tensor): points.
        order: K ≥ 0, the highest order.

    Returns:
        (..., K + 1) Tensor: ``ψ_n(u)`` in the last dimension (differentiable in ``u``).

    Example:
        >>> import torch
        >>> psi = hermite_functions(torch.tensor([0.0]), 2)
        >>> [round(v, 4) for v in psi[0].tolist()]
        [0.7511, 0.0, -0.5311]
    """
    psi0 = math.pi ** -0.25 * torch.exp(-0.5 * u * u)
    out = [psi0]
    if order >= 1:
        out.append(math.sqrt(2.0) * u * psi0)
    for n in range(1, order):
        out.append(math.sqrt(2.0 / (n + 1)) * u * out[n] - math.sqrt(n / (n + 1)) * out[n - 1])
    return torch.stack(out, dim=-1)


def mehler_kernel(u: torch.Tensor, v: torch.Tensor, rho: float) -> torch.Tensor:
    """The closed form of ``Σ_n ρⁿ ψ_n(u) ψ_n(v)`` (Mehler's formula), elementwise."""
    r = float(rho)
    return (math.pi * (1 - r * r)) ** -0.5 * torch.exp(
        -(1 - r) * (u + v) ** 2 / (4 * (1 + r)) - (1 + r) * (u - v) ** 2 / (4 * (1 - r))
    )


def gaussian_gamma(rho: float) -> float:
    """γ = ρ/(1 − ρ²): the normalised Mehler kernel is ``exp(−γ (u − v)²)``."""
    return float(rho) / (1.0 - float(rho) ** 2)


def _check_common(order, rho) -> None:
    if not isinstance(order, int) or isinstance(order, bool) or order < 0:
        raise MMGenError(f"`order` must be an integer ≥ 0. Got {order!r}.")
    if not isinstance(rho, (int, float)) or not 0 < rho < 1:
        raise MMGenError(f"`rho` must be in (0, 1). Got {rho!r}.")


@dataclasses.dataclass(frozen=True)
class HermiteConfig(Config):
    """Hyper-parameters of :class:`HermiteSumFeatures`.

    Attributes:
        order: K, the truncation order (K + 1 features per coordinate).
        rho: ρ ∈ (0, 1), Mehler's parameter; the kernel is ``exp(−ρ/(1−ρ²)·(u−v)²)`` on ``u ∈ [−1, 1]``.
    """

    order: int = 20
    rho: float = 0.5

    def __post_init__(self):
        _check_common(self.order, self.rho)


@dataclasses.dataclass(frozen=True)
class HermiteProductConfig(Config):
    """Hyper-parameters of :class:`HermiteProductFeatures`.

    Attributes:
        order: K per coordinate; each subset gives (K + 1)^s features.
        rho: ρ ∈ (0, 1), as for the sum kernel.
        subset_size: s, coordinates per subset.
        n_subsets: m, the number of public random subsets.
        seed: public seed of the subsets (stored in the release).
    """

    order: int = 4
    rho: float = 0.5
    subset_size: int = 4
    n_subsets: int = 16
    seed: int = 0

    def __post_init__(self):
        _check_common(self.order, self.rho)
        for name in ("subset_size", "n_subsets"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise MMGenError(f"`{name}` must be a positive integer. Got {v!r}.")
        if (self.order + 1) ** self.subset_size * self.n_subsets > 50_000_000:
            raise MMGenError(
                f"(order + 1)^subset_size · n_subsets = {(self.order + 1) ** self.subset_size * self.n_subsets} "
                "features is too many; lower order, subset_size or n_subsets."
            )


def _release_hermite_features(u: torch.Tensor, order: int, rho: float) -> torch.Tensor:
    """h(u) in float64 for the release path: the values of :meth:`_HermiteBase.coordinate_features`, bit for bit.

    The same operations in the same order (:func:`hermite_functions`, the weights ρ^{n/2}, the norm
    over the last axis), with fewer copies: each ψ_n is written into one order-major buffer, which a
    single transposing copy turns into the (…, K + 1) layout the norm reduces over.

    Args:
        u ((...) float64 Tensor): values in [−1, 1].
        order: K.
        rho: ρ.

    Returns:
        (..., K + 1) float64 Tensor of rows of norm 1.
    """
    flat = u.reshape(-1)
    buf = torch.empty(order + 1, len(flat), dtype=torch.float64, device=u.device)  # (K+1, M): ψ_n in row n
    tmp = torch.empty_like(flat)
    torch.mul(flat, -0.5, out=tmp).mul_(flat).exp_()
    torch.mul(tmp, math.pi**-0.25, out=buf[0])  # ψ_0 = π^{-1/4} e^{−u²/2}
    if order >= 1:
        torch.mul(flat, math.sqrt(2.0), out=tmp).mul_(buf[0])
        buf[1].copy_(tmp)  # ψ_1 = √2 u ψ_0
    for n in range(1, order):  # ψ_{n+1} = sqrt(2/(n+1)) u ψ_n − sqrt(n/(n+1)) ψ_{n−1}
        torch.mul(flat, math.sqrt(2.0 / (n + 1)), out=tmp).mul_(buf[n])
        torch.sub(tmp, buf[n - 1].mul(math.sqrt(n / (n + 1))), out=buf[n + 1])
    for n in range(order + 1):
        buf[n].mul_(rho ** (n / 2))  # the weights ρ^{n/2}
    h = buf.t().contiguous().reshape(*u.shape, order + 1)  # (..., K+1)
    # the n = 0 term alone is ≥ π^{-1/4} e^{-1/2} ≈ 0.456 on [−1, 1]; the clamp only guards rounding
    return h.div_(h.norm(dim=-1, keepdim=True).clamp_(min=1e-12))


class _HermiteBase(FeatureMap):
    max_norm = 1.0

    def _release_unit(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_unit` of the records in float64, flattened to (N, d), after the shape check of :meth:`forward`."""
        self._check_setup()
        if tuple(x.shape[1:]) != self.input_shape_:
            raise DataError(
                f"Expected x of shape (N, {', '.join(map(str, self.input_shape_))}). Got {tuple(x.shape)}."
            )
        return self._unit(x.reshape(len(x), -1).to(torch.float64))

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        """Maps the declared domain to [−1, 1] (public affine map)."""
        low, high = self.bounds_
        return (2.0 * x - (low + high)) / (high - low)

    def coordinate_features(self, u: torch.Tensor) -> torch.Tensor:
        """h(u): the unit-norm truncated Mehler features of each value.

        Args:
            u ((...) Tensor): values in [−1, 1].

        Returns:
            (..., K + 1) Tensor of rows of norm 1.
        """
        cfg = self.config
        psi = hermite_functions(u if u.dtype == torch.float64 else u.to(torch.float32), cfg.order)  # float64 on the release path
        weights = torch.tensor([cfg.rho ** (n / 2) for n in range(cfg.order + 1)], dtype=psi.dtype, device=psi.device)
        h = psi * weights  # (..., K+1)
        # the n = 0 term alone is ≥ π^{-1/4} e^{-1/2} ≈ 0.456 on [−1, 1]; the clamp only guards rounding
        return h / h.norm(dim=-1, keepdim=True).clamp(min=1e-12)


@register
class HermiteSumFeatures(_HermiteBase):
    """Hermite (Mehler) sum kernel over coordinates, norm exactly 1 (DP-HP)."""

    name = "hermite"
    Config = HermiteConfig

    def __init__(self, config: HermiteConfig | None = None, **options):
        super().__init__(config if config is not None else HermiteConfig.from_dict(options))

    def _setup(self) -> None:
        pass

    @property
    def output_dim(self) -> int:
        return self.input_dim * (self.config.order + 1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.coordinate_features(self._unit(x))  # (N, d, K+1)
        return h.reshape(len(x), -1) / math.sqrt(x.shape[1])

    def release_features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) in float64: the values of :meth:`forward` in float64, bit for bit, computed in place."""
        u = self._release_unit(x)  # (N, d)
        h = _release_hermite_features(u, self.config.order, self.config.rho)  # (N, d, K+1)
        return h.reshape(len(x), -1).div_(math.sqrt(u.shape[1]))


@register
class HermiteProductFeatures(_HermiteBase):
    """Hermite (Mehler) product kernel on public random coordinate subsets, norm exactly 1 (DP-HP).

    Attributes:
        subsets_ ((m, s) Tensor): the coordinate indices of each subset, drawn from ``seed``.
    """

    name = "hermite-product"
    Config = HermiteProductConfig

    def __init__(self, config: HermiteProductConfig | None = None, **options):
        super().__init__(config if config is not None else HermiteProductConfig.from_dict(options))

    def _setup(self) -> None:
        cfg = self.config
        d = self.input_dim
        if cfg.subset_size > d:
            raise MMGenError(f"`subset_size` ({cfg.subset_size}) exceeds the record's {d} coordinates.")
        gen = torch.Generator().manual_seed(int(cfg.seed))
        subsets = torch.stack([torch.randperm(d, generator=gen)[: cfg.subset_size] for _ in range(cfg.n_subsets)])
        self.register_buffer("subsets_", subsets, persistent=False)

    @property
    def output_dim(self) -> int:
        cfg = self.config
        return cfg.n_subsets * (cfg.order + 1) ** cfg.subset_size

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        m, s = self.subsets_.shape
        h = self.coordinate_features(self._unit(x[:, self.subsets_]))  # (N, m, s, K+1)
        out = h[:, :, 0, :]
        for j in range(1, s):
            out = (out[..., :, None] * h[:, :, j, None, :]).reshape(n, m, -1)  # (N, m, (K+1)^j) ⊗ (K+1)
        return out.reshape(n, -1) / math.sqrt(m)

    def release_features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) in float64: the values of :meth:`forward` in float64, bit for bit, with fewer copies."""
        u = self._release_unit(x)  # (N, d)
        n = len(u)
        m, s = self.subsets_.shape
        h = _release_hermite_features(u[:, self.subsets_], self.config.order, self.config.rho)  # (N, m, s, K+1)
        out = h[:, :, 0, :]
        for j in range(1, s):
            out = (out[..., :, None] * h[:, :, j, None, :]).reshape(n, m, -1)  # (N, m, (K+1)^j) ⊗ (K+1)
        return out.reshape(n, -1).div_(math.sqrt(m))
