"""The generator protocol Private Evolution queries: a random API and a variation API.

Private Evolution (PE; Lin et al., "Differentially Private Synthetic Data via
Foundation Model APIs 1: Images", ICLR 2024) never trains on the private data.
It only asks a generator for

* ``random_api(labels)``: one fresh sample per label, and
* ``variation_api(population, strength)``: one sample near each given one,
  ``strength`` in (0, 1] saying how far (1: as far as a fresh sample).

Both are public computations: they never see private data. A
:class:`Population` carries the samples with whatever the API needs to vary
them (for an mmgen generator, the latent codes).

Two adapters are provided:

* :class:`GeneratorAPI` wraps an mmgen checkpoint (:class:`~mmgen.train.Trained`):
  random draws fresh latents, variation moves each latent along a great circle
  of the prior, ``z' = sqrt(1 − s²)·z + s·ξ`` with ``ξ ~ N(0, I)``, so that a
  varied latent still follows the prior ``N(0, I)``;
* :class:`CallableAPI` wraps two user functions (for example a local
  diffusion model's sampler and its image-to-image variation).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Protocol

import torch

from ..errors import MMGenError

__all__ = ["Population", "VariationAPI", "GeneratorAPI", "CallableAPI"]


@dataclasses.dataclass
class Population:
    """Synthetic samples with their labels and the API's state.

    Attributes:
        x ((n, ...) Tensor): the samples, in the data's domain.
        y ((n,) int64 Tensor): their labels.
        state ((n, ...) Tensor or None): what the API needs to vary each sample (latent codes).
    """

    x: torch.Tensor
    y: torch.Tensor
    state: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: torch.Tensor) -> "Population":
        """The samples at ``index`` (repeats allowed), state included."""
        return Population(self.x[index], self.y[index], None if self.state is None else self.state[index])

    @staticmethod
    def cat(parts: list["Population"]) -> "Population":
        states = [p.state for p in parts]
        state = None if any(s is None for s in states) else torch.cat(states)
        return Population(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]), state)


class VariationAPI(Protocol):
    """What Private Evolution needs from a generator (public computations only)."""

    def random_api(self, labels: torch.Tensor) -> Population:
        """One fresh sample for each label in ``labels`` ((n,) int64)."""
        ...

    def variation_api(self, population: Population, strength: float) -> Population:
        """One sample near each of ``population``'s, with the same labels; ``strength`` in (0, 1]."""
        ...


def _check_strength(strength: float) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not (0 < strength <= 1):
        raise MMGenError(f"A variation `strength` must be a number in (0, 1]. Got {strength!r}.")
    return float(strength)


class GeneratorAPI:
    """An mmgen generator as Private Evolution's API: latents in, samples out.

    Args:
        trained: a fitted generator (:func:`mmgen.fit` or ``Trained.load(CKPT)``), or a bare
            :class:`~mmgen.generators.Generator` (e.g. an untrained one, as a control).
        seed: seed of the latent draws (public randomness; ``None``: fresh).
        batch_size: samples per forward pass (memory only).
    """

    def __init__(self, trained, *, seed: int | None = None, batch_size: int = 2048) -> None:
        self.generator = getattr(trained, "generator", trained).eval()
        self.batch_size = int(batch_size)
        self.rng = torch.Generator()
        self.rng.manual_seed(seed) if seed is not None else self.rng.seed()

    @property
    def n_classes(self) -> int:
        return int(self.generator.config.n_classes)

    @torch.no_grad()
    def _decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        device = next(self.generator.parameters()).device
        out = [self.generator(z[i : i + self.batch_size].to(device), y[i : i + self.batch_size].to(device)).cpu()
               for i in range(0, len(y), self.batch_size)]  # fmt: skip
        return torch.cat(out) if out else torch.empty(0, *self.generator.config.input_shape)

    def random_api(self, labels: torch.Tensor) -> Population:
        labels = torch.as_tensor(labels).long()
        z = torch.randn(len(labels), self.generator.config.latent_dim, generator=self.rng)
        return Population(self._decode(z, labels), labels, z)

    def variation_api(self, population: Population, strength: float) -> Population:
        s = _check_strength(strength)
        if population.state is None:
            raise MMGenError("GeneratorAPI varies latents: the population has none (was it made by another API?).")
        xi = torch.randn(population.state.shape, generator=self.rng)
        z = math.sqrt(1.0 - s * s) * population.state + s * xi
        return Population(self._decode(z, population.y), population.y, z)


class CallableAPI:
    """Two user functions as Private Evolution's API.

    Args:
        random_fn: ``random_fn(labels) -> x``: one sample (a tensor in the data's domain) per label.
        variation_fn: ``variation_fn(x, labels, strength) -> x'``: one sample near each of ``x``.

    Example:
        >>> import torch
        >>> api = CallableAPI(lambda y: torch.rand(len(y), 4), lambda x, y, s: (x + s * torch.randn_like(x)).clamp(0, 1))
        >>> p = api.variation_api(api.random_api(torch.tensor([0, 1, 1])), 0.1)
        >>> tuple(p.x.shape), p.y.tolist()
        ((3, 4), [0, 1, 1])
    """

    def __init__(self, random_fn: Callable, variation_fn: Callable) -> None:
        if not (callable(random_fn) and callable(variation_fn)):
            raise MMGenError("CallableAPI needs two callables: random_fn(labels) and variation_fn(x, labels, strength).")
        self.random_fn, self.variation_fn = random_fn, variation_fn

    def _checked(self, x, labels: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or len(x) != len(labels):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise MMGenError(f"{what} must return a float tensor with one sample per label ({len(labels)}). Got {got}.")
        return x.detach().cpu()

    def random_api(self, labels: torch.Tensor) -> Population:
        labels = torch.as_tensor(labels).long()
        return Population(self._checked(self.random_fn(labels), labels, "random_fn"), labels)

    def variation_api(self, population: Population, strength: float) -> Population:
        s = _check_strength(strength)
        x = self._checked(self.variation_fn(population.x, population.y, s), population.y, "variation_fn")
        return Population(x, population.y)
