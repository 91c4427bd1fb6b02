"""``mmgen release`` (a private release of a data set) and ``mmgen budget`` (the data set's budget record)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import BENCHMARKS, add_npz_options, add_schema_option, budget_record_path, feature_options, parse_floats, npz_options, refuse_overwrite, declared_schema, warn, warn_if_record_missing


def add_release(sub):
    p = sub.add_parser("release", help="make a private release of a data set", description=(
        "Reads the data once and writes an (epsilon, delta)-DP release of its class-conditional "
        "mean embeddings (safetensors + JSON metadata)."))  # fmt: skip
    p.add_argument("--data", default="digits",
                   help="digits | fashion-mnist[:FOLDER] | idx:FOLDER | npz:FILE | csv:FILE | parquet:FILE (tables need --schema)")  # fmt: skip
    add_npz_options(p)
    add_schema_option(p)
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


def add_budget(sub):
    p = sub.add_parser("budget", help="show a budget record (every release of one data set)", description=(
        "Prints a budget record: each stage that read the data set, and their total epsilon composed with "
        "dp-accounting. Give the record (.json) or the data spec it belongs to (npz:FILE, idx:FOLDER)."))  # fmt: skip
    p.add_argument("file", help="budget record JSON, or npz:FILE / idx:FOLDER")
    p.add_argument("--delta", type=float, default=None, help="report the total at this delta (default: the record's)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")


def cmd_release(args) -> None:
    import mmgen

    from ..errors import MMGenError

    from ..privacy import dp_event, split_noise_multipliers
    from ..privacy.ledger import BudgetRecord, budget_warnings

    if not args.force:
        refuse_overwrite(Path(args.out), "a release")
    kind = args.data.partition(":")[0]
    table = kind in ("csv", "parquet")
    schema = declared_schema(args, table)
    if args.features is None:
        args.features = "table-marginals" if table else "rff"
    data_name = args.name if args.name is not None else (args.data if args.data in BENCHMARKS else kind)
    options = feature_options(args)
    from ..features.bundles import expand

    has_seed = ["seed" in mmgen.features.get_class(m).Config.__dataclass_fields__ for m, _, _ in expand(args.features)]
    if not any(has_seed):
        options["*"].pop("seed")  # --seed has a default; only an explicit option must find a taker
    fmaps = mmgen.features.statistics(args.features, options=options)
    split = (parse_floats(args.budget_split, "--budget-split") if args.budget_split
             else mmgen.features.default_budget_split(args.features))  # fmt: skip
    # the budget is checked before the data is read: the noise multipliers depend on (ε, δ, split) only
    event = dp_event(split_noise_multipliers(args.epsilon, args.delta, split))
    record_path = budget_record_path(args.data, args.budget_record)
    record = None
    if record_path is not None:
        warn_if_record_missing(record_path, [args.out])
        record = BudgetRecord.open(record_path, data=Path(args.data.partition(":")[2]).name or args.data)
        if args.total_epsilon is not None:
            record.declare_total(args.total_epsilon)
        after = record.check(event, delta=args.delta if record.delta is None else None, neighbouring=args.neighbouring)
        if len(record):
            warn(f"{record_path} already holds {len(record)} stage(s) on this data set: total epsilon "
                  f"{record.total_epsilon():.4g} so far, {after:.4g} after this release (delta={record.delta:g}).")  # fmt: skip
    elif args.total_epsilon is not None:
        from ..errors import MMGenError

        raise MMGenError(f"`--total-epsilon` needs a budget record; {args.data} has none by default: "
                         "pass --budget-record PATH.")  # fmt: skip
    for message in budget_warnings(args.epsilon, args.delta):
        warn(message)
    if table:
        from ..data.tables import TableStream

        if any(v is not None for v in (args.n_classes, args.low, args.high)):
            raise MMGenError("A table's classes and domain come from its schema; --n-classes/--low/--high do not apply.")
        ds = TableStream(args.data, schema, holdout=args.holdout, clip=args.clip)  # read in chunks: memory flat in N
    else:
        ds = mmgen.data.load(args.data, **npz_options(args))
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


def cmd_budget(args) -> None:
    from ..errors import MMGenError
    from ..privacy.ledger import BudgetRecord

    path = Path(args.file) if args.file.endswith(".json") else budget_record_path(args.file, None)
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
