"""A small class-conditional ResNet image generator (for rich statistics such as perceptual features).

The architecture of the DCGAN/SNGAN family's ResNet generators, scaled down:

    z ⊕ one-hot(y) → linear → (2w, ⌈H/4⌉, ⌈W/4⌉)
      → ResBlock↑(2w → w) → ResBlock↑(w → w/2) → BN, ReLU, conv3×3 → crop → sigmoid into [low, high]

where ``ResBlock↑(a → b)`` is ``BN, ReLU, upsample×2, conv3×3(a→b), BN, ReLU,
conv3×3(b→b)`` plus the shortcut ``upsample×2, conv1×1(a→b)``. The class also
enters every block through a learned per-class channel bias, so the label is
not forgotten in deep layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import MMGenError
from .base import Generator, GeneratorConfig, register

__all__ = ["ResNetGenerator"]


class _UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n_classes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        self.class_bias = nn.Embedding(n_classes, c_out)
        nn.init.zeros_(self.class_bias.weight)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(h, scale_factor=2)
        r = self.conv1(F.interpolate(F.relu(self.bn1(h)), scale_factor=2))
        r = r + self.class_bias(y)[:, :, None, None]  # (B, c_out, 1, 1) per-class bias
        r = self.conv2(F.relu(self.bn2(r)))
        return self.shortcut(up) + r


@register
class ResNetGenerator(Generator):
    """z ⊕ one-hot(y) → linear → 2 residual up-blocks (×4 resolution) → conv → crop → into the domain."""

    name = "resnet"

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        if len(config.input_shape) != 3:
            raise MMGenError(
                f"The resnet generator makes (C, H, W) images. Got input_shape={tuple(config.input_shape)}; use 'mlp'."
            )
        ch, h, w = config.input_shape
        self.h0, self.w0 = math.ceil(h / 4), math.ceil(w / 4)
        wd = config.width
        self.fc = nn.Linear(config.latent_dim + config.n_classes, 2 * wd * self.h0 * self.w0)
        self.block1 = _UpBlock(2 * wd, wd, config.n_classes)
        self.block2 = _UpBlock(wd, max(wd // 2, 8), config.n_classes)
        self.bn = nn.BatchNorm2d(max(wd // 2, 8))
        self.out = nn.Conv2d(max(wd // 2, 8), ch, 3, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.config
        h = self.fc(torch.cat([z, F.one_hot(y, c.n_classes).to(z.dtype)], dim=1))
        h = h.view(len(z), -1, self.h0, self.w0)  # (B, 2w, ⌈H/4⌉, ⌈W/4⌉)
        h = self.block2(self.block1(h, y), y)
        img = self.out(F.relu(self.bn(h)))[:, :, : c.input_shape[1], : c.input_shape[2]]
        return self._to_domain(img)
