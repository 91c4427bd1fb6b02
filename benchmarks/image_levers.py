"""Levers on image quality, measured against one fitted generator (issue 23).

``benchmarks/image_ceiling.py`` showed that on Fashion-MNIST the noise is not what limits the
synthetic images: every map's accuracy at ε = 1 and 10 sits within 0.003 of its noise-free ceiling.
This script measures the levers that act *after* the release, on the same validation protocol
(fitted on five sixths of the training records, scored on the held-out sixth by a per-record hash;
the test split is never read), for each ε of ``--epsilons``:

* ``iid``: the baseline, ``--n-syn`` independent draws of an rff conv generator fitted at the CLI's
  defaults (``mmgen fit``: 6 epochs × 100 steps of 200);
* ``iid ×3``: three times as many draws (does a larger synthetic set help?);
* ``herding, pool 4``: :func:`mmgen.select.select_herding` picks ``--n-syn`` draws from 4× as many
  so that their class means match the release (post-processing);
* ``refine to the noise floor``: the draws themselves are moved by Adam on the pixels (clamped to the
  domain) to lower the release's matching loss, stopped when the loss reaches the noise's expected
  share of it, ``Σ_c D·(σΔ/(a·ñ_c))²`` (public: computed from the release alone), at most
  ``--refine-max`` steps; post-processing;
* ``refine 50 steps``: the same, 50 steps whatever the loss (past the floor: it fits the noise);
* ``teacher relabel`` / ``teacher filter``: a CNN trained **without privacy** on the fitting records
  relabels the draws, or keeps those it agrees with. Not a DP method: an upper bound on what a
  privately trained labeller (DP-SGD, paid from the budget) could add;
* ``rff + patch-rff``: a second statistic in the release — random Fourier features of 7×7 patches
  (stride 3), averaged over the patches of each quarter of the image (``‖φ‖ ≤ 1``: a mean of unit
  vectors per quarter, the quarters scaled by 1/2) — and its own fit. Defined here, not a library map.

δ = 1e-5, add/remove neighbours; seeded test noise (unfit for publication). Evaluator: `mmgen.evaluate`
(logistic regression and its small CNN, trained on the synthetic records). Writes
``docs/results/image_levers.json`` and the results block of ``docs/image_levers.md``.

Usage::

    python benchmarks/image_levers.py                 # ε = 1 and 10, seed 0: about 45 minutes on 2 cores
    python benchmarks/image_levers.py --quick         # smoke test (a tiny fit), a minute or two
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mmgen  # noqa: E402
from image_ceiling import DELTA, NEIGHBOURING, VALIDATION, _load, _spec_maps  # noqa: E402
from mmgen.cli.common import FIT_DEFAULTS  # noqa: E402
from mmgen.config import Config  # noqa: E402
from mmgen.data.base import iter_batches  # noqa: E402
from mmgen.errors import DataError  # noqa: E402
from mmgen.evaluate import evaluate  # noqa: E402
from mmgen.evaluate.cnn import _accuracy, train_cnn  # noqa: E402
from mmgen.features.base import FeatureMap, list_feature_maps, register  # noqa: E402
from mmgen.release import DEFAULT_COUNT_WEIGHT, accumulate, finalize  # noqa: E402
from mmgen.select import select_herding  # noqa: E402
from results_block import write_results  # noqa: E402

JSON = ROOT / "docs/results/image_levers.json"
PAGE = ROOT / "docs/image_levers.md"
INTRO = """# Levers on image quality after the release — `benchmarks/image_levers.py`

What each lever adds to one rff conv generator fitted at `mmgen fit`'s defaults, on Fashion-MNIST's
held-out training records (issue 23). The script's docstring defines every lever.

"""


@dataclasses.dataclass(frozen=True)
class PatchConfig(Config):
    """Hyper-parameters of :class:`PatchRFF` (benchmark-only map)."""

    n_features: int = 2000
    patch: int = 7
    stride: int = 3
    grid: int = 2
    bandwidth_scale: float = 0.25
    seed: int = 0


class PatchRFF(FeatureMap):
    """Random Fourier features of image patches, averaged per region of a ``grid × grid`` split.

    Each patch's features ``[cos(pW), sin(pW)]/sqrt(F)`` have norm 1; their mean over a region's
    patches has norm ≤ 1 (triangle inequality); the ``grid²`` regions are concatenated and scaled
    by ``1/grid``, so ``‖φ(x)‖ ≤ 1`` for every image. W is drawn from a public seed with the length-scale
    ``bandwidth_scale · (high − low) · patch`` (the patch's diagonal), as rff's default.
    """

    name = "patch-rff"
    Config = PatchConfig
    max_norm = 1.0

    def __init__(self, config: PatchConfig | None = None, **options):
        super().__init__(config if config is not None else PatchConfig.from_dict(options))

    def _setup(self) -> None:
        cfg = self.config
        c, h, w = self.input_shape_
        low, high = self.bounds_
        self.bandwidth_ = cfg.bandwidth_scale * (high - low) * math.sqrt(c * cfg.patch**2)
        gen = torch.Generator().manual_seed(int(cfg.seed) + 1)
        weights = torch.randn(c * cfg.patch**2, cfg.n_features // 2, generator=gen, dtype=torch.float64)
        self.register_buffer("weights_", (weights / self.bandwidth_).to(torch.float32), persistent=False)
        nh, nw = (h - cfg.patch) // cfg.stride + 1, (w - cfg.patch) // cfg.stride + 1
        region = ((torch.arange(nh) * cfg.grid // nh)[:, None] * cfg.grid + torch.arange(nw) * cfg.grid // nw).reshape(-1)
        pool = torch.zeros(nh * nw, cfg.grid**2, dtype=torch.float64)
        pool[torch.arange(nh * nw), region] = 1.0
        self.register_buffer("pool_", (pool / pool.sum(0, keepdim=True)).to(torch.float32), persistent=False)

    @property
    def output_dim(self) -> int:
        return self.config.grid**2 * self.config.n_features

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = x.reshape(len(x), *self.input_shape_)
        proj = torch.nn.functional.unfold(x, cfg.patch, stride=cfg.stride).transpose(1, 2) @ self.weights_.to(x.dtype)
        pool = self.pool_.to(x.dtype)
        cos = torch.einsum("nlf,lr->nrf", torch.cos(proj), pool)
        sin = torch.einsum("nlf,lr->nrf", torch.sin(proj), pool)
        return (torch.cat([cos, sin], dim=2) / (math.sqrt(proj.shape[-1]) * cfg.grid)).reshape(len(x), -1)


def register_patch_map() -> None:
    """Adds ``patch-rff`` to this process's registry (a release names its maps; the fit rebuilds them by name)."""
    if PatchRFF.name not in list_feature_maps():
        register(PatchRFF)


def noise_floor(release) -> float:
    """The matching loss a fit would have at the exact class means: Σ_k Σ_c D_k·(σ_kΔ_k/(a_k·ñ_c))² (public)."""
    counts = release.class_counts().clamp(min=1.0).double()
    return float(sum((s.sums.shape[-1] * (s.noise_std / (s.feature_weight * counts)) ** 2).sum() for s in release.statistics))


def optimise_pixels(x: torch.Tensor, loss_of, *, steps: int, lr: float, low: float, high: float,
                    floor: float | None = None) -> tuple[torch.Tensor, int, float]:
    """Adam on the pixels of a copy of ``x`` against ``loss_of(x)``, clamped to [low, high] after each step.

    Stops after ``steps`` steps or once the loss is at most ``floor``; returns the pixels, the steps
    taken and the last loss.
    """
    x = x.clone().float().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    step = 0
    while True:
        value = loss_of(x)
        loss = float(value.detach())
        if step == steps or (floor is not None and loss <= floor):
            return x.detach(), step, loss
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(low, high)
        step += 1


def refine(x: torch.Tensor, y: torch.Tensor, release, *, steps: int, floor: float | None, lr: float, low: float,
           high: float) -> tuple[torch.Tensor, int, float]:
    """Adam on the pixels of ``x`` against the release's matching loss (every statistic, weight 1); post-processing."""
    fmaps = [release.feature_map(s.name) for s in release.statistics]
    targets = [release.mean_embeddings(s.name).float() for s in release.statistics]
    return optimise_pixels(x, lambda v: sum(f.matching_loss(v, y, t) for f, t in zip(fmaps, targets)), steps=steps,
                           lr=lr, low=low, high=high, floor=floor)  # fmt: skip


def release_of(spec: str, ds, epsilon: float, seed: int, schema: dict):
    """The release of ``spec`` (image_ceiling's map options) on the fitting records, with seeded test noise."""
    fmaps, split = _spec_maps(spec, ds)
    sums, counts = accumulate(iter_batches(ds.x_train, ds.y_train, 250), fmaps, ds.n_classes, ds.input_shape,
                              (ds.low, ds.high))  # fmt: skip
    return finalize(sums, counts, fmaps, epsilon=epsilon, delta=DELTA, neighbouring=NEIGHBOURING, budget_split=split,
                    count_weight=DEFAULT_COUNT_WEIGHT, noise_seed=7919 * seed + 17, schema=schema)  # fmt: skip


def validation_data(max_train: int | None, max_val: int | None):
    """Fashion-MNIST split as ``image_ceiling.py`` does (x_test: held-out *training* records) and its release schema."""
    ds = mmgen.data.load("fashion-mnist", max_train=max_train).validation_split(VALIDATION, seed=0)
    if max_val:
        ds = dataclasses.replace(ds, x_test=ds.x_test[:max_val], y_test=ds.y_test[:max_val])
    schema = {"name": ds.name, "input_shape": list(ds.input_shape), "n_classes": ds.n_classes, "low": ds.low,
              "high": ds.high, "clip": False}  # fmt: skip
    return ds, schema


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    register_patch_map()
    ds, schema = validation_data(args.max_train, args.max_val)
    cnn_options = {"max_epochs": args.cnn_epochs, "patience": 3}
    out = {"benchmark": "image_levers", "data": "fashion-mnist", "evaluated_on": "validation split of the training records",
           "n_fit": len(ds.y_train), "n_validation": len(ds.y_test), "delta": DELTA, "neighbouring": NEIGHBOURING,
           "fit": {"epochs": args.epochs, "steps_per_epoch": args.steps, "batch_size": args.batch, "generator": "conv"},
           "n_syn": args.n_syn, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {args.threads}",
           "torch": torch.__version__, "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
           "results": []}  # fmt: skip
    cache: dict = {}
    t0 = time.perf_counter()
    teacher = train_cnn(ds.x_train.float(), ds.y_train.long(), n_classes=ds.n_classes, max_epochs=args.teacher_epochs,
                        patience=2, seed=0).model  # fmt: skip
    out["teacher"] = {"validation_accuracy": _accuracy(teacher, ds.x_test.float(), ds.y_test.long()),
                      "seconds": round(time.perf_counter() - t0, 1), "private": False}  # fmt: skip
    print(f"teacher (non-private): validation accuracy {out['teacher']['validation_accuracy']:.3f}", flush=True)

    def score(lever: str, eps: str, seed: int, x, y, seconds: float, **extra) -> None:
        try:
            rep = evaluate(x.cpu(), y.cpu(), ds, metrics="lr,cnn", seed=seed, cache=cache, cnn_options=cnn_options)
        except DataError as e:  # e.g. a tiny smoke-test teacher that predicts one class
            rep, extra = {}, {**extra, "error": str(e)}
        row = {"lever": lever, "epsilon": eps, "seed": seed, "lr": rep.get("logistic_regression"), "cnn": rep.get("cnn"),
               "n": len(y), "seconds": round(seconds, 1), "load": _load(), **extra}  # fmt: skip
        out["results"].append(row)
        print(row, flush=True)
        write(out, args)

    for label in args.epsilons.split(","):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for spec in args.specs.split(","):
                rel = release_of(spec, ds, float(label), seed, schema)
                torch.manual_seed(seed)
                t0 = time.perf_counter()
                trained = mmgen.fit(mmgen.generators.for_release(rel, "conv"), rel, epochs=args.epochs,
                                    steps_per_epoch=args.steps, batch_size=args.batch, seed=seed, progress=False)  # fmt: skip
                fit_s = time.perf_counter() - t0
                print(f"{spec} at ε = {label}: fit {fit_s:.0f} s", flush=True)
                x, y = trained.sample(args.n_syn, seed=seed)
                if spec != "rff":
                    score(spec.replace("+", " + "), label, seed, x, y, fit_s)
                    continue
                score("iid", label, seed, x, y, fit_s)
                xb, yb = trained.sample(3 * args.n_syn, seed=seed + 1000)
                score("iid ×3", label, seed, xb, yb, 0.0)
                t0 = time.perf_counter()
                xh, yh = select_herding(trained, rel, args.n_syn, pool=4, seed=seed)
                score("herding, pool 4", label, seed, xh, yh, time.perf_counter() - t0)
                floor = noise_floor(rel)
                for lever, steps, stop in (("refine to the noise floor", args.refine_max, floor), ("refine 50 steps", 50, None)):
                    t0 = time.perf_counter()
                    xr, done, loss = refine(x, y, rel, steps=steps, floor=stop, lr=args.refine_lr, low=ds.low, high=ds.high)
                    score(lever, label, seed, xr, y, time.perf_counter() - t0, steps=done, loss=loss, noise_floor=floor)
                with torch.no_grad():
                    yt = torch.cat([teacher(x[i : i + 2000].float()).argmax(1) for i in range(0, len(x), 2000)])
                score("teacher relabel (non-private)", label, seed, x, yt, 0.0, agreement=float((yt == y).float().mean()))
                keep = yt == y
                score("teacher filter (non-private)", label, seed, x[keep], y[keep], 0.0)
    return out


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def table(out: dict) -> str:
    lines = [f"Fashion-MNIST; fitted on {out['n_fit']:,} training records, scored on {out['n_validation']:,} "
             "held-out training records (the test split is not read). δ = 1e-5, add/remove neighbours; seeded test "
             f"noise (unfit for publication). Generator: conv, {out['fit']['epochs']} epochs × "
             f"{out['fit']['steps_per_epoch']} steps of {out['fit']['batch_size']}; {out['n_syn']:,} synthetic records "
             "unless the lever says otherwise; evaluator `mmgen.evaluate` (logistic regression and its small CNN). "
             f"Non-private teacher: validation accuracy {out['teacher']['validation_accuracy']:.3f}. "
             f"Machine: {out['machine']}; started {out['started']}.", "",
             "| lever | ε | seed | records | LR | CNN | lever s | notes |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in out["results"]:
        notes = []
        if "steps" in r:
            notes.append(f"{r['steps']} steps, loss {r['loss']:.2e} (noise floor {r['noise_floor']:.2e})")
        if "agreement" in r:
            notes.append(f"teacher agrees with {r['agreement']:.1%} of labels")
        if "error" in r:
            notes.append(f"not scored: {r['error']}")
        notes.append(f"load {r['load']:.1f}" if r.get("load") is not None else "")
        lines.append(f"| {r['lever']} | {r['epsilon']} | {r['seed']} | {r['n']:,} | {_fmt(r['lr'])} | {_fmt(r['cnn'])} | "
                     f"{r['seconds']:.0f} | {'; '.join(n for n in notes if n)} |")  # fmt: skip
    return "\n".join(lines)


def write(out: dict, args) -> None:
    json_path = Path(args.json) if args.json else JSON
    page = json_path.with_suffix(".md") if args.json else PAGE
    write_results(out, table(out), json_path, page, INTRO)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epsilons", default="1,10")
    p.add_argument("--specs", default="rff,rff+patch-rff", help="statistics specs; levers run on rff's generator")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--n-syn", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--refine-max", type=int, default=200)
    p.add_argument("--refine-lr", type=float, default=0.01)
    p.add_argument("--teacher-epochs", type=int, default=4)
    p.add_argument("--cnn-epochs", type=int, default=20)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-val", type=int, default=None)
    p.add_argument("--json", default=None, help="write here (and a .md beside it) instead of docs/")
    p.add_argument("--quick", action="store_true", help="a smoke test: tiny data and fit, written under out/")
    args = p.parse_args()
    args.epochs, args.steps, args.batch = FIT_DEFAULTS["epochs"], FIT_DEFAULTS["steps_per_epoch"], FIT_DEFAULTS["batch_size"]
    if args.quick:
        args.epochs, args.steps, args.batch = 1, 3, 50
        args.epsilons, args.n_syn, args.max_train, args.max_val = "1", 200, 1200, 300
        args.cnn_epochs, args.teacher_epochs, args.refine_max = 1, 1, 5
        args.json = args.json or str(ROOT / "out/image_levers-quick.json")
    run(args)


if __name__ == "__main__":
    main()
