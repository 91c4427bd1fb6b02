"""Training the Lipschitz VAE with DP-SGD, optionally warm-started from a release's generator.

DP-SGD (Abadi et al., CCS 2016, Algorithm 1) with Poisson sampling: at each of
``T`` steps every private record joins the batch independently with probability
``q``; each record's gradient of its own negative ELBO is clipped to L2 norm
``C``; the clipped gradients are summed and ``N(0, (σC)² I)`` is added:

    g_t = Σ_{i ∈ B_t} clip_C(∇ℓ_i) + σC·ξ_t

Adam takes ``g_t`` (its scale does not depend on the private number of records:
the loss is summed, not averaged over the private batch size). The per-record
norms come from opacus's ghost clipping (Bu et al., 2022; Li et al., 2022),
which computes ``‖∇ℓ_i‖`` of each dense layer without storing the per-record
gradients. The guarantee is dp-accounting's ``SelfComposedDpEvent(
PoissonSampledDpEvent(q, GaussianDpEvent(σ)), T)`` (PLD accountant), under
add/remove or replace-one. ``q``, ``T``, ``C`` and ``σ`` are public settings;
none is derived from the private number of records, and no loss computed on
private records is kept or shown.

Warm start (post-processing): before DP-SGD, the VAE is trained without noise
on records drawn from a generator fitted to a release of the same data; the
release's Gaussians then compose with DP-SGD's steps within the total budget.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch

from ..version import __version__
from ..config import Config
from ..errors import DataError, FormatError, MMGenError, PrivacyError
from ..data.base import Dataset
from ..data.private import PrivateData
from ..files import content_hash, expect, read_safetensors_checked, write_safetensors_atomic
from ..privacy import check_neighbouring, dp_event
from ..privacy.noise import PrivateStreams
from ..privacy.ledger import (add_release, composed_epsilon, dp_sgd_event, noise_multiplier_within, release_in_record,
                              release_stage)  # fmt: skip
from ..train import optimizer_state_from, optimizer_tensors
from .nets import VAE, Projector, domain_diameter, lipschitz_bound, project_

__all__ = ["VAEConfig", "TrainedVAE", "DPSGD", "train_vae", "VAE_FORMAT", "VAE_VERSION"]

log = logging.getLogger(__name__)
VAE_FORMAT = "mmgen.vae"
VAE_VERSION = 1
NOISE_SOURCE = ("opacus secure_mode (sum of 4 draws, Holohan & Braghin 2021) from a torch generator whose whole "
                "Mersenne-Twister state (19,968 bits) is read from os.urandom, fresh every step; Poisson masks and "
                "latents from independent generators of the same kind")  # fmt: skip
SEEDED_NOISE_SOURCE = ("torch generators whose states derive from a test seed (numpy SeedSequence): reproducible; tests "
                       "and benchmarks only, not for publication")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class VAEConfig(Config):
    """The VAE's shape and its DP-SGD settings (all public; stored with the model).

    Attributes:
        latent_dim: k.
        hidden: hidden widths of the encoder (the decoder mirrors them).
        lipschitz: constrain every layer (False: the unconstrained baseline).
        encoder_lipschitz: L_μ, the declared Lipschitz constant of μ on the scaled, joined input.
        decoder_lipschitz: the declared Lipschitz constant of the decoder's logits.
        posterior_std: s, the fixed standard deviation of the posterior.
        sampling_rate: q, each record's probability to join a step's batch.
        epochs: expected passes over the data; DP-SGD runs ``round(epochs / q)`` steps.
        clip_norm: C, the L2 bound on each record's gradient.
        lr: Adam's learning rate (DP-SGD and warm start).
        pretrain_epochs: warm start: passes over ``pretrain_samples`` generated records.
        pretrain_lr: warm start: Adam's learning rate on the generated records (``lr`` is DP-SGD's).
        pretrain_samples: warm start: records drawn from the release's generator.
        seed: the public seed of the initial weights, the warm start and the samples.
    """

    latent_dim: int = 16
    hidden: tuple[int, ...] = (512,)
    lipschitz: bool = True
    encoder_lipschitz: float = 4.0
    decoder_lipschitz: float = 32.0
    posterior_std: float = 0.5
    sampling_rate: float = 0.05
    epochs: float = 10.0
    clip_norm: float = 1.0
    lr: float = 1e-3
    pretrain_epochs: int = 10
    pretrain_lr: float = 1e-3
    pretrain_samples: int = 20000
    seed: int = 0

    def __post_init__(self):
        for name in ("latent_dim", "pretrain_epochs", "pretrain_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "pretrain_epochs" else 1):
                raise MMGenError(f"`{name}` must be a positive integer. Got {v!r}.")
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise MMGenError(f"`hidden` must be one or more positive integers. Got {self.hidden!r}.")
        for name in ("encoder_lipschitz", "decoder_lipschitz", "posterior_std", "epochs", "clip_norm", "lr", "pretrain_lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise MMGenError(f"`{name}` must be a finite number > 0. Got {v!r}.")
        if isinstance(self.sampling_rate, bool) or not isinstance(self.sampling_rate, (int, float)) \
                or not 0 < self.sampling_rate <= 1:  # fmt: skip
            raise MMGenError(f"`sampling_rate` must be a number in (0, 1]. Got {self.sampling_rate!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise MMGenError(f"`seed` must be an integer ≥ 0. Got {self.seed!r}.")

    @property
    def steps(self) -> int:
        """T = round(epochs / q), at least 1."""
        return max(1, round(self.epochs / self.sampling_rate))

    def build(self, input_dim: int, n_classes: int) -> VAE:
        return VAE(input_dim, n_classes, latent_dim=self.latent_dim, hidden=tuple(self.hidden),
                   posterior_std=self.posterior_std,
                   encoder_lipschitz=self.encoder_lipschitz if self.lipschitz else None,
                   decoder_lipschitz=self.decoder_lipschitz if self.lipschitz else None)  # fmt: skip


@dataclasses.dataclass
class TrainedVAE:
    """A VAE trained with DP-SGD, with its whole guarantee.

    Attributes:
        model: the :class:`~mmgen.vae.nets.VAE` (eval mode).
        config: its :class:`VAEConfig`.
        data: the public description of the data (input shape, classes, domain).
        privacy: the guarantee: ε, δ, relation, and every stage (the release of a warm start, DP-SGD).
        class_proportions ((K,) Tensor): the labels' proportions for sampling: a release's noisy
            ones after a warm start, else uniform (the private labels are never counted).
        steps_done: DP-SGD steps completed (less than ``config.steps`` in an interrupted run's file).
        run_id: identifies the run's entry in a budget record (so that a resumed run is counted once).
        optimizer_state: Adam's state while a run is unfinished (for ``--resume``); None when done.
        projector_state: the power-iteration vectors of the per-step projection, with ``optimizer_state``.
    """

    model: VAE
    config: VAEConfig
    data: dict
    privacy: dict
    class_proportions: torch.Tensor
    steps_done: int = 0
    run_id: str = ""
    optimizer_state: dict | None = None
    projector_state: list[torch.Tensor] | None = None

    @property
    def epsilon(self) -> float:
        return self.privacy["epsilon"]

    @property
    def delta(self) -> float:
        return self.privacy["delta"]

    @property
    def finished(self) -> bool:
        return self.steps_done >= self.config.steps

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Records (N, *input_shape) in the declared domain, for latents (N, k) and labels (N,)."""
        u = torch.sigmoid(self.model.decode(z.to(self.model.encoder[0].weight.dtype), self.model.onehot(y)))
        low, high = self.data["low"], self.data["high"]
        return (low + (high - low) * u.float()).reshape(len(y), *self.data["input_shape"])

    def sample(self, n: int, *, seed: int | None = None, labels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws ``n`` labelled records from the prior (post-processing of the model: no privacy cost)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise MMGenError(f"`n` must be an integer ≥ 1. Got {n!r}.")
        gen = torch.Generator().manual_seed(self.config.seed + 7 if seed is None else seed)
        if labels is None:
            y = torch.multinomial(self.class_proportions.float(), n, replacement=True, generator=gen)
        else:
            y = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
            if len(y) != n or (len(y) and (int(y.min()) < 0 or int(y.max()) >= self.model.n_classes)):
                raise MMGenError(f"`labels` must be {n} integers in 0..{self.model.n_classes - 1}.")
        z = torch.randn(n, self.model.latent_dim, generator=gen)
        self.model.eval()
        return self.decode(z, y), y

    def metadata(self) -> dict:
        return {"format": VAE_FORMAT, "format_version": VAE_VERSION, "library_version": __version__,
                "config": self.config.to_dict(), "data": self.data, "privacy": self.privacy,
                "steps_done": self.steps_done, "run_id": self.run_id,
                "lipschitz": self.lipschitz(),
                "optimizer_param_groups": None if self.optimizer_state is None else self.optimizer_state["param_groups"]}  # fmt: skip

    def lipschitz(self) -> dict | None:
        """Declared constants and the measured products of spectral norms (None when unconstrained)."""
        if not self.config.lipschitz or not self.finished:  # measured once training has ended (exact SVDs)
            return None
        return {"encoder_declared": self.config.encoder_lipschitz, "decoder_declared": self.config.decoder_lipschitz,
                "encoder_measured": lipschitz_bound(self.model, "encoder"),
                "decoder_measured": lipschitz_bound(self.model, "decoder"),
                "domain_diameter": domain_diameter(self.model.input_dim)}  # fmt: skip

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the model atomically (safetensors + JSON, no pickle)."""
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        tensors["class_proportions"] = self.class_proportions.to(torch.float64).contiguous()
        optimizer_tensors(self.optimizer_state, tensors)
        for i, v in enumerate(self.projector_state or []):
            tensors[f"projector.{i}"] = v.detach().cpu().contiguous()
        meta = self.metadata()
        meta["content_hash"] = content_hash(meta, tensors)
        return write_safetensors_atomic(path, tensors, {"mmgen": json.dumps(meta, sort_keys=True)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainedVAE":
        """Reads and verifies a VAE file (never unpickles). Raises FormatError on anything else."""
        expect(path, "vae", "TrainedVAE.load")
        tensors, meta = read_safetensors_checked(path, VAE_FORMAT, VAE_VERSION)
        try:
            config = VAEConfig.from_dict(meta["config"])
            d = meta["data"]
            model = config.build(math.prod(d["input_shape"]), int(d["n_classes"]))
            model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
            optimizer_state = optimizer_state_from(tensors, meta.get("optimizer_param_groups"))
            vectors = sorted((int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("projector."))
            out = cls(model, config, d, meta["privacy"], tensors["class_proportions"], int(meta["steps_done"]),
                      str(meta.get("run_id", "")), optimizer_state, [v for _, v in vectors] or None)  # fmt: skip
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise FormatError(f"{path} is not a well-formed mmgen VAE file ({type(exc).__name__}: {exc}).") from None
        model.eval()
        return out


def _public(data) -> dict:
    """The data's public description (name, shape, classes, declared domain): no record is read."""
    if not isinstance(data, Dataset):
        raise DataError(f"`data` must be a mmgen Dataset (it declares the domain). Got {type(data).__name__}.")
    if data.table is not None:
        raise DataError("The VAE runs on images and vectors; for a table use `mmgen release` with a table map.")
    return {"name": data.name, "input_shape": list(data.input_shape), "n_classes": data.n_classes,
            "low": float(data.low), "high": float(data.high)}  # fmt: skip


def _private_records(data, clip: bool = False, private: PrivateData | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The scaled, flattened private records u ∈ [0, 1]^d and their labels, through the gate (checked)."""
    private = _gate(data, clip, None) if private is None else private
    x, y = private.tensors()
    if not len(y):
        raise DataError("The data set has no training records.")
    return ((x.reshape(len(x), -1).double() - private.low) / (private.high - private.low)).float().clamp(0, 1), y


def _gate(data, clip: bool, record) -> PrivateData:
    """The one gate to the private records of a VAE stage (a Dataset: it declares the domain)."""
    _public(data)
    return PrivateData(data, clip=clip, record=record)


def _pretrain(model: VAE, trained, config: VAEConfig, public: dict, progress: bool) -> None:
    """Warm start on records drawn from a release's generator: post-processing of the release."""
    x, y = trained.sample(config.pretrain_samples, seed=config.seed + 3)
    u = ((x.reshape(len(x), -1).double() - public["low"]) / (public["high"] - public["low"])).float().clamp(0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=config.pretrain_lr)
    gen = torch.Generator().manual_seed(config.seed + 5)
    project = Projector(model, seed=config.seed)
    batch = 256
    t0 = time.perf_counter()
    for epoch in range(config.pretrain_epochs):
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            loss = model(u[idx], model.onehot(y[idx]), torch.randn(len(idx), model.latent_dim, generator=gen)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            project()
            total += float(loss.detach()) * len(idx)
        if progress:  # generated records only: this loss is public
            log.info("warm start epoch %d/%d: loss %.4g on generated records (%.0f s)", epoch + 1,
                     config.pretrain_epochs, total / len(y), time.perf_counter() - t0)  # fmt: skip


class _SummedLoss:
    """The per-record loss as opacus's ghost clipping wants a criterion: identity per record, summed otherwise."""

    reduction = "sum"

    def __call__(self, per_record: torch.Tensor) -> torch.Tensor:
        return per_record if self.reduction == "none" else per_record.sum()


class DPSGD:
    """DP-SGD around a :class:`VAE`: opacus's ghost clipping, Gaussian noise of std σC per coordinate, Adam.

    Args:
        model: the VAE (its parameters are trained in place).
        noise_multiplier: σ (0 only in tests: no noise).
        clip_norm: C.
        lr: Adam's learning rate.
        secure: opacus's ``secure_mode`` noise (the sum of four draws, robust to floating-point attacks).
    """

    def __init__(self, model: VAE, *, noise_multiplier: float, clip_norm: float, lr: float, secure: bool = True) -> None:
        from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import GradSampleModuleFastGradientClipping
        from opacus.optimizers.optimizer_fast_gradient_clipping import DPOptimizerFastGradientClipping
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

        self.model = model
        self.module = GradSampleModuleFastGradientClipping(model, loss_reduction="sum", max_grad_norm=clip_norm,
                                                           use_ghost_clipping=True)  # fmt: skip
        self.adam = torch.optim.Adam(model.parameters(), lr=lr)
        self.optimizer = DPOptimizerFastGradientClipping(self.adam, noise_multiplier=noise_multiplier,
                                                         max_grad_norm=clip_norm, expected_batch_size=1,
                                                         loss_reduction="sum", secure_mode=secure)  # fmt: skip
        self.criterion = DPLossFastGradientClipping(self.module, self.optimizer, _SummedLoss(), "sum")

    def noisy_gradient(self, u: torch.Tensor, y: torch.Tensor, xi: torch.Tensor, noise: torch.Generator) -> None:
        """Sets every parameter's ``.grad`` to ``Σ_i clip_C(∇ℓ_i) + σC·ξ`` for the batch ((B, d) u, (B,) y,
        (B, k) xi); an empty batch gives the noise alone."""
        opt = self.optimizer
        opt.zero_grad(set_to_none=True)
        opt.generator = noise
        if len(y) == 0:
            for p in opt.params:
                p.summed_grad = torch.zeros_like(p)
            opt.add_noise()
            return
        with warnings.catch_warnings():  # opacus's two backward passes: torch notes that the inputs need no gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            self.criterion(self.module(u, self.model.onehot(y), xi)).backward()
        opt.pre_step()

    def step(self) -> None:
        """Adam's step on the noisy gradient."""
        self.adam.step()

    def close(self) -> None:
        """Removes opacus's hooks from the model."""
        self.module._close()


def stage_events(privacy: dict) -> list:
    """The dp-accounting events of the stages in a model's or samples' privacy dict."""
    out = []
    for s in privacy["stages"]:
        if s["stage"] == "dp-sgd":
            out.append(dp_sgd_event(s["noise_multiplier"], s["sampling_rate"], s["steps"]))
        else:
            out.append(dp_event(s["noise_multipliers"]))
    return out


def _check_resumed_total(privacy: dict, record, epsilon: float, reserve, neighbouring: str) -> None:
    """Refuses a resume whose stages so far, with the later ones in ``reserve``, exceed the total ``epsilon``.

    The stages so far are the budget record's (every stage on the data set) when one is given, else the model's own.
    """
    spent = record.events() if record is not None else stage_events(privacy)
    after = composed_epsilon(spent + list(reserve), privacy["delta"], neighbouring)
    if after > float(epsilon) * (1 + 1e-9):
        raise PrivacyError(f"Refused: resuming with the later stages asked for brings the total epsilon to {after:.4g} "
                           f"at delta={privacy['delta']:g}, above --epsilon {float(epsilon):g}; nothing was read.")  # fmt: skip


def _new_events(unrecorded: list, event):
    """The stage's event, with the release events the record lacks (counted with it)."""
    import dp_accounting

    return dp_accounting.ComposedDpEvent(unrecorded + [event]) if unrecorded else event


def _accounting(config: VAEConfig, info: dict | None, record, *, epsilon, noise_multiplier, delta: float,
                neighbouring: str, reserve, noise_seed) -> tuple[float, Any, list, dict]:  # fmt: skip
    """σ, DP-SGD's event, the release events missing from ``record``, and the model's privacy dict.

    ``info`` is the warm start's release (None: none counted). Nothing here reads a record; ``record``
    is checked (it refuses a stage that would exceed its declared total) but not written.
    """
    steps = config.steps
    stages, unrecorded = [], []
    if info is not None:
        if info["privacy"]["neighbouring"] != neighbouring:
            raise PrivacyError(f"The release was made under {info['privacy']['neighbouring']}; DP-SGD under "
                               f"{neighbouring} would not compose with it into one guarantee.")  # fmt: skip
        stages.append(release_stage(info))
        if not release_in_record(record, info):
            unrecorded.append(dp_event(info["privacy"]["noise_multipliers"]))
    spent = (record.events() if record is not None else []) + unrecorded
    if (epsilon is None) == (noise_multiplier is None):
        raise MMGenError("Give exactly one of `epsilon` (the total budget) and `noise_multiplier`.")
    if epsilon is not None:
        sigma = noise_multiplier_within(epsilon, delta, steps, spent + list(reserve), neighbouring,
                                        sampling_rate=config.sampling_rate)  # fmt: skip
    else:
        sigma = float(noise_multiplier)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise PrivacyError(f"`noise_multiplier` must be a finite number > 0. Got {noise_multiplier!r}.")
    event = dp_sgd_event(sigma, config.sampling_rate, steps)
    if record is not None:  # a refusal here, before the gate is opened; train_vae admits the same event
        record.check(_new_events(unrecorded, event), delta=delta if record.delta is None else None,
                     neighbouring=neighbouring)  # fmt: skip
    own = composed_epsilon([event], delta, neighbouring)
    release_events = [dp_event(s["noise_multipliers"]) for s in stages]
    privacy = {
        "epsilon": composed_epsilon(release_events + [event], delta, neighbouring), "delta": float(delta),
        "neighbouring": neighbouring, "composition": "dp-accounting PLD accountant",
        "stages": stages + [{"stage": "dp-sgd", "epsilon": own, "delta": float(delta), "noise_multiplier": sigma,
                             "sampling_rate": config.sampling_rate, "steps": steps, "clip_norm": config.clip_norm}],
        "for_publication": noise_seed is None and all(s.get("for_publication", True) for s in stages),
        "noise_source": NOISE_SOURCE if noise_seed is None else SEEDED_NOISE_SOURCE,
    }  # fmt: skip
    return sigma, event, unrecorded, privacy


def train_vae(
    data,
    *,
    epsilon: float | None = None,
    delta: float = 1e-5,
    noise_multiplier: float | None = None,
    config: VAEConfig | None = None,
    warm_start=None,
    generator_public: bool = False,
    neighbouring: str = "add-remove",
    record=None,
    clip: bool = False,
    noise_seed: int | None = None,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    resume: "TrainedVAE | None" = None,
    reserve: tuple = (),
    **options: Any,
) -> TrainedVAE:
    """Trains the Lipschitz VAE on private ``data`` with DP-SGD.

    Args:
        data: the private :class:`~mmgen.data.Dataset` (its training records; images or vectors).
        epsilon: the total ε the model may have on this data set: a warm start's release, DP-SGD and
            every stage in ``record`` compose within it; σ is derived from it. Give this or ``noise_multiplier``.
        delta: δ of the guarantee.
        noise_multiplier: σ of DP-SGD directly.
        config: a :class:`VAEConfig` (or its fields as keyword ``options``).
        warm_start: a :class:`~mmgen.train.Trained` generator fitted to a release of ``data``
            (or to public data, with ``generator_public``): the VAE is pre-trained on its samples.
        generator_public: the warm-start generator was fitted to other, public data: no release is counted.
        neighbouring: ``"add-remove"`` (default) or ``"replace-one"``; must be the release's.
        record: the data set's :class:`~mmgen.privacy.BudgetRecord`: checked before any record is read;
            DP-SGD's stage is added (and saved) before training starts, so that an interrupted run is counted.
        clip: clip records into the declared domain instead of refusing them.
        noise_seed: seeded sampling and noise (reproducible, not for publication): tests and benchmarks only.
        progress: log progress (INFO on ``mmgen.vae.train``): step counts and time only.
        checkpoint: a file written every tenth of the run, from which ``resume`` continues (its name is
            the output of DP-SGD's entry in ``record``).
        resume: an unfinished :class:`TrainedVAE` (its checkpoint) to continue; its accounting (σ) is kept, and
            ``epsilon``, when given, is checked again as the total with the stages in ``reserve``.
        reserve: dp-accounting events of later stages on the same data (the per-record mode's Gaussian)
            that ``epsilon`` must leave room for.

    Returns:
        :class:`TrainedVAE`.
    """
    if resume is not None:
        if config is not None or options:
            raise MMGenError("A resumed run keeps its own settings; pass no `config` or options with `resume`.")
        config = resume.config
    elif config is None:
        config = VAEConfig(**options)
    elif options:
        raise MMGenError(f"Pass either `config` or its fields, not both. Got {sorted(options)}.")
    check_neighbouring(neighbouring)
    public = _public(data)
    if warm_start is not None:
        gen = warm_start.generator.config
        if tuple(gen.input_shape) != tuple(public["input_shape"]) or gen.n_classes != public["n_classes"]:
            raise MMGenError(f"The warm-start generator makes {tuple(gen.input_shape)} records of {gen.n_classes} "
                             f"classes; the data has {tuple(public['input_shape'])} and {public['n_classes']}.")  # fmt: skip
    steps = config.steps
    # -- accounting, before any gradient is computed ------------------------------------------------------------
    if resume is not None:
        if resume.data != public:
            raise MMGenError(f"The run to resume was trained on other data ({resume.data['name']}).")
        if resume.privacy["neighbouring"] != neighbouring:
            raise PrivacyError(f"The run to resume was accounted under {resume.privacy['neighbouring']}.")
        privacy, run_id = resume.privacy, resume.run_id
        sigma = privacy["stages"][-1]["noise_multiplier"]
        if record is not None and not any((e.get("details") or {}).get("run_id") == run_id for e in record.entries):
            raise PrivacyError("The run to resume is not in this budget record: resume with the record it started with.")
        if noise_multiplier is not None and float(noise_multiplier) != sigma:
            raise MMGenError(f"A resumed run keeps its noise multiplier {sigma:.6g}; got {noise_multiplier!r}.")
        if epsilon is not None:  # the total still binds: later stages (reserve) must fit beside what was spent
            _check_resumed_total(privacy, record, epsilon, reserve, neighbouring)
    else:
        run_id = uuid.uuid4().hex
        info = None if warm_start is None or generator_public else warm_start.release_info
        sigma, event, unrecorded, privacy = _accounting(
            config, info, record, epsilon=epsilon, noise_multiplier=noise_multiplier, delta=delta,
            neighbouring=neighbouring, reserve=reserve, noise_seed=noise_seed)  # fmt: skip
        privacy["generator_public"] = bool(warm_start is not None and generator_public)
        privacy["warm_start"] = None if warm_start is None else warm_start.release_info.get("content_hash")
    # -- the model; the private records are read from here on, through the gate -------------------------------------
    private = _gate(data, clip, record)
    if record is not None:
        import dp_accounting

        new = dp_accounting.ComposedDpEvent(list(reserve)) if resume is not None else _new_events(unrecorded, event)
        private.admit(new, delta=delta, neighbouring=neighbouring)
    u, y = _private_records(data, private=private)
    n_classes, input_dim = public["n_classes"], u.shape[1]
    if resume is None and record is not None:  # after the domain checks: a refused data set spends nothing
        if unrecorded:
            add_release(record, info, "vae")
        own = privacy["stages"][-1]["epsilon"]
        private.record_stage(stage="dp-sgd", event=event, epsilon=own, delta=delta, neighbouring=neighbouring,
                             output=None if checkpoint is None else Path(checkpoint).name, noise_multipliers=None,
                             details={"run_id": run_id, "sampling_rate": config.sampling_rate, "steps": steps,
                                      "clip_norm": config.clip_norm, "noise_multiplier": sigma})  # fmt: skip
        privacy["data_set_total_epsilon"] = record.total_epsilon()
        privacy["budget_record"] = record.stamp()  # detects a record truncated or edited later
    if resume is not None:
        model, proportions, done = resume.model, resume.class_proportions, resume.steps_done
    else:
        torch.manual_seed(config.seed)
        model = config.build(input_dim, n_classes)
        project_(model)
        done = 0
        if warm_start is not None and not generator_public:
            proportions = warm_start.class_proportions.double()
        else:
            proportions = torch.full((n_classes,), 1.0 / n_classes, dtype=torch.float64)
        if warm_start is not None:
            _pretrain(model, warm_start, config, public, progress)
    result = TrainedVAE(model, config, public, privacy, proportions, done, run_id)
    model.train()
    dpsgd = DPSGD(model, noise_multiplier=sigma, clip_norm=config.clip_norm, lr=config.lr, secure=noise_seed is None)
    if resume is not None and resume.optimizer_state is not None:
        dpsgd.adam.load_state_dict(resume.optimizer_state)
    project = Projector(model, seed=config.seed + 1)
    if resume is not None and resume.projector_state is not None:
        project.vectors = [v.clone() for v in resume.projector_state]
    # every draw on private records comes from mmgen.privacy.noise: per step, three independent streams, each a
    # fresh generator with its whole state from os.urandom (from the test seed, the step and the purpose in tests,
    # so a resumed run repeats exactly)
    streams = PrivateStreams(test_seed=noise_seed)
    every = max(1, steps // 10)
    t0 = time.perf_counter()
    try:
        for step in range(done, steps):
            mask = streams.poisson_mask(len(y), config.sampling_rate, step)
            xi = streams.normal((int(mask.sum()), model.latent_dim), "latent", step)
            dpsgd.noisy_gradient(u[mask], y[mask], xi, streams.generator("dp-sgd-noise", step))
            dpsgd.step()
            project()
            result.steps_done = step + 1
            if checkpoint is not None and (step + 1) % every == 0 and step + 1 < steps:
                result.optimizer_state = dpsgd.adam.state_dict()
                result.projector_state = list(project.vectors)
                result.save(checkpoint)
            if progress and ((step + 1) % every == 0 or step + 1 == steps):
                log.info("dp-sgd step %d/%d (%.0f s)", step + 1, steps, time.perf_counter() - t0)
    finally:
        dpsgd.close()
    project_(model)  # exact: the declared constants of the finished model rest on this
    result.optimizer_state, result.projector_state = None, None
    model.eval()
    return result
