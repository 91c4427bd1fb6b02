"""A release computed across several processes with ``torch.distributed``.

Each rank r holds a disjoint shard of the private records and computes the
exact class-conditional sums of its shard with
:func:`mmgen.release.accumulate_fixed_point` (int64, in units of the grid
``2^-32`` of :mod:`mmgen.privacy.bounds`):

    S_k^{(r)}[c] = Σ_{i ∈ shard r, y_i = c} φ_k(x_i),      n^{(r)}_c = #{i ∈ shard r : y_i = c}

One ``gather`` of the int64 vectors ``v^{(r)} = [S_0^{(r)}, …, S_K^{(r)}, n^{(r)}]``
to rank 0 of the group (the *noising rank*) lets that rank alone form
``S_k = Σ_r S_k^{(r)}`` and ``n = Σ_r n^{(r)}`` in int64, exactly, and convert
them to float64 once: bit for bit the sums one process gets over the whole data
(a float64 sum of per-shard float64 totals would round once a class's sums pass
2^21, i.e. 2^53 grid units). It then calls :func:`mmgen.release.finalize`,
which adds the Gaussian noise once: the mechanism, its sensitivity and
(ε, δ) are exactly those of :func:`mmgen.release.release` on the union of
the shards.

Who holds what (the reason for a gather rather than a reduce): in a gather
every rank sends its own vector straight to the noising rank, so a rank
other than the noising one only ever holds the exact sums of its *own*
shard, never the totals nor another rank's sums. A ``reduce``/``all_reduce``
would not give that: gloo's reduce is a ring reduce-scatter followed by a
gather, which leaves in each rank's buffer partial sums over subsets of
ranks and the *exact total* of one 1/W-th of the coordinates, and NCCL's
ring/tree reduce likewise passes partial sums through intermediate ranks.
The price is memory on the noising rank: W vectors of ``Σ_k C·D_k + C``
int64 values during the exchange.

Trust boundary: the noising rank sees every shard's exact sums and the exact
totals before noise; the exact per-shard sums travel, unencrypted, over the
process group's transport (network, NCCL's buffers and relays). Run it only
where every process may read the private data (one organisation's GPUs or
nodes); it is not a federated protocol between distrusting parties. What it
does guarantee is that no other rank's tensors, return value or logs hold
exact totals, and that the only thing the other ranks learn from the exchange
is whether there was any record at all (they raise with the noising rank on
empty data).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.distributed as dist

from .data.private import PrivateData
from .errors import DataError, MMGenError, PrivacyError
from .features import FeatureMap, default_budget_split
from .privacy import check_epsilon_delta, check_neighbouring, split_noise_multipliers
from .privacy.bounds import from_fixed_point
from .release import DEFAULT_COUNT_WEIGHT, Release, _feature_maps, accumulate_fixed_point, finalize

__all__ = ["release_distributed"]


def _collective_device(group) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _noising_rank(group) -> int:
    """The global rank of rank 0 of ``group``: the one rank that holds exact totals and adds the noise."""
    return dist.get_global_rank(group, 0) if group is not None else 0


def _gather_sums(sums: list[torch.Tensor], counts: torch.Tensor, group,
                 device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor] | None:  # fmt: skip
    """Sends this rank's exact sums to the noising rank; returns their totals there and ``None`` elsewhere.

    The int64 vector ``[S_0^{(r)}, …, S_K^{(r)}, n^{(r)}]`` (fixed-point sums and counts,
    Σ_k C·D_k + C values) goes point-to-point to the noising rank (``dist.gather``), which
    adds the W vectors in int64 (exact, so the order does not matter) and converts the
    totals once: ``(sums, counts)``, one (C, D_k) float64 tensor per map and a (C,) float64
    tensor, as :func:`mmgen.release.accumulate` returns them for the whole data. No other
    rank receives anything. Every buffer of exact sums that is not returned (this rank's
    vector, the gathered vectors and their int64 total, ``sums`` and ``counts``) is zeroed
    before returning.
    """
    flat = torch.cat([s.reshape(-1) for s in sums] + [counts]).to(torch.int64).to(device)  # Σ_k C·D_k + C
    noising = dist.get_rank(group) == 0
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size(group))] if noising else None
    dist.gather(flat, gather_list=parts, dst=_noising_rank(group), group=group)
    result = None
    if noising:
        total = torch.zeros(flat.shape, dtype=torch.int64)
        for part in parts:
            total += part.cpu()  # int64: exact (no overflow while every class holds fewer than 2^31 records)
        out, offset = [], 0
        for s in sums:
            out.append(from_fixed_point(total[offset : offset + s.numel()]).view(s.shape))
            offset += s.numel()
        result = (out, total[offset:].to(torch.float64))
        total.zero_()
        for part in parts:
            part.zero_()
    flat.zero_()
    for t in list(sums) + [counts]:
        t.zero_()
    return result


def _check_same_everywhere(config: dict, group, device: torch.device) -> None:
    """Raises on every rank if the public configuration differs between ranks."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).digest()
    mine = torch.tensor(list(digest), dtype=torch.int64, device=device)
    first = mine.clone()
    dist.broadcast(first, src=_noising_rank(group), group=group)
    same = torch.tensor([int(torch.equal(mine, first))], dtype=torch.int64, device=device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN, group=group)
    if not int(same.item()):
        raise MMGenError(
            "release_distributed: the ranks were called with different public settings (features, seeds, "
            "ε, δ, classes, shape, bounds or neighbouring relation); every rank must pass the same ones."
        )


def release_distributed(
    x: torch.Tensor | Iterable[tuple[torch.Tensor, torch.Tensor]],
    y: torch.Tensor | None = None,
    features: str | FeatureMap | Sequence[str | FeatureMap] = "rff",
    *,
    epsilon: float,
    delta: float,
    n_classes: int,
    input_shape: Sequence[int] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    neighbouring: str = "add-remove",
    budget_split: Sequence[float] | None = None,
    count_weight: float = DEFAULT_COUNT_WEIGHT,
    clip: bool = False,
    batch_size: int = 4096,
    noise_seed: int | None = None,
    data_name: str | None = None,
    path: str | os.PathLike | None = None,
    group: dist.ProcessGroup | None = None,
) -> Release | None:
    """Makes one (ε, δ)-DP release from data sharded over the ranks of a process group.

    Call it on every rank of ``group`` (default: the world) with that rank's
    shard and the *same* public settings; the arguments mean what they mean in
    :func:`mmgen.release.release`. The shards must be disjoint: a record
    present on two ranks counts twice and breaks the sensitivity bound.

    Args:
        x ((N_r, *input_shape) Tensor or iterable of (x, y) batches): this rank's shard (may be empty).
        y ((N_r,) Tensor): this rank's labels in ``[0, n_classes)``.
        features: feature-map name(s) or bundles (expanded as in :func:`mmgen.release`) or instances, identical on every rank
            (instances are placed where their buffers are, e.g. this rank's GPU).
        epsilon, delta: the privacy budget of the whole release.
        n_classes: the declared (public) number of classes.
        input_shape: shape of one record (default ``x.shape[1:]``; required for iterables).
        bounds: the declared public domain ``(low, high)``.
        neighbouring: ``"add-remove"`` or ``"replace-one"``.
        budget_split: shares of μ² per statistic (default: each bundle's default, else equal).
        count_weight: b, the weight of the count coordinate.
        clip: clip values into the domain instead of refusing them.
        batch_size: records per batch when ``x`` is a tensor.
        noise_seed: reproducible noise for tests (used by rank 0 only; the
            release is then marked unfit for publication).
        data_name: a public name of the data recorded in the schema.
        path: if given, rank 0 writes the release there (atomically).
        group: the process group (``torch.distributed`` must be initialised).

    Returns:
        The :class:`~mmgen.release.Release` on rank 0 of ``group`` (the noising
        rank); ``None`` on every other rank. Those ranks send their own shard's
        exact sums to rank 0 and receive neither the exact totals nor the noisy
        release (read the file written to ``path``, or broadcast it yourself:
        it is public).

    Raises:
        MMGenError: ``torch.distributed`` is not initialised, or the ranks disagree on the settings.
        DataError: bad data on some rank (that rank raises; the others then
            block in the collective, so validate shards first), or no records at all.
        PrivacyError: bad ε, δ, relation or budget split.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise MMGenError("release_distributed needs torch.distributed initialised (e.g. run under torchrun). "
                         "For one process use mmgen.release.")  # fmt: skip
    check_epsilon_delta(epsilon, delta)
    check_neighbouring(neighbouring)
    if not (0 < count_weight < 1):
        raise PrivacyError(f"`count_weight` must be in (0, 1). Got {count_weight!r}.")
    if isinstance(x, torch.Tensor) and y is None:
        raise DataError("Labels `y` are required with a tensor `x`.")
    # this rank's shard, through the one gate to private records (declarations checked, batches checked)
    data = PrivateData(x, y, n_classes=n_classes, input_shape=input_shape, bounds=bounds, clip=clip,
                       batch_size=batch_size, name=data_name)  # fmt: skip
    input_shape, bounds = data.input_shape, (data.low, data.high)
    fmaps = _feature_maps(features, input_shape, bounds)
    shares = default_budget_split(features) if budget_split is None else [float(w) for w in budget_split]
    if len(shares) != len(fmaps):
        raise PrivacyError(f"`budget_split` needs one weight per statistic ({len(fmaps)}). Got {len(shares)}.")
    split_noise_multipliers(epsilon, delta, shares)

    device = _collective_device(group)
    schema = data.facts  # public: the declarations, nothing read off the shard
    public = {"features": [f.spec() for f in fmaps], "epsilon": float(epsilon), "delta": float(delta),
              "neighbouring": neighbouring, "budget_split": shares, "count_weight": float(count_weight),
              "schema": schema, "noise_seed": noise_seed}  # fmt: skip
    _check_same_everywhere(public, group, device)

    sums, counts = accumulate_fixed_point(data, fmaps, n_classes, input_shape, bounds, clip=clip)
    gathered = _gather_sums(sums, counts, group, device)  # the one exchange of private (exact) sums
    empty = torch.tensor([int(gathered is not None and float(gathered[1].sum()) == 0)], device=device)
    dist.broadcast(empty, src=_noising_rank(group), group=group)  # one public bit: was there any record?
    if int(empty.item()):
        raise DataError("The data is empty on every rank: a release needs at least one record.")
    if gathered is None:  # not the noising rank: it sent its own sums and holds nothing else
        return None
    total, total_counts = gathered
    try:
        rel = finalize(
            total, total_counts, fmaps, epsilon=epsilon, delta=delta, neighbouring=neighbouring,
            budget_split=shares, count_weight=count_weight, noise_seed=noise_seed, schema=schema,
        )  # fmt: skip
    finally:
        for t in total + [total_counts]:
            t.zero_()  # the exact totals live only until the noise is added
    rel.metadata["distributed"] = {"world_size": dist.get_world_size(group), "backend": str(dist.get_backend(group))}
    if path is not None:
        rel.save(Path(path))
    return rel
