"""``mmgen fit`` (a generator trained on a release) and ``mmgen sample`` (samples of a checkpoint or a VAE)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import FIT_DEFAULTS, TABLE_FIT_DEFAULTS, parse_floats, warn

SAMPLES_FORMAT = "mmgen.samples"  # the `meta` entry of the .npz `mmgen sample` writes (docs/formats.md)
SAMPLES_VERSION = 1


def _pool(text: str):
    """``--pool``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or auto, got {text!r}") from None


def add_fit(sub):
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


def add_sample(sub):
    p = sub.add_parser("sample", help="draw synthetic data from a checkpoint", description=(
        "Writes N labelled synthetic records as .npz (x in the declared domain, y integer labels); "
        "for a table, a .csv or .parquet file with the schema's columns, types and category labels."))  # fmt: skip
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True, help=".npz file to write (tables: .csv or .parquet)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--grid", default=None, help="also write a PNG grid of samples per class")
    p.add_argument("--select", choices=("auto", "iid", "herding"), default="auto", help=(
        "iid: independent draws; herding: draw --pool x N rows and keep the N whose mean embedding "
        "best matches the release's noisy one, class by class (post-processing, no privacy cost; needs --release); "
        "auto (default): herding for a table when --release is given, else iid"))
    p.add_argument("--pool", type=_pool, default="auto", help=(
        "with herding: pool rows drawn per row kept, or auto (default): 8 when the table release's noise is "
        "small (mmgen.select.auto_pool), else 2; chosen on carData/SLID"))
    p.add_argument("--release", default=None, help="with --select herding: the release file the checkpoint was fitted to")


def cmd_fit(args) -> None:
    from ..errors import MMGenError
    from ..generators import auto_kind, for_release
    from ..release import Release
    from ..files import expect
    from ..train import TrainConfig, fit

    expect(args.file, "release", "`mmgen fit`")
    rel = Release.load(args.file)
    if args.width is not None and args.width < 2:
        raise MMGenError(f"`--width` must be an integer ≥ 2. Got {args.width}.")
    if args.threads is not None:
        if args.threads < 1:
            raise MMGenError(f"`--threads` must be an integer ≥ 1. Got {args.threads}.")
        import torch

        torch.set_num_threads(args.threads)
    weights = tuple(parse_floats(args.statistic_weights, "--statistic-weights")) if args.statistic_weights else None
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
    import warnings

    from ..errors import NotForPublicationWarning
    from ..train import not_for_publication_message

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotForPublicationWarning)
        trained = fit(generator, rel, cfg, progress=not args.quiet, checkpoint=args.out, resume=resume)
    if not rel.for_publication:  # one console line once the run succeeded (errors stay one line); the checkpoint carries the mark
        warn(f"{args.file}: {not_for_publication_message('release')}")
    trained.save(args.out)
    steps = trained.epochs_done * cfg.steps_per_epoch
    print(f"wrote {args.out}: final loss {trained.losses[-1]:.4g} after {steps} steps ({time.perf_counter() - t0:.0f} s)")


def cmd_sample(args) -> None:
    from ..errors import MMGenError
    from ..files import check_picture, expect
    from ..train import Trained

    # every check before anything is written
    if args.n < 1:
        raise MMGenError(f"`--n` must be ≥ 1. Got {args.n}.")
    check_picture(args.grid, "--grid")
    select = getattr(args, "select", "iid")
    if select == "herding" and args.release is None:
        raise MMGenError("`--select herding` needs `--release FILE`, the release the checkpoint was fitted to.")
    if select != "iid" and args.pool != "auto" and args.pool < 1:
        raise MMGenError(f"`--pool` must be ≥ 1 or auto. Got {args.pool}.")
    if select == "iid" and getattr(args, "release", None) is not None:
        raise MMGenError("`--release` is read only with `--select herding` or `auto`.")
    from ..files import sniff

    if sniff(args.checkpoint) == "vae":
        return _sample_vae(args)
    expect(args.checkpoint, "checkpoint", "`mmgen sample`")
    trained = Trained.load(args.checkpoint)
    from ..train import not_for_publication_message

    is_table = trained.release_info["data"].get("table") is not None
    herding = select == "herding" or (select == "auto" and is_table and args.release is not None)
    if select == "auto" and is_table and args.release is None:
        warn("drawing i.i.d. rows; give `--release FILE` (the release this checkpoint was fitted to) to herd rows "
             "toward its marginals instead (lower marginal error, no privacy cost)")
    if select == "auto" and not is_table and args.release is not None:
        raise MMGenError("`--select auto` herds table rows only; use `--select herding` for these records.")

    def draw():
        if not herding:
            return trained.sample(args.n, seed=args.seed)
        from ..release import Release
        from ..select import select_herding

        expect(args.release, "release", "`mmgen sample --select herding`")  # progress: INFO on mmgen.select
        return select_herding(trained, Release.load(args.release), args.n, pool=args.pool, seed=args.seed, progress=True)

    def mark() -> None:  # after every check and the draw: a refused command prints its one error line only
        if not trained.for_publication:
            warn(f"{args.checkpoint}: {not_for_publication_message('checkpoint')}")

    if trained.release_info["data"].get("table") is not None:
        from ..data.tables import write_table

        if Path(args.out).suffix.lower() not in (".csv", ".parquet") or args.grid:
            raise MMGenError(f"This checkpoint makes table rows: `--out` must be a .csv or .parquet file (and no --grid). Got {args.out!r}.")
        if herding:
            from ..data.schema import Schema

            frame = Schema.from_dict(trained.release_info["data"]["table"]).decode(*draw())
        else:
            frame = trained.sample_table(args.n, seed=args.seed)
        mark()  # a table's CSV/Parquet carries no metadata: the console says it
        write_table(frame, args.out)
        print(f"wrote {args.out}: {args.n} rows, columns {', '.join(frame.columns)}")
        return
    if Path(args.out).suffix != ".npz":
        raise MMGenError(f"`--out` must be an .npz file (mmgen sample writes NumPy .npz). Got {args.out!r}.")
    shape = tuple(trained.generator.config.input_shape)
    if args.grid and (len(shape) != 3 or shape[0] not in (1, 3)):
        raise MMGenError(f"`--grid` needs image records (1 or 3, H, W); this checkpoint makes records of shape {shape}.")
    x, y = draw()
    mark()
    p = trained.release_info["privacy"]
    write_samples(args.out, x, y, p, source={"kind": "checkpoint", "release_content_hash": trained.release_info.get("content_hash")})
    print(f"wrote {args.out}: {args.n} records of shape {tuple(x.shape[1:])}")
    if args.grid:
        from ..evaluate.grid import save_grid

        save_grid(trained, args.grid)
        print(f"wrote {args.grid}")


def _sample_vae(args) -> None:
    from ..errors import MMGenError
    from ..vae import TrainedVAE

    if Path(args.out).suffix != ".npz" or args.grid:
        raise MMGenError(f"A VAE's samples go to an .npz file (and no --grid). Got {args.out!r}.")
    vae = TrainedVAE.load(args.checkpoint)
    if not vae.finished:
        raise MMGenError(f"{args.checkpoint} is an unfinished run ({vae.steps_done} of {vae.config.steps} steps): "
                         "finish it with `mmgen vae ... --resume` first.")  # fmt: skip
    x, y = vae.sample(args.n, seed=args.seed)
    if not vae.privacy.get("for_publication", True):
        from ..train import not_for_publication_message

        warn(f"{args.checkpoint}: {not_for_publication_message('VAE')}")
    write_samples(args.out, x, y, vae.privacy, source={"kind": "vae", "budget_record": vae.privacy.get("budget_record")})
    print(f"wrote {args.out}: {args.n} records of shape {tuple(x.shape[1:])} (epsilon={vae.epsilon:.4g}, "
          f"delta={vae.delta:g}, {vae.privacy['neighbouring']}: the model's guarantee)")  # fmt: skip


def write_samples(path, x, y, privacy: dict, source: dict) -> None:
    """Writes samples as .npz: arrays ``x``, ``y`` and ``meta``, a JSON string (format ``mmgen.samples``).

    ``meta`` holds the guarantee the samples inherit (ε, δ, relation), their ``for_publication`` mark and
    noise source, and where they came from; readers that know only ``x`` and ``y`` ignore it.
    """
    import json

    import numpy as np

    from .. import __version__

    keep = ("epsilon", "delta", "neighbouring", "for_publication", "noise_source")
    meta = {"format": SAMPLES_FORMAT, "format_version": SAMPLES_VERSION, "library_version": __version__,
            "privacy": {k: privacy.get(k, True if k == "for_publication" else None) for k in keep}, "source": source}  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=x.numpy(), y=y.numpy(), meta=np.array(json.dumps(meta, sort_keys=True)))
