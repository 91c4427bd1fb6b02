"""Random Fourier features for the Gaussian kernel (DP-MERF).

Bochner's theorem writes the Gaussian kernel as an expectation over random
frequencies (Rahimi & Recht, 2007):

    k(x, x') = exp(-‖x − x'‖² / (2ℓ²)) = E_{w ~ N(0, ℓ⁻² I)} [cos(wᵀ(x − x'))],

so with ``W = [w_1 … w_{D/2}]`` drawn once from a public seed,

    φ(x) = [cos(xW), sin(xW)] / sqrt(D/2),    φ(x)ᵀφ(x') ≈ k(x, x'),

and ``‖φ(x)‖₂ = 1`` exactly for every x (cos² + sin² = 1), which is the
sensitivity bound of the release (Harder et al., "DP-MERF", AISTATS 2021, eq. 5).

The length-scale ℓ is a *public* parameter. Its default is data-independent:
``ℓ = bandwidth_scale · (high − low) · sqrt(d)``, a fixed fraction of the
domain's diagonal. (DP-MERF's median heuristic reads pairwise distances of the
private data, which the privacy contract forbids.) ``bandwidth_scale`` was
chosen on a validation split of digits' *training* records
(``benchmarks/tune_bandwidth.py``), never on a test split.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..config import Config
from mmgen.kernels import rff_class_sums, rff_features, rff_matching_loss

from ..errors import DataError, MMGenError
from .base import FeatureMap, register

__all__ = ["RFFConfig", "RandomFourierFeatures", "DEFAULT_BANDWIDTH_SCALE"]

DEFAULT_BANDWIDTH_SCALE = 0.25


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
    """

    n_features: int = 10_000
    bandwidth: float | None = None
    bandwidth_scale: float = DEFAULT_BANDWIDTH_SCALE
    seed: int = 0
    backend: str = "auto"

    def __post_init__(self):
        if not isinstance(self.n_features, int) or self.n_features < 2 or self.n_features % 2:
            raise MMGenError(f"`n_features` must be an even integer ≥ 2. Got {self.n_features!r}.")
        if self.bandwidth is not None and not (self.bandwidth > 0 and math.isfinite(self.bandwidth)):
            raise MMGenError(f"`bandwidth` must be > 0. Got {self.bandwidth!r}.")
        if not self.bandwidth_scale > 0:
            raise MMGenError(f"`bandwidth_scale` must be > 0. Got {self.bandwidth_scale!r}.")
        if self.backend not in ("auto", "torch", "triton"):
            raise MMGenError(f"`backend` must be 'auto', 'torch' or 'triton'. Got {self.backend!r}.")


@register
class RandomFourierFeatures(FeatureMap):
    """Random Fourier features ``[cos(xW), sin(xW)] / sqrt(D/2)`` of the Gaussian kernel.

    Attributes:
        weights_ ((d, D/2) Tensor): the frequencies, drawn from N(0, ℓ⁻²) with ``seed``.
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
        w = torch.randn(d, cfg.n_features // 2, generator=gen, dtype=torch.float64) / self.bandwidth_
        self.register_buffer("weights_", w.to(torch.float32), persistent=False)

    @property
    def output_dim(self) -> int:
        return self.config.n_features

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return rff_features(x.to(self.weights_.dtype), self.weights_)

    def release_features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) in float64 (the frequencies, drawn in float64 and stored as float32, are exact in float64).

        The same values as :func:`mmgen.kernels.rff_features` in float64, written into one buffer.
        """
        self._check_setup()
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
