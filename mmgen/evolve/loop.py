"""Private Evolution's loop on top of a generator, with its accounting.

Algorithm (Lin et al., ICLR 2024, Algorithm 1, class by class):

1. ``S₀ ← random_api`` with ``n_c`` labels of class ``c`` for every class; the
   ``n_c`` come from the *release's* noisy class proportions, never from the
   private labels.
2. For ``t = 1 .. T``: every private record votes for its ``k`` nearest
   candidates of its own class in a public embedding (weight ``1/√k``);
   Gaussian noise of multiplier σ is added to the histogram
   (:mod:`mmgen.evolve.histogram`); entries below ``H`` are set to 0; the
   next population draws ``n_c`` candidates of every class in proportion to
   what is left and asks ``variation_api`` for a sample near each, with a
   strength that falls geometrically from ``strength_start`` to
   ``strength_end``.
3. The output draws ``samples`` records the same way from the last
   histogram and varies them with ``strength_end``.

Privacy. The private data is read in the T histograms only; each is a
Gaussian mechanism of sensitivity 1 (add/remove). The output also depends on
the generator, hence on the release it was fitted to: the guarantee of the
output composes the release's Gaussians with T Gaussians of multiplier σ,
exactly: ``μ² = Σ_k 1/σ_{release,k}² + T/σ²`` (Dong, Roth & Su, GDP,
Corollary 3.3). Given a total ε, σ is the smallest multiplier that keeps the
composition with every stage already spent (the release, and whatever the
budget record holds) within it (:func:`mmgen.privacy.noise_multiplier_within`).
A generator fitted to *other* data (``generator_public=True``) costs nothing on
this data set.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..version import __version__
from ..config import Config
from ..errors import DataError, FormatError, MMGenError, PrivacyError
from ..data.base import Dataset
from ..data.private import PrivateData
from ..privacy import check_neighbouring, dp_event, epsilon_for, noise_multiplier_for
from ..privacy.ledger import (add_release, composed_epsilon, noise_multiplier_within, release_in_record, release_stage,
                              rounds_event)
from ..privacy.noise import NOISE_SOURCE, SEEDED_NOISE_SOURCE
from .api import GeneratorAPI, Population, VariationAPI
from .histogram import EMBEDDINGS, histogram_sensitivity, make_embedding, noisy_histogram, vote_counts

__all__ = ["EvolveConfig", "Evolved", "evolve", "class_sizes", "strength_schedule", "read_meta", "plan", "SAMPLES_FORMAT"]

log = logging.getLogger(__name__)
SAMPLES_FORMAT = "mmgen.evolved-samples"
SAMPLES_VERSION = 1


@dataclasses.dataclass(frozen=True)
class EvolveConfig(Config):
    """Private Evolution's settings (all public; stored with the output).

    Attributes:
        rounds: T, the number of private histograms.
        population: candidates per round, all classes together (split by the release's class proportions).
        samples: records in the output.
        k: neighbours each private record votes for (weight 1/√k each).
        threshold: H in units of the noise's standard deviation: noisy votes below ``threshold·σΔ`` count 0.
        strength_start, strength_end: the variation strength after the first and the last round
            (geometric in between); 1 is a fresh sample.
        embedding: the public embedding of the votes, one of :data:`~mmgen.evolve.histogram.EMBEDDINGS`.
        batch_size: private records per streamed batch (memory only).
        seed: seed of the API's public randomness (latents) and of the draws from the histograms.
    """

    rounds: int = 5
    population: int = 1000
    samples: int = 10000
    k: int = 1
    threshold: float = 2.0
    strength_start: float = 0.6
    strength_end: float = 0.2
    embedding: str = "pixels"
    batch_size: int = 4096
    seed: int = 0

    def __post_init__(self):
        for name in ("rounds", "population", "samples", "k", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MMGenError(f"`{name}` must be a positive integer. Got {v!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise MMGenError(f"`seed` must be an integer ≥ 0. Got {self.seed!r}.")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and self.threshold >= 0):
            raise MMGenError(f"`threshold` must be a number ≥ 0 (in noise standard deviations). Got {self.threshold!r}.")
        for name in ("strength_start", "strength_end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise MMGenError(f"`{name}` must be a number in (0, 1]. Got {v!r}.")
        if self.embedding not in EMBEDDINGS:
            raise MMGenError(f"`embedding` must be one of {', '.join(EMBEDDINGS)}. Got {self.embedding!r}.")


def plan(total_epsilon: float, delta: float, rounds: int, release_share: float) -> dict:
    """Splits one total budget between a release and PE's T histograms (shares of μ², exact for Gaussians).

    Args:
        total_epsilon, delta: the total guarantee of the output.
        rounds: T.
        release_share: the release's share of μ², in (0, 1); PE gets the rest.

    Returns:
        ``{"release_epsilon", "release_noise_multiplier", "noise_multiplier", "pe_epsilon"}``: make the release at
        ``release_epsilon`` (one statistic, or any split of it), then run :func:`evolve` with ``epsilon=total_epsilon``.

    Example:
        >>> p = plan(1.0, 1e-5, 5, 0.5)
        >>> round(p["release_epsilon"], 3), round(p["noise_multiplier"], 2)
        (0.684, 11.8)
    """
    if isinstance(release_share, bool) or not isinstance(release_share, (int, float)) or not 0 < release_share < 1:
        raise MMGenError(f"`release_share` must be a number in (0, 1). Got {release_share!r}.")
    sigma = noise_multiplier_for(total_epsilon, delta)
    release_sigma = sigma / math.sqrt(release_share)
    release_epsilon = epsilon_for(release_sigma, delta)
    release_sigma = noise_multiplier_for(release_epsilon, delta)  # what a release at that ε will use
    pe_sigma = noise_multiplier_within(total_epsilon, delta, rounds, [dp_event([release_sigma])])
    return {"release_epsilon": release_epsilon, "release_noise_multiplier": release_sigma, "noise_multiplier": pe_sigma,
            "pe_epsilon": epsilon_for(pe_sigma / math.sqrt(rounds), delta)}  # fmt: skip


def strength_schedule(config: EvolveConfig) -> list[float]:
    """The variation strength after each of the T rounds: geometric from start to end.

    >>> [round(s, 3) for s in strength_schedule(EvolveConfig(rounds=3, strength_start=0.8, strength_end=0.2))]
    [0.8, 0.4, 0.2]
    """
    t, a, b = config.rounds, config.strength_start, config.strength_end
    return [b] if t == 1 else [a * (b / a) ** (i / (t - 1)) for i in range(t)]


def class_sizes(proportions: torch.Tensor, n: int, minimum: int = 1) -> torch.Tensor:
    """``n`` split over the classes by public proportions (largest remainder), at least ``minimum`` each.

    >>> class_sizes(torch.tensor([0.5, 0.3, 0.2]), 10).tolist()
    [5, 3, 2]
    """
    p = proportions.double().clamp_min(0)
    if not bool(torch.isfinite(p).all()) or float(p.sum()) <= 0:
        p = torch.ones_like(p)
    share = p / p.sum() * n
    sizes = share.floor().long()
    rest = n - int(sizes.sum())
    if rest > 0:
        sizes[(share - sizes).argsort(descending=True)[:rest]] += 1
    return sizes.clamp_min(minimum)


@dataclasses.dataclass
class Evolved:
    """Private Evolution's output: samples, their latents and their whole privacy guarantee.

    Attributes:
        x ((n, ...) Tensor), y ((n,) int64 Tensor): the synthetic records and labels.
        state ((n, ...) Tensor or None): the API's state of each record (latents for an mmgen generator).
        privacy: the guarantee (ε, δ, relation, every multiplier, T, H, the release it started from).
        config: the :class:`EvolveConfig` as a dict.
        history: one dict per round (candidates, how many kept above the threshold, classes without any, the
            variation strength): only public settings and quantities of the noisy histogram. No timing: it
            grows with the private number of records (the progress line on the console shows it, as a
            release's progress bar does).
    """

    x: torch.Tensor
    y: torch.Tensor
    state: torch.Tensor | None
    privacy: dict
    config: dict
    history: list[dict]

    @property
    def epsilon(self) -> float:
        return self.privacy["epsilon"]

    @property
    def delta(self) -> float:
        return self.privacy["delta"]

    def metadata(self) -> dict:
        return {"format": SAMPLES_FORMAT, "format_version": SAMPLES_VERSION, "library_version": __version__,
                "privacy": self.privacy, "evolve": self.config, "history": self.history}  # fmt: skip

    def save(self, path: str | os.PathLike) -> Path:
        """Writes an ``.npz`` with ``x``, ``y`` (what ``mmgen evaluate`` reads), ``latents`` and ``meta`` (JSON), atomically."""
        path = Path(path)
        arrays = {"x": self.x.numpy(), "y": self.y.numpy(), "meta": np.array(json.dumps(self.metadata(), sort_keys=True))}
        if self.state is not None:
            arrays["latents"] = self.state.numpy()
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return path


def read_meta(path: str | os.PathLike) -> dict | None:
    """The metadata of evolved samples (None for samples without any, e.g. from ``mmgen sample``)."""
    with np.load(path, allow_pickle=False) as arrays:
        if "meta" not in arrays.files:
            return None
        try:
            meta = json.loads(str(arrays["meta"]))
        except ValueError as exc:
            raise FormatError(f"{path}: its `meta` array is not JSON ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != SAMPLES_FORMAT:
        raise FormatError(f"{path}: its `meta` array is not mmgen's evolved-samples metadata.")
    return meta


def _private(data, *, shape, n_classes: int, low: float, high: float, clip: bool, batch_size: int, record):
    """The gate to the private records (:class:`~mmgen.data.private.PrivateData`), read once per round."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
    elif isinstance(data, Dataset) or callable(data):
        x, y = data, None
    else:
        raise DataError("`data` must be a Dataset, an (x, y) pair of tensors, or a function returning (x, y) batches "
                        f"(it is read once per round). Got {type(data).__name__}.")  # fmt: skip
    return PrivateData(x, y, n_classes=n_classes, input_shape=shape, bounds=(low, high), clip=clip,
                       batch_size=batch_size, record=record)  # fmt: skip


def evolve(
    source,
    data,
    *,
    epsilon: float | None = None,
    delta: float = 1e-5,
    noise_multiplier: float | None = None,
    config: EvolveConfig | None = None,
    class_proportions: torch.Tensor | None = None,
    neighbouring: str = "add-remove",
    generator_public: bool = False,
    record=None,
    clip: bool = False,
    noise_seed: int | None = None,
    progress: bool = False,
    output: str | os.PathLike | None = None,
    **options: Any,
) -> Evolved:
    """Runs Private Evolution on the private ``data`` with a generator as its API.

    Args:
        source: a fitted generator (:class:`~mmgen.train.Trained`), used through
            :class:`~mmgen.evolve.GeneratorAPI`, or any :class:`~mmgen.evolve.VariationAPI`.
        data: the private records: a :class:`~mmgen.data.Dataset` (its training records), an
            ``(x, y)`` pair, or a function returning an iterable of ``(x, y)`` batches (called once per round).
        epsilon: the total ε the output may have on this data set (release, PE and every stage in
            ``record`` composed); σ is derived from it. Give this or ``noise_multiplier``.
        delta: δ of the guarantee.
        noise_multiplier: σ of every histogram, directly.
        config: an :class:`EvolveConfig` (or its fields as keyword ``options``).
        class_proportions ((C,) Tensor): public class proportions (default: the release's noisy
            ones, from ``source``); never the private labels' counts.
        neighbouring: ``"add-remove"`` (default) or ``"replace-one"``; must be the release's.
        generator_public: the generator was fitted to other (public) data, not a release of
            ``data``: its release is not counted against this data set.
        record: a :class:`~mmgen.privacy.BudgetRecord` of ``data``: checked before any data is
            read; the stage (and the release, if the record lacks it) is appended, and saved if the record
            has a file, once the first round's votes have passed the domain checks and before the first
            noisy histogram is drawn, so that an interrupted run is counted.
        clip: clip records into the declared domain instead of refusing them.
        noise_seed: seeded (reproducible, unpublishable) histogram noise, for tests and benchmarks only.
        progress: log one line per round (INFO on the ``mmgen.evolve.loop`` logger).
        output: the file the samples will be written to, kept in the record's entry (for the owner).

    Returns:
        :class:`Evolved`.

    Raises:
        PrivacyError: the budget is exhausted, the record refuses, or the relation differs from the release's.
        DataError: the private records are malformed or outside the domain.
    """
    if config is None:
        config = EvolveConfig(**options)
    elif options:
        raise MMGenError(f"Pass either `config` or its fields, not both. Got {sorted(options)}.")
    check_neighbouring(neighbouring)
    trained = None if hasattr(source, "random_api") else source
    api: VariationAPI = source if trained is None else GeneratorAPI(trained, seed=config.seed)
    # -- what is public: domain, classes, class proportions -------------------------------------------------------
    if trained is not None:
        info = trained.release_info
        d = info["data"]
        shape, n_classes, low, high = tuple(d["input_shape"]), int(d["n_classes"]), float(d["low"]), float(d["high"])
        if class_proportions is None:  # a generator of other data: its release's proportions are not this data's
            class_proportions = torch.ones(n_classes) if generator_public else trained.class_proportions
        if not generator_public and info["privacy"]["neighbouring"] != neighbouring:
            raise PrivacyError(f"The release was made under {info['privacy']['neighbouring']}; PE under {neighbouring} "
                               "would not compose with it into one guarantee.")  # fmt: skip
        release_features = info["statistics"][0]["features"]
    else:
        info = None
        if not isinstance(data, Dataset):
            raise MMGenError("With a user's API, pass the private data as a Dataset (it declares the domain).")
        shape, n_classes, low, high = data.input_shape, data.n_classes, data.low, data.high
        release_features = None
        if class_proportions is None:
            raise MMGenError("With a user's API, pass public `class_proportions` (e.g. a release's noisy ones).")
    class_proportions = torch.as_tensor(class_proportions, dtype=torch.float64)
    if class_proportions.shape != (n_classes,):
        raise MMGenError(f"`class_proportions` must have one entry per class ({n_classes}). Got {tuple(class_proportions.shape)}.")
    if isinstance(data, Dataset) and (data.n_classes != n_classes or data.input_shape != shape):
        raise DataError(f"The data ({data.n_classes} classes of shape {data.input_shape}) is not what the generator "
                        f"makes ({n_classes} classes of shape {shape}).")  # fmt: skip
    # -- accounting, before any private record is read --------------------------------------------------------
    spent, stages, unrecorded = [], [], []
    if record is not None:
        spent += record.events()
    in_record = False
    if info is not None and not generator_public:
        in_record = release_in_record(record, info)
        stages.append(release_stage(info))
        if not in_record:  # counted here, and added to the record with PE's stage
            unrecorded.append(dp_event(info["privacy"]["noise_multipliers"]))
    spent += unrecorded
    if (epsilon is None) == (noise_multiplier is None):
        raise MMGenError("Give exactly one of `epsilon` (the total budget) and `noise_multiplier`.")
    if epsilon is not None:
        sigma = noise_multiplier_within(epsilon, delta, config.rounds, spent, neighbouring)
    else:
        sigma = float(noise_multiplier)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise PrivacyError(f"`noise_multiplier` must be a finite number > 0. Got {noise_multiplier!r}.")
    pe_event = rounds_event(sigma, config.rounds)
    private = _private(data, shape=shape, n_classes=n_classes, low=low, high=high, clip=clip,
                       batch_size=config.batch_size, record=record)  # fmt: skip
    if record is not None:
        import dp_accounting

        private.admit(dp_accounting.ComposedDpEvent(unrecorded + [pe_event]) if unrecorded else pe_event, delta=delta,
                      neighbouring=neighbouring)  # fmt: skip
    release_events = [dp_event(s["noise_multipliers"]) for s in stages]
    output_epsilon = composed_epsilon(release_events + [pe_event], delta, neighbouring)
    pe_epsilon = epsilon_for(sigma / math.sqrt(config.rounds), delta)
    sens = histogram_sensitivity(neighbouring)
    std = sigma * sens
    threshold = config.threshold * std
    # -- the loop ---------------------------------------------------------------------------------------------
    embed = make_embedding(config.embedding, low=low, high=high, release_features=release_features)
    sizes = class_sizes(class_proportions, config.population, minimum=config.k)
    out_sizes = class_sizes(class_proportions, config.samples, minimum=0)
    draw = torch.Generator().manual_seed(config.seed + 1)
    strengths = strength_schedule(config)
    pop = api.random_api(torch.repeat_interleave(torch.arange(n_classes), sizes))
    history = []
    for t in range(config.rounds):
        t0 = time.perf_counter()
        cand = embed.codes(pop.x)  # public: the candidates
        counts = vote_counts(private.batches(), cand, pop.y, embed, k=config.k)
        if t == 0 and record is not None:
            # every record has passed the domain checks (a refused data set spends nothing) and no noisy
            # histogram exists yet: the stage is recorded now, so that an interrupted run is counted
            if unrecorded:  # the record must hold every stage spent on the data
                add_release(record, info, "evolve")
            private.record_stage(stage="private-evolution", event=pe_event, epsilon=pe_epsilon, delta=delta,
                                 neighbouring=neighbouring, noise_multipliers=[sigma] * config.rounds,
                                 output=None if output is None else Path(output).name,
                                 details={"rounds": config.rounds, "threshold": threshold, "k": config.k,
                                          "release": None if info is None else info.get("content_hash")})  # fmt: skip
        noisy = noisy_histogram(counts, k=config.k, noise_multiplier=sigma, neighbouring=neighbouring,
                                noise_seed=None if noise_seed is None else noise_seed + t)  # fmt: skip
        del counts  # private: only the noisy histogram goes on
        weights = torch.where(noisy >= threshold, noisy, torch.zeros_like(noisy))
        last = t == config.rounds - 1
        picked, empty = _select(pop, weights, out_sizes if last else sizes, draw)
        pop = api.variation_api(picked, strengths[t])
        kept = int((weights > 0).sum())
        history.append({"round": t + 1, "candidates": len(cand), "kept": kept, "classes_without_votes": empty,
                        "strength": strengths[t]})  # fmt: skip
        if progress:
            log.info("evolve round %d/%d: %d of %d candidates above the threshold%s, variation strength %.3g (%.1f s)",
                     t + 1, config.rounds, kept, len(cand),
                     f" (classes {empty} had none: drawn uniformly)" if empty else "", strengths[t],
                     time.perf_counter() - t0)  # fmt: skip
    privacy = {
        "epsilon": output_epsilon, "delta": float(delta), "neighbouring": neighbouring,
        "composition": "Gaussian mechanisms composed exactly (mu^2 = sum of 1/sigma_k^2), dp-accounting",
        "stages": stages + [{
            "stage": "private-evolution", "epsilon": pe_epsilon, "delta": float(delta), "noise_multiplier": sigma,
            "rounds": config.rounds, "sensitivity": sens, "noise_std": std, "threshold": threshold, "k": config.k,
            "embedding": config.embedding,
        }],
        "generator_public": bool(generator_public),
        "for_publication": noise_seed is None and all(s.get("for_publication", True) for s in stages),
        "noise_source": NOISE_SOURCE if noise_seed is None else SEEDED_NOISE_SOURCE,
    }  # fmt: skip
    if record is not None:
        privacy["data_set_total_epsilon"] = record.total_epsilon()
        privacy["budget_record"] = record.stamp()  # detects a record truncated or edited later
    return Evolved(pop.x, pop.y, pop.state, privacy, config.to_dict(), history)


def _select(pop: Population, weights: torch.Tensor, sizes: torch.Tensor, draw: torch.Generator):
    """Draws ``sizes[c]`` members of every class in proportion to ``weights`` (uniformly where all are 0)."""
    parts, empty = [], []
    for c, n_c in enumerate(sizes.tolist()):
        idx = (pop.y == c).nonzero().squeeze(1)
        if n_c == 0 or len(idx) == 0:
            continue
        w = weights[idx].float()
        if float(w.sum()) <= 0:
            empty.append(c)
            w = torch.ones_like(w)
        parts.append(idx[torch.multinomial(w, n_c, replacement=True, generator=draw)])
    return pop.take(torch.cat(parts)), empty
