"""The seed's per-record mechanism: encode each private record, add the posterior noise, decode.

For a record ``(x, y)`` with scaled input ``u`` the mechanism releases

    v = [μ(u, y); a·e_y] + N(0, s² I),   a = L·R/√2,

and the synthetic record ``decode(v_{1..k}, argmax v_{k+1..k+K})``. With μ
L-Lipschitz (by construction, :mod:`mmgen.vae.nets`) on the joined inputs of
diameter ``R = sqrt(d + 2)``, replacing one record by any other moves ``v`` by
at most ``Δ = sqrt((L·R)² + 2a²) = √2·L·R`` in L2: a Gaussian mechanism with
noise multiplier ``s/Δ`` (Groß & Wunder, arXiv 2304.11336, reading the
posterior noise as the mechanism; the label is inside it, so the output's
label is protected too). Decoding is post-processing.

Over the whole data set the N outputs are N such mechanisms on disjoint
records: replacing one record changes one output, so the set of outputs is a
Gaussian mechanism of the same Δ **under replace-one, with N public** (N
outputs are written). Under add/remove the mechanism has no bound (a record
added adds an output), so it is refused there. The encoder and decoder must
themselves be private (trained with DP-SGD on the same data): the stage's ε
composes with the training's (dp-accounting PLD).

The noise is OpenDP's Gaussian, as for a release (:func:`mmgen.privacy.gaussian_mechanism`).
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import dp_accounting
import numpy as np
import torch

from ..version import __version__
from ..errors import MMGenError, PrivacyError
from ..privacy import epsilon_for, gaussian_mechanism, noise_multiplier_for
from ..privacy.ledger import composed_epsilon
from ..privacy.mechanism import NORM_SLACK
from ..privacy.noise import NOISE_SOURCE, SEEDED_NOISE_SOURCE, PrivateStreams
from .nets import domain_diameter, lipschitz_bound
from .train import TrainedVAE, _gate, _private_records, _public, stage_events

__all__ = ["per_record_sensitivity", "per_record_std", "per_record_samples", "save_per_record", "stage_events",
           "PER_RECORD_FORMAT"]  # fmt: skip

PER_RECORD_FORMAT = "mmgen.per-record-samples"


def per_record_sensitivity(encoder_lipschitz: float, input_dim: int) -> float:
    """Δ = √2·L·R (with the release's rounding slack): the L2 distance between two records' ``v``."""
    return math.sqrt(2.0) * float(encoder_lipschitz) * domain_diameter(input_dim) * (1 + NORM_SLACK)


def per_record_std(encoder_lipschitz: float, input_dim: int, epsilon: float, delta: float) -> float:
    """s = σ(ε, δ)·Δ: the posterior standard deviation that makes one record's output (ε, δ)-DP."""
    return noise_multiplier_for(epsilon, delta) * per_record_sensitivity(encoder_lipschitz, input_dim)


def per_record_samples(vae: TrainedVAE, data, *, epsilon: float, delta: float | None = None, record=None,
                       clip: bool = False, noise_seed: int | None = None,
                       output: str | os.PathLike | None = None) -> dict:  # fmt: skip
    """One synthetic record per private record, through the posterior noise.

    Args:
        vae: a finished :class:`TrainedVAE` with the Lipschitz constraint, trained under replace-one.
        data: the same private :class:`~mmgen.data.Dataset`.
        epsilon, delta: the per-record guarantee of this stage on its own (δ default: the model's).
        record: the data set's budget record (checked before any record is read, then the stage is added).
        clip: clip records into the declared domain instead of refusing them.
        noise_seed: seeded noise, for tests only (not for publication).
        output: the file the samples will be written to, kept in the record's entry (for the owner).

    Returns:
        dict with ``x`` ((N, *shape) Tensor), ``y`` ((N,) Tensor) in a random order, and ``privacy``
        (the composed guarantee with every stage).
    """
    delta = vae.delta if delta is None else float(delta)
    if not vae.config.lipschitz:
        raise PrivacyError("The per-record mode needs the Lipschitz constraint (the model was trained without it).")
    if vae.privacy["neighbouring"] != "replace-one":
        raise PrivacyError("The per-record mode is a guarantee under replace-one (N public); this model was accounted "
                           "under add/remove. Train it with neighbouring='replace-one' (CLI: --neighbouring replace-one).")  # fmt: skip
    if not vae.finished:
        raise MMGenError(f"The model's training is unfinished ({vae.steps_done} of {vae.config.steps} steps): resume it first.")
    model = vae.model
    L = float(vae.config.encoder_lipschitz)
    measured = lipschitz_bound(model, "encoder")
    if measured > L * (1 + 1e-6):  # cannot happen after the projection; refuse rather than understate Δ
        raise PrivacyError(f"The encoder's spectral norms multiply to {measured:.6g}, above the declared {L:g}.")
    sigma = noise_multiplier_for(epsilon, delta)
    event = dp_accounting.GaussianDpEvent(sigma)
    public = _public(data)
    if public != vae.data:
        raise MMGenError(f"The data ({public['name']}) is not the data the model was trained on ({vae.data['name']}).")
    private = _gate(data, clip, record)
    private.admit(event, delta=delta, neighbouring="replace-one")
    u, y = _private_records(data, private=private)
    sens = per_record_sensitivity(L, u.shape[1])
    own = epsilon_for(sigma, delta)
    # every record passed the domain checks (a refused data set spends nothing) and no noise is drawn yet: the
    # stage is recorded now, so that a run interrupted after the noise is counted
    private.record_stage(stage="per-record", event=event, epsilon=own, delta=delta, neighbouring="replace-one",
                         output=None if output is None else Path(output).name,
                         details={"run_id": vae.run_id, "sensitivity": sens})  # fmt: skip
    a = L * domain_diameter(u.shape[1]) / math.sqrt(2.0)
    with torch.no_grad():
        m64 = copy.deepcopy(model).double()  # μ in float64: rounding stays far below NORM_SLACK
        mu = m64.encode(u.double(), m64.onehot(y))  # (N, k), float64
        v = torch.cat([mu, a * m64.onehot(y)], dim=1)  # (N, k + K)
    noisy = gaussian_mechanism(v, noise_multiplier=sigma, sensitivity=sens, noise_seed=noise_seed)
    del v, mu  # private: only the noisy values go on
    k = model.latent_dim
    y_out = noisy[:, k:].argmax(dim=1)
    model.eval()
    x_out = vae.decode(noisy[:, :k].float(), y_out)
    order = PrivateStreams(test_seed=noise_seed).permutation(len(y_out))  # full-entropy order of the outputs
    privacy = {
        "epsilon": composed_epsilon(stage_events(vae.privacy) + [event], delta, "replace-one"), "delta": delta,
        "neighbouring": "replace-one", "composition": "dp-accounting PLD accountant",
        "stages": list(vae.privacy["stages"]) + [{
            "stage": "per-record", "epsilon": own, "delta": delta, "noise_multiplier": sigma, "sensitivity": sens,
            "noise_std": sigma * sens, "encoder_lipschitz": L, "domain_diameter": domain_diameter(u.shape[1]),
            "label_scale": a}],
        "for_publication": noise_seed is None and bool(vae.privacy.get("for_publication", True)),
        "noise_source": NOISE_SOURCE if noise_seed is None else SEEDED_NOISE_SOURCE,
        "records_public": True,
    }  # fmt: skip
    if record is not None:
        privacy["data_set_total_epsilon"] = record.total_epsilon()
        privacy["budget_record"] = record.stamp()  # detects a record truncated or edited later
    return {"x": x_out[order], "y": y_out[order], "privacy": privacy}


def save_per_record(path: str | os.PathLike, samples: dict, config: dict) -> Path:
    """Writes the per-record samples as an ``.npz`` (x, y, meta JSON), atomically."""
    path = Path(path)
    meta = {"format": PER_RECORD_FORMAT, "format_version": 1, "library_version": __version__,
            "privacy": samples["privacy"], "vae": config}  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, x=samples["x"].numpy(), y=samples["y"].numpy(), meta=np.array(json.dumps(meta, sort_keys=True)))
    os.replace(tmp, path)
    return path
