"""The ``mmgen`` command: release, inspect, fit, sample, evaluate, plot, demo, audit, budget, schema, evolve, vae, features.

Every user error (an :class:`~mmgen.errors.MMGenError`) is printed as one
line, ``mmgen: error: ...``, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]


def _add_release(sub):
    p = sub.add_parser("release", help="make a private release of a data set", description=(
        "Reads the data once and writes an (epsilon, delta)-DP release of its class-conditional "
        "mean embeddings (safetensors + JSON metadata)."))  # fmt: skip
    p.add_argument("--data", default="digits",
                   help="digits | fashion-mnist[:FOLDER] | idx:FOLDER | npz:FILE | csv:FILE | parquet:FILE (tables need --schema)")  # fmt: skip
    _add_npz_options(p)
    _add_schema_option(p)
    p.add_argument("--features", default=None, help=(
        "feature maps, comma-separated (see `mmgen features`); bundles expand to several statistics: "
        "hermite = hermite + hermite-product (two kernels), perceptual = first + second moment, "
        "perceptual-first = first moment only; tables: table-marginals (1- and 2-way marginals), "
        "table-rff (DP-MERF's heterogeneous map); "
        "e.g. rff,perceptual. Default rff for arrays, table-marginals for tables"))  # fmt: skip
    p.add_argument("--budget-split", default=None, help=(
        "weights of the budget (shares of mu^2) per statistic, comma-separated, e.g. 1,2; "
        "default: each bundle's default (equal)"))  # fmt: skip
    p.add_argument("--feature-option", action="append", default=[], metavar="[MAP.]KEY=VALUE", help=(
        "a feature-map option, repeatable, e.g. hermite.order=30 or image_size=32 (without MAP: every "
        "map that has KEY); VALUE is read as JSON when it parses, else as a string"))  # fmt: skip
    p.add_argument("--n-features", type=int, default=None, help="D, the number of features (rff: default 10000)")
    p.add_argument("--bandwidth", type=float, default=None, help="rff kernel length-scale (default: data-independent rule)")
    p.add_argument("--epsilon", type=float, required=True, help="privacy budget epsilon (> 0)")
    p.add_argument("--delta", type=float, default=1e-5, help="privacy budget delta in (0, 1); default 1e-5")
    p.add_argument("--neighbouring", default="add-remove", choices=["add-remove", "replace-one"],
                   help="neighbouring relation of the guarantee (default add-remove)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="public seed of the feature map (recorded)")
    p.add_argument("--clip", action="store_true", help=(
        "clip values into the declared domain instead of refusing them (tables: numbers into their "
        "declared bounds); recorded in the release"))  # fmt: skip
    p.add_argument("--out", required=True, help="release file to write (an existing one is refused without --force)")
    p.add_argument("--force", action="store_true", help=(
        "overwrite an existing --out (the new release spends its epsilon again: both count in the budget record)"))  # fmt: skip
    p.add_argument("--name", default=None, help=(
        "public name of the data recorded in the release (default: digits / fashion-mnist for the benchmarks, "
        "else none; the data file's path is never recorded)"))  # fmt: skip
    p.add_argument("--budget-record", default=None, metavar="PATH", help=(
        "the budget record of this data set (JSON, never publish it): a file, or a folder to keep it in. "
        "Default for npz:FILE, csv:FILE, parquet:FILE: FILE.mmgen-budget.json beside it; for idx:FOLDER: FOLDER/mmgen-budget.json; "
        "for the public benchmarks: none"))  # fmt: skip
    p.add_argument("--total-epsilon", type=float, default=None, help=(
        "declare the total epsilon this data set may spend (kept in the budget record, at its delta); "
        "a release that would exceed it is refused before the data is read"))  # fmt: skip


def _add_schema_option(p):
    p.add_argument("--schema", default=None, metavar="SCHEMA.json", help=(
        "csv:/parquet: tables: the public schema (every column's type, declared bounds or categories, "
        "missing values, optional label); draft one with `mmgen schema draft FILE`"))  # fmt: skip


def _add_npz_options(p):
    p.add_argument("--n-classes", type=int, default=None, metavar="K", help=(
        "npz: the number of classes, labels 0..K-1 (public; required unless the file stores n_classes)"))  # fmt: skip
    p.add_argument("--low", type=float, default=None, help=(
        "npz: the declared lower bound of every value (public knowledge, never the data's own min); "
        "with --high, values are used as stored. Default: the file's 'low', else [0, 1] (uint8 divided by 255)"))  # fmt: skip
    p.add_argument("--high", type=float, default=None, help="npz: the declared upper bound of every value (see --low)")
    p.add_argument("--holdout", type=float, default=None, metavar="FRACTION", help=(
        "npz without x_test/y_test, or a table: hold out about FRACTION of the records by a hash of each record's own "
        "bytes (the same records for release and evaluate); held-out records are not released, and scores "
        "on them are not private. Default: release every record"))  # fmt: skip


def _add_inspect(sub):
    p = sub.add_parser("inspect", help="print a release's, a VAE's or evolved samples' metadata", description="Prints the public metadata of a release or a VAE (`mmgen vae`), or the privacy record of samples written by `mmgen evolve` or `mmgen vae --per-record-out`.")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")


# `mmgen fit`'s defaults, sized so that a 60,000-record 28×28 release fits in a few minutes on 2 CPU cores:
# the settings `mmgen demo --data fashion-mnist` uses (pipeline.DEMO_SETTINGS), not tuned on a test split.
# The Python API keeps TrainConfig's and GeneratorConfig's own defaults.
FIT_DEFAULTS = {"epochs": 6, "steps_per_epoch": 100, "batch_size": 200, "conv_width": 32}
# Tables: their generator is small and a step costs milliseconds, so more and larger steps; chosen on
# carData/SLID at epsilon = 1 (2-way marginal TVD against the training rows), never on CPS1988, the reported table.
TABLE_FIT_DEFAULTS = {"epochs": 20, "steps_per_epoch": 100, "batch_size": 1000}
# `mmgen vae`'s defaults: mmgen.vae.VAEConfig's (see docs/vae.md for how they were chosen).
VAE_DEFAULTS = {"epochs": 10.0, "sampling_rate": 0.05, "clip_norm": 1.0, "lr": 1e-3, "latent_dim": 16, "hidden": (512,),
                "encoder_lipschitz": 4.0, "decoder_lipschitz": 32.0, "posterior_std": 0.5, "pretrain_epochs": 10}  # fmt: skip
# `mmgen evolve`'s defaults: mmgen.evolve.EvolveConfig's (see docs/evolve.md for how they were chosen).
EVOLVE_DEFAULTS = {"rounds": 5, "population": 1000, "samples": 10000, "threshold": 2.0, "strength_start": 0.6,
                   "strength_end": 0.2, "embedding": "pixels"}  # fmt: skip


def _add_fit(sub):
    d = FIT_DEFAULTS
    p = sub.add_parser("fit", help="train a generator on a release", description=(
        "Trains a class-conditional generator to match a release's mean embeddings (no privacy cost). "
        f"The defaults ({d['epochs'] * d['steps_per_epoch']} steps of {d['batch_size']} records, conv width "
        f"{d['conv_width']}) fit a 60,000-record 28x28 release in a few minutes on 2 CPU cores; after the first "
        "steps the expected duration is printed. Train longer with --epochs, bigger with --width/--batch-size."))  # fmt: skip
    p.add_argument("file", help="release file")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("--generator", default="auto", choices=["auto", "conv", "mlp", "resnet", "table"],
                   help="auto (default): conv for (C, H, W) images, table for tables, mlp for other vectors; the choice is printed")  # fmt: skip
    p.add_argument("--width", type=int, default=None, help=(
        f"channels (conv, resnet) or hidden units / 4 (mlp) of the widest layer; "
        f"default {d['conv_width']} for conv, 64 otherwise"))  # fmt: skip
    p.add_argument("--statistic-weights", default=None, help="loss weight per statistic, comma-separated (default 1 each)")
    t = TABLE_FIT_DEFAULTS
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs of --steps-per-epoch steps (default {d['epochs']}; tables {t['epochs']})")  # fmt: skip
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help=f"Adam steps per epoch; the learning rate decays after each (default {d['steps_per_epoch']})")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"generated records per step (default {d['batch_size']}; tables {t['batch_size']})")  # fmt: skip
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unbiased", action="store_true",
                   help="unbiased (U-statistic) per-batch estimate of the matching loss instead of DP-MERF's biased one")  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help=(
        "CPU threads for torch (default: 1 for a table, else torch's, one per core); on a machine busy with other processes "
        "--threads 1 can be several times faster (idle OpenMP threads spin against them)"))  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from the checkpoint at --out (same result as an uninterrupted run)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_sample(sub):
    p = sub.add_parser("sample", help="draw synthetic data from a checkpoint", description=(
        "Writes N labelled synthetic records as .npz (x in the declared domain, y integer labels); "
        "for a table, a .csv or .parquet file with the schema's columns, types and category labels."))  # fmt: skip
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True, help=".npz file to write (tables: .csv or .parquet)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--grid", default=None, help="also write a PNG grid of samples per class")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="utility and fidelity of synthetic data against a real test split", description=(
        "Scores synthetic records against the real test split: classifiers trained (and selected) on the "
        "synthetic data and tested once on the real data, and distances between the two samples."))  # fmt: skip
    p.add_argument("samples", help=".npz with x, y; or a synthetic table (.csv, .parquet) from `mmgen sample`")
    p.add_argument("--data", default=None, help="data spec whose test split is used (tables: the real csv:/parquet: file)")
    p.add_argument("--test-data", default=None, metavar="npz:FILE", help=(
        "test records of your own: every record (x, y) of this file is a test record (instead of --data's test split); "
        "tables: csv:FILE or parquet:FILE"))  # fmt: skip
    _add_npz_options(p)
    _add_schema_option(p)
    p.add_argument("--metrics", default="lr,mlp", help=(
        "comma-separated: lr (logistic regression), mlp, cnn, fd (FD-EfficientNetLite0), prdc "
        "(precision/recall/density/coverage), mmd (Gaussian MMD^2), sinkhorn, or all; default lr,mlp"))  # fmt: skip
    p.add_argument("--max-samples", type=int, default=2000,
                   help="records per side for fd, prdc, mmd and sinkhorn (default 2000)")  # fmt: skip
    p.add_argument("--checkpoint", default=None,
                   help="the generator checkpoint the samples came from: records its epsilon, delta and features")  # fmt: skip
    p.add_argument("--label", default=None, help="method name in the report (default: the checkpoint's statistics)")
    p.add_argument("--grid", default=None, help="also write a PNG grid of the samples, one row per class")
    p.add_argument("--plot", default=None, metavar="PNG", help=(
        "tables: the per-column marginals, real vs synthetic; images: write the sample grid to PNG and, with --compare, the accuracy/epsilon curve of this report and "
        "the compared ones to PNG's name + '-accuracy.png'"))  # fmt: skip
    p.add_argument("--compare", nargs="+", default=[], metavar="REPORT",
                   help="other JSON reports (mmgen evaluate --checkpoint, or benchmark results) to plot with --plot")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the classifiers and subsamples")
    p.add_argument("--out", default=None, help="JSON report to write")


def _add_plot(sub):
    p = sub.add_parser("plot", help="accuracy against epsilon from several reports", description=(
        "Plots downstream accuracy against epsilon from `mmgen evaluate --checkpoint` reports or benchmark "
        "result files; reports with the same method and epsilon are averaged (error bar: std)."))  # fmt: skip
    p.add_argument("reports", nargs="+", help="JSON reports")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--metrics", default="logistic_regression,mlp,cnn", help="accuracy keys, one panel each")
    p.add_argument("--title", default=None)


def _add_demo(sub):
    p = sub.add_parser("demo", help="the whole path on digits (or Fashion-MNIST)", description=(
        "release -> fit -> sample -> evaluate on a real data set; writes the release, a sample grid "
        "and a report into --out."))  # fmt: skip
    p.add_argument("--data", default="digits", help="digits (default) or fashion-mnist")
    p.add_argument("--epsilon", type=float, default=10.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--epochs", type=int, default=None, help="default: 10")
    p.add_argument("--out", default="mmgen-demo")
    p.add_argument("--force", action="store_true", help="overwrite a demo release already in --out")
    p.add_argument("--quiet", action="store_true")


def _add_schema(sub):
    p = sub.add_parser("schema", help="draft or check a table's public schema", description=(
        "draft: writes a schema read off a CSV/Parquet file, as a starting point only -- every bound and "
        "category in it is PRIVATE (read off the data) and must be replaced by public knowledge; mmgen refuses "
        "a release with the draft until its 'note' is deleted. check: validates a schema (and a table against it) "
        "and prints its columns and encoding."))  # fmt: skip
    p.add_argument("action", choices=["draft", "check"])
    p.add_argument("file", help="draft: the CSV/Parquet file; check: the schema JSON")
    p.add_argument("--data", default=None, help="check: also validate this table against the schema (csv:FILE or parquet:FILE)")
    p.add_argument("--label", default=None, help="draft: the label column (the release is conditional on it)")
    p.add_argument("--out", default=None, help="draft: the schema JSON to write (an existing file is refused)")


def _add_budget(sub):
    p = sub.add_parser("budget", help="show a budget record (every release of one data set)", description=(
        "Prints a budget record: each stage that read the data set, and their total epsilon composed with "
        "dp-accounting. Give the record (.json) or the data spec it belongs to (npz:FILE, idx:FOLDER)."))  # fmt: skip
    p.add_argument("file", help="budget record JSON, or npz:FILE / idx:FOLDER")
    p.add_argument("--delta", type=float, default=None, help="report the total at this delta (default: the record's)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")


def _add_evolve(sub):
    p = sub.add_parser("evolve", help="Private Evolution: private nearest-neighbour votes refine a generator's samples",
                       description=(
        "Private Evolution on top of a fitted generator: every private record votes for its nearest samples of its "
        "class (public embedding), the vote histogram gets Gaussian noise, and the next samples are variations of the "
        "voted ones. --epsilon is the total for the data set: the release the generator came from, this run and every "
        "stage in the budget record compose within it (dp-accounting). Writes samples (.npz) that `mmgen evaluate` "
        "and `mmgen inspect` read."))  # fmt: skip
    p.add_argument("checkpoint", nargs="?", help="generator checkpoint (`mmgen fit`); not needed with --plan")
    p.add_argument("--data", default="digits", help="the private data the release was made of (same specs as `release`)")
    _add_npz_options(p)
    p.add_argument("--epsilon", type=float, required=True, help="total epsilon of the data set after this run (> 0)")
    p.add_argument("--delta", type=float, default=1e-5, help="delta in (0, 1); default 1e-5")
    p.add_argument("--neighbouring", default="add-remove", choices=["add-remove", "replace-one"],
                   help="neighbouring relation (the release's)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=EVOLVE_DEFAULTS["rounds"], help="T, private histograms")
    p.add_argument("--population", type=int, default=EVOLVE_DEFAULTS["population"],
                   help="candidates per round, all classes (split by the release's noisy class proportions)")  # fmt: skip
    p.add_argument("--samples", type=int, default=EVOLVE_DEFAULTS["samples"], help="records to write")
    p.add_argument("--k", type=int, default=1, help="neighbours each record votes for (1/sqrt(k) each)")
    p.add_argument("--threshold", type=float, default=EVOLVE_DEFAULTS["threshold"],
                   help="H in noise standard deviations: noisy votes below it count 0")  # fmt: skip
    p.add_argument("--strength-start", type=float, default=EVOLVE_DEFAULTS["strength_start"],
                   help="variation strength after the first round (1: a fresh sample)")  # fmt: skip
    p.add_argument("--strength-end", type=float, default=EVOLVE_DEFAULTS["strength_end"],
                   help="variation strength after the last round")  # fmt: skip
    p.add_argument("--embedding", default=EVOLVE_DEFAULTS["embedding"], choices=["pixels", "efficientnet", "release"],
                   help="public embedding of the votes")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="public seed of the latents and of the draws")
    p.add_argument("--generator-public", action="store_true", help=(
        "the generator was fitted to other, public data (not a release of --data): its release is not counted"))  # fmt: skip
    p.add_argument("--clip", action="store_true", help="clip values into the declared domain instead of refusing them")
    p.add_argument("--out", help="samples to write (.npz: x, y, latents, meta)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out (this run spends epsilon again)")
    p.add_argument("--budget-record", default=None, metavar="PATH", help=(
        "the data set's budget record (as for `release`; default beside npz/csv files, none for the benchmarks)"))  # fmt: skip
    p.add_argument("--plan", action="store_true", help=(
        "print how --epsilon splits between a release and this run for --release-share, and stop (reads no data)"))  # fmt: skip
    p.add_argument("--release-share", type=float, default=0.5, help="with --plan: the release's share of mu^2 (0..1)")


def _add_vae(sub):
    d = VAE_DEFAULTS
    p = sub.add_parser("vae", help="the Lipschitz VAE trained with DP-SGD on the private data", description=(
        "Trains a class-conditional VAE with Lipschitz-constrained encoder and decoder on the private data with DP-SGD "
        "(opacus: per-record clipping, Gaussian noise, Poisson sampling). --epsilon is the total for the data set: "
        "a --warm-start generator's release, DP-SGD, the optional per-record stage and every stage in the budget "
        "record compose within it (dp-accounting). Writes a model file that `mmgen sample` and `mmgen inspect` take. "
        f"The defaults ({d['epochs']:g} expected epochs at sampling rate {d['sampling_rate']:g}) train on 60,000 "
        "28x28 records in about a minute on 2 CPU cores."))  # fmt: skip
    p.add_argument("--data", default="digits", help="the private data (same specs as `release`)")
    _add_npz_options(p)
    p.add_argument("--epsilon", type=float, required=True, help="total epsilon of the data set after this run (> 0)")
    p.add_argument("--delta", type=float, default=1e-5, help="delta in (0, 1); default 1e-5")
    p.add_argument("--neighbouring", default="add-remove", choices=["add-remove", "replace-one"],
                   help="neighbouring relation (a warm start's release's; replace-one for --per-record-epsilon)")  # fmt: skip
    p.add_argument("--out", required=True, help="model file to write (safetensors)")
    p.add_argument("--warm-start", default=None, metavar="CKPT", help=(
        "a generator checkpoint (`mmgen fit`) of a release of --data: the VAE is first trained on its samples "
        "(post-processing), and the release counts within --epsilon"))  # fmt: skip
    p.add_argument("--generator-public", action="store_true", help=(
        "the --warm-start generator was fitted to other, public data: no release is counted"))  # fmt: skip
    p.add_argument("--no-lipschitz", action="store_true", help="no Lipschitz constraint (the baseline)")
    p.add_argument("--epochs", type=float, default=d["epochs"], help="expected passes over the data (steps = epochs / q)")
    p.add_argument("--sampling-rate", type=float, default=d["sampling_rate"], help="q, Poisson sampling rate per step")
    p.add_argument("--clip-norm", type=float, default=d["clip_norm"], help="C, per-record gradient norm bound")
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--latent-dim", type=int, default=d["latent_dim"])
    p.add_argument("--hidden", default=",".join(map(str, d["hidden"])), help="hidden widths, comma-separated")
    p.add_argument("--encoder-lipschitz", type=float, default=d["encoder_lipschitz"],
                   help="declared Lipschitz constant of the encoder mean")  # fmt: skip
    p.add_argument("--decoder-lipschitz", type=float, default=d["decoder_lipschitz"],
                   help="declared Lipschitz constant of the decoder")  # fmt: skip
    p.add_argument("--posterior-std", type=float, default=None, help=(
        f"s, the posterior's standard deviation (default {d['posterior_std']:g}; with --per-record-epsilon, the s "
        "that gives that guarantee)"))  # fmt: skip
    p.add_argument("--pretrain-epochs", type=int, default=d["pretrain_epochs"], help="warm start: passes over the generated records")
    p.add_argument("--seed", type=int, default=0, help="public seed of the initial weights, warm start and samples")
    p.add_argument("--per-record-epsilon", type=float, default=None, help=(
        "also run the seed's per-record mechanism (encode each private record, add the posterior noise, decode) at "
        "this per-record epsilon, under replace-one; needs --per-record-out"))  # fmt: skip
    p.add_argument("--per-record-out", default=None, help="the per-record samples to write (.npz)")
    p.add_argument("--clip", action="store_true", help="clip values into the declared domain instead of refusing them")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out (this run spends epsilon again)")
    p.add_argument("--budget-record", default=None, metavar="PATH", help=(
        "the data set's budget record (as for `release`; default beside npz/csv files, none for the benchmarks)"))  # fmt: skip
    p.add_argument("--resume", action="store_true", help=(
        "continue an interrupted run from the unfinished model at --out (its accounting is kept: no second charge)"))  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _add_audit(sub):
    p = sub.add_parser("audit", help="empirical privacy audit: a lower bound on epsilon", description=(
        "Simulates many releases of a configuration on neighbouring data sets (with and without a "
        "canary record), runs the likelihood-ratio test and reports a Clopper-Pearson lower bound on "
        "epsilon beside the claimed one. Run it on public data: its report is not private."))  # fmt: skip
    p.add_argument("--features", default="rff", help="feature map or statistics spec (default rff)")
    p.add_argument("--n-features", type=int, default=None, help="D for maps that take n_features (default: the map's)")
    p.add_argument("--epsilon", type=float, required=True, help="claimed epsilon (> 0)")
    p.add_argument("--delta", type=float, default=1e-5, help="claimed delta in (0, 1); default 1e-5")
    p.add_argument("--neighbouring", default="add-remove", choices=["add-remove", "replace-one"])
    p.add_argument("--data", default="digits", help="public data set D (default digits)")
    p.add_argument("--n-records", type=int, default=500, help="records of D (default 500)")
    p.add_argument("--trials", type=int, default=200_000, help="simulated releases per side (default 200000)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the bound (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="public seed of the feature map and the canary candidates")
    p.add_argument("--out", default=None, help="JSON report to write")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmgen", description="Differentially private synthetic data by moment matching.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"mmgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_release, _add_inspect, _add_fit, _add_sample, _add_evaluate, _add_plot, _add_demo, _add_audit,
                _add_budget, _add_schema, _add_evolve, _add_vae):
        add(sub)
    sub.add_parser("features", help="list the registered feature maps", description="Lists the feature maps.")
    for p in sub.choices.values():
        _show_defaults(p)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Appends "(default: ...)" to the help of every option with a default its help does not already state.

    ArgumentDefaultsHelpFormatter's rule, minus its noise: no "(default: None)" or "(default: False)",
    and options without a help text get one that shows the default.
    """
    for action in parser._actions:
        default = action.default
        unstated = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if not action.option_strings or action.help == argparse.SUPPRESS or unstated:
            continue
        if action.help is None:
            action.help = "default: %(default)s"
        elif "default" not in action.help.lower():
            action.help += " (default: %(default)s)"


def _floats(text: str, what: str) -> list[float]:
    from .errors import MMGenError

    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise MMGenError(f"`{what}` must be comma-separated numbers, e.g. 1,2. Got {text!r}.") from None


def _feature_options(args) -> dict:
    """Options per feature-map name (``"*"``: every map that has the field), for ``features.statistics``."""
    from .errors import MMGenError

    shared: dict = {"seed": args.seed}
    if args.n_features is not None:
        shared["n_features"] = args.n_features
    if args.bandwidth is not None:
        shared["bandwidth"] = args.bandwidth
    opts: dict = {"*": shared}
    for item in args.feature_option:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise MMGenError(f"`--feature-option` must look like [MAP.]KEY=VALUE. Got {item!r}.")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        name, dot, field = key.rpartition(".")
        opts.setdefault(name if dot else "*", {})[field] = value
    return opts


def _npz_options(args) -> dict:
    """``n_classes`` and ``holdout`` for :func:`mmgen.data.load`, when given."""
    pairs = (("n_classes", args.n_classes), ("holdout", args.holdout), ("low", args.low), ("high", args.high))
    return {k: v for k, v in pairs if v is not None}


def _test_data(args):
    """The data set whose test records `evaluate` scores against (``--data`` and/or ``--test-data``)."""
    import dataclasses

    import mmgen

    from .errors import DataError, MMGenError

    if not args.data and not args.test_data:
        raise MMGenError("`evaluate` needs test records: --data SPEC (its test split) or --test-data npz:FILE.")
    if args.test_data:
        if not args.test_data.startswith("npz:"):
            raise MMGenError(f"`--test-data` takes npz:FILE. Got {args.test_data!r}.")
        if args.holdout is not None:
            raise MMGenError("`--holdout` and `--test-data` exclude each other: the test records come from one place.")
        test = mmgen.data.load(args.test_data, **{k: v for k, v in _npz_options(args).items() if k != "holdout"})
        ds = mmgen.data.load(args.data, **_npz_options(args)) if args.data else test
        if ds.input_shape != test.input_shape or ds.n_classes != test.n_classes:
            raise DataError(f"--test-data records {test.input_shape} with {test.n_classes} classes do not match "
                            f"--data {ds.input_shape} with {ds.n_classes} classes.")  # fmt: skip
        return dataclasses.replace(ds, name=args.test_data, x_test=test.x_train, y_test=test.y_train)
    ds = mmgen.data.load(args.data, **_npz_options(args))
    if not len(ds.y_test):
        raise DataError(
            f"{args.data} has no test records. Give them as --test-data npz:TEST.npz (x, y), as x_test/y_test "
            "in the file, or hold some out with --holdout FRACTION for both `release` and `evaluate`."
        )
    return ds


BENCHMARKS = ("digits", "fashion-mnist")  # public data sets: their names may be published, no record by default


def _schema(args, table: bool):
    """The table's public schema (``--schema``), read and checked before any data; None for arrays."""
    from .data.tables import Schema
    from .errors import MMGenError

    if not table:
        if getattr(args, "schema", None):
            raise MMGenError(f"`--schema` applies to csv: and parquet: tables. Got --data {args.data}.")
        return None
    if not args.schema:
        raise MMGenError(f"A table ({args.data}) needs its public schema: --schema SCHEMA.json "
                         "(draft one with `mmgen schema draft FILE`, then replace every bound by public knowledge).")  # fmt: skip
    return Schema.load(args.schema)


def _warn(message: str) -> None:
    print(f"mmgen: warning: {message}", file=sys.stderr)


def _budget_record_path(spec: str, chosen: str | None) -> Path | None:
    """Where the budget record of data ``spec`` lives (never beside the outputs: it is not published).

    ``--budget-record`` a folder: ``FOLDER/<data file name>.mmgen-budget.json``; a file: that file.
    Default: ``FILE.mmgen-budget.json`` beside an npz, CSV or Parquet file, ``FOLDER/mmgen-budget.json`` in an IDX
    folder, none for the public benchmarks (digits, fashion-mnist).
    """
    from .privacy.ledger import RECORD_SUFFIX

    kind, _, arg = spec.partition(":")
    if chosen is not None:
        chosen_path = Path(chosen)
        if chosen_path.is_dir() or chosen.endswith(("/", "\\")):
            return chosen_path / ((Path(arg).name if arg else kind) + RECORD_SUFFIX)
        return chosen_path
    if kind in ("npz", "csv", "parquet") and arg:
        return Path(arg).with_name(Path(arg).name + RECORD_SUFFIX)
    if kind == "idx" and arg:
        return Path(arg) / "mmgen-budget.json"
    return None  # digits, fashion-mnist[:FOLDER]: public benchmarks


def _refuse_overwrite(path: Path, what: str) -> None:
    from .errors import MMGenError

    if path.is_dir():
        raise MMGenError(f"--out {path} is a folder; give a file name.")
    if path.exists():
        raise MMGenError(f"{path} already holds {what}; writing it again spends epsilon again. "
                         "Pass --force to overwrite it (the budget record counts both).")  # fmt: skip


def cmd_release(args) -> None:
    import mmgen

    from .errors import MMGenError

    from .privacy import dp_event, split_noise_multipliers
    from .privacy.ledger import BudgetRecord, budget_warnings

    if not args.force:
        _refuse_overwrite(Path(args.out), "a release")
    kind = args.data.partition(":")[0]
    table = kind in ("csv", "parquet")
    schema = _schema(args, table)
    if args.features is None:
        args.features = "table-marginals" if table else "rff"
    data_name = args.name if args.name is not None else (args.data if args.data in BENCHMARKS else kind)
    options = _feature_options(args)
    from .features.bundles import expand

    has_seed = ["seed" in mmgen.features.get_class(m).Config.__dataclass_fields__ for m, _, _ in expand(args.features)]
    if not any(has_seed):
        options["*"].pop("seed")  # --seed has a default; only an explicit option must find a taker
    fmaps = mmgen.features.statistics(args.features, options=options)
    split = (_floats(args.budget_split, "--budget-split") if args.budget_split
             else mmgen.features.default_budget_split(args.features))  # fmt: skip
    # the budget is checked before the data is read: the noise multipliers depend on (ε, δ, split) only
    event = dp_event(split_noise_multipliers(args.epsilon, args.delta, split))
    record_path = _budget_record_path(args.data, args.budget_record)
    record = None
    if record_path is not None:
        record = BudgetRecord.open(record_path, data=Path(args.data.partition(":")[2]).name or args.data)
        if args.total_epsilon is not None:
            record.declare_total(args.total_epsilon)
        after = record.check(event, delta=args.delta if record.delta is None else None, neighbouring=args.neighbouring)
        if len(record):
            _warn(f"{record_path} already holds {len(record)} stage(s) on this data set: total epsilon "
                  f"{record.total_epsilon():.4g} so far, {after:.4g} after this release (delta={record.delta:g}).")  # fmt: skip
    elif args.total_epsilon is not None:
        from .errors import MMGenError

        raise MMGenError(f"`--total-epsilon` needs a budget record; {args.data} has none by default: "
                         "pass --budget-record PATH.")  # fmt: skip
    for message in budget_warnings(args.epsilon, args.delta):
        _warn(message)
    if table:
        from .data.tables import TableStream

        if any(v is not None for v in (args.n_classes, args.low, args.high)):
            raise MMGenError("A table's classes and domain come from its schema; --n-classes/--low/--high do not apply.")
        ds = TableStream(args.data, schema, holdout=args.holdout, clip=args.clip)  # read in chunks: memory flat in N
    else:
        ds = mmgen.data.load(args.data, **_npz_options(args))
    rel = mmgen.release(ds, features=fmaps, epsilon=args.epsilon, delta=args.delta, budget_split=split,
                        neighbouring=args.neighbouring, clip=args.clip and not table, data_name=data_name,
                        progress=True, record=record, output=Path(args.out).name)  # fmt: skip
    path = rel.save(args.out)
    stds = ", ".join(f"{s.name} {s.noise_std:.4g}" for s in rel.statistics)
    # no timing and no record count: both grow with the private N, and consoles get pasted into tickets
    print(f"wrote {path}: epsilon={rel.epsilon:g}, delta={rel.delta:g}, {rel.neighbouring}, "
          f"noise std per coordinate: {stds}")  # fmt: skip
    if record is not None:  # mmgen.release added the stage to the record and saved it
        print(f"budget record {record_path}: {len(record)} stage(s), total epsilon {record.total_epsilon():.4g} "
              f"at delta={record.delta:g} (keep it private)")  # fmt: skip


def cmd_evolve(args) -> None:
    import mmgen

    from .errors import MMGenError
    from .evolve import EvolveConfig, evolve, plan
    from .files import expect
    from .privacy.ledger import BudgetRecord, budget_warnings

    if args.plan:
        p = plan(args.epsilon, args.delta, args.rounds, args.release_share)
        print(f"total epsilon {args.epsilon:g} at delta={args.delta:g}, {args.neighbouring}, release share "
              f"{args.release_share:g} of mu^2:\n  mmgen release ... --epsilon {p['release_epsilon']:.6g}   "
              f"(noise multiplier {p['release_noise_multiplier']:.4g})\n  mmgen evolve CKPT ... --epsilon "
              f"{args.epsilon:g} --rounds {args.rounds}   ({args.rounds} histograms at noise multiplier "
              f"{p['noise_multiplier']:.4g}; epsilon {p['pe_epsilon']:.4g} on their own)")  # fmt: skip
        return
    if args.checkpoint is None or args.out is None:
        raise MMGenError("`mmgen evolve` needs a CHECKPOINT and --out (or --plan).")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise MMGenError(f"--out must be an .npz file (samples). Got {args.out!r}.")
    if not args.force:
        _refuse_overwrite(out, "samples")
    expect(args.checkpoint, "checkpoint", "`mmgen evolve`")
    trained = mmgen.Trained.load(args.checkpoint)
    if "table" in trained.release_info["data"]:
        raise MMGenError("`mmgen evolve` runs on images and vectors; this generator was fitted to a table.")
    config = EvolveConfig(rounds=args.rounds, population=args.population, samples=args.samples, k=args.k,
                          threshold=args.threshold, strength_start=args.strength_start,
                          strength_end=args.strength_end, embedding=args.embedding, seed=args.seed)  # fmt: skip
    kind = args.data.partition(":")[0]
    if kind in ("csv", "parquet"):
        raise MMGenError("`mmgen evolve` runs on images and vectors, not on tables.")
    record_path = _budget_record_path(args.data, args.budget_record)
    record = None
    if record_path is not None:
        record = BudgetRecord.open(record_path, data=Path(args.data.partition(":")[2]).name or args.data)
    for message in budget_warnings(args.epsilon, args.delta):
        _warn(message)
    ds = mmgen.data.load(args.data, **_npz_options(args))
    ev = evolve(trained, ds, epsilon=args.epsilon, delta=args.delta, config=config, neighbouring=args.neighbouring,
                generator_public=args.generator_public, record=record, clip=args.clip, progress=True,
                output=out)  # fmt: skip
    ev.save(out)
    pe = ev.privacy["stages"][-1]
    print(f"wrote {out}: {len(ev.y)} samples; epsilon={ev.epsilon:.4g}, delta={ev.delta:g}, {ev.privacy['neighbouring']} "
          f"(release + {pe['rounds']} histograms at noise multiplier {pe['noise_multiplier']:.4g})")  # fmt: skip
    if record is not None:
        print(f"budget record {record_path}: {len(record)} stage(s), total epsilon {record.total_epsilon():.4g} "
              f"at delta={record.delta:g} (keep it private)")  # fmt: skip


def cmd_vae(args) -> None:
    import mmgen

    from .errors import MMGenError
    from .files import expect
    from .privacy.ledger import BudgetRecord, budget_warnings
    from .vae import TrainedVAE, VAEConfig, per_record_samples, per_record_std, save_per_record, train_vae

    out = Path(args.out)
    if (args.per_record_epsilon is None) != (args.per_record_out is None):
        raise MMGenError("--per-record-epsilon and --per-record-out go together.")
    if args.per_record_out is not None:
        if Path(args.per_record_out).suffix != ".npz":
            raise MMGenError(f"--per-record-out must be an .npz file. Got {args.per_record_out!r}.")
        if args.neighbouring != "replace-one":
            raise MMGenError("The per-record mode is a guarantee under replace-one (the number of records is public): "
                             "pass --neighbouring replace-one.")  # fmt: skip
        if args.no_lipschitz:
            raise MMGenError("The per-record mode needs the Lipschitz constraint (drop --no-lipschitz).")
        if not args.force:
            _refuse_overwrite(Path(args.per_record_out), "samples")
    kind = args.data.partition(":")[0]
    if kind in ("csv", "parquet"):
        raise MMGenError("`mmgen vae` runs on images and vectors, not on tables.")
    resume = None
    if args.resume:
        if not out.is_file():
            raise MMGenError(f"--resume: no model at {out} to continue from.")
        expect(out, "vae", "`mmgen vae --resume`")
        resume = TrainedVAE.load(out)
        if resume.finished:
            raise MMGenError(f"--resume: {out} is finished ({resume.steps_done} steps); nothing to resume.")
    elif not args.force:
        _refuse_overwrite(out, "a model")
    warm = None
    if args.warm_start is not None and resume is None:
        expect(args.warm_start, "checkpoint", "`mmgen vae --warm-start`")
        warm = mmgen.Trained.load(args.warm_start)
    try:
        hidden = tuple(int(h) for h in args.hidden.split(","))
    except ValueError:
        raise MMGenError(f"--hidden must be comma-separated integers. Got {args.hidden!r}.") from None
    reserve, config = (), None
    if args.per_record_epsilon is not None:  # a later stage: the total must leave room for it (on resume too)
        import dp_accounting

        from .privacy import noise_multiplier_for

        reserve = (dp_accounting.GaussianDpEvent(noise_multiplier_for(args.per_record_epsilon, args.delta)),)
    if resume is None:
        input_dim = None
        posterior_std = args.posterior_std if args.posterior_std is not None else VAE_DEFAULTS["posterior_std"]
        config_args = dict(epochs=args.epochs, sampling_rate=args.sampling_rate, clip_norm=args.clip_norm, lr=args.lr,
                           latent_dim=args.latent_dim, hidden=hidden, lipschitz=not args.no_lipschitz,
                           encoder_lipschitz=args.encoder_lipschitz, decoder_lipschitz=args.decoder_lipschitz,
                           pretrain_epochs=args.pretrain_epochs, seed=args.seed)  # fmt: skip
        VAEConfig(**config_args, posterior_std=posterior_std)  # every setting checked before data is read
    record_path = _budget_record_path(args.data, args.budget_record)
    record = None
    if record_path is not None:
        record = BudgetRecord.open(record_path, data=Path(args.data.partition(":")[2]).name or args.data)
    for message in budget_warnings(args.epsilon, args.delta):
        _warn(message)
    ds = mmgen.data.load(args.data, **_npz_options(args))
    if resume is None:
        input_dim = 1
        for n in ds.input_shape:
            input_dim *= n
        if args.per_record_epsilon is not None and args.posterior_std is None:
            posterior_std = per_record_std(args.encoder_lipschitz, input_dim, args.per_record_epsilon, args.delta)
        config = VAEConfig(**config_args, posterior_std=posterior_std)
        print(f"mmgen: DP-SGD: {config.steps} steps at sampling rate {config.sampling_rate:g}, clip norm "
              f"{config.clip_norm:g}; calibrating the noise to total epsilon {args.epsilon:g} ...", file=sys.stderr)  # fmt: skip
    vae = train_vae(ds, epsilon=args.epsilon, delta=args.delta,  # on resume, epsilon is checked as the total
                    config=config, warm_start=warm, generator_public=args.generator_public,
                    neighbouring=args.neighbouring, record=record, clip=args.clip, progress=not args.quiet,
                    checkpoint=out, resume=resume, reserve=reserve)  # fmt: skip
    vae.save(out)
    dp = vae.privacy["stages"][-1]
    print(f"wrote {out}: epsilon={vae.epsilon:.4g}, delta={vae.delta:g}, {vae.privacy['neighbouring']} "
          f"({len(vae.privacy['stages']) - 1} release(s) + {dp['steps']} DP-SGD steps at noise multiplier "
          f"{dp['noise_multiplier']:.4g})")  # fmt: skip
    if args.per_record_epsilon is not None:
        samples = per_record_samples(vae, ds, epsilon=args.per_record_epsilon, delta=args.delta, record=record,
                                     clip=args.clip, output=args.per_record_out)  # fmt: skip
        save_per_record(args.per_record_out, samples, vae.config.to_dict())
        print(f"wrote {args.per_record_out}: {len(samples['y'])} records, one per private record; epsilon="
              f"{samples['privacy']['epsilon']:.4g} (per-record stage {args.per_record_epsilon:g}), replace-one")  # fmt: skip
    if record is not None:
        print(f"budget record {record_path}: {len(record)} stage(s), total epsilon {record.total_epsilon():.4g} "
              f"at delta={record.delta:g} (keep it private)")  # fmt: skip


def cmd_schema(args) -> None:
    from .data.tables import DRAFT_WARNING, Schema, draft_schema, read_table
    from .errors import MMGenError

    if args.action == "draft":
        if not args.out:
            raise MMGenError("`mmgen schema draft` needs --out SCHEMA.json.")
        _refuse_overwrite_file(Path(args.out))
        frame = read_table(args.file)
        if args.label is not None and args.label not in frame.columns:
            raise MMGenError(f"--label {args.label!r} is not a column of {args.file} ({', '.join(map(str, frame.columns))}).")
        Path(args.out).write_text(json.dumps(draft_schema(frame, label=args.label), indent=2) + "\n")
        _warn(DRAFT_WARNING)
        print(f"wrote {args.out}: a draft of {len(frame.columns)} columns (edit it before any release)")
        return
    schema = Schema.load(args.file)
    for c in schema.columns:
        role = " (label)" if c.name == schema.label else ""
        if c.is_numeric:
            extra = f"[{c.low:g}, {c.high:g}]{' log' if c.transform else ''}, {c.n_bins} bins{', may be missing' if c.missing else ''}"
        else:
            extra = f"{len(c.categories)} categories: {', '.join('(missing)' if v is None else str(v) for v in c.categories)}"
        print(f"{c.name:<14} {c.type:<12} {extra}{role}")
    print(f"encoded      {schema.encoded_dim} values per row, {schema.n_classes} class(es)")
    if args.data:
        from .data.tables import load_table

        ds = load_table(args.data, schema)
        print(f"{args.data}: every row fits the schema ({len(ds.y_train)} rows -- a private count, do not publish it)")


def _refuse_overwrite_file(path: Path) -> None:
    from .errors import MMGenError

    if path.exists():
        raise MMGenError(f"{path} exists; give another --out or delete it first.")


def cmd_budget(args) -> None:
    from .errors import MMGenError
    from .privacy.ledger import BudgetRecord

    path = Path(args.file) if args.file.endswith(".json") else _budget_record_path(args.file, None)
    if path is None:
        raise MMGenError(f"{args.file} has no default budget record (a public benchmark): give the record's .json.")
    if not path.is_file():
        raise MMGenError(f"No budget record at {path}.")
    record = BudgetRecord.load(path)
    if args.json:
        print(json.dumps(record.to_dict(), indent=2))
        return
    print(record)
    if args.delta is not None and record.entries:
        print(f"total        epsilon={record.total_epsilon(args.delta):.4g} at delta={args.delta:g}")


def format_release(rel) -> str:
    p, d = rel.metadata["privacy"], rel.metadata["data"]
    lines = [
        f"release      mmgen format {rel.metadata['format_version']}, library {rel.metadata['library_version']}",
        f"privacy      epsilon={p['epsilon']:g}, delta={p['delta']:g}, neighbouring={p['neighbouring']}, "
        f"mechanism={p['mechanism']}",
        f"noise        multipliers {', '.join(f'{s:.4g}' for s in p['noise_multipliers'])} "
        f"(composed {p['composed_noise_multiplier']:.4g}); budget split {', '.join(f'{w:.3g}' for w in p['budget_split'])}",
        f"publishable  {'yes' if p['for_publication'] else 'NO (seeded test noise)'}; noise source {p['noise_source']}",
        f"data         {d.get('name')}: input shape {tuple(d['input_shape'])}, {d['n_classes']} classes, "
        f"domain [{d['low']:g}, {d['high']:g}]{', clipped' if d.get('clip') else ''}",
    ]
    if d.get("table"):
        t = d["table"]
        cols = ", ".join(c["name"] + ("*" if c["name"] == t.get("label") else "") for c in t["columns"])
        lines.append(f"table        {len(t['columns'])} columns ({cols}; * label){', numbers clipped' if t.get('clip') else ''}")
    for s in rel.statistics:
        f = s.feature_spec
        cfg = ", ".join(f"{k}={v}" for k, v in f["config"].items())
        lines.append(
            f"statistic    {s.name}: sums {tuple(s.sums.shape)}{' + counts' if s.counts is not None else ''}, "
            f"noise std {s.noise_std:.4g} (multiplier {s.noise_multiplier:.4g} x sensitivity {s.sensitivity:.4g}); "
            f"features {f['name']}({cfg}), D={f['output_dim']}"
        )
    lines.append(f"content hash {rel.metadata.get('content_hash', '(not saved yet)')}")
    return "\n".join(lines)


def cmd_inspect(args) -> None:
    from .files import expect
    from .release import Release

    from .files import sniff

    if sniff(args.file) == "samples":
        return _inspect_samples(args)
    if sniff(args.file) == "vae":
        from .vae import TrainedVAE

        vae = TrainedVAE.load(args.file)
        print(json.dumps(vae.metadata(), indent=2, sort_keys=True) if args.json else format_vae(vae.metadata()))
        return
    expect(args.file, "release", "`mmgen inspect`")
    rel = Release.load(args.file)
    print(json.dumps(rel.metadata, indent=2, sort_keys=True) if args.json else format_release(rel))


def format_evolved(meta: dict) -> str:
    p, c = meta["privacy"], meta["evolve"]
    lines = [
        f"samples      mmgen evolved samples, format {meta['format_version']}, library {meta['library_version']}",
        f"privacy      epsilon={p['epsilon']:.4g}, delta={p['delta']:g}, neighbouring={p['neighbouring']} "
        f"({p['composition']})",
        f"publishable  {'yes' if p['for_publication'] else 'NO (seeded test noise)'}; noise source {p['noise_source']}",
    ]
    for s in p["stages"]:
        if s["stage"] == "release":
            lines.append(f"stage        release: epsilon={s['epsilon']:g}, noise multipliers "
                         f"{', '.join(f'{v:.4g}' for v in s['noise_multipliers'])}; content hash {s['content_hash']}")  # fmt: skip
        else:
            lines.append(f"stage        private evolution: T={s['rounds']} histograms, noise multiplier "
                         f"{s['noise_multiplier']:.4g} x sensitivity {s['sensitivity']:.4g}, threshold H={s['threshold']:.4g}, "
                         f"k={s['k']}, embedding {s['embedding']} (epsilon {s['epsilon']:.4g} on its own)")  # fmt: skip
    if p.get("generator_public"):
        lines.append("generator    fitted to other, public data: its release is not counted")
    if "data_set_total_epsilon" in p:
        lines.append(f"data set     total epsilon {p['data_set_total_epsilon']:.4g} in its budget record")
    lines.append(f"settings     population {c['population']}, samples {c['samples']}, strengths "
                 f"{c['strength_start']:g} -> {c['strength_end']:g}, seed {c['seed']}")  # fmt: skip
    return "\n".join(lines)


def _privacy_lines(p: dict) -> list[str]:
    """The guarantee and one line per stage, for a VAE and its per-record samples."""
    lines = [f"privacy      epsilon={p['epsilon']:.4g}, delta={p['delta']:g}, neighbouring={p['neighbouring']} "
             f"({p['composition']})",
             f"publishable  {'yes' if p['for_publication'] else 'NO (seeded test noise)'}; noise source {p['noise_source']}"]  # fmt: skip
    for s in p["stages"]:
        if s["stage"] == "release":
            lines.append(f"stage        release: epsilon={s['epsilon']:.4g}, noise multipliers "
                         f"{', '.join(f'{v:.4g}' for v in s['noise_multipliers'])}; content hash {s['content_hash']}")  # fmt: skip
        elif s["stage"] == "dp-sgd":
            lines.append(f"stage        dp-sgd: {s['steps']} steps, Poisson sampling rate {s['sampling_rate']:g}, clip norm "
                         f"{s['clip_norm']:g}, noise multiplier {s['noise_multiplier']:.4g} (epsilon {s['epsilon']:.4g} on its own)")  # fmt: skip
        else:
            lines.append(f"stage        per-record: noise multiplier {s['noise_multiplier']:.4g} x sensitivity "
                         f"{s['sensitivity']:.4g} (encoder Lipschitz {s['encoder_lipschitz']:g} x domain diameter "
                         f"{s['domain_diameter']:.4g} x sqrt 2); epsilon {s['epsilon']:.4g} on its own, one output per record")  # fmt: skip
    if p.get("generator_public"):
        lines.append("warm start   a generator fitted to other, public data: its release is not counted")
    if "data_set_total_epsilon" in p:
        lines.append(f"data set     total epsilon {p['data_set_total_epsilon']:.4g} in its budget record")
    return lines


def format_vae(meta: dict) -> str:
    c, lip = meta["config"], meta["lipschitz"]
    steps = max(1, round(c["epochs"] / c["sampling_rate"]))
    lines = [f"model        mmgen Lipschitz VAE, format {meta['format_version']}, library {meta['library_version']}; "
             f"{meta['steps_done']} of {steps} DP-SGD steps done" + ("" if meta["steps_done"] >= steps else " (UNFINISHED)"),
             *_privacy_lines(meta["privacy"])]  # fmt: skip
    if lip is None:
        lines.append("lipschitz    " + ("declared encoder {:g}, decoder {:g}; measured when training ends".format(
            c["encoder_lipschitz"], c["decoder_lipschitz"]) if c["lipschitz"] else "none (unconstrained baseline)"))  # fmt: skip
    else:
        lines.append(f"lipschitz    encoder {lip['encoder_measured']:.4g} <= declared {lip['encoder_declared']:g}, decoder "
                     f"{lip['decoder_measured']:.4g} <= declared {lip['decoder_declared']:g} (products of spectral norms)")  # fmt: skip
    d = meta["data"]
    lines.append(f"data         {d['name']}: records of shape {tuple(d['input_shape'])} in [{d['low']:g}, {d['high']:g}], "
                 f"{d['n_classes']} classes")  # fmt: skip
    lines.append(f"settings     latent {c['latent_dim']}, hidden {c['hidden']}, posterior std {c['posterior_std']:.4g}, "
                 f"lr {c['lr']:g}, seed {c['seed']}")  # fmt: skip
    return "\n".join(lines)


def _inspect_samples(args) -> None:
    from .errors import MMGenError
    from .evolve import read_meta

    import numpy as np

    with np.load(args.file, allow_pickle=False) as arrays:
        raw = str(arrays["meta"]) if "meta" in arrays.files else None
    if raw is not None and '"mmgen.per-record-samples"' in raw:
        meta = json.loads(raw)
        print(json.dumps(meta, indent=2, sort_keys=True) if args.json else "\n".join(
            ["samples      mmgen per-record samples (one per private record; their number is public)",
             *_privacy_lines(meta["privacy"])]))  # fmt: skip
        return
    meta = read_meta(args.file)
    if meta is None:
        raise MMGenError(f"{args.file} holds samples without a privacy record (as `mmgen sample` writes them, for "
                         "`mmgen evaluate`): their guarantee is the release's; inspect the release.")  # fmt: skip
    print(json.dumps(meta, indent=2, sort_keys=True) if args.json else format_evolved(meta))


def cmd_fit(args) -> None:
    from .errors import MMGenError
    from .generators import auto_kind, for_release
    from .release import Release
    from .files import expect
    from .train import TrainConfig, fit

    expect(args.file, "release", "`mmgen fit`")
    rel = Release.load(args.file)
    if args.width is not None and args.width < 2:
        raise MMGenError(f"`--width` must be an integer ≥ 2. Got {args.width}.")
    if args.threads is not None:
        if args.threads < 1:
            raise MMGenError(f"`--threads` must be an integer ≥ 1. Got {args.threads}.")
        import torch

        torch.set_num_threads(args.threads)
    weights = tuple(_floats(args.statistic_weights, "--statistic-weights")) if args.statistic_weights else None
    defaults = TABLE_FIT_DEFAULTS if "table" in rel.schema else FIT_DEFAULTS
    for key in ("epochs", "steps_per_epoch", "batch_size"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                      lr=args.lr, seed=args.seed, device=args.device, statistic_weights=weights,
                      unbiased=args.unbiased, threads=args.threads)  # fmt: skip
    resume = None
    if args.resume:
        if not Path(args.out).is_file():
            raise MMGenError(f"--resume: no checkpoint at {args.out} to continue from.")
        resume = args.out
        generator = args.generator  # unused: the checkpoint holds the generator
    else:
        import torch

        torch.manual_seed(cfg.seed)  # as fit() does before it builds a generator from a name
        kind = auto_kind(rel.input_shape, "table" in rel.schema) if args.generator == "auto" else args.generator
        width = args.width if args.width is not None else (FIT_DEFAULTS["conv_width"] if kind == "conv" else None)
        generator = for_release(rel, args.generator, **({} if width is None else {"width": width}))
    t0 = time.perf_counter()
    trained = fit(generator, rel, cfg, progress=not args.quiet, checkpoint=args.out, resume=resume)
    trained.save(args.out)
    steps = trained.epochs_done * cfg.steps_per_epoch
    print(f"wrote {args.out}: final loss {trained.losses[-1]:.4g} after {steps} steps ({time.perf_counter() - t0:.0f} s)")


def cmd_sample(args) -> None:
    import numpy as np

    from .errors import MMGenError
    from .files import check_picture, expect
    from .train import Trained

    # every check before anything is written
    if args.n < 1:
        raise MMGenError(f"`--n` must be ≥ 1. Got {args.n}.")
    check_picture(args.grid, "--grid")
    from .files import sniff

    if sniff(args.checkpoint) == "vae":
        return _sample_vae(args)
    expect(args.checkpoint, "checkpoint", "`mmgen sample`")
    trained = Trained.load(args.checkpoint)
    if trained.release_info["data"].get("table") is not None:
        from .data.tables import write_table

        if Path(args.out).suffix.lower() not in (".csv", ".parquet") or args.grid:
            raise MMGenError(f"This checkpoint makes table rows: `--out` must be a .csv or .parquet file (and no --grid). Got {args.out!r}.")
        frame = trained.sample_table(args.n, seed=args.seed)
        write_table(frame, args.out)
        print(f"wrote {args.out}: {args.n} rows, columns {', '.join(frame.columns)}")
        return
    if Path(args.out).suffix != ".npz":
        raise MMGenError(f"`--out` must be an .npz file (mmgen sample writes NumPy .npz). Got {args.out!r}.")
    shape = tuple(trained.generator.config.input_shape)
    if args.grid and (len(shape) != 3 or shape[0] not in (1, 3)):
        raise MMGenError(f"`--grid` needs image records (1 or 3, H, W); this checkpoint makes records of shape {shape}.")
    x, y = trained.sample(args.n, seed=args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, x=x.numpy(), y=y.numpy())
    print(f"wrote {args.out}: {args.n} records of shape {tuple(x.shape[1:])}")
    if args.grid:
        from .evaluate.grid import save_grid

        save_grid(trained, args.grid)
        print(f"wrote {args.grid}")


def _sample_vae(args) -> None:
    import numpy as np

    from .errors import MMGenError
    from .vae import TrainedVAE

    if Path(args.out).suffix != ".npz" or args.grid:
        raise MMGenError(f"A VAE's samples go to an .npz file (and no --grid). Got {args.out!r}.")
    vae = TrainedVAE.load(args.checkpoint)
    if not vae.finished:
        raise MMGenError(f"{args.checkpoint} is an unfinished run ({vae.steps_done} of {vae.config.steps} steps): "
                         "finish it with `mmgen vae ... --resume` first.")  # fmt: skip
    x, y = vae.sample(args.n, seed=args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, x=x.numpy(), y=y.numpy())
    print(f"wrote {args.out}: {args.n} records of shape {tuple(x.shape[1:])} (epsilon={vae.epsilon:.4g}, "
          f"delta={vae.delta:g}, {vae.privacy['neighbouring']}: the model's guarantee)")  # fmt: skip


def cmd_evaluate(args) -> None:
    import torch

    import mmgen

    from .errors import MMGenError
    from .evaluate import evaluate, parse_metrics
    from .evaluate.fidelity import FD_NAME, PRDC_NAME
    from .files import check_picture, expect, load_samples

    if Path(args.samples).suffix.lower() in (".csv", ".parquet"):
        return _evaluate_table(args)
    metrics = parse_metrics(args.metrics)
    check_picture(args.grid, "--grid")
    check_picture(args.plot, "--plot")
    if args.max_samples < 10:
        raise MMGenError(f"`--max-samples` must be ≥ 10. Got {args.max_samples}.")
    if args.compare and not args.plot:
        raise MMGenError("`--compare` needs `--plot PNG` (the curve is written beside it).")
    if args.plot and args.compare and not args.checkpoint:
        raise MMGenError("`--plot` with `--compare` needs `--checkpoint` (it gives this report's epsilon).")
    compared = []
    if args.compare:
        from .evaluate.plots import load_reports

        compared = load_reports(args.compare)  # read first: a bad report fails before the evaluation runs
    x, y = load_samples(args.samples, "`mmgen evaluate`")
    x, y = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    if args.checkpoint:
        expect(args.checkpoint, "checkpoint", "`mmgen evaluate --checkpoint`")
    ds = _test_data(args)
    report: dict = {"samples": args.samples, "data": args.test_data or args.data}
    report.update(_checkpoint_info(args.checkpoint))
    if args.label:
        report["method"] = args.label
    report.update(evaluate(x, y, ds, metrics=metrics, max_samples=args.max_samples, seed=args.seed))
    parts = [f"{m} {report[m]:.4f}" for m in ("logistic_regression", "mlp", "cnn") if m in report]
    parts += [f"{m} {report[m]:.4g}" for m in (FD_NAME, "MMD2-Gaussian", "Sinkhorn") if m in report]
    if PRDC_NAME in report:
        parts.append(" ".join(f"{k} {report[PRDC_NAME][k]:.3f}" for k in ("precision", "recall", "density", "coverage")))
    print("   ".join(parts) + f"   ({report['n_synthetic']} synthetic, {report['n_test']} real test records)")
    for path in dict.fromkeys(p for p in (args.grid, args.plot) if p):  # --plot writes the grid too
        from .evaluate.grid import save_sample_grid

        save_sample_grid(x, y, path, n_classes=ds.n_classes, low=ds.low, high=ds.high)
        print(f"wrote {path}")
    if args.grid:
        report["grid"] = args.grid
    if args.plot:
        if compared:
            from .evaluate.plots import plot_accuracy_curve

            curve = Path(args.plot).with_name(Path(args.plot).stem + "-accuracy.png")
            keys = [m for m in ("logistic_regression", "mlp", "cnn") if m in report]
            plot_accuracy_curve(compared + [report], curve, metrics=keys)
            report["accuracy_plot"] = str(curve)
            print(f"wrote {curve} ({len(compared) + 1} reports)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


def _checkpoint_info(path: str | None) -> dict:
    """The report fields a checkpoint gives: its release's epsilon, delta, relation and statistics (none without one)."""
    if not path:
        return {}
    from .train import Trained

    info = Trained.load(path).release_info
    return {"epsilon": info["privacy"]["epsilon"], "delta": info["privacy"]["delta"],
            "neighbouring": info["privacy"]["neighbouring"], "checkpoint": path,
            "method": "+".join(s["name"] for s in info["statistics"])}  # fmt: skip


def _evaluate_table(args) -> None:
    """``mmgen evaluate SYNTH.csv --data csv:REAL --schema S``: marginals, correlations, ML efficacy, DCR."""
    from .data.tables import load_frames, read_table
    from .errors import MMGenError
    from .evaluate.tables import evaluate_table
    from .files import check_picture

    check_picture(args.plot, "--plot")
    if not args.data or args.data.partition(":")[0] not in ("csv", "parquet"):
        raise MMGenError("Evaluating a synthetic table needs the real one: --data csv:FILE (or parquet:FILE) --schema S.json.")
    schema = _schema(args, True)
    train, test = load_frames(args.data, schema, holdout=args.holdout)
    if args.test_data:
        if args.holdout is not None:
            raise MMGenError("`--holdout` and `--test-data` exclude each other: the test records come from one place.")
        test, _ = load_frames(args.test_data, schema)
    if not len(test):
        raise MMGenError(f"{args.data} has no test rows: give them as --test-data csv:TEST.csv, or hold some out with "
                         "--holdout FRACTION for both `release` and `evaluate`.")  # fmt: skip
    synth = read_table(args.samples)
    report: dict = {"samples": args.samples, "data": args.data}
    if args.checkpoint:
        from .files import expect

        expect(args.checkpoint, "checkpoint", "`mmgen evaluate --checkpoint`")
    report.update(_checkpoint_info(args.checkpoint))
    report.update(evaluate_table(synth, train, test, schema, holdout=test, plot=args.plot, seed=args.seed))
    tvd, eff = report["tvd"], report.get("ml_efficacy", {})
    line = [f"TVD 1-way {tvd['one_way_mean']:.4f} (max {tvd['one_way_max']:.4f})",
            f"2-way {tvd['two_way_mean']:.4f} (max {tvd['two_way_max']:.4f})",
            f"correlations {report['correlation']['mean_abs_difference']:.4f}"]  # fmt: skip
    for who in ("synthetic", "real") if eff else ():
        b = eff[who]["boosting"]
        auc = "n/a" if b["roc_auc"] is None else f"{b['roc_auc']:.4f}"
        line.append(f"boosting trained on {who}: accuracy {b['accuracy']:.4f}, ROC-AUC {auc}")
    if "dcr" in report:
        line.append(f"closer to training than hold-out rows: {report['dcr']['share_closer_to_train']:.3f} (0.5 expected)")
    print("\n".join(line) + f"\n({len(synth)} synthetic, {len(test)} real test rows)")
    if args.plot:
        print(f"wrote {args.plot}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(f"wrote {args.out}")


def cmd_plot(args) -> None:
    from .evaluate.plots import load_reports, plot_accuracy_curve
    from .files import check_picture

    check_picture(args.out, "--out")
    reports = load_reports(args.reports)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    path = plot_accuracy_curve(reports, args.out, metrics=metrics, title=args.title)
    print(f"wrote {path} ({len(reports)} reports)")


def cmd_demo(args) -> None:
    from .pipeline import run_demo

    run_demo(data=args.data, epsilon=args.epsilon, delta=args.delta, out=args.out, epochs=args.epochs,
             progress=not args.quiet, force=args.force)  # fmt: skip


def cmd_features(args) -> None:
    from . import features

    print("feature maps (one statistic each):")
    for name in features.list():
        cls = features.get_class(name)
        print(f"  {name:17s} {cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}")
    print("bundles (--features NAME expands to these statistics):")
    for name, help_text in features.BUNDLE_HELP.items():
        print(f"  {name:17s} {help_text}")


def cmd_audit(args) -> None:
    from .audit import audit

    from .features import BUNDLES, get_class

    opts = {"seed": args.seed}
    if "," not in args.features and args.features not in BUNDLES:  # a single map: pass only its fields
        opts = {} if "seed" not in get_class(args.features).Config.__dataclass_fields__ else opts
    if args.n_features is not None:
        opts["n_features"] = args.n_features
    result = audit(args.features, epsilon=args.epsilon, delta=args.delta, data=args.data, n_records=args.n_records,
                   feature_options=opts, neighbouring=args.neighbouring, trials=args.trials,
                   confidence=args.confidence, seed=args.seed)  # fmt: skip
    print(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {args.out}")


COMMANDS = {
    "release": cmd_release, "inspect": cmd_inspect, "fit": cmd_fit, "sample": cmd_sample,
    "evaluate": cmd_evaluate, "plot": cmd_plot, "demo": cmd_demo, "features": cmd_features, "audit": cmd_audit, "budget": cmd_budget, "evolve": cmd_evolve,
    "schema": cmd_schema, "vae": cmd_vae,
}  # fmt: skip


class _StderrHandler(logging.Handler):
    """Writes a record as one line to the current ``sys.stderr``, through tqdm so progress bars stay whole."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging's own contract: a failing handler reports, never raises)
            self.handleError(record)


def _show_library_messages():
    """Shows the ``mmgen`` loggers' INFO messages on stderr as ``mmgen: ...`` lines.

    They say which backend and generator ``auto`` chose and how long a fit should take.

    Returns:
        A function that removes the handler again, so that the library stays quiet for
        API users in the same process (a test, a notebook).
    """
    logger = logging.getLogger("mmgen")
    handler = _StderrHandler(logging.INFO)
    handler.setFormatter(logging.Formatter("mmgen: %(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a library that configures the root logger (opacus does) would print them twice

    def undo():
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate

    return undo


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmgen`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from .errors import MMGenError

    undo_logging = _show_library_messages()
    try:
        COMMANDS[args.command](args)
    except (MMGenError, TypeError) as exc:
        if isinstance(exc, TypeError) and "option" not in str(exc):
            raise
        print(f"mmgen: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written: one line, no traceback
        print(f"mmgen: error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmgen: interrupted", file=sys.stderr)
        return 130
    finally:
        undo_logging()
    return 0


if __name__ == "__main__":
    sys.exit(main())
