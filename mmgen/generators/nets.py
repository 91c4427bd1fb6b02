"""Class-conditional generators: a small convolutional one for images and an MLP.

Both map a latent code ``z ~ N(0, I)`` and a label ``y`` to a record inside
the declared domain ``[low, high]`` (a scaled sigmoid output), so a generator
cannot produce values a feature map was not bounded for.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Config
from ..errors import MMGenError

__all__ = [
    "GeneratorConfig", "Generator", "ConvGenerator", "MLPGenerator", "create_generator", "for_release", "auto_kind",
    "GENERATORS",
]  # fmt: skip

log = logging.getLogger("mmgen.generators")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig(Config):
    """Architecture of a generator (stored in checkpoints).

    Attributes:
        kind: a name in :data:`GENERATORS` (``"conv"``, ``"mlp"``, ``"resnet"``); ``"auto"``
            is resolved by :func:`for_release` before a config is made.
        input_shape: the shape of one record, e.g. ``(1, 28, 28)``.
        n_classes: C.
        low, high: the declared domain of the output.
        latent_dim: length of z.
        width: channels (conv) or hidden units (mlp) of the widest layer.
        layout: for ``"table"``, the encoded row's blocks (:meth:`mmgen.data.tables.Schema.layout`).
    """

    kind: str = "conv"
    input_shape: tuple[int, ...] = (1, 28, 28)
    n_classes: int = 10
    low: float = 0.0
    high: float = 1.0
    latent_dim: int = 32
    width: int = 64
    layout: tuple | None = None

    def __post_init__(self):
        if self.kind not in GENERATORS:
            raise MMGenError(f"Unknown generator {self.kind!r}. Known: {', '.join(GENERATORS)}.")
        if self.kind == "conv" and len(self.input_shape) != 3:
            raise MMGenError(
                f"The conv generator makes (C, H, W) images. Got input_shape={tuple(self.input_shape)}; "
                "use 'mlp' (or 'auto', which picks by the shape)."
            )
        if (self.kind == "table") != (self.layout is not None):
            raise MMGenError("The 'table' generator, and only it, needs the table's `layout` (a release of a table has one).")


class Generator(nn.Module):
    """Base: holds the config, scales the output into the domain and samples."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config

    def _to_domain(self, logits: torch.Tensor) -> torch.Tensor:
        c = self.config
        return c.low + (c.high - c.low) * torch.sigmoid(logits)

    def latent(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator, device=device)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None, batch_size: int = 2048) -> torch.Tensor:
        """Generates one record per label.

        Args:
            labels ((N,) Tensor): int64 class labels.
            generator: a torch random generator for reproducible latents.

        Returns:
            (N, *input_shape) Tensor in ``[low, high]``.
        """
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(labels), batch_size):
            yb = labels[start : start + batch_size]
            z = self.latent(len(yb), generator).to(device)
            out.append(self(z, yb.to(device)).cpu())
        return torch.cat(out) if out else torch.empty(0, *self.config.input_shape)


class ConvGenerator(Generator):
    """z ⊕ one-hot(y) → linear → (width, ⌈H/4⌉, ⌈W/4⌉) → 2 × (upsample, conv, BN, ReLU) → conv → crop."""

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        ch, h, w = config.input_shape
        self.h0, self.w0 = math.ceil(h / 4), math.ceil(w / 4)
        wd = config.width
        self.fc = nn.Sequential(
            nn.Linear(config.latent_dim + config.n_classes, 2 * wd * self.h0 * self.w0),
            nn.BatchNorm1d(2 * wd * self.h0 * self.w0),
            nn.ReLU(),
        )
        self.up1 = nn.Sequential(nn.Conv2d(2 * wd, wd, 3, padding=1), nn.BatchNorm2d(wd), nn.ReLU())
        self.up2 = nn.Sequential(nn.Conv2d(wd, wd // 2, 3, padding=1), nn.BatchNorm2d(wd // 2), nn.ReLU())
        self.out = nn.Conv2d(wd // 2, ch, 3, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.config
        h = self.fc(torch.cat([z, F.one_hot(y, c.n_classes).to(z.dtype)], dim=1))
        h = h.view(len(z), -1, self.h0, self.w0)
        h = self.up1(F.interpolate(h, scale_factor=2))
        h = self.up2(F.interpolate(h, scale_factor=2))
        img = self.out(h)[:, :, : c.input_shape[1], : c.input_shape[2]]
        return self._to_domain(img)


class MLPGenerator(Generator):
    """z ⊕ one-hot(y) → (linear, BN, ReLU) × 2 → linear → reshape."""

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        d = math.prod(config.input_shape)
        hidden = 4 * config.width
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim + config.n_classes, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * hidden), nn.BatchNorm1d(2 * hidden), nn.ReLU(),
            nn.Linear(2 * hidden, d),
        )  # fmt: skip

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.config
        out = self.net(torch.cat([z, F.one_hot(y, c.n_classes).to(z.dtype)], dim=1))
        return self._to_domain(out.view(len(z), *c.input_shape))


from .resnet import ResNetGenerator  # noqa: E402  (after Generator: resnet.py subclasses it)
from .tabular import TableGenerator  # noqa: E402

GENERATORS = {"conv": ConvGenerator, "mlp": MLPGenerator, "resnet": ResNetGenerator, "table": TableGenerator}


def create_generator(config: GeneratorConfig | None = None, **options) -> Generator:
    """Builds a generator from a :class:`GeneratorConfig` or its fields."""
    config = config if config is not None else GeneratorConfig.from_dict(options)
    return GENERATORS[config.kind](config)


def auto_kind(input_shape: tuple[int, ...], table: bool = False) -> str:
    """The generator ``"auto"`` stands for: ``"table"`` for a table, ``"conv"`` for (C, H, W) images, ``"mlp"`` otherwise.

    Args:
        input_shape: the shape of one record, e.g. ``(1, 28, 28)`` or ``(30,)``.

    Example:
        >>> auto_kind((1, 28, 28)), auto_kind((30,))
        ('conv', 'mlp')
    """
    if table:
        return "table"
    return "conv" if len(tuple(input_shape)) == 3 else "mlp"


def for_release(release, kind: str = "auto", **options) -> Generator:
    """A generator shaped for a release's schema (shape, classes, domain).

    Args:
        release: the :class:`~mmgen.release.Release` (only its public schema is read).
        kind: a name in :data:`GENERATORS`, or ``"auto"`` (the default): ``"conv"`` for
            (C, H, W) images, ``"table"`` for a table's release, ``"mlp"`` for other vectors (:func:`auto_kind`); the choice is
            logged at INFO on the ``mmgen.generators`` logger.
        options: further :class:`GeneratorConfig` fields (``latent_dim``, ``width``).

    Returns:
        An untrained :class:`Generator`.
    """
    table = release.schema.get("table")
    if kind == "auto":
        kind = auto_kind(release.input_shape, table is not None)
        log.info("generator 'auto' chose %r for records of shape %s", kind, tuple(release.input_shape))
    if kind == "table":
        if table is None:
            raise MMGenError("The 'table' generator needs a release of a table (made with a schema).")
        from ..data.schema import Schema

        options = {"layout": Schema.from_dict(table).layout(), **options}
    low, high = release.bounds
    return create_generator(
        kind=kind, input_shape=release.input_shape, n_classes=release.n_classes, low=low, high=high, **options
    )
