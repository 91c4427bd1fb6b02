"""The ``mmgen`` command: release, inspect, fit, sample, evaluate, demo.

Every user error (an :class:`~mmgen.errors.MMGenError`) is printed as one
line, ``mmgen: error: ...``, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]


def _add_release(sub):
    p = sub.add_parser("release", help="make a private release of a data set", description=(
        "Reads the data once and writes an (epsilon, delta)-DP release of its class-conditional "
        "mean embeddings (safetensors + JSON metadata)."))  # fmt: skip
    p.add_argument("--data", required=True, help="digits | fashion-mnist[:FOLDER] | idx:FOLDER | npz:FILE")
    p.add_argument("--features", default="rff", help="feature map name (see `mmgen features`); default rff")
    p.add_argument("--n-features", type=int, default=None, help="D, the number of features (rff: default 10000)")
    p.add_argument("--bandwidth", type=float, default=None, help="rff kernel length-scale (default: data-independent rule)")
    p.add_argument("--epsilon", type=float, required=True, help="privacy budget epsilon (> 0)")
    p.add_argument("--delta", type=float, default=1e-5, help="privacy budget delta in (0, 1); default 1e-5")
    p.add_argument("--neighbouring", default="add-remove", choices=["add-remove", "replace-one"],
                   help="neighbouring relation of the guarantee (default add-remove)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="public seed of the feature map (recorded)")
    p.add_argument("--clip", action="store_true", help="clip values into the declared domain instead of refusing them")
    p.add_argument("--out", required=True, help="release file to write")


def _add_inspect(sub):
    p = sub.add_parser("inspect", help="print a release's metadata", description="Prints a release's public metadata.")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")


def _add_fit(sub):
    p = sub.add_parser("fit", help="train a generator on a release", description=(
        "Trains a class-conditional generator to match a release's mean embeddings (no privacy cost)."))  # fmt: skip
    p.add_argument("file", help="release file")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("--generator", default="conv", choices=["conv", "mlp"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_sample(sub):
    p = sub.add_parser("sample", help="draw synthetic data from a checkpoint", description=(
        "Writes N labelled synthetic records as .npz (x in the declared domain, y integer labels)."))  # fmt: skip
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True, help=".npz file to write")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--grid", default=None, help="also write a PNG grid of samples per class")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="downstream accuracy of synthetic data on a real test split", description=(
        "Trains logistic regression and an MLP on the synthetic data and tests them on the real test split."))  # fmt: skip
    p.add_argument("samples", help=".npz with x, y")
    p.add_argument("--data", required=True, help="data spec whose test split is used")
    p.add_argument("--out", default=None, help="JSON report to write")


def _add_demo(sub):
    p = sub.add_parser("demo", help="the whole path on digits (or Fashion-MNIST)", description=(
        "release -> fit -> sample -> evaluate on a real data set; writes the release, a sample grid "
        "and a report into --out."))  # fmt: skip
    p.add_argument("--data", default="digits", help="digits (default) or fashion-mnist")
    p.add_argument("--epsilon", type=float, default=10.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--epochs", type=int, default=None, help="default: 10")
    p.add_argument("--out", default="mmgen-demo")
    p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmgen", description="Differentially private synthetic data by moment matching.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"mmgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_release, _add_inspect, _add_fit, _add_sample, _add_evaluate, _add_demo):
        add(sub)
    sub.add_parser("features", help="list the registered feature maps", description="Lists the feature maps.")
    return parser


def _feature_options(args) -> dict:
    opts = {"seed": args.seed}
    if args.n_features is not None:
        opts["n_features"] = args.n_features
    if args.bandwidth is not None:
        opts["bandwidth"] = args.bandwidth
    return opts


def cmd_release(args) -> None:
    import mmgen

    ds = mmgen.data.load(args.data)
    fmap = mmgen.features.create(args.features, **_feature_options(args))
    t0 = time.perf_counter()
    rel = mmgen.release(ds, features=fmap, epsilon=args.epsilon, delta=args.delta,
                        neighbouring=args.neighbouring, clip=args.clip, progress=True)  # fmt: skip
    path = rel.save(args.out)
    print(f"wrote {path}: epsilon={rel.epsilon:g}, delta={rel.delta:g}, {rel.neighbouring}, "
          f"noise std {rel.statistics[0].noise_std:.4g} per coordinate ({time.perf_counter() - t0:.1f} s)")  # fmt: skip


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
    from .release import Release

    rel = Release.load(args.file)
    print(json.dumps(rel.metadata, indent=2, sort_keys=True) if args.json else format_release(rel))


def cmd_fit(args) -> None:
    from .release import Release
    from .train import TrainConfig, fit

    rel = Release.load(args.file)
    cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                      lr=args.lr, seed=args.seed, device=args.device)  # fmt: skip
    trained = fit(args.generator, rel, cfg, progress=not args.quiet, checkpoint=args.out)
    trained.save(args.out)
    print(f"wrote {args.out}: final loss {trained.losses[-1]:.4g}")


def cmd_sample(args) -> None:
    import numpy as np

    from .train import Trained

    trained = Trained.load(args.checkpoint)
    if args.n < 1:
        from .errors import MMGenError

        raise MMGenError(f"`--n` must be ≥ 1. Got {args.n}.")
    x, y = trained.sample(args.n, seed=args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, x=x.numpy(), y=y.numpy())
    print(f"wrote {args.out}: {args.n} records of shape {tuple(x.shape[1:])}")
    if args.grid:
        from .evaluate.grid import save_grid

        save_grid(trained, args.grid)
        print(f"wrote {args.grid}")


def cmd_evaluate(args) -> None:
    import numpy as np
    import torch

    import mmgen

    from .errors import DataError
    from .evaluate import downstream_accuracy

    try:
        arrays = np.load(args.samples, allow_pickle=False)
        x, y = torch.from_numpy(arrays["x"]).float(), torch.from_numpy(arrays["y"]).long()
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"Cannot read samples {args.samples} (need arrays x and y): {exc}") from None
    ds = mmgen.data.load(args.data)
    report = {"samples": args.samples, "data": args.data, **downstream_accuracy(x, y, ds.x_test, ds.y_test)}
    print(f"logistic regression {report['logistic_regression']:.4f}   mlp {report['mlp']:.4f}   "
          f"({report['n_synthetic']} synthetic, {report['n_test']} real test records)")  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


def cmd_demo(args) -> None:
    from .pipeline import run_demo

    run_demo(data=args.data, epsilon=args.epsilon, delta=args.delta, out=args.out, epochs=args.epochs, progress=not args.quiet)


def cmd_features(args) -> None:
    from . import features

    for name in features.list():
        cls = features.get_class(name)
        print(f"{name:12s} {cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}")


COMMANDS = {
    "release": cmd_release, "inspect": cmd_inspect, "fit": cmd_fit, "sample": cmd_sample,
    "evaluate": cmd_evaluate, "demo": cmd_demo, "features": cmd_features,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmgen`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from .errors import MMGenError

    try:
        COMMANDS[args.command](args)
    except (MMGenError, TypeError) as exc:
        if isinstance(exc, TypeError) and "option" not in str(exc):
            raise
        print(f"mmgen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmgen: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
