"""Generators by kind: the :class:`GeneratorConfig`, the :class:`Generator` base class and their registry.

A generator maps a latent code ``z ~ N(0, I)`` and a label ``y`` to a record inside the
declared domain ``[low, high]``. Each kind is a :class:`Generator` subclass with a ``name``,
added by :func:`register` (as the feature maps are, :mod:`mmgen.features.base`):
``create_generator(kind="conv", ...)`` builds one, :func:`list_generators` lists them, and
:func:`for_release` shapes one for a release. The kinds live in their own modules
(``nets.py``: ``conv``, ``mlp``; ``resnet.py``; ``tabular.py``: ``table``), which import this
one and nothing imports back; :mod:`mmgen.generators` imports them all, so the registry is
full once the package is imported.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from typing import ClassVar

import torch
from torch import nn

from ..config import Config
from ..data.schema import Schema
from ..errors import MMGenError

__all__ = [
    "GeneratorConfig", "Generator", "register", "get_class", "list_generators", "create_generator", "for_release",
    "auto_kind", "GENERATORS",
]  # fmt: skip

log = logging.getLogger("mmgen.generators")

_REGISTRY: dict[str, type[Generator]] = {}
GENERATORS = types.MappingProxyType(_REGISTRY)  # a read-only view: kind -> class, in the order registered


def register(cls: type[Generator]) -> type[Generator]:
    """Class decorator adding a generator to the registry under ``cls.name``.

    Raises:
        MMGenError: if the name is empty or taken.
    """
    if not cls.name:
        raise MMGenError(f"{cls.__name__} has no name to register under.")
    if cls.name in _REGISTRY:
        raise MMGenError(f"A generator named {cls.name!r} is already registered ({_REGISTRY[cls.name].__name__}).")
    _REGISTRY[cls.name] = cls
    return cls


def list_generators() -> list[str]:
    """The registered generator kinds, sorted.

    >>> list_generators()
    ['conv', 'mlp', 'resnet', 'table']
    """
    return sorted(_REGISTRY)


def get_class(kind: str) -> type[Generator]:
    """The generator class registered as ``kind``.

    Raises:
        MMGenError: if no such kind is registered; the message lists the known kinds.
    """
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise MMGenError(f"Unknown generator {kind!r}. Known: {', '.join(_REGISTRY)}.") from None


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
        get_class(self.kind)  # an unknown kind raises, naming the known ones
        if self.kind == "conv" and len(self.input_shape) != 3:
            raise MMGenError(
                f"The conv generator makes (C, H, W) images. Got input_shape={tuple(self.input_shape)}; "
                "use 'mlp' (or 'auto', which picks by the shape)."
            )
        if (self.kind == "table") != (self.layout is not None):
            raise MMGenError("The 'table' generator, and only it, needs the table's `layout` (a release of a table has one).")


class Generator(nn.Module):
    """Base: holds the config, scales the output into the domain and samples.

    A subclass sets ``name`` (the ``kind`` it is built for) and is added to the registry by :func:`register`.
    """

    name: ClassVar[str] = ""

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


def create_generator(config: GeneratorConfig | None = None, **options) -> Generator:
    """Builds a registered generator from a :class:`GeneratorConfig` or its fields.

    Example:
        >>> g = create_generator(kind="mlp", input_shape=(30,), n_classes=2)
        >>> type(g).__name__, tuple(g.sample(torch.tensor([0, 1])).shape)
        ('MLPGenerator', (2, 30))
    """
    config = config if config is not None else GeneratorConfig.from_dict(options)
    return get_class(config.kind)(config)


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
        options = {"layout": Schema.from_dict(table).layout(), **options}
    low, high = release.bounds
    return create_generator(
        kind=kind, input_shape=release.input_shape, n_classes=release.n_classes, low=low, high=high, **options
    )
