"""``mmgen demo`` (the whole path on embedded data), ``mmgen audit`` (an empirical lower bound on ε), ``mmgen features``."""

from __future__ import annotations

import json
from pathlib import Path


def add_demo(sub):
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


def add_audit(sub):
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


def cmd_demo(args) -> None:
    from ..pipeline import run_demo

    run_demo(data=args.data, epsilon=args.epsilon, delta=args.delta, out=args.out, epochs=args.epochs,
             progress=not args.quiet, force=args.force)  # fmt: skip


def cmd_features(args) -> None:
    from .. import features

    print("feature maps (one statistic each):")
    for name in features.list():
        cls = features.get_class(name)
        print(f"  {name:17s} {cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}")
    print("bundles (--features NAME expands to these statistics):")
    for name, help_text in features.BUNDLE_HELP.items():
        print(f"  {name:17s} {help_text}")


def cmd_audit(args) -> None:
    from ..audit import audit

    from ..features import BUNDLES, get_class

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
