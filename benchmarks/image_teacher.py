"""A privately trained labeller for the synthetic images: does spending the budget on DP-SGD pay? (issue 23)

``benchmarks/image_levers.py`` found one lever that lifts the CNN trained on synthetic Fashion-MNIST:
relabelling the generated images with a classifier of the real records. There the classifier was
trained **without privacy** (an upper bound). Here it is trained with DP-SGD and paid from the same
budget as the release, so the whole output — images from a generator fitted to the release, labels
from the private classifier — is (ε, δ)-DP under add/remove neighbours, by composition:

* the release gets ``--release-epsilon`` (a Gaussian mechanism, noise multiplier σ_r);
* the labeller gets what is left of each total ε of ``--epsilons``: DP-SGD with Poisson sampling at
  rate q, ``T`` steps, its noise multiplier found by :func:`mmgen.privacy.ledger.noise_multiplier_within`
  so that the release's Gaussian and ``T`` Poisson-subsampled Gaussians compose (dp-accounting PLD) to
  at most the total; the composed ε is recomputed and written beside each row;
* generating, labelling and training on synthetic data are post-processing.

DP-SGD here (Abadi et al. 2016): each record's gradient (opacus ``GradSampleModule``) clipped to
``--clip``, summed over the Poisson batch, ``N(0, (σC)²)`` added per coordinate, divided by a public
constant (``--divisor``, never the private number of records), SGD with momentum. The sampling rate q
(``--sampling-rate``) and the number of steps are public settings too. The network is the tanh CNN of Papernot et al.
(AAAI 2021) / Tramèr & Boneh (ICLR 2021): two strided convolutions, max pooling, 32 hidden units.
Its settings (``--epochs``, ``--batch``, ``--lr``, ``--clip``) are fixed in advance from those papers,
not tuned here. The Poisson masks and the noise come from :class:`mmgen.privacy.noise.PrivateStreams`
with a **test seed**: reproducible, unfit for publication (a library stage would use OS entropy).

``--guide-steps K`` also scores the images after K Adam steps on their pixels toward the labeller's
labels (lower cross-entropy of the labeller; post-processing, same ε): does the labeller's knowledge
move into the images? ``--guide-generator W`` asks the same of the generator: a copy fine-tuned on the
release's loss plus W × the labeller's cross-entropy (post-processing, same ε). (Neither lifted the CNN:
``docs/image_teacher.md``.)

Protocol as ``image_ceiling.py``: fitted on five sixths of the training records, scored on the
held-out sixth (per-record hash); the test split is never read. Writes
``docs/results/image_teacher.json`` and the results block of ``docs/image_teacher.md``.

Usage::

    python benchmarks/image_teacher.py                # ε = 1 and 10: about 20 minutes on 2 cores
    python benchmarks/image_teacher.py --quick        # smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mmgen  # noqa: E402
from image_ceiling import DELTA, NEIGHBOURING, _load  # noqa: E402
from image_levers import _fmt, optimise_pixels, release_of, validation_data  # noqa: E402
from mmgen.cli.common import FIT_DEFAULTS  # noqa: E402
from mmgen.errors import DataError  # noqa: E402
from mmgen.evaluate import evaluate  # noqa: E402
from mmgen.evaluate.cnn import _accuracy  # noqa: E402
from mmgen.privacy import dp_event  # noqa: E402
from mmgen.privacy.ledger import composed_epsilon, dp_sgd_event, noise_multiplier_within  # noqa: E402
from mmgen.privacy.noise import PrivateStreams  # noqa: E402
from results_block import write_results  # noqa: E402

JSON = ROOT / "docs/results/image_teacher.json"
PAGE = ROOT / "docs/image_teacher.md"
INTRO = """# A privately trained labeller for synthetic images — `benchmarks/image_teacher.py`

The budget split between a release (images) and a DP-SGD classifier (their labels), on Fashion-MNIST's
held-out training records (issue 23). The script's docstring gives the mechanism and its accounting.

"""


class TanhCNN(nn.Module):
    """conv(8×8, 16, stride 2) → tanh → maxpool(2, 1) → conv(4×4, 32, stride 2) → tanh → maxpool(2, 1) → 32 → tanh → C."""

    def __init__(self, in_channels: int, n_classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 8, stride=2, padding=3), nn.Tanh(), nn.MaxPool2d(2, 1),
            nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(), nn.MaxPool2d(2, 1),
            nn.Flatten(), nn.LazyLinear(32), nn.Tanh(), nn.Linear(32, n_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - 0.5)  # a public centring of the [0, 1] domain


def train_dp_sgd(x: torch.Tensor, y: torch.Tensor, n_classes: int, *, sigma: float, q: float, steps: int, clip: float,
                 lr: float, divisor: float, streams: PrivateStreams, seed: int) -> nn.Module:
    """DP-SGD as in the module docstring; returns the trained network (eval mode)."""
    from opacus import GradSampleModule

    torch.manual_seed(seed)  # the initialisation: public
    model = TanhCNN(x.shape[1], n_classes)
    model(x[:2])  # materialises the lazy layer (public shapes only)
    gsm = GradSampleModule(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    for step in range(steps):
        mask = torch.rand(len(y), generator=streams.generator("poisson", step)) < q
        idx = mask.nonzero().squeeze(1)
        for p in params:
            p.grad_sample = None
        if len(idx):
            loss = nn.functional.cross_entropy(gsm(x[idx]), y[idx], reduction="sum")
            loss.backward()
            norms = torch.stack([p.grad_sample.reshape(len(idx), -1).norm(dim=1) for p in params], 1).norm(dim=1)
            scale = (clip / (norms + 1e-12)).clamp(max=1.0)
        noise = streams.generator("noise", step)
        for p in params:
            total = torch.einsum("i,i...->...", scale, p.grad_sample) if len(idx) else torch.zeros_like(p)
            p.grad = (total + sigma * clip * torch.randn(p.shape, generator=noise)) / divisor
            p.grad_sample = None
        opt.step()
        opt.zero_grad(set_to_none=False)
    gsm._close()
    return model.eval()


def guide(x: torch.Tensor, labels: torch.Tensor, teacher: nn.Module, *, steps: int, lr: float, low: float,
          high: float) -> tuple[torch.Tensor, float]:
    """Adam on the pixels of ``x`` toward the labeller's ``labels`` (its cross-entropy), clamped to the domain.

    Post-processing of the labeller (and of the generator's images): it moves each image into the
    labeller's region of its label, so that a student trained on hard labels sees the labeller's
    decision features. Returns the images and the final mean cross-entropy.
    """
    for p in teacher.parameters():
        p.requires_grad_(False)
    moved, _, loss = optimise_pixels(x, lambda v: nn.functional.cross_entropy(teacher(v), labels), steps=steps, lr=lr,
                                     low=low, high=high)  # fmt: skip
    return moved, loss


def guide_generator(trained, release, teacher: nn.Module, *, weight: float, steps: int, batch: int, lr: float,
                    seed: int):
    """Fine-tunes a copy of the fitted generator on the release's matching loss plus ``weight`` × the
    labeller's cross-entropy for the generator's own classes (post-processing of both); returns the copy.

    Unlike moving each image's pixels, the generator is one smooth map of its latent, so the labeller's
    signal shapes what a class's images have in common rather than each image's adversarial direction.
    """
    import copy

    for p in teacher.parameters():
        p.requires_grad_(False)
    gen_net = copy.deepcopy(trained.generator).train()
    fmaps = [release.feature_map(s.name) for s in release.statistics]
    targets = [release.mean_embeddings(s.name).float() for s in release.statistics]
    proportions = release.class_proportions().float()
    rng = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(gen_net.parameters(), lr=lr)
    for _ in range(steps):
        y = torch.multinomial(proportions, batch, replacement=True, generator=rng)
        z = torch.randn(batch, gen_net.config.latent_dim, generator=rng)
        x = gen_net(z, y)
        loss = sum(f.matching_loss(x, y, t) for f, t in zip(fmaps, targets))
        loss = loss + weight * nn.functional.cross_entropy(teacher(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return gen_net.eval()


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    ds, schema = validation_data(args.max_train, args.max_val)
    q = args.sampling_rate  # public settings: neither q, the steps nor the divisor is read off the records
    steps = max(1, round(args.epochs / q))
    out = {"benchmark": "image_teacher", "data": "fashion-mnist", "evaluated_on": "validation split of the training records",
           "n_fit": len(ds.y_train), "n_validation": len(ds.y_test), "delta": DELTA, "neighbouring": NEIGHBOURING,
           "release_epsilon": args.release_epsilon, "dp_sgd": {"sampling_rate": q, "steps": steps, "clip": args.clip,
           "lr": args.lr, "epochs": args.epochs, "divisor": args.divisor, "network": "TanhCNN"},
           "fit": {"epochs": args.fit_epochs, "steps_per_epoch": args.fit_steps, "batch_size": args.fit_batch,
           "generator": "conv"}, "n_syn": args.n_syn, "noise": "PrivateStreams test seed: not for publication",
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {args.threads}",
           "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"), "results": []}  # fmt: skip
    cache: dict = {}
    seed = args.seed
    rel = release_of("rff", ds, args.release_epsilon, seed, schema)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    trained = mmgen.fit(mmgen.generators.for_release(rel, "conv"), rel, epochs=args.fit_epochs,
                        steps_per_epoch=args.fit_steps, batch_size=args.fit_batch, seed=seed, progress=False)  # fmt: skip
    fit_s = time.perf_counter() - t0
    x, y = trained.sample(args.n_syn, seed=seed)
    release_event = dp_event([s.noise_multiplier for s in rel.statistics])

    def score(what: str, total: str, labels, images=None, **extra) -> None:
        try:
            rep = evaluate(x if images is None else images, labels, ds, metrics="lr,cnn", seed=seed, cache=cache,
                           cnn_options={"max_epochs": args.cnn_epochs, "patience": 3})  # fmt: skip
        except DataError as e:  # e.g. a smoke test's labeller that predicts one class
            rep, extra = {}, {**extra, "error": str(e)}
        row = {"labels": what, "total_epsilon": total, "seed": seed, "lr": rep.get("logistic_regression"),
               "cnn": rep.get("cnn"), "fit_s": round(fit_s, 1), "load": _load(), **extra}  # fmt: skip
        out["results"].append(row)
        print(row, flush=True)
        write_results(out, table(out), *paths(args), INTRO)

    score("generator's own (release only)", f"{args.release_epsilon:g}", y,
          composed_epsilon=composed_epsilon([release_event], DELTA, NEIGHBOURING))
    for label in args.epsilons.split(","):
        total = float(label)
        sigma = noise_multiplier_within(total, DELTA, steps, [release_event], NEIGHBOURING, sampling_rate=q)
        composed = composed_epsilon([release_event, dp_sgd_event(sigma, q, steps)], DELTA, NEIGHBOURING)
        t0 = time.perf_counter()
        teacher = train_dp_sgd(ds.x_train.float(), ds.y_train.long(), ds.n_classes, sigma=sigma, q=q, steps=steps,
                               clip=args.clip, lr=args.lr, divisor=args.divisor, streams=PrivateStreams(test_seed=1000 + seed), seed=seed)  # fmt: skip
        teacher_s = time.perf_counter() - t0
        with torch.no_grad():
            teacher_acc = _accuracy(teacher, ds.x_test.float(), ds.y_test.long())
            labels = torch.cat([teacher(x[i : i + 2000].float()).argmax(1) for i in range(0, len(x), 2000)])
        print(f"total ε {label}: σ = {sigma:.3f}, composed ε {composed:.4f}, DP-SGD teacher {teacher_acc:.3f} "
              f"on the held-out records ({teacher_s:.0f} s)", flush=True)  # fmt: skip
        score("DP-SGD labeller", label, labels, sigma=sigma, composed_epsilon=composed, teacher_accuracy=teacher_acc,
              teacher_s=round(teacher_s, 1), agreement=float((labels == y).float().mean()))
        for weight in [float(v) for v in args.guide_generator.split(",") if v.strip()]:
            t0 = time.perf_counter()
            gen_net = guide_generator(trained, rel, teacher, weight=weight, steps=args.guide_generator_steps,
                                      batch=args.fit_batch, lr=args.guide_generator_lr, seed=seed)  # fmt: skip
            with torch.no_grad():
                gen = torch.Generator().manual_seed(seed + 1)
                yg = torch.multinomial(rel.class_proportions().float(), args.n_syn, replacement=True, generator=gen)
                xg = torch.cat([gen_net(torch.randn(len(yb), gen_net.config.latent_dim, generator=gen), yb)
                                for yb in yg.split(2000)])  # fmt: skip
                tg = torch.cat([teacher(xg[i : i + 2000]).argmax(1) for i in range(0, len(xg), 2000)])
            guide_s = time.perf_counter() - t0
            agree = float((tg == yg).float().mean())
            print(f"  generator guided (weight {weight:g}, {args.guide_generator_steps} steps): labeller agrees with "
                  f"{agree:.1%} of the classes ({guide_s:.0f} s)", flush=True)  # fmt: skip
            common = dict(images=xg, sigma=sigma, composed_epsilon=composed, teacher_accuracy=teacher_acc,
                          teacher_s=round(teacher_s, 1), agreement=agree, guide_weight=weight,
                          guide_steps=args.guide_generator_steps, guide_s=round(guide_s, 1))  # fmt: skip
            score(f"generator guided by the labeller (weight {weight:g}), own labels", label, yg, **common)
            score(f"generator guided by the labeller (weight {weight:g}), labeller's labels", label, tg, **common)
        for steps_g in [int(v) for v in args.guide_steps.split(",") if v.strip() and int(v) > 0]:
            t0 = time.perf_counter()
            xg, ce = guide(x, labels, teacher, steps=steps_g, lr=args.guide_lr, low=ds.low, high=ds.high)
            guide_s = time.perf_counter() - t0
            moved = float((xg - x.float()).flatten(1).norm(dim=1).mean())
            print(f"  guided {steps_g} steps (lr {args.guide_lr:g}): labeller CE {ce:.3f}, mean L2 move {moved:.2f} "
                  f"({guide_s:.0f} s)", flush=True)  # fmt: skip
            score(f"DP-SGD labeller, images guided {steps_g} steps", label, labels, images=xg, sigma=sigma,
                  composed_epsilon=composed, teacher_accuracy=teacher_acc, teacher_s=round(teacher_s, 1),
                  agreement=float((labels == y).float().mean()), guide_steps=steps_g, guide_lr=args.guide_lr,
                  guide_ce=ce, guide_move=moved, guide_s=round(guide_s, 1))
    return out


def table(out: dict) -> str:
    d = out["dp_sgd"]
    lines = [f"Fashion-MNIST; fitted on {out['n_fit']:,} training records, scored on {out['n_validation']:,} held-out "
             f"training records (the test split is not read). δ = {out['delta']:g}, add/remove neighbours. Release: rff "
             f"at ε = {out['release_epsilon']:g}, conv generator ({out['fit']['epochs']} × {out['fit']['steps_per_epoch']} "
             f"steps of {out['fit']['batch_size']}), {out['n_syn']:,} synthetic images. Labeller: {d['network']}, DP-SGD "
             f"q = {d['sampling_rate']:g}, {d['steps']} steps, clip {d['clip']:g}, lr {d['lr']:g}, sums divided by "
             f"{d.get('divisor', 0):g}; noise and masks "
             f"from a test seed (not for publication). Evaluator `mmgen.evaluate` (LR and its small CNN). Machine: "
             f"{out['machine']}; started {out['started']}.", "",
             "| labels | total ε (composed) | σ (DP-SGD) | labeller's accuracy | agrees with generator | LR | CNN | labeller s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in out["results"]:
        sigma = f"{r['sigma']:.3f}" if "sigma" in r else "–"
        acc = _fmt(r.get("teacher_accuracy"))
        agree = f"{r['agreement']:.1%}" if "agreement" in r else "–"
        secs = f"{r['teacher_s']:.0f}" if "teacher_s" in r else "–"
        lines.append(f"| {r['labels']} | {r['total_epsilon']} ({r['composed_epsilon']:.4f}) | {sigma} | {acc} | {agree} | "
                     f"{_fmt(r['lr'])} | {_fmt(r['cnn'])} | {secs} |")  # fmt: skip
    return "\n".join(lines)


def paths(args) -> tuple[Path, Path]:
    json_path = Path(args.json) if args.json else JSON
    return json_path, (json_path.with_suffix(".md") if args.json else PAGE)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epsilons", default="1,10", help="total ε of release + labeller")
    p.add_argument("--release-epsilon", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=float, default=10.0, help="DP-SGD epochs (expected passes)")
    p.add_argument("--sampling-rate", type=float, default=0.02, help="DP-SGD's Poisson sampling rate q (public)")
    p.add_argument("--divisor", type=float, default=1000.0, help="the noisy gradient sum is divided by this public constant")
    p.add_argument("--clip", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=4.0)
    p.add_argument("--n-syn", type=int, default=10_000)
    p.add_argument("--guide-steps", default="", help="comma list: also score the images moved this many Adam steps "
                   "toward the labeller's labels (post-processing; 0 or empty: off)")
    p.add_argument("--guide-lr", type=float, default=0.01, help="Adam's step on the pixels for --guide-steps")
    p.add_argument("--guide-generator", default="", help="comma list of weights: also fine-tune the fitted generator "
                   "on the release's loss + weight × the labeller's cross-entropy, and score its images")
    p.add_argument("--guide-generator-steps", type=int, default=200)
    p.add_argument("--guide-generator-lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cnn-epochs", type=int, default=20)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-val", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="a smoke test: tiny data, fit and DP-SGD, written under out/")
    args = p.parse_args()
    args.fit_epochs, args.fit_steps, args.fit_batch = FIT_DEFAULTS["epochs"], FIT_DEFAULTS["steps_per_epoch"], FIT_DEFAULTS["batch_size"]
    if args.quick:
        args.fit_epochs, args.fit_steps, args.fit_batch = 1, 3, 50
        args.epsilons, args.n_syn, args.max_train, args.max_val = "1", 200, 1200, 300
        args.epochs, args.sampling_rate, args.divisor, args.cnn_epochs = 1.0, 0.1, 100.0, 1
        args.json = args.json or str(ROOT / "out/image_teacher-quick.json")
    run(args)


if __name__ == "__main__":
    main()
