"""The tabular generator: an MLP backbone with one output head per column.

``z ⊕ one-hot(y) → (linear, BN, ReLU) × 2 → linear`` gives one logit per slot of
the encoded row (:meth:`mmgen.data.tables.Schema.layout`); each block then gets
its own head:

* ``numeric``: a sigmoid, a value in [0, 1] (the declared bounds after decoding);
* ``numeric-missing``: a sigmoid value and a sigmoid missingness probability;
* ``categorical``: a softmax over the categories.

While training, the heads output the *relaxed* probabilities, so the tabular
feature maps stay differentiable (for the marginal map, the features of a
relaxed row are the expected features of its draws). :meth:`sample` draws real
categories and real gaps from them, so every sampled row is a valid encoding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .nets import Generator, GeneratorConfig

__all__ = ["TableGenerator"]


class TableGenerator(Generator):
    """Class-conditional generator of encoded table rows (see the module)."""

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        from ..features.tabular import check_layout

        self.layout = check_layout(config.layout)
        d = sum(size for _, size, _ in self.layout)
        hidden = 4 * config.width
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim + config.n_classes, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, d),
        )  # fmt: skip

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Relaxed encoded rows ((B, D) in [0, 1]): values, missingness probabilities, category probabilities."""
        c = self.config
        logits = self.net(torch.cat([z, F.one_hot(y, c.n_classes).to(z.dtype)], dim=1))
        out, pos = [], 0
        for kind, size, _ in self.layout:
            block = logits[:, pos : pos + size]
            pos += size
            out.append(torch.softmax(block, dim=1) if kind == "categorical" else torch.sigmoid(block))
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None, batch_size: int = 2048) -> torch.Tensor:
        """Encoded rows with real draws: one category per block (one-hot), gaps as 0/1 with the value zeroed."""
        relaxed = super().sample(labels, generator, batch_size)
        out, pos = [], 0
        for kind, size, _ in self.layout:
            block = relaxed[:, pos : pos + size]
            pos += size
            if kind == "categorical":
                pick = torch.multinomial(block.double().clamp(min=0) + 1e-12, 1, generator=generator).squeeze(1)
                out.append(F.one_hot(pick, size).to(relaxed.dtype))
            elif kind == "numeric-missing":
                gap = (torch.rand(len(block), generator=generator) < block[:, 1]).to(relaxed.dtype)
                out.append(torch.stack([block[:, 0] * (1 - gap), gap], dim=1))
            else:
                out.append(block)
        return torch.cat(out, dim=1) if out else relaxed
