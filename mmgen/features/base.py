"""The feature-map interface and the registry by name.

A feature map φ sends one record ``x`` (of a declared shape, inside a declared
public domain) to a vector in R^D with ``‖φ(x)‖₂ ≤ max_norm ≤ 1`` for *every*
``x`` in the domain: this bound is the sensitivity of the release and is a
promise each subclass keeps by construction or by explicit normalisation.

A feature map is set up from a *shape, the domain bounds and a seed*, never
from data (unlike scikit-learn's ``gamma="scale"``, which reads the variance of
``X``): anything data-dependent would leak without noise.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..config import Config
from ..errors import DataError, MMGenError, NotFittedError

__all__ = ["FeatureMap", "class_mean_matching_loss", "matching_loss_from_sums", "register", "create", "from_spec", "list_feature_maps"]


class FeatureMap(nn.Module):
    """Base class of every feature map.

    Subclasses set ``name`` and ``Config`` (a frozen :class:`~mmgen.config.Config`),
    implement :meth:`_setup` (draw public parameters from the seed, store them as
    attributes ending in ``_``), :meth:`_features` and :attr:`output_dim`.

    Args:
        config: the hyper-parameters, stored unchanged.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[Config]] = Config
    max_norm: ClassVar[float] = 1.0

    def __init__(self, config: Config):
        super().__init__()
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} expects a {self.Config.__name__}. Got {type(config).__name__}.")
        self.config = config
        self.input_shape_: tuple[int, ...] | None = None
        self.bounds_: tuple[float, float] | None = None

    # -- set-up -------------------------------------------------------------
    @classmethod
    def from_options(cls, **options: Any) -> "FeatureMap":
        """Builds the map from keyword options (unknown keys raise ``TypeError``)."""
        return cls(cls.Config.from_dict(options))

    def setup(self, input_shape: Sequence[int], bounds: tuple[float, float] = (0.0, 1.0)) -> "FeatureMap":
        """Draws the public parameters for records of ``input_shape`` in ``[low, high]``.

        Args:
            input_shape: the shape of one record, e.g. ``(1, 28, 28)``.
            bounds: the declared public domain ``(low, high)`` of every value.

        Returns:
            ``self``, set up.
        """
        input_shape = tuple(int(s) for s in input_shape)
        if not input_shape or any(s <= 0 for s in input_shape):
            raise DataError(f"input_shape must be a non-empty tuple of positive sizes. Got {input_shape}.")
        low, high = float(bounds[0]), float(bounds[1])
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise DataError(f"bounds must be finite with low < high. Got ({low}, {high}).")
        self.input_shape_ = input_shape
        self.bounds_ = (low, high)
        self._setup()
        return self

    def _setup(self) -> None:
        raise NotImplementedError

    @property
    def is_setup(self) -> bool:
        return self.input_shape_ is not None

    def _check_setup(self) -> None:
        if not self.is_setup:
            raise NotFittedError(
                f"This {type(self).__name__} is not set up yet: call .setup(input_shape) "
                "or build it with mmgen.features.create(name, input_shape=...)."
            )

    @property
    def input_dim(self) -> int:
        self._check_setup()
        return math.prod(self.input_shape_)

    @property
    def output_dim(self) -> int:
        """D, the length of φ(x)."""
        raise NotImplementedError

    # -- evaluation ---------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps records to features.

        Args:
            x ((N, *input_shape) Tensor): records inside the declared domain.

        Returns:
            (N, D) Tensor: the features, each row of norm ≤ ``max_norm``.
        """
        self._check_setup()
        if tuple(x.shape[1:]) != self.input_shape_:
            raise DataError(
                f"Expected x of shape (N, {', '.join(map(str, self.input_shape_))}). Got {tuple(x.shape)}."
            )
        return self._features(x.reshape(len(x), -1))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def class_sums(self, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
        """Class-conditional sums ``Σ_i φ(x_i) ⊗ e_{y_i}`` of one batch.

        Args:
            x ((N, *input_shape) Tensor): records.
            y ((N,) Tensor): int64 labels in ``[0, n_classes)``.
            n_classes: C.

        Returns:
            (C, D) Tensor: row c is the sum of φ(x_i) over records of class c.
        """
        phi = self(x)
        out = torch.zeros(n_classes, phi.shape[1], dtype=phi.dtype, device=phi.device)
        return out.index_add_(0, y, phi)  # (C, D) += scatter of (N, D) rows by label

    def release_features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) at the precision of the release path: float64 wherever the map can compute in it.

        The release caps each row's norm and sums in exact fixed point
        (:mod:`mmgen.privacy.bounds`); computing the features in float64 keeps
        a record's rounded row independent of the batch it sits in. Maps that
        run a float32-only network (perceptual) return float32.

        Args:
            x ((N, *input_shape) Tensor): records inside the declared domain.

        Returns:
            (N, D) Tensor.
        """
        return self(x.to(torch.float64))

    def matching_loss(
        self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, *, unbiased: bool = False
    ) -> torch.Tensor:
        """The generator's moment-matching loss for one batch (differentiable in ``x``).

        See :func:`class_mean_matching_loss`.

        Args:
            x ((B, *input_shape) Tensor): generated records.
            y ((B,) Tensor): their int64 labels.
            targets ((C, D) Tensor): the released class-wise mean embeddings.
            unbiased: use the unbiased estimate of ``‖t_c − E φ(G(z, c))‖²``.

        Returns:
            A scalar tensor.
        """
        return class_mean_matching_loss(self(x), y, targets, unbiased=unbiased)

    # -- description ----------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """The public, JSON-ready description that rebuilds this map exactly."""
        self._check_setup()
        return {
            "name": self.name,
            "config": self.config.to_dict(),
            "input_shape": list(self.input_shape_),
            "bounds": list(self.bounds_),
            "output_dim": self.output_dim,
            "max_norm": self.max_norm,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.to_dict().items())


def class_mean_matching_loss(
    phi: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, *, unbiased: bool = False
) -> torch.Tensor:
    """The batch estimate of ``Σ_c ‖t_c − E[φ(G(z, c))]‖²`` over the classes present (the spec of every matching loss).

    With ``S_c = Σ_{i: y_i = c} φ_i`` and ``n_c`` records of class c in the batch:

    * biased (DP-MERF's loss): ``Σ_c ‖t_c − S_c/n_c‖²``. Its expectation is the target plus
      ``tr Cov_c(φ)/n_c``, a penalty on the *spread* of the generated class, which pushes a
      generator trained with small per-class batches towards too little diversity;
    * unbiased: ``Σ_c ‖t_c‖² − 2⟨t_c, S_c⟩/n_c + (‖S_c‖² − Σ_i ‖φ_i‖²)/(n_c(n_c − 1))``, the
      U-statistic (Gretton et al., JMLR 2012, eq. 3, with the target fixed), whose expectation is
      exactly ``‖t_c − E φ‖²``; it can be negative. A class with one record in the batch uses
      the biased term (no unbiased estimate exists from one record).

    Args:
        phi ((B, D) Tensor): features of generated records.
        y ((B,) Tensor): their int64 labels.
        targets ((C, D) Tensor): the released class-wise mean embeddings.
        unbiased: which estimate (see above).

    Example:
        >>> import torch
        >>> phi, y, t = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), torch.zeros(1, 2)
        >>> float(class_mean_matching_loss(phi, y, t)), float(class_mean_matching_loss(phi, y, t, unbiased=True))
        (0.5, 0.0)
    """
    n_classes = targets.shape[0]
    counts = torch.bincount(y, minlength=n_classes).to(phi.dtype)
    sums = torch.zeros(n_classes, phi.shape[1], dtype=phi.dtype, device=phi.device).index_add(0, y, phi)  # (C, D)
    squares = None
    if unbiased:
        squares = torch.zeros(n_classes, dtype=phi.dtype, device=phi.device).index_add(0, y, (phi * phi).sum(dim=1))
    return matching_loss_from_sums(sums, counts, targets, squares=squares)


def matching_loss_from_sums(
    sums: torch.Tensor, counts: torch.Tensor, targets: torch.Tensor, *, squares: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`class_mean_matching_loss` from per-class batch statistics (shared with the fused kernels).

    Args:
        sums ((C, D) Tensor): ``S_c``, the per-class sums of the batch's features.
        counts ((C,) Tensor): ``n_c``.
        targets ((C, D) Tensor): the released class-wise mean embeddings.
        squares ((C,) Tensor or None): ``Σ_{i: y_i = c} ‖φ_i‖²`` for the unbiased estimate; None for the biased one.
    """
    present = counts > 0
    n, s, t = counts[present], sums[present], targets[present].to(sums.dtype)
    if squares is None:
        return ((s / n[:, None] - t) ** 2).sum()
    cross = (t * t).sum(dim=1) - 2.0 * (t * s).sum(dim=1) / n  # (C',) ‖t‖² − 2⟨t, S⟩/n
    ss = (s * s).sum(dim=1)
    quad = torch.where(n > 1, (ss - squares[present]) / (n * (n - 1)).clamp(min=1.0), ss / (n * n))
    return (cross + quad).sum()


_REGISTRY: dict[str, type[FeatureMap]] = {}


def register(cls: type[FeatureMap]) -> type[FeatureMap]:
    """Class decorator adding a feature map to the registry under ``cls.name``.

    Raises:
        MMGenError: if the name is empty or taken.
    """
    if not cls.name:
        raise MMGenError(f"{cls.__name__} has no name to register under.")
    if cls.name in _REGISTRY:
        raise MMGenError(f"A feature map named {cls.name!r} is already registered ({_REGISTRY[cls.name].__name__}).")
    _REGISTRY[cls.name] = cls
    return cls


def list_feature_maps() -> list[str]:
    """The registered feature-map names, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type[FeatureMap]:
    """The feature-map class registered as ``name``.

    Raises:
        MMGenError: if no such name is registered; the message lists the known names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MMGenError(f"Unknown feature map {name!r}. Known: {', '.join(list_feature_maps())}.") from None


def create(
    name: str,
    *,
    input_shape: Sequence[int] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    **options: Any,
) -> FeatureMap:
    """Builds a registered feature map, set up when ``input_shape`` is given.

    Args:
        name: a registered name (see :func:`list_feature_maps`).
        input_shape: shape of one record; with it the map is set up and ready.
        bounds: the declared public domain of every value.
        **options: the map's hyper-parameters (its ``Config`` fields).

    Example:
        >>> import torch, mmgen
        >>> phi = mmgen.features.create("rff", input_shape=(1, 8, 8), n_features=100, seed=0)
        >>> phi(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 100])
    """
    fmap = get_class(name).from_options(**options)
    return fmap.setup(input_shape, bounds) if input_shape is not None else fmap


def from_spec(spec: dict[str, Any]) -> FeatureMap:
    """Rebuilds a feature map from :meth:`FeatureMap.spec` (e.g. read from a release)."""
    config = dict(spec["config"])
    if spec["name"] == "table-marginals" and "weighting" not in config:
        config["weighting"] = "equal"  # written before the per-table weights existed: every table weighed the same
    if spec["name"] == "rff" and "frequencies" not in config:
        config["frequencies"] = "gaussian"  # written before lattice frequencies existed: W ~ N(0, ℓ⁻²)
    return create(spec["name"], input_shape=spec["input_shape"], bounds=tuple(spec["bounds"]), **config)
