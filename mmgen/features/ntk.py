"""Empirical neural-tangent-kernel features (DP-NTK).

Yang, Adamczewski, Sutherland, Li & Park, "Differentially private neural
tangent kernels for privacy-preserving data generation", 2023, Sec. 3: the
embedding of a record is the gradient of a randomly initialised network's
output with respect to its parameters θ,

    φ(x) = vec(∂f_θ(x)/∂θ) / ‖vec(∂f_θ(x)/∂θ)‖₂,     φ(x)ᵀφ(x') = normalised e-NTK(x, x'),

where f_θ is a fully connected network on the record mapped affinely from the
declared domain to ``[−1, 1]``, with ``n_outputs`` outputs (the Jacobian's
rows are concatenated), and θ is drawn from a *public* seed stored in the
release (PyTorch's default initialisation under that seed).

Norm bound (the privacy contract). ``‖φ(x)‖₂ = 1`` by explicit per-record
normalisation, and the denominator is never zero: the last layer has a bias
per output, whose derivative is exactly 1, so ``‖∂f/∂θ‖ ≥ sqrt(n_outputs) ≥ 1``
for every input.

The per-record Jacobians are computed with ``torch.func`` (``vmap`` over
``jacrev`` of a ``functional_call``), in chunks of ``chunk_size`` records to
bound memory. The result stays differentiable with respect to x (the
generator's loss backpropagates through the Jacobian: a gradient of a gradient).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..config import Config
from ..errors import MMGenError
from .base import FeatureMap, register

__all__ = ["NTKConfig", "NTKFeatures"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


@dataclasses.dataclass(frozen=True)
class NTKConfig(Config):
    """Hyper-parameters of :class:`NTKFeatures`.

    Attributes:
        width: hidden units per layer.
        depth: number of hidden layers.
        n_outputs: outputs of the network (1 gives the scalar e-NTK).
        activation: ``"relu"``, ``"tanh"`` or ``"softplus"``.
        seed: public seed of the network's initialisation (stored in the release).
        chunk_size: records per vmapped Jacobian chunk (memory only; no effect on values).
    """

    width: int = 64
    depth: int = 1
    n_outputs: int = 1
    activation: str = "relu"
    seed: int = 0
    chunk_size: int = 256

    def __post_init__(self):
        for name in ("width", "depth", "n_outputs", "chunk_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise MMGenError(f"`{name}` must be a positive integer. Got {v!r}.")
        if self.activation not in _ACTIVATIONS:
            raise MMGenError(f"`activation` must be one of {sorted(_ACTIVATIONS)}. Got {self.activation!r}.")


def _network(d: int, cfg: NTKConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    fan_in = d
    for _ in range(cfg.depth):
        layers += [nn.Linear(fan_in, cfg.width), _ACTIVATIONS[cfg.activation]()]
        fan_in = cfg.width
    layers.append(nn.Linear(fan_in, cfg.n_outputs))
    return nn.Sequential(*layers)


@register
class NTKFeatures(FeatureMap):
    """Per-record parameter gradients of a random network, normalised to norm 1 (DP-NTK).

    Attributes:
        network_ (nn.Sequential): the randomly initialised network (public; seeded).
    """

    name = "ntk"
    Config = NTKConfig
    max_norm = 1.0

    def __init__(self, config: NTKConfig | None = None, **options):
        super().__init__(config if config is not None else NTKConfig.from_dict(options))

    def _setup(self) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.config.seed))
            net = _network(self.input_dim, self.config)
        for p in net.parameters():
            p.requires_grad_(False)
        self.network_ = net

    @property
    def output_dim(self) -> int:
        return self.config.n_outputs * sum(p.numel() for p in self.network_.parameters())

    def jacobian(self, u: torch.Tensor, network: nn.Module | None = None) -> torch.Tensor:
        """The unnormalised per-record Jacobian ``∂f_θ(u_i)/∂θ``, flattened.

        Args:
            u ((N, d) Tensor): inputs already mapped to [−1, 1].
            network: the network to differentiate (default ``network_``; the release passes a float64 copy).

        Returns:
            (N, n_outputs · P) Tensor, output-major (row o holds ∂f_o/∂θ in ``named_parameters`` order).
        """
        return self._jacobian(u, network, self.config.chunk_size)

    def _jacobian(self, u: torch.Tensor, network: nn.Module | None, chunk_size: int | None) -> torch.Tensor:
        from torch.func import functional_call, jacrev, vmap

        network = self.network_ if network is None else network
        params = {k: v.detach() for k, v in network.named_parameters()}

        def f(p, xi):  # one record (d,) -> (n_outputs,)
            return functional_call(network, p, (xi[None],))[0]

        jac = vmap(jacrev(f), in_dims=(None, 0), chunk_size=chunk_size)(params, u)
        # each value (N, n_outputs, *param.shape) -> (N, n_outputs, numel), concatenated over parameters
        return torch.cat([j.reshape(len(u), self.config.n_outputs, -1) for j in jac.values()], dim=2).reshape(len(u), -1)

    def release_features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) from a float64 copy of the network (the release path; see :meth:`FeatureMap.release_features`).

        The values of :meth:`_features` on that copy, bit for bit, with fewer copies: a chunk of at
        most ``chunk_size`` records is one vmapped call (vmap's chunking would copy every
        Jacobian once more to join its chunks; the products are the same), and the rows are
        normalised in place.
        """
        self._check_setup()
        net = self.__dict__.get("_network64")
        device = next(self.network_.parameters()).device
        if net is None or next(net.parameters()).device != device:  # built again after the map moves
            import copy

            net = copy.deepcopy(self.network_).to(torch.float64)
            self.__dict__["_network64"] = net  # not a submodule: no effect on state_dict or .to()
        low, high = self.bounds_
        u = (2.0 * x.reshape(len(x), -1).to(torch.float64) - (low + high)) / (high - low)
        c = self.config
        if c.depth == 1 and c.n_outputs == 1 and c.activation == "relu":
            g = self._one_layer_relu_jacobian(u, net)
        else:
            g = self._jacobian(u, net, None if len(u) <= c.chunk_size else c.chunk_size)  # (N, D) float64, fresh
        # ‖g‖ ≥ sqrt(n_outputs) (last-layer bias); the clamp only guards rounding
        return g.div_(g.norm(dim=1, keepdim=True).clamp(min=1e-12))

    @staticmethod
    def _one_layer_relu_jacobian(u: torch.Tensor, network: nn.Module) -> torch.Tensor:
        """:meth:`jacobian` of ``w₂·relu(W₁u + b₁) + b₂`` (one hidden layer, one output) written in place.

        The same values, bit for bit, as the vmapped ``jacrev`` (tested): its backward pass multiplies
        each entry once (``∂f/∂W₁[j, k] = w₂[j]·1[h_j > 0]·u_k``, ``∂f/∂b₁ = w₂·1[h > 0]``, ``∂f/∂w₂ =
        relu(h)``, ``∂f/∂b₂ = 1``), and the forward pass is the same batched product followed by the bias. Written into one
        (N, D) buffer instead of concatenated from the parameters' Jacobians: at the DP-NTK paper's width
        a chunk's Jacobian is hundreds of MB, and the copy was one of the release path's passes over it.
        """
        first, last = network[0], network[2]
        h = torch.mm(u, first.weight.t()).add_(first.bias)  # (N, W): the product, then the bias, as vmap does it
        active = h > 0
        gh = torch.where(active, last.weight[0], torch.zeros((), dtype=h.dtype))  # ∂f/∂h: w₂ where h > 0, else 0
        n, width, d = len(u), h.shape[1], u.shape[1]
        out = torch.empty(n, width * d + 2 * width + 1, dtype=u.dtype, device=u.device)
        torch.mul(gh[:, :, None], u[:, None, :], out=out[:, : width * d].view(n, width, d))
        out[:, width * d : width * (d + 1)] = gh
        out[:, width * (d + 1) : width * (d + 2)] = torch.relu(h)
        out[:, -1] = 1.0
        return out

    def _features(self, x: torch.Tensor, network: nn.Module | None = None) -> torch.Tensor:
        low, high = self.bounds_
        network = self.network_ if network is None else network
        dtype = next(network.parameters()).dtype
        u = (2.0 * x.to(dtype) - (low + high)) / (high - low)
        g = self.jacobian(u, network)
        # ‖g‖ ≥ sqrt(n_outputs) (last-layer bias); the clamp only guards rounding
        return g / g.norm(dim=1, keepdim=True).clamp(min=1e-12)
