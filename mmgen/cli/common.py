"""Options, guards and console helpers shared by the command groups."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def add_schema_option(p):
    p.add_argument("--schema", default=None, metavar="SCHEMA.json", help=(
        "csv:/parquet: tables: the public schema (every column's type, declared bounds or categories, "
        "missing values, optional label); draft one with `mmgen schema draft FILE`"))  # fmt: skip


def add_npz_options(p):
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


# `mmgen fit`'s defaults, sized so that a 60,000-record 28×28 release fits in a few minutes on 2 CPU cores:
# the settings `mmgen demo --data fashion-mnist` uses (pipeline.DEMO_SETTINGS), not tuned on a test split.
# The Python API keeps TrainConfig's and GeneratorConfig's own defaults.
FIT_DEFAULTS = {"epochs": 6, "steps_per_epoch": 100, "batch_size": 200, "conv_width": 32}


# Tables: their generator is small and a step costs milliseconds. Chosen on carData/SLID (2- and 3-way marginal
# TVD of herded rows against the training rows, eps = 1 and 3, seeds 0 and 1; docs/tabular.md), never on a
# reported table: 20 x 50 steps of 500 rows matched 20 x 100 steps of 1,000 rows (within the seed-to-seed
# spread) at a quarter of the time; 20 x 25 steps of 1,000 rows lost about 10 % at eps = 3 and doubled the floor.
# Steps of 250 rows matched steps of 500 on SLID with herded rows (2-way TVD, seeds 0-1: eps 1 0.0366 vs 0.0371, eps 3
# 0.0182 vs 0.0184) at half the time, but were withdrawn: on ggplot2/diamonds (eps 1, seed 0) they cost 0.036 vs 0.022.
TABLE_FIT_DEFAULTS = {"epochs": 20, "steps_per_epoch": 50, "batch_size": 500}


# `mmgen vae`'s defaults: mmgen.vae.VAEConfig's (see docs/vae.md for how they were chosen).
VAE_DEFAULTS = {"epochs": 10.0, "sampling_rate": 0.05, "clip_norm": 1.0, "lr": 1e-3, "latent_dim": 16, "hidden": (512,),
                "encoder_lipschitz": 4.0, "decoder_lipschitz": 32.0, "posterior_std": 0.5, "pretrain_epochs": 10}  # fmt: skip


# `mmgen evolve`'s defaults: mmgen.evolve.EvolveConfig's (see docs/evolve.md for how they were chosen).
EVOLVE_DEFAULTS = {"rounds": 5, "population": 1000, "samples": 10000, "threshold": 2.0, "strength_start": 0.6,
                   "strength_end": 0.2, "embedding": "pixels"}  # fmt: skip


def show_defaults(parser: argparse.ArgumentParser) -> None:
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


def parse_floats(text: str, what: str) -> list[float]:
    from ..errors import MMGenError

    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise MMGenError(f"`{what}` must be comma-separated numbers, e.g. 1,2. Got {text!r}.") from None


def feature_options(args) -> dict:
    """Options per feature-map name (``"*"``: every map that has the field), for ``features.statistics``."""
    from ..errors import MMGenError

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


def npz_options(args) -> dict:
    """``n_classes`` and ``holdout`` for :func:`mmgen.data.load`, when given."""
    pairs = (("n_classes", args.n_classes), ("holdout", args.holdout), ("low", args.low), ("high", args.high))
    return {k: v for k, v in pairs if v is not None}


def evaluation_data(args):
    """The data set whose test records `evaluate` scores against (``--data`` and/or ``--test-data``)."""
    import dataclasses

    import mmgen

    from ..errors import DataError, MMGenError

    if not args.data and not args.test_data:
        raise MMGenError("`evaluate` needs test records: --data SPEC (its test split) or --test-data npz:FILE.")
    if args.test_data:
        if not args.test_data.startswith("npz:"):
            raise MMGenError(f"`--test-data` takes npz:FILE. Got {args.test_data!r}.")
        if args.holdout is not None:
            raise MMGenError("`--holdout` and `--test-data` exclude each other: the test records come from one place.")
        test = mmgen.data.load(args.test_data, **{k: v for k, v in npz_options(args).items() if k != "holdout"})
        ds = mmgen.data.load(args.data, **npz_options(args)) if args.data else test
        if ds.input_shape != test.input_shape or ds.n_classes != test.n_classes:
            raise DataError(f"--test-data records {test.input_shape} with {test.n_classes} classes do not match "
                            f"--data {ds.input_shape} with {ds.n_classes} classes.")  # fmt: skip
        return dataclasses.replace(ds, name=args.test_data, x_test=test.x_train, y_test=test.y_train)
    ds = mmgen.data.load(args.data, **npz_options(args))
    if not len(ds.y_test):
        raise DataError(
            f"{args.data} has no test records. Give them as --test-data npz:TEST.npz (x, y), as x_test/y_test "
            "in the file, or hold some out with --holdout FRACTION for both `release` and `evaluate`."
        )
    return ds


BENCHMARKS = ("digits", "fashion-mnist")  # public data sets: their names may be published, no record by default


def declared_schema(args, table: bool):
    """The table's public schema (``--schema``), read and checked before any data; None for arrays."""
    from ..data.schema import Schema
    from ..errors import MMGenError

    if not table:
        if getattr(args, "schema", None):
            raise MMGenError(f"`--schema` applies to csv: and parquet: tables. Got --data {args.data}.")
        return None
    if not args.schema:
        raise MMGenError(f"A table ({args.data}) needs its public schema: --schema SCHEMA.json "
                         "(draft one with `mmgen schema draft FILE`, then replace every bound by public knowledge).")  # fmt: skip
    return Schema.load(args.schema)


def warn(message: str) -> None:
    print(f"mmgen: warning: {message}", file=sys.stderr)


def budget_record_path(spec: str, chosen: str | None) -> Path | None:
    """Where the budget record of data ``spec`` lives (never beside the outputs: it is not published).

    ``--budget-record`` a folder: ``FOLDER/<data file name>.mmgen-budget.json``; a file: that file.
    Default: ``FILE.mmgen-budget.json`` beside an npz, CSV or Parquet file, ``FOLDER/mmgen-budget.json`` in an IDX
    folder, none for the public benchmarks (digits, fashion-mnist).
    """
    from ..privacy.ledger import RECORD_SUFFIX

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


def warn_if_record_missing(record_path: Path | None, outputs) -> None:
    """Warns when outputs of a data set exist but its budget record does not (deleted, moved, or never kept).

    Args:
        record_path: where the data set's record should be (None: a public benchmark, nothing to check).
        outputs: files of this data set the command overwrites or builds on (its ``--out`` when it exists, a
            checkpoint whose release was made from the data); None entries and missing files are skipped. One that
            carries a budget-record stamp proves that a record existed when it was written.
    """
    if record_path is None or record_path.is_file():
        return
    from ..files import budget_stamp

    for out in outputs:
        if out is None or not Path(out).is_file():
            continue
        stamp = budget_stamp(out)
        if stamp is not None:
            warn(f"{out} was written when this data set's budget record held {stamp.get('entries')} stage(s), but there "
                 f"is no record at {record_path}: it was deleted or moved. A new record starts empty and undercounts "
                 "what was spent; restore the old one (or point --budget-record at it).")  # fmt: skip
        else:
            warn(f"{out} exists but there is no budget record at {record_path}: if it was made from this data set, "
                 "the new record will not count it.")  # fmt: skip


def refuse_overwrite(path: Path, what: str) -> None:
    from ..errors import MMGenError

    if path.is_dir():
        raise MMGenError(f"--out {path} is a folder; give a file name.")
    if path.exists():
        raise MMGenError(f"{path} already holds {what}; writing it again spends epsilon again. "
                         "Pass --force to overwrite it (the budget record counts both).")  # fmt: skip


def refuse_overwrite_file(path: Path) -> None:
    from ..errors import MMGenError

    if path.exists():
        raise MMGenError(f"{path} exists; give another --out or delete it first.")


class StderrHandler(logging.Handler):
    """Writes a record as one line to the current ``sys.stderr``, through tqdm so progress bars stay whole."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging's own contract: a failing handler reports, never raises)
            self.handleError(record)


def show_library_messages():
    """Shows the ``mmgen`` loggers' INFO messages on stderr as ``mmgen: ...`` lines.

    They say which backend and generator ``auto`` chose and how long a fit should take.

    Returns:
        A function that removes the handler again, so that the library stays quiet for
        API users in the same process (a test, a notebook).
    """
    logger = logging.getLogger("mmgen")
    handler = StderrHandler(logging.INFO)
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
