"""The tabular generator: an MLP backbone with one output head per column.

``z ⊕ one-hot(y) → (linear, BN, ReLU) × 2 → linear`` gives the raw outputs of one
head per block of the encoded row (:meth:`mmgen.data.tables.Schema.layout`):

* ``binned`` (a schema's number on F fine public cells): F cell logits (softmax, p); the
  block is ``[Σ_k p_k (k + ½)/F, p]`` (the value's expected position, then the cells);
* ``binned-missing``: the same and a missingness probability m; the block is
  ``[t·(1−m), m, p·(1−m)]``;
* ``categorical``: a softmax over the categories;
* ``numeric`` / ``numeric-missing`` (vectors without a schema): sigmoid value (and missingness).

While training, the heads output the *relaxed* probabilities, so the tabular
feature maps stay differentiable (for the marginal map, the features of a
relaxed row are exactly the expected features of its draws). :meth:`sample` draws
real categories, cells and gaps, and places a number uniformly inside its drawn cell
(``(k + U)/F``; the schema decodes a per-value integer cell to its value): every sampled
row is a valid encoding. Where a value falls inside a coarse bin is set by the fine cells,
which the ``table-marginals`` map releases as 1-way marginals; inside a fine cell it is
uniform, never collapsed to one point.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..features.tabular import check_layout
from .base import Generator, GeneratorConfig, register

__all__ = ["TableGenerator"]


@register
class TableGenerator(Generator):
    """Class-conditional generator of encoded table rows (see the module)."""

    name = "table"

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        self.layout = check_layout(config.layout)
        raw = {"numeric": lambda s, b: 1, "numeric-missing": lambda s, b: 2, "binned": lambda s, b: s - 1,
               "binned-missing": lambda s, b: s - 1, "categorical": lambda s, b: s}  # fmt: skip
        self.raw_sizes = [raw[kind](size, nb) for kind, size, nb in self.layout]
        d = sum(self.raw_sizes)
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
        for (kind, size, nb), width in zip(self.layout, self.raw_sizes):
            block = logits[:, pos : pos + width]
            pos += width
            if kind == "categorical":
                out.append(torch.softmax(block, dim=1))
            elif kind in ("numeric", "numeric-missing"):
                out.append(torch.sigmoid(block))
            else:
                cells = size - (1 if kind == "binned" else 2)
                p = torch.softmax(block[:, :cells], dim=1)
                t = (p * (torch.arange(cells, dtype=p.dtype, device=p.device) + 0.5)).sum(dim=1, keepdim=True) / cells
                if kind == "binned":
                    out.append(torch.cat([t, p], dim=1))
                else:
                    m = torch.sigmoid(block[:, cells:])
                    out.append(torch.cat([t * (1 - m), m, p * (1 - m)], dim=1))
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None, batch_size: int = 2048) -> torch.Tensor:
        """Encoded rows with real draws: a category, a cell and a gap per block, each drawn from the head's probabilities."""
        device = next(self.parameters()).device
        rows = []
        for start in range(0, len(labels), batch_size):
            yb = labels[start : start + batch_size]
            z = self.latent(len(yb), generator).to(device)
            c = self.config
            raw = self.net(torch.cat([z, F.one_hot(yb.to(device), c.n_classes).to(z.dtype)], dim=1)).cpu().double()
            rows.append(self._draw(raw, generator))
        return torch.cat(rows).float() if rows else torch.empty(0, *self.config.input_shape)

    def _draw(self, raw: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        def pick(probs):  # inverse CDF: the first cell whose cumulative probability exceeds u·total (a zero cell
            # never), 10x faster than torch.multinomial for one draw per row
            cdf = probs.clamp(min=0).cumsum(dim=1)
            u = torch.rand(len(cdf), 1, generator=generator, dtype=cdf.dtype) * cdf[:, -1:]
            return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=cdf.shape[1] - 1)

        out, pos = [], 0
        for (kind, size, nb), width in zip(self.layout, self.raw_sizes):
            block = raw[:, pos : pos + width]
            pos += width
            if kind == "categorical":
                out.append(F.one_hot(pick(torch.softmax(block, dim=1)), size).to(raw.dtype))
                continue
            if kind in ("numeric", "numeric-missing"):
                t = torch.sigmoid(block[:, :1])
                bins = None
            else:
                cells = size - (1 if kind == "binned" else 2)
                k = pick(torch.softmax(block[:, :cells], dim=1))
                u = torch.rand(len(k), 1, generator=generator, dtype=raw.dtype)
                t, bins = (k[:, None] + u) / cells, F.one_hot(k, cells).to(raw.dtype)
            if kind in ("numeric-missing", "binned-missing"):
                m = torch.sigmoid(block[:, -1:])
                gap = (torch.rand(len(block), 1, generator=generator, dtype=raw.dtype) < m).to(raw.dtype)
                parts = [t * (1 - gap), gap] + ([bins * (1 - gap)] if bins is not None else [])
            else:
                parts = [t] + ([bins] if bins is not None else [])
            out.append(torch.cat(parts, dim=1))
        return torch.cat(out, dim=1)
