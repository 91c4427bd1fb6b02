"""The class-conditional VAE and its Lipschitz constraint (Groß & Wunder, arXiv 2304.11336).

A record ``x`` in the declared domain ``[low, high]^d`` is scaled to
``u = (x − low)/(high − low) ∈ [0, 1]^d`` and joined with its one-hot label
``e_y``. The encoder mean and the decoder are multilayer perceptrons with ReLU
(1-Lipschitz) between dense layers:

    μ(u, y) = W_n ReLU(… ReLU(W_1 [u; e_y] + b_1) …) + b_n
    logits(z, y) = V_m ReLU(… ReLU(V_1 [z; e_y] + c_1) …) + c_m

The posterior is ``N(μ(u, y), s² I)`` with a fixed, public ``s``; samples are
``low + (high − low) · sigmoid(logits(z, y))`` with ``z ~ N(0, I)``.

**Lipschitz constraint by construction.** Every weight matrix is projected
after each optimiser step onto ``{W : ‖W‖₂ ≤ c}``, ``W ← W · min(1, c/‖W‖₂)``
(:class:`Projector`: the spectral norm by warm-started power iteration), and
once more with the exact spectral norm (largest singular value, :func:`project_`)
when training ends. With the encoder's
declared constant ``L`` spread over its ``n`` layers, ``c = L^{1/n}``, so
``‖μ(a) − μ(b)‖ ≤ Π_i ‖W_i‖₂ ‖a − b‖ ≤ L ‖a − b‖`` for any inputs ``a, b``
(the same for the decoder). The projection acts on the weights only, so it is
post-processing of DP-SGD's noisy updates. :func:`lipschitz_bound` recomputes
the product of the spectral norms in float64; the tests check it, and check it
against adversarial input pairs and power iteration.

The joined input ``[u; e_y]`` ranges over a set of diameter ``R = sqrt(d + 2)``
(the unit cube, and two one-hot vectors at distance √2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VAE", "Projector", "lipschitz_bound", "project_", "domain_diameter"]


def domain_diameter(input_dim: int) -> float:
    """R: the largest distance between two joined inputs ``[u; e_y]`` (u in the unit cube, e_y one-hot)."""
    return math.sqrt(input_dim + 2)


def _mlp(sizes: list[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))


def _run(layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
    for i, layer in enumerate(layers):
        h = layer(h)
        if i < len(layers) - 1:
            h = F.relu(h)
    return h


class VAE(nn.Module):
    """Class-conditional VAE on flattened records, with a fixed posterior standard deviation.

    Args:
        input_dim: d, values per record (784 for 28×28 images).
        n_classes: K.
        latent_dim: k.
        hidden: hidden widths of the encoder; the decoder mirrors them.
        posterior_std: s, the standard deviation of the posterior around μ.
        encoder_lipschitz, decoder_lipschitz: the declared constants L_μ and L_dec, or None for
            an unconstrained network.
    """

    def __init__(self, input_dim: int, n_classes: int, *, latent_dim: int, hidden: tuple[int, ...],
                 posterior_std: float, encoder_lipschitz: float | None, decoder_lipschitz: float | None) -> None:  # fmt: skip
        super().__init__()
        self.input_dim, self.n_classes, self.latent_dim = input_dim, n_classes, latent_dim
        self.posterior_std = float(posterior_std)
        self.encoder = _mlp([input_dim + n_classes, *hidden, latent_dim])
        self.decoder = _mlp([latent_dim + n_classes, *reversed(hidden), input_dim])
        self.encoder_lipschitz, self.decoder_lipschitz = encoder_lipschitz, decoder_lipschitz

    def onehot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.n_classes).to(self.encoder[0].weight.dtype)

    def encode(self, u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """μ((N, d) u, (N, K) one-hot e) → (N, k)."""
        return _run(self.encoder, torch.cat([u, e], dim=1))

    def decode(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Logits (N, d) of the scaled record, for (N, k) latents z and (N, K) one-hot labels e."""
        return _run(self.decoder, torch.cat([z, e], dim=1))

    def forward(self, u: torch.Tensor, e: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """Per-record negative ELBO (N,): Bernoulli cross-entropy of u (continuous targets) plus the KL term.

        ``xi`` (N, k) is the standard normal draw of the reparametrisation ``z = μ + s·xi``. With a fixed
        ``s`` the KL divergence to N(0, I) is ``‖μ‖²/2`` plus a constant, which is dropped.
        """
        mu = self.encode(u, e)
        logits = self.decode(mu + self.posterior_std * xi, e)
        return F.binary_cross_entropy_with_logits(logits, u, reduction="none").sum(1) + 0.5 * (mu**2).sum(1)

    def constrained(self) -> list[tuple[nn.Linear, float]]:
        """(layer, its bound c) for every constrained layer."""
        out = []
        for layers, total in ((self.encoder, self.encoder_lipschitz), (self.decoder, self.decoder_lipschitz)):
            if total is not None:
                c = float(total) ** (1.0 / len(layers))
                out += [(layer, c) for layer in layers]
        return out


@torch.no_grad()
def project_(model: VAE) -> None:
    """Projects every constrained weight matrix onto ``‖W‖₂ ≤ c`` (exact spectral norm), in place."""
    for layer, c in model.constrained():
        norm = float(torch.linalg.matrix_norm(layer.weight.double(), ord=2))
        if norm > c:
            layer.weight.mul_(c / norm)
            # float32 rounding of the product may leave the norm a hair above c: shrink once more if so
            norm = float(torch.linalg.matrix_norm(layer.weight.double(), ord=2))
            if norm > c:
                layer.weight.mul_(c / norm * (1 - 1e-6))


class Projector:
    """The per-step projection: power iteration, warm-started from the previous step's vectors.

    Each call runs ``iterations`` power-iteration steps per constrained layer and scales the weight
    down when the estimate exceeds its bound. The estimate ``‖Wᵀu‖`` (u a unit vector) never exceeds
    ‖W‖₂, so between exact projections a layer may sit slightly above its bound; training ends with
    :func:`project_` (exact), which is what the declared constant of a finished model rests on. An
    exact SVD per step would cost more than the DP-SGD step itself (784-wide layers).
    """

    def __init__(self, model: VAE, iterations: int = 2, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.layers = model.constrained()
        self.vectors = [F.normalize(torch.randn(layer.in_features, generator=gen), dim=0) for layer, _ in self.layers]
        self.iterations = iterations

    @torch.no_grad()
    def __call__(self) -> None:
        for i, (layer, c) in enumerate(self.layers):
            w, v = layer.weight, self.vectors[i].to(layer.weight.dtype)
            for _ in range(self.iterations):
                u = F.normalize(w @ v, dim=0)  # (out,)
                wt_u = w.t() @ u  # (in,)
                v = F.normalize(wt_u, dim=0)
            self.vectors[i] = v
            norm = float(wt_u.norm())
            if norm > c:
                w.mul_(c / norm)


@torch.no_grad()
def lipschitz_bound(model: VAE, part: str = "encoder") -> float:
    """The product of the spectral norms of ``part``'s weight matrices, in float64: an upper bound on its
    Lipschitz constant in the L2 norm (ReLU is 1-Lipschitz)."""
    layers = {"encoder": model.encoder, "decoder": model.decoder}[part]
    return math.prod(float(torch.linalg.matrix_norm(layer.weight.double(), ord=2)) for layer in layers)
