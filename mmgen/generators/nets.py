"""Class-conditional generators: a small convolutional one for images (``conv``) and an MLP (``mlp``).

Both map a latent code ``z ~ N(0, I)`` and a label ``y`` to a record inside
the declared domain ``[low, high]`` (a scaled sigmoid output), so a generator
cannot produce values a feature map was not bounded for.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import Generator, GeneratorConfig, register

__all__ = ["ConvGenerator", "MLPGenerator"]


@register
class ConvGenerator(Generator):
    """z ⊕ one-hot(y) → linear → (width, ⌈H/4⌉, ⌈W/4⌉) → 2 × (upsample, conv, BN, ReLU) → conv → crop."""

    name = "conv"

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


@register
class MLPGenerator(Generator):
    """z ⊕ one-hot(y) → (linear, BN, ReLU) × 2 → linear → reshape."""

    name = "mlp"

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
