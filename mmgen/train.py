"""Fitting a generator to a release (post-processing: no privacy cost).

For every statistic k of the release with noisy class means ``m̃_{k,c}`` and
every step, draw labels ``y_i`` from the released (noisy) class proportions,
generate ``x_i = G(z_i, y_i)`` and minimise

    L = Σ_k w_k Σ_c ‖ m̃_{k,c} − mean_{i: y_i = c} φ_k(x_i) ‖²

with Adam (Harder et al., DP-MERF, AISTATS 2021, eq. 7, class-conditional
form). Only the release is in scope here: ``fit`` takes a :class:`Release`,
never a data set.

After the first few steps, :func:`fit` logs how long the whole run should take
(INFO on the ``mmgen.train`` logger, which the ``mmgen`` command shows on stderr;
the library itself stays quiet unless logging is configured).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch

from .config import Config
from .data.schema import Schema
from .errors import FormatError, MMGenError, NotForPublicationWarning
from .files import content_hash, expect, read_safetensors_checked, sniff, write_safetensors_atomic
from .generators import Generator, GeneratorConfig, create_generator, for_release
from .release import Release

__all__ = ["TrainConfig", "Trained", "fit", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "mmgen.checkpoint"
CHECKPOINT_VERSION = 1
TIMED_STEPS = 5  # steps timed after the first (which pays for warm-up) before the run's duration is estimated

log = logging.getLogger("mmgen.train")


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Training hyper-parameters.

    Attributes:
        epochs: number of epochs of ``steps_per_epoch`` Adam steps.
        steps_per_epoch: steps per epoch (there is no data set to pass over).
        batch_size: generated records per step.
        lr: Adam learning rate.
        lr_decay: the learning rate is multiplied by this after each epoch.
        seed: seeds the generator's initialisation and every latent draw.
        statistic_weights: w_k per statistic (default 1 each).
        unbiased: per batch, the unbiased estimate of ``‖m̃_c − E φ(G(z, c))‖²`` instead of
            DP-MERF's biased one, whose bias penalises the diversity of each generated class
            (see :func:`mmgen.features.base.class_mean_matching_loss`).
        device: torch device for training.
        threads: CPU threads for torch during the fit; None: one for a table's generator (its
            tensors are small: more threads only spin, many times slower on a busy machine),
            torch's setting otherwise.
    """

    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 500
    lr: float = 1e-3
    lr_decay: float = 0.9
    seed: int = 0
    statistic_weights: tuple[float, ...] | None = None
    unbiased: bool = False
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self):
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise MMGenError(f"`{name}` must be a positive integer. Got {v!r}.")
        if not self.lr > 0:
            raise MMGenError(f"`lr` must be > 0. Got {self.lr!r}.")
        if not 0 < self.lr_decay <= 1:
            raise MMGenError(f"`lr_decay` must be in (0, 1]. Got {self.lr_decay!r}.")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise MMGenError(f"`threads` must be None or an integer ≥ 1. Got {self.threads!r}.")


@dataclasses.dataclass
class Trained:
    """A generator fitted to a release, with what is needed to sample and to audit its origin.

    Attributes:
        generator: the trained network (in eval mode after :func:`fit`).
        train_config: how it was trained.
        release_info: the release's public metadata (privacy, schema, content hash).
        class_proportions ((C,) Tensor): the released noisy class proportions.
        losses: mean loss per epoch.
        epochs_done: completed epochs (less than ``train_config.epochs`` in an
            interrupted run's checkpoint).
        optimizer_state: Adam's state, kept so that training can resume exactly.
        rng_state ((K,) uint8 Tensor): the latent/label random generator's state.
    """

    generator: Generator
    train_config: TrainConfig
    release_info: dict
    class_proportions: torch.Tensor
    losses: list[float]
    epochs_done: int = 0
    optimizer_state: dict | None = None
    rng_state: torch.Tensor | None = None

    @property
    def epsilon(self) -> float:
        """The ε of the release this generator was fitted to (fitting costs no privacy)."""
        return self.release_info["privacy"]["epsilon"]

    @property
    def delta(self) -> float:
        """The δ of the release this generator was fitted to."""
        return self.release_info["privacy"]["delta"]

    @property
    def for_publication(self) -> bool:
        """False when the release was made with test-only seeded noise (so is everything fitted to it)."""
        return bool(self.release_info["privacy"].get("for_publication", True))

    @property
    def noise_source(self) -> str | None:
        """Where the release's noise came from (the release's ``noise_source``)."""
        return self.release_info["privacy"].get("noise_source")

    def sample(
        self, n: int, *, seed: int | None = None, labels: torch.Tensor | Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws ``n`` labelled synthetic records.

        Args:
            n: number of records (≥ 1).
            seed: seed of the latent draws and labels (``None``: fresh randomness).
            labels ((n,) Tensor, array or list of ints): labels to generate, each in
                ``0 .. n_classes - 1``; default drawn from the released class proportions.

        Returns:
            ``(x, y)``: (n, *input_shape) float32 in the domain and (n,) int64 labels.

        Raises:
            MMGenError: ``n`` is not a positive integer, or ``labels`` are not ``n`` integers
                in range.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise MMGenError(f"`n` must be a positive integer. Got {n!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise MMGenError(f"`seed` must be None or an integer ≥ 0. Got {seed!r}.")
        gen = torch.Generator()
        gen.manual_seed(seed) if seed is not None else gen.seed()
        if labels is None:
            labels = torch.multinomial(self.class_proportions.float(), n, replacement=True, generator=gen)
        else:
            labels = self._check_labels(labels, n)
        self.generator.eval()
        return self.generator.sample(labels.long(), generator=gen), labels.long()

    def sample_table(self, n: int, *, seed: int | None = None, labels=None):
        """Draws ``n`` synthetic rows of a table: a pandas data frame with the schema's columns, dtypes and labels.

        Args:
            n, seed, labels: as :meth:`sample` (``labels`` are class indices of the schema's label column).

        Raises:
            MMGenError: the release this generator was fitted to is not a table's.
        """
        table = self.release_info["data"].get("table")
        if table is None:
            raise MMGenError("This generator was fitted to a release of arrays, not of a table: use sample().")
        x, y = self.sample(n, seed=seed, labels=labels)
        return Schema.from_dict(table).decode(x, y)

    def _check_labels(self, labels, n: int) -> torch.Tensor:
        import numpy as np

        k = self.generator.config.n_classes
        try:
            t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        except (TypeError, ValueError, RuntimeError):
            raise MMGenError(f"`labels` must be {n} integers in 0..{k - 1}. Got {type(labels).__name__}.") from None
        if t.dtype.is_complex or t.dtype == torch.bool or t.ndim != 1 or len(t) != n:
            raise MMGenError(f"`labels` must be {n} integers in 0..{k - 1}. Got {t.dtype} of shape {tuple(t.shape)}.")
        if t.dtype.is_floating_point and not bool((t == t.round()).all()):
            raise MMGenError(f"`labels` must be integers in 0..{k - 1}. Got non-integer values.")
        t = t.long()
        if len(t) and (int(t.min()) < 0 or int(t.max()) >= k):
            bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
            raise MMGenError(f"`labels` must be in 0..{k - 1} (this generator has {k} classes). Got {bad}.")
        return t

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the checkpoint atomically (safetensors + JSON, no pickle)."""
        tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in self.generator.state_dict().items()}
        tensors["class_proportions"] = self.class_proportions.to(torch.float64).contiguous()
        optim_groups = optimizer_tensors(self.optimizer_state, tensors)
        if self.rng_state is not None:
            tensors["rng_state"] = self.rng_state.contiguous()
        meta = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "generator": self.generator.config.to_dict(),
            "train": self.train_config.to_dict(),
            "release": self.release_info,
            "for_publication": self.for_publication,  # the release's mark, where a reader of the checkpoint sees it
            "noise_source": self.noise_source,
            "losses": self.losses,
            "epochs_done": self.epochs_done,
            "optimizer_param_groups": optim_groups,
        }
        meta["content_hash"] = content_hash(meta, tensors)
        return write_safetensors_atomic(path, tensors, {"mmgen": json.dumps(meta, sort_keys=True)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trained":
        """Reads and verifies a checkpoint (never unpickles).

        Raises:
            FormatError: the file is missing, damaged, another mmgen kind (a release, samples)
                or not an mmgen checkpoint.
        """
        if sniff(path) != "release":  # a release is refused below, by its format; others by their kind
            expect(path, "checkpoint", "Trained.load")
        tensors, meta = read_safetensors_checked(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)
        try:  # a matching hash proves integrity, not well-formedness: check the contents too
            generator = create_generator(GeneratorConfig.from_dict(meta["generator"]))
            state = {k[len("generator.") :]: v for k, v in tensors.items() if k.startswith("generator.")}
            generator.load_state_dict(state)
            optimizer_state = optimizer_state_from(tensors, meta.get("optimizer_param_groups"))
            trained = cls(
                generator=generator, train_config=TrainConfig.from_dict(meta["train"]), release_info=meta["release"],
                class_proportions=tensors["class_proportions"], losses=list(meta["losses"]),
                epochs_done=int(meta.get("epochs_done", len(meta["losses"]))), optimizer_state=optimizer_state,
                rng_state=tensors.get("rng_state"),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise FormatError(f"{path} is not a well-formed mmgen checkpoint ({type(exc).__name__}: {exc}).") from None
        generator.eval()
        return trained


def optimizer_tensors(state: dict | None, tensors: dict[str, torch.Tensor]) -> list | None:
    """Adds an optimiser's per-parameter state to ``tensors`` as ``optim.<idx>.<key>``; returns its param groups."""
    if state is None:
        return None
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return state["param_groups"]


def optimizer_state_from(tensors: dict[str, torch.Tensor], param_groups: list | None) -> dict | None:
    """The optimiser state written by :func:`optimizer_tensors` (None when the file holds none)."""
    if param_groups is None:
        return None
    per_param: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            per_param.setdefault(int(idx), {})[name] = value
    return {"state": per_param, "param_groups": param_groups}


def not_for_publication_message(what: str) -> str:
    """The warning given when a ``what`` (release, checkpoint) made with test-only seeded noise is used."""
    return (f"this {what} was made with test-only seeded noise (for_publication: false): its noise can be replayed "
            "from the seed, so it has no privacy guarantee. Everything derived from it is marked the same way; "
            "publish none of it.")  # fmt: skip


def _release_info(rel: Release) -> dict:
    stamp = rel.metadata.get("budget_record")  # the budget record's head after the release (mmgen.privacy.ledger)
    return {
        "privacy": rel.metadata["privacy"],
        "data": rel.metadata["data"],
        "statistics": [s.header() for s in rel.statistics],
        "content_hash": rel.content_hash(),
        **({"budget_record": stamp} if stamp is not None else {}),
    }


def fit(
    generator: Generator | str,
    release: Release,
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    **options,
) -> Trained:
    """Trains a generator to match a release's class-wise mean embeddings.

    Args:
        generator: a :class:`Generator`, or a name (``"auto"``, ``"conv"``, ``"mlp"``,
            ``"resnet"``) to build one shaped for the release (seeded by ``config.seed``);
            ``"auto"`` picks ``"conv"`` for (C, H, W) images and ``"mlp"`` for vectors
            (:func:`mmgen.generators.for_release`).
        release: the :class:`Release` (the only input derived from private data).
        config: a :class:`TrainConfig`; or give its fields as keyword options.
        progress: show a progress bar. Either way, the expected duration of the run is
            logged (INFO, ``mmgen.train``) once the first ``1 + TIMED_STEPS`` steps are timed.
        checkpoint: if given, the checkpoint is written there after every epoch.
        resume: a checkpoint of an interrupted run on the same release to
            continue from; the result equals an uninterrupted run with the same seed.

    Returns:
        The :class:`Trained` generator with its loss history; its checkpoint carries the release's
        ``for_publication`` and ``noise_source``.

    Warns:
        NotForPublicationWarning: the release was made with test-only seeded noise (``for_publication`` false).
    """
    if not isinstance(release, Release):
        raise MMGenError(f"fit() takes a Release (training never sees private data). Got {type(release).__name__}.")
    if not release.for_publication:
        warnings.warn(not_for_publication_message("release"), NotForPublicationWarning, stacklevel=2)
    if config is not None and options:
        raise TypeError("Pass either `config` or keyword options, not both.")
    explicit = config is not None or bool(options)
    config = config if config is not None else TrainConfig.from_dict(options)
    previous = Trained.load(resume) if resume is not None else None
    if previous is not None:
        if previous.release_info.get("content_hash") != release.content_hash():
            raise MMGenError(f"{resume} was trained on another release (content hash differs); cannot resume.")
        generator = previous.generator
        config = config if explicit else previous.train_config
    torch.manual_seed(config.seed)
    if isinstance(generator, str):
        generator = for_release(release, generator)
    if tuple(generator.config.input_shape) != release.input_shape or generator.config.n_classes != release.n_classes:
        raise MMGenError(
            f"The generator makes {tuple(generator.config.input_shape)} records for {generator.config.n_classes} classes; "
            f"the release describes {release.input_shape} and {release.n_classes}."
        )
    device = torch.device(config.device)
    generator.to(device).train()
    weights = config.statistic_weights or (1.0,) * len(release.statistics)
    if len(weights) != len(release.statistics):
        raise MMGenError(f"`statistic_weights` needs {len(release.statistics)} values. Got {len(weights)}.")
    fmaps = [release.feature_map(s.name).to(device) for s in release.statistics]
    targets = [release.mean_embeddings(s.name).to(device=device, dtype=torch.float32) for s in release.statistics]
    proportions = release.class_proportions()

    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(generator.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=config.lr_decay)
    result = Trained(generator, config, _release_info(release), proportions, [])
    if previous is not None:
        opt.load_state_dict(previous.optimizer_state)  # carries the decayed learning rate
        gen.set_state(previous.rng_state)
        result.losses, result.epochs_done = list(previous.losses), previous.epochs_done
    threads = config.threads or (1 if generator.config.kind == "table" and device.type == "cpu" else None)
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        bar = None
        if progress:
            from tqdm.auto import tqdm

            import sys

            quiet_log = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())  # a log file: update rarely
            bar = tqdm(total=config.epochs * config.steps_per_epoch, initial=result.epochs_done * config.steps_per_epoch,
                       desc="fit", unit="step", mininterval=30.0 if quiet_log else 0.1)  # fmt: skip
        remaining = (config.epochs - result.epochs_done) * config.steps_per_epoch
        timer = _StepTimer(remaining, config.epochs * config.steps_per_epoch)
        for _ in range(result.epochs_done, config.epochs):
            total = 0.0
            for _ in range(config.steps_per_epoch):
                y = torch.multinomial(proportions.float(), config.batch_size, replacement=True, generator=gen).to(device)
                z = torch.randn(config.batch_size, generator.config.latent_dim, generator=gen).to(device)
                x = generator(z, y)
                loss = x.new_zeros(())
                for w, f, m in zip(weights, fmaps, targets):
                    loss = loss + w * f.matching_loss(x, y, m, unbiased=config.unbiased)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                timer.step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(loss.detach()):.4g}")
            sched.step()
            result.losses.append(total / config.steps_per_epoch)
            result.epochs_done += 1
            result.optimizer_state, result.rng_state = opt.state_dict(), gen.get_state()
            if checkpoint is not None:
                generator.eval()
                result.save(checkpoint)
                generator.train()
        if bar is not None:
            bar.close()
    finally:
        torch.set_num_threads(threads_before)
    generator.eval()
    return result


class _StepTimer:
    """Times the first ``1 + TIMED_STEPS`` steps of a run, then logs the run's expected duration once."""

    def __init__(self, remaining: int, total: int):
        self.remaining, self.total, self.done = remaining, total, 0
        self.start = self.after_first = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if self.done == 1:
            self.after_first = now
        if self.done != min(self.remaining, 1 + TIMED_STEPS):
            return
        first = self.after_first - self.start
        per_step = (now - self.after_first) / (self.done - 1) if self.done > 1 else first
        expected = first + per_step * (self.remaining - 1)
        what = f"{self.remaining} steps" if self.remaining == self.total else f"the remaining {self.remaining} of {self.total} steps"
        log.info("fit: %s for %s (%.3g s a step; %.1f s so far)", _about(expected), what, per_step, now - self.start)


def _about(seconds: float) -> str:
    """``"about 40 s"`` under 90 seconds, else ``"about 3 min"``."""
    return f"about {max(1, round(seconds))} s" if seconds < 90 else f"about {round(seconds / 60)} min"
