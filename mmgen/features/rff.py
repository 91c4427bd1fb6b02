"""Random Fourier features for the Gaussian kernel (DP-MERF).

Bochner's theorem writes the Gaussian kernel as an expectation over random
frequencies (Rahimi & Recht, 2007):

    k(x, x') = exp(-‖x − x'‖² / (2ℓ²)) = E_{w ~ N(0, ℓ⁻² I)} [cos(wᵀ(x − x'))],

so with ``W = [w_1 … w_{D/2}]`` drawn once from a public seed,

    φ(x) = [cos(xW), sin(xW)] / sqrt(D/2),    φ(x)ᵀφ(x') ≈ k(x, x'),

and ``‖φ(x)‖₂ = 1`` exactly for every x (cos² + sin² = 1), which is the
sensitivity bound of the release (Harder et al., "DP-MERF", AISTATS 2021, eq. 5).

**Lattice frequencies** (``frequencies="lattice"``, the default). Each frequency
is ``w = k/(16ℓ)`` with an integer ``k = clamp(round(16z), −63, 63)``, z ~ N(0, 1)
(a discretised Gaussian, variance 1 + 1/3072, tails clipped beyond |z| ≈ 3.97,
about 7·10⁻⁵ of the entries; its kernel is the Gaussian's to that precision and
periodic with period 2π·16ℓ per coordinate, far outside the domain). On the
release path (:meth:`RandomFourierFeatures.release_features`) each value is read
on ``LEVELS + 1 = 256`` levels of the domain, ``x = low + p·(high − low)/255``
with an integer p (8-bit images exactly; other data is rounded to 1/255 of the
domain, a public per-record step), so ``xW = low·Σ_i w_i + c·Σ_i p_i k_i`` with
``c = (high − low)/(255·16ℓ)``. The integer products ``Σ_i p_i k_i`` over at
most ``BLOCK = 1,044`` inputs are below 2²⁴ in magnitude, so a float32 matrix
product computes them **exactly, in any order of summation** (every operand and
partial sum is an integer that float32 represents): a record's row depends on
that record alone, whatever the BLAS, the threads or the batch, at the price of a
float32 product. Longer inputs are cut into blocks added in float64 (integers
below 2⁵³: exact). ``frequencies="gaussian"`` keeps W ~ N(0, ℓ⁻²) and a float64
product (specs written before this option read as "gaussian").

The length-scale ℓ is a *public* parameter. Its default is data-independent:
``ℓ = bandwidth_scale · (high − low) · sqrt(d)``, a fixed fraction of the
domain's diagonal. (DP-MERF's median heuristic reads pairwise distances of the
private data, which the privacy contract forbids.) ``bandwidth_scale`` was
chosen on a validation split of digits' *training* records
(``benchmarks/tune_bandwidth.py``), never on a test split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math

import torch

from ..config import Config
from mmgen.kernels import rff_class_sums, rff_features, rff_matching_loss

from ..errors import DataError, MMGenError
from .base import FeatureMap, register

__all__ = ["RFFConfig", "RandomFourierFeatures", "DEFAULT_BANDWIDTH_SCALE", "LEVELS", "LATTICE_STEP", "LATTICE_MAX", "BLOCK"]

DEFAULT_BANDWIDTH_SCALE = 0.25
LEVELS = 255  # the release path reads each value as low + p·(high − low)/255, p an integer in [0, 255]
LATTICE_STEP = 16  # lattice frequencies are k/(16ℓ), k an integer
LATTICE_MAX = 63  # |k| ≤ 63
BLOCK = (2**24 - 1) // (LATTICE_MAX * LEVELS)  # 1,044 inputs: |Σ p_i k_i| < 2^24, exact in float32

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RFFConfig(Config):
    """Hyper-parameters of :class:`RandomFourierFeatures`.

    Attributes:
        n_features: D, the output length (even: D/2 frequencies, each giving a cos and a sin).
        bandwidth: the kernel length-scale ℓ; ``None`` uses the data-independent default
            ``bandwidth_scale · (high − low) · sqrt(d)``.
        bandwidth_scale: the fraction of the domain diagonal used when ``bandwidth`` is None.
        seed: public seed of the frequencies (stored in the release).
        backend: ``"auto" | "torch" | "triton"`` for the class-conditional sums.
        frequencies: ``"lattice"`` (w = k/(16ℓ), integer k: the release's product is exact in
            float32) or ``"gaussian"`` (w ~ N(0, ℓ⁻²), the release's product in float64).
    """

    n_features: int = 10_000
    bandwidth: float | None = None
    bandwidth_scale: float = DEFAULT_BANDWIDTH_SCALE
    seed: int = 0
    backend: str = "auto"
    frequencies: str = "lattice"

    def __post_init__(self):
        if not isinstance(self.n_features, int) or self.n_features < 2 or self.n_features % 2:
            raise MMGenError(f"`n_features` must be an even integer ≥ 2. Got {self.n_features!r}.")
        if self.bandwidth is not None and not (self.bandwidth > 0 and math.isfinite(self.bandwidth)):
            raise MMGenError(f"`bandwidth` must be > 0. Got {self.bandwidth!r}.")
        if not self.bandwidth_scale > 0:
            raise MMGenError(f"`bandwidth_scale` must be > 0. Got {self.bandwidth_scale!r}.")
        if self.backend not in ("auto", "torch", "triton"):
            raise MMGenError(f"`backend` must be 'auto', 'torch' or 'triton'. Got {self.backend!r}.")
        if self.frequencies not in ("lattice", "gaussian"):
            raise MMGenError(f"`frequencies` must be 'lattice' or 'gaussian'. Got {self.frequencies!r}.")


@register
class RandomFourierFeatures(FeatureMap):
    """Random Fourier features ``[cos(xW), sin(xW)] / sqrt(D/2)`` of the Gaussian kernel.

    Attributes:
        weights_ ((d, D/2) Tensor): the frequencies (float32), ``k/(16ℓ)`` or drawn from N(0, ℓ⁻²) with ``seed``.
        lattice_ ((d, D/2) Tensor or None): the integers k as float32 (lattice frequencies only).
        bandwidth_ (float): the length-scale ℓ in use.
    """

    name = "rff"
    Config = RFFConfig
    max_norm = 1.0

    def __init__(self, config: RFFConfig | None = None, **options):
        super().__init__(config if config is not None else RFFConfig.from_dict(options))

    def _setup(self) -> None:
        cfg = self.config
        d = self.input_dim
        low, high = self.bounds_
        self.bandwidth_ = float(cfg.bandwidth) if cfg.bandwidth is not None else cfg.bandwidth_scale * (high - low) * math.sqrt(d)
        gen = torch.Generator().manual_seed(int(cfg.seed))
        z = torch.randn(d, cfg.n_features // 2, generator=gen, dtype=torch.float64)
        if cfg.frequencies == "lattice":
            k = torch.round(z * LATTICE_STEP).clamp_(-LATTICE_MAX, LATTICE_MAX)  # integers, exact in float32
            self.register_buffer("lattice_", k.to(torch.float32), persistent=False)
            w = k / (LATTICE_STEP * self.bandwidth_)
        else:
            self.register_buffer("lattice_", None, persistent=False)
            w = z / self.bandwidth_
        self.register_buffer("weights_", w.to(torch.float32), persistent=False)
        self.__dict__.pop("_weights64", None)
        self.__dict__.pop("_exact_float32", None)

    @property
    def output_dim(self) -> int:
        return self.config.n_features

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return rff_features(x.to(self.weights_.dtype), self.weights_)

    def release_features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) in float64, each row a function of its record alone (the release path).

        Lattice frequencies: the value grid ``p = round((x − low)·255/(high − low))`` (an integer in
        [0, 255]), the exact integer products ``P = p K`` (float32 matrix products on blocks of at
        most ``BLOCK`` inputs, added in float64), then ``xW = c·P + low·Σ_i w_i`` in float64 and
        ``[cos, sin]/sqrt(D/2)`` in float64. Every step after the exact product is elementwise.
        The first call for a shape on a device checks the float32 product against a float64 one
        (exact too) on public integers at the extremes of the grid; should the float32 product
        ever differ (a BLAS that does not compute float32 products in float32), the float64
        product is used instead, giving the same values.

        Gaussian frequencies: the same values as :func:`mmgen.kernels.rff_features` in float64
        (the frequencies, drawn in float64 and stored as float32, are exact in float64).
        """
        self._check_setup()
        if self.lattice_ is not None:
            return self.release_features_from_products(self.release_products(x))
        w = self.__dict__.get("_weights64")
        if w is None or w.device != self.weights_.device:
            w = self.__dict__["_weights64"] = self.weights_.to(torch.float64)  # not a buffer: no state_dict change
        f = w.shape[1]
        out = torch.empty(len(x), 2 * f, dtype=torch.float64, device=w.device)
        cos, sin = out[:, :f], out[:, f:]
        torch.mm(x.reshape(len(x), -1).to(torch.float64), w, out=sin)  # (N, d) @ (d, F) -> (N, F) projections
        torch.cos(sin, out=cos)
        sin.sin_()
        return out.mul_(1.0 / math.sqrt(f))

    def release_products(self, x: torch.Tensor) -> torch.Tensor:
        """The exact integer products ``P = p K`` of records on the value grid (lattice frequencies only).

        Exact whatever the number of rows, so the release path may take them for many records at once
        (one larger matrix product) and finish the features in smaller, cache-sized slices with
        :meth:`release_features_from_products`: the values do not depend on how the rows are grouped.

        Args:
            x ((N, *input_shape) Tensor): records inside the declared domain.

        Returns:
            (N, D/2) Tensor of integers (float32, or float64 past ``BLOCK`` inputs or after a failed probe).
        """
        self._check_setup()
        if self.lattice_ is None:
            raise MMGenError("release_products needs lattice frequencies (frequencies='lattice').")
        low, high = self.bounds_
        x = x.reshape(len(x), -1)
        p = x.to(torch.float64).sub(low).mul_(LEVELS / (high - low)).round_().clamp_(0, LEVELS).to(torch.float32)
        return self._lattice_products(p.to(self.lattice_.device))  # (N, d) @ (d, F): exact integers

    def release_features_from_products(self, products: torch.Tensor) -> torch.Tensor:
        """φ in float64 from :meth:`release_products`: ``xW = c·P + low·Σ_i w_i``, then ``[cos, sin]/sqrt(D/2)``.

        Elementwise only: each row is a function of its own products.
        """
        low, high = self.bounds_
        k = self.lattice_
        f = k.shape[1]
        out = torch.empty(len(products), 2 * f, dtype=torch.float64, device=k.device)
        cos, sin = out[:, :f], out[:, f:]
        sin.copy_(products)
        sin.mul_((high - low) / (LEVELS * LATTICE_STEP * self.bandwidth_))
        if low != 0.0:
            shift = self.__dict__.get("_shift")
            if shift is None or shift.device != k.device:  # low·Σ_i w_i per frequency, in float64 (public)
                shift = self.__dict__["_shift"] = k.to(torch.float64).sum(0).mul_(low / (LATTICE_STEP * self.bandwidth_))
            sin.add_(shift)
        torch.cos(sin, out=cos)
        sin.sin_()
        return out.mul_(1.0 / math.sqrt(f))

    def _lattice_products(self, p: torch.Tensor) -> torch.Tensor:
        """``p K`` for integer p in [0, 255] ((N, d) float32): float32 products of exact integers, or float64."""
        k = self.lattice_.to(torch.float32)  # integers: exact in any floating dtype the module was cast to
        key = (len(p), p.device)
        exact = self.__dict__.setdefault("_exact_float32", {})
        if key not in exact:
            exact[key] = _float32_product_is_exact(k, len(p))
            if not exact[key]:
                # the device only: a chunk's number of rows can depend on the private N (the last chunk)
                _log.warning("rff: the float32 matrix product is not exact on %s; using float64.", p.device)
        return _integer_product(p, k, float64=not exact[key])

    def class_sums(self, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
        self._check_setup()
        x = x.reshape(len(x), -1).to(self.weights_.dtype)
        return rff_class_sums(x, self.weights_, y, n_classes, backend=self.config.backend)

    def matching_loss(
        self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, *, unbiased: bool = False
    ) -> torch.Tensor:
        """The matching loss of :meth:`FeatureMap.matching_loss`, via :func:`mmgen.kernels.rff_matching_loss`.

        Uses ``config.backend``: the torch reference gives the same value and
        gradients as the base implementation; Triton runs the fused kernels.

        Args:
            x ((B, *input_shape) Tensor): generated records.
            y ((B,) Tensor): their int64 labels.
            targets ((C, D) Tensor): the released class-wise mean embeddings.
            unbiased: the unbiased estimate (see :func:`mmgen.features.base.class_mean_matching_loss`).

        Returns:
            A scalar tensor.
        """
        self._check_setup()
        if tuple(x.shape[1:]) != self.input_shape_:
            raise DataError(
                f"Expected x of shape (N, {', '.join(map(str, self.input_shape_))}). Got {tuple(x.shape)}."
            )
        x = x.reshape(len(x), -1).to(self.weights_.dtype)
        return rff_matching_loss(x, self.weights_, y, targets.to(self.weights_.dtype), backend=self.config.backend,
                                 unbiased=unbiased)  # fmt: skip


@contextlib.contextmanager
def _full_float32():
    """float32 matrix products in float32 (no TF32 or bfloat16 shortcuts), restored after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _integer_product(p: torch.Tensor, k: torch.Tensor, *, float64: bool = False) -> torch.Tensor:
    """``p k`` for integer-valued p ((N, d), in [0, LEVELS]) and k ((d, F), |k| ≤ LATTICE_MAX).

    In float32 on blocks of at most ``BLOCK`` inputs, where every partial sum is an integer below
    2^24 (exact in any order), the blocks added in float64; with ``float64`` one float64 product
    (integers below 2^53: exact too). Returns an (N, F) tensor of integers (float32 for one block).
    """
    d = k.shape[0]
    with _full_float32():
        if float64:
            return p.to(torch.float64) @ k.to(torch.float64)  # (N, d) @ (d, F)
        if d <= BLOCK:
            return p @ k  # (N, d) @ (d, F)
        total = torch.zeros(len(p), k.shape[1], dtype=torch.float64, device=k.device)
        for at in range(0, d, BLOCK):
            total += p[:, at : at + BLOCK] @ k[at : at + BLOCK]  # (N, b) @ (b, F), exact
        return total


def _float32_product_is_exact(k: torch.Tensor, rows: int) -> bool:
    """Whether the float32 products of :func:`_integer_product` equal the float64 ones on public integers.

    The probe (``rows`` records, the shape the release uses) holds the grid's extremes (all 0, all
    255, alternating) and public random integers: the float32 product must match bit for bit.
    """
    gen = torch.Generator().manual_seed(20261206)
    p = torch.randint(0, LEVELS + 1, (rows, k.shape[0]), generator=gen).to(torch.float32)
    p[0], p[-1] = 0, LEVELS
    if rows > 2:
        p[1, ::2], p[1, 1::2] = LEVELS, 0
    p = p.to(k.device)
    fast = _integer_product(p, k).to(torch.float64)
    return bool(torch.equal(fast, _integer_product(p, k, float64=True)))
