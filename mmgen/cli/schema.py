"""``mmgen schema``: draft a table's schema and check a declared one."""

from __future__ import annotations

import json
from pathlib import Path

from .common import refuse_overwrite_file, warn


def add_schema(sub):
    p = sub.add_parser("schema", help="draft or check a table's public schema", description=(
        "draft: writes a schema of a CSV/Parquet file's columns and types with every bound and category list "
        "left empty (null), to be declared from public knowledge (a release refuses it until each is); what the "
        "file holds (min, max, categories seen) goes to a separate report, SCHEMA.observed-PRIVATE.json, which is "
        "private and read by no stage; the columns for which it suggests a log axis are named on the console. check: "
        "validates a schema (and a table against it), prints its columns and encoding, and hints read off the "
        "declarations alone (a positive range over two orders of magnitude without a log axis). discretise: "
        "spends a declared (epsilon, delta) on a private data file to put knots at the noisy quantiles of the "
        "numbers named (a stage of its own in the data set's budget record) and writes the schema with them."))  # fmt: skip
    p.add_argument("action", choices=["draft", "check", "discretise"])
    p.add_argument("file", help="draft: the CSV/Parquet file; check, discretise: the schema JSON")
    p.add_argument("--data", default=None, help="check: also validate this table against the schema (csv:FILE or parquet:FILE)")
    p.add_argument("--label", default=None, help="draft: the label column (the release is conditional on it)")
    p.add_argument("--out", default=None, help="draft, discretise: the schema JSON to write (an existing file is refused)")
    g = p.add_argument_group("discretise (private: spends budget on --data)")
    g.add_argument("--columns", default=None, help="comma list of numeric columns to give knots at their noisy quantiles")
    g.add_argument("--epsilon", type=float, default=None, help="this stage's epsilon (it composes with later releases)")
    g.add_argument("--delta", type=float, default=1e-5, help="this stage's delta; default 1e-5")
    g.add_argument("--bins", type=int, default=16, help="knot intervals per column (fewer where quantiles coincide); default 16")
    g.add_argument("--neighbouring", default="add-remove", choices=["add-remove", "replace-one"])
    g.add_argument("--holdout", type=float, default=None, help="leave out the same hashed share of rows as the release will")
    g.add_argument("--clip", action="store_true", help="clip numbers into their declared bounds (as the release must)")
    g.add_argument("--budget-record", default=None, metavar="PATH", help=(
        "the data set's budget record (never publish it); default FILE.mmgen-budget.json beside the data file"))


def observed_path(schema_path: Path) -> Path:
    """Where `mmgen schema draft` writes its private report of the values seen, beside the draft."""
    return schema_path.with_name(schema_path.stem + ".observed-PRIVATE.json")


def cmd_schema(args) -> None:
    from ..data.tables import DRAFT_WARNING, Schema, draft_schema, observe_table, read_table, schema_hints
    from ..errors import MMGenError

    if args.action == "draft":
        if not args.out:
            raise MMGenError("`mmgen schema draft` needs --out SCHEMA.json.")
        out = Path(args.out)
        report = observed_path(out)
        refuse_overwrite_file(out)
        refuse_overwrite_file(report)
        frame = read_table(args.file)
        if args.label is not None and args.label not in frame.columns:
            raise MMGenError(f"--label {args.label!r} is not a column of {args.file} ({', '.join(map(str, frame.columns))}).")
        observed = observe_table(frame)
        out.write_text(json.dumps(draft_schema(frame, label=args.label), indent=2) + "\n")
        report.write_text(json.dumps(observed, indent=2) + "\n")
        warn(DRAFT_WARNING)
        print(f"wrote {out}: a draft of {len(frame.columns)} columns, every bound and category list empty (declare "
              f"them from public knowledge before any release)\nwrote {report}: the values the file holds (PRIVATE: "
              "keep it with the data, read by no stage)")  # fmt: skip
        for name, seen in observed["columns"].items():  # the column and the reason; the values stay in the report
            for s in seen.get("suggest", []):
                print(f'suggest: {name}: "transform": "{s["transform"]}" -- {s["why"]}')
        return
    schema = Schema.load(args.file)
    if args.action == "discretise":
        return _discretise(args, schema)
    for c in schema.columns:
        role = " (label)" if c.name == schema.label else ""
        if c.is_numeric:
            axis = " log" if c.transform else " knots" if c.knots is not None else ""
            extra = f"[{c.low:g}, {c.high:g}]{axis}, {c.n_bins} bins{', may be missing' if c.missing else ''}"
        else:
            extra = f"{len(c.categories)} categories: {', '.join('(missing)' if v is None else str(v) for v in c.categories)}"
        print(f"{c.name:<14} {c.type:<12} {extra}{role}")
    print(f"encoded      {schema.encoded_dim} values per row, {schema.n_classes} class(es)")
    for hint in schema_hints(schema):
        print(f"hint: {hint}")
    if args.data:
        from ..data.tables import load_table

        ds = load_table(args.data, schema)
        print(f"{args.data}: every row fits the schema ({len(ds.y_train)} rows -- a private count, do not publish it)")


def _discretise(args, schema) -> None:
    """``mmgen schema discretise``: knots at noisy quantiles, recorded as a stage in the budget record."""
    from ..data.discretise import private_knots
    from ..data.tables import TableStream
    from ..errors import MMGenError
    from ..privacy import dp_event, noise_multiplier_for
    from ..privacy.ledger import BudgetRecord, budget_warnings
    from .common import budget_record_path, warn_if_record_missing

    if not (args.data and args.columns and args.out and args.epsilon is not None):
        raise MMGenError("`mmgen schema discretise SCHEMA.json` needs --data csv:FILE (or parquet:FILE), --columns, "
                         "--epsilon and --out NEW_SCHEMA.json.")  # fmt: skip
    if args.data.partition(":")[0] not in ("csv", "parquet"):
        raise MMGenError(f"--data must be csv:FILE or parquet:FILE. Got {args.data}.")
    out = Path(args.out)
    refuse_overwrite_file(out)
    record_path = budget_record_path(args.data, args.budget_record)
    warn_if_record_missing(record_path, [])
    record = BudgetRecord.open(record_path, data=Path(args.data.partition(":")[2]).name)
    after = record.check(dp_event([noise_multiplier_for(args.epsilon, args.delta)]),
                         delta=args.delta if record.delta is None else None, neighbouring=args.neighbouring)  # fmt: skip
    if len(record):
        warn(f"{record_path} already holds {len(record)} stage(s) on this data set: total epsilon "
             f"{record.total_epsilon():.4g} so far, {after:.4g} after this stage (delta={record.delta:g}).")  # fmt: skip
    for message in budget_warnings(args.epsilon, args.delta):
        warn(message)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    ds = TableStream(args.data, schema, holdout=args.holdout, clip=args.clip)
    new, info = private_knots(ds, schema, columns, epsilon=args.epsilon, delta=args.delta, bins=args.bins,
                              neighbouring=args.neighbouring, record=record, output=out.name)  # fmt: skip
    out.write_text(json.dumps(new.to_dict(), indent=2) + "\n")
    bins = ", ".join(f"{name} {b} bins" for name, b in info["bins"].items())
    print(f"wrote {out}: knots at the noisy quantiles of {bins} (epsilon={args.epsilon:g}, delta={args.delta:g}, "
          f"{args.neighbouring}; the knots are public, release with this schema)")  # fmt: skip
    print(f"budget record {record_path}: {len(record)} stage(s), total epsilon {record.total_epsilon():.4g} "
          f"at delta={record.delta:g} (keep it private)")  # fmt: skip
