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

Ties between equally near candidates are broken by the search (lowest index
first), which depends only on the record and the public candidates, never on
other records.

Nearest neighbours are found in chunks with bounded memory, by faiss
(``IndexFlatL2``, exact) when it is installed, else by ``torch.cdist``;
:func:`nearest` picks and both give the same neighbours up to float ties.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from ..errors import DataError, MMGenError
from ..privacy.mechanism import NORM_SLACK, check_neighbouring, gaussian_mechanism

__all__ = ["EMBEDDINGS", "make_embedding", "nearest", "vote_counts", "histogram_sensitivity", "noisy_histogram"]

EMBEDDINGS = ("pixels", "efficientnet", "release")


def make_embedding(name: str, *, low: float, high: float, release_features: dict | None = None,
                   image_size: int = 32) -> Callable[[torch.Tensor], torch.Tensor]:  # fmt: skip
    """A public embedding for the votes.

    Args:
        name: ``"pixels"`` (the records scaled to [0, 1], flattened), ``"efficientnet"``
            (pooled ImageNet EfficientNet-Lite0 features, images only) or ``"release"``
            (the release's own first feature map φ).
        low, high: the declared domain of the records.
        release_features: the release's feature spec (for ``"release"``).
        image_size: network input size for ``"efficientnet"``.

    Returns:
        A function from (n, ...) records to (n, d) float32 embeddings.
    """
    if name == "pixels":
        return lambda x: ((x.reshape(len(x), -1).float() - low) / (high - low))
    if name == "efficientnet":
        from ..evaluate.fidelity import efficientnet_lite0_embedding

        return lambda x: efficientnet_lite0_embedding(x, low=low, high=high, image_size=image_size)
    if name == "release":
        if release_features is None:
            raise MMGenError("The 'release' embedding needs the release's feature spec.")
        from ..features import from_spec

        fmap = from_spec(release_features)
        return lambda x: fmap(x.float()).float()
    raise MMGenError(f"Unknown embedding {name!r}. Known: {', '.join(EMBEDDINGS)}.")


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        return None
    return faiss


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int = 1, *, backend: str = "auto",
            chunk: int = 4096) -> torch.Tensor:  # fmt: skip
    """Indices of the ``k`` nearest keys (squared L2) of every query, nearest first.

    Args:
        queries ((m, d) Tensor), keys ((n, d) Tensor): embeddings.
        k: neighbours per query (≤ n).
        backend: ``"faiss"`` (exact ``IndexFlatL2``), ``"torch"`` (chunked ``torch.cdist``) or ``"auto"`` (faiss
            when installed).
        chunk: queries per block (memory: ``chunk × n`` distances).

    Returns:
        (m, k) int64 Tensor.
    """
    if not 1 <= k <= len(keys):
        raise MMGenError(f"`k` must be between 1 and the number of candidates ({len(keys)}). Got {k}.")
    if backend not in ("auto", "faiss", "torch"):
        raise MMGenError(f"`backend` must be 'auto', 'faiss' or 'torch'. Got {backend!r}.")
    faiss = _faiss() if backend in ("auto", "faiss") else None
    if backend == "faiss" and faiss is None:
        raise MMGenError("backend='faiss' needs the faiss-cpu package.")
    q = queries.detach().float().contiguous()
    kk = keys.detach().float().contiguous()
    out = []
    if faiss is not None:
        index = faiss.IndexFlatL2(kk.shape[1])
        index.add(kk.numpy())
        for i in range(0, len(q), chunk):
            _, idx = index.search(q[i : i + chunk].numpy(), k)
            out.append(torch.from_numpy(idx).long())
    else:
        for i in range(0, len(q), chunk):
            d = torch.cdist(q[i : i + chunk], kk)
            out.append(d.topk(k, dim=1, largest=False).indices if k > 1 else d.argmin(dim=1, keepdim=True))
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def vote_counts(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], candidates: torch.Tensor,
                candidate_labels: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor], *, k: int = 1,
                backend: str = "auto") -> torch.Tensor:  # fmt: skip
    """Exact integer vote counts: each private record gives one vote to each of its ``k`` nearest same-class candidates.

    Args:
        batches: the private ``(x, y)`` batches, streamed once.
        candidates ((n, d) Tensor): the candidates' embeddings (public).
        candidate_labels ((n,) Tensor): their classes; every class a record may carry needs ≥ k candidates.
        embed: the public embedding applied to the private records.
        k: neighbours per record.

    Returns:
        (n,) int64 Tensor of counts (private: noise them before anything leaves).
    """
    counts = torch.zeros(len(candidates), dtype=torch.int64)
    by_class = {int(c): (candidate_labels == c).nonzero().squeeze(1) for c in candidate_labels.unique()}
    for x, y in batches:
        e = embed(x)
        for c in y.unique().tolist():
            idx = by_class.get(int(c))
            if idx is None or len(idx) < k:
                raise DataError(f"Private records of class {c} have fewer than k={k} candidates to vote for.")
            rows = (y == c).nonzero().squeeze(1)
            nn = nearest(e[rows], candidates[idx], k, backend=backend)
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
