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
        "declarations alone (a positive range over two orders of magnitude without a log axis)."))  # fmt: skip
    p.add_argument("action", choices=["draft", "check"])
    p.add_argument("file", help="draft: the CSV/Parquet file; check: the schema JSON")
    p.add_argument("--data", default=None, help="check: also validate this table against the schema (csv:FILE or parquet:FILE)")
    p.add_argument("--label", default=None, help="draft: the label column (the release is conditional on it)")
    p.add_argument("--out", default=None, help="draft: the schema JSON to write (an existing file is refused)")


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
    for c in schema.columns:
        role = " (label)" if c.name == schema.label else ""
        if c.is_numeric:
            extra = f"[{c.low:g}, {c.high:g}]{' log' if c.transform else ''}, {c.n_bins} bins{', may be missing' if c.missing else ''}"
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
