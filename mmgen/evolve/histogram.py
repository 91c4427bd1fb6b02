"""The DP nearest-neighbour histogram: each private record votes for its nearest synthetic samples.

Sensitivity. The candidates are public (the API made them). Each private
record ``(x, y)`` votes only among the candidates of its own class ``y``, for
its ``k`` nearest ones in a public embedding, with weight ``1/√k`` each. Its
contribution to the histogram (one entry per candidate, all classes
concatenated) is a vector with ``k`` entries ``1/√k`` and zeros elsewhere, of
L2 norm exactly 1, whatever the record. Hence:

* add/remove one record: the histogram moves by one such vector, ``Δ = 1``;
* replace one record: by the difference of two non-negative unit vectors,
  ``‖u − v‖² = 2 − 2⟨u, v⟩ ≤ 2``, ``Δ = √2``.

The votes are counted as integers (exact) and scaled by ``1/√k`` once in
float64; the sensitivity is taken with the same slack as the release's
(``1 + NORM_SLACK``). The noise is the project's Gaussian mechanism
(:func:`mmgen.privacy.gaussian_mechanism`: OpenDP's sampler), noise
multiplier σ, standard deviation ``σΔ`` per entry. Thresholding (entries below
``H`` set to 0) and everything after is post-processing.

Exact, batch-independent neighbours. A record's votes must depend on that
record and the public candidates only — never on which other records share its
batch, or a record added at the front (shifting every batch) could flip the
votes of others at near-ties. Floating-point nearest-neighbour search (faiss,
``torch.cdist``, any GEMM) does not promise that: its rounding depends on the
blocking. So the embeddings are turned into integer codes on a fixed public
grid (pixels scaled to [0, 1] by the declared bounds; other embeddings
normalised to unit length per record), small enough that every squared
distance ``‖q‖² + ‖c‖² − 2 q·c`` is an integer below 2⁵³ and the float64
matrix product computes it **exactly**, in any order. Ties are broken by the
candidate's index. Non-pixel embeddings of private records are computed one
record at a time (a network's float output may depend on the batch).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from ..errors import DataError, MMGenError
from ..evaluate.fidelity import efficientnet_lite0_embedding
from ..features import from_spec
from ..privacy.mechanism import NORM_SLACK, check_neighbouring, gaussian_mechanism

__all__ = [
    "EMBEDDINGS", "Embedding", "make_embedding", "nearest", "vote_counts", "histogram_sensitivity", "noisy_histogram",
]  # fmt: skip

EMBEDDINGS = ("pixels", "efficientnet", "release")
MAX_EXACT = 2.0**46  # bound on every squared distance between codes; keys of distance·n + index stay below 2**62
MAX_CANDIDATES = 2**16  # per class, so that distance·n + index fits in an int64


def grid_size(dim: int, signed: bool) -> int:
    """The integer grid per unit: codes in [0, G] (or [−G, G]) keep every squared distance ≤ ``MAX_EXACT``.

    >>> grid_size(784, signed=False), grid_size(10000, signed=True)
    (131072, 32768)
    """
    span = 2.0 if signed else 1.0
    return 2 ** min(17, int(math.floor(math.log2(MAX_EXACT / (dim * span * span)) / 2)))


class Embedding:
    """A public embedding turned into exact integer codes (float64 tensors holding integers).

    Args:
        name: the embedding's name.
        fn: records → (n, d) float embeddings.
        low, high: for ``"pixels"``, the declared domain (codes are the scaled values on the grid).
        elementwise: ``fn`` treats every value on its own (so batches cannot change a record's code).
    """

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor], *, elementwise: bool) -> None:
        self.name, self.fn, self.elementwise = name, fn, elementwise

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            e = self.fn(x).to(torch.float64).reshape(len(x), -1)
        if not bool(torch.isfinite(e).all()):
            raise DataError(f"The {self.name} embedding gave NaN or inf.")
        if self.elementwise:
            return (e.clamp(0.0, 1.0) * grid_size(e.shape[1], signed=False)).round()
        norm = e.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return ((e / norm).clamp(-1.0, 1.0) * grid_size(e.shape[1], signed=True)).round()

    def codes(self, x: torch.Tensor, *, private: bool = False) -> torch.Tensor:
        """Integer codes of ``x``; ``private=True`` computes a non-elementwise embedding one record at a time."""
        if self.elementwise or not private or len(x) <= 1:
            return self._codes(x)
        return torch.cat([self._codes(x[i : i + 1]) for i in range(len(x))])


def make_embedding(name: str, *, low: float, high: float, release_features: dict | None = None,
                   image_size: int = 32) -> Embedding:  # fmt: skip
    """A public embedding for the votes.

    Args:
        name: ``"pixels"`` (the records scaled to [0, 1] by the declared bounds, flattened: L2 distance on
            pixels), ``"efficientnet"`` (pooled ImageNet EfficientNet-Lite0 features, images only) or
            ``"release"`` (the release's own first feature map φ); the last two are normalised to unit length.
        low, high: the declared domain of the records.
        release_features: the release's feature spec (for ``"release"``).
        image_size: network input size for ``"efficientnet"``.
    """
    if name == "pixels":
        return Embedding(name, lambda x: (x.reshape(len(x), -1).to(torch.float64) - low) / (high - low), elementwise=True)
    if name == "efficientnet":
        return Embedding(name, lambda x: efficientnet_lite0_embedding(x, low=low, high=high, image_size=image_size),
                         elementwise=False)  # fmt: skip
    if name == "release":
        if release_features is None:
            raise MMGenError("The 'release' embedding needs the release's feature spec.")
        fmap = from_spec(release_features)
        return Embedding(name, lambda x: fmap(x.float()), elementwise=False)
    raise MMGenError(f"Unknown embedding {name!r}. Known: {', '.join(EMBEDDINGS)}.")


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int = 1, *, chunk: int = 4096) -> torch.Tensor:
    """Indices of the ``k`` nearest keys of every query (exact squared L2 on integer codes, ties to the lower index).

    Args:
        queries ((m, d) Tensor), keys ((n, d) Tensor): integer codes (:meth:`Embedding.codes`), float64.
        k: neighbours per query (≤ n).
        chunk: queries per block (memory: ``chunk × n`` distances). The result does not depend on it.

    Returns:
        (m, k) int64 Tensor, nearest first.

    Raises:
        MMGenError: ``k`` out of range, more than 2¹⁶ keys, or codes whose distances would not be exact.
    """
    n = len(keys)
    if not 1 <= k <= n:
        raise MMGenError(f"`k` must be between 1 and the number of candidates ({n}). Got {k}.")
    if n > MAX_CANDIDATES:
        raise MMGenError(f"At most {MAX_CANDIDATES} candidates per class. Got {n}.")
    q, c = queries.to(torch.float64), keys.to(torch.float64)
    both = torch.cat([q.reshape(-1), c.reshape(-1)])
    spread = float(both.max() - both.min()) if len(both) else 0.0  # every squared distance ≤ d·spread²
    if q.shape[1] * spread * spread > MAX_EXACT or not bool((both == both.round()).all()):
        raise MMGenError("nearest() takes integer codes from Embedding.codes (their distances must be exact).")
    cc = (c * c).sum(dim=1)
    index = torch.arange(n, dtype=torch.int64)
    out = []
    for i in range(0, len(q), chunk):
        qb = q[i : i + chunk]
        dist = (qb * qb).sum(dim=1, keepdim=True) + cc - 2.0 * (qb @ c.T)  # integers below 2**46: exact
        key = dist.to(torch.int64) * n + index  # unique: ties go to the lower index
        out.append(key.topk(k, dim=1, largest=False, sorted=True).indices if k > 1 else key.argmin(dim=1, keepdim=True))
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def vote_counts(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], candidates: torch.Tensor,
                candidate_labels: torch.Tensor, embedding: Embedding, *, k: int = 1) -> torch.Tensor:  # fmt: skip
    """Exact integer vote counts: each private record gives one vote to each of its ``k`` nearest same-class candidates.

    Args:
        batches: the private ``(x, y)`` batches, streamed once.
        candidates ((n, d) Tensor): the candidates' codes (public; :meth:`Embedding.codes`).
        candidate_labels ((n,) Tensor): their classes; every class a record may carry needs ≥ k candidates.
        embedding: the public embedding; the private records' codes are computed batch-independently.
        k: neighbours per record.

    Returns:
        (n,) int64 Tensor of counts (private: noise them before anything leaves).
    """
    counts = torch.zeros(len(candidates), dtype=torch.int64)
    by_class = {int(c): (candidate_labels == c).nonzero().squeeze(1) for c in candidate_labels.unique()}
    for x, y in batches:
        e = embedding.codes(x, private=True)
        for c in y.unique().tolist():
            idx = by_class.get(int(c))
            if idx is None or len(idx) < k:
                raise DataError(f"Private records of class {c} have fewer than k={k} candidates to vote for.")
            rows = (y == c).nonzero().squeeze(1)
            nn = nearest(e[rows], candidates[idx], k)
            counts += torch.bincount(idx[nn.reshape(-1)], minlength=len(candidates))
    return counts


def histogram_sensitivity(neighbouring: str = "add-remove") -> float:
    """L2 sensitivity of the vote histogram (module docstring): 1 or √2, with the release's slack."""
    return (1.0 if check_neighbouring(neighbouring) == "add-remove" else math.sqrt(2.0)) * (1.0 + NORM_SLACK)


def noisy_histogram(counts: torch.Tensor, *, k: int, noise_multiplier: float, neighbouring: str = "add-remove",
                    noise_seed: int | None = None) -> torch.Tensor:  # fmt: skip
    """The released histogram: ``counts/√k + N(0, (σΔ)²)`` per entry, float64.

    Args:
        counts ((n,) int Tensor): from :func:`vote_counts`.
        k: the neighbours each record voted for.
        noise_multiplier: σ.
        neighbouring: the relation accounted for.
        noise_seed: None for publishable noise (OpenDP); an int only in tests.
    """
    votes = counts.to(torch.float64) / math.sqrt(k)
    return gaussian_mechanism(votes, noise_multiplier=noise_multiplier, sensitivity=histogram_sensitivity(neighbouring),
                              noise_seed=noise_seed)  # fmt: skip
